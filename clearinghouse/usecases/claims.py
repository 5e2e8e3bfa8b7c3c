"""Claims between districts: propose, decide, finish, expire; deliveries; positions.

The clearinghouse's side of ADR 0005. Every node message is a signed envelope, verified
with ``directory.verify_node`` over the bytes received, then parsed; the rules (who may
act, states, deadlines, amounts, limits) are the domain's (``clearinghouse.domain``).
Each use-case is one transaction: the claim row, the envelope as received, the running
positions (on completion) and the deliveries for the other party commit together.

Refusals store nothing. In particular a proposal naming a debtor that is not the
person's home (per the directory) is refused with FAILED_PRECONDITION
``NOT_HOME_DISTRICT``, and one that would take the debtor past its net debit limit with
RESOURCE_EXHAUSTED ``LIMIT_REACHED``: no claim is recorded, so the same claim id may be
proposed again once the directory or the limit allows it. A person has at most one open
move: while one is proposed or accepted, any other proposal for them (move or
redemption) is FAILED_PRECONDITION ``MOVE_IN_PROGRESS``, because their balance is in
transit. Only the debtor's own refusal (``claim.decide`` with accept false) records a
REJECTED claim.

Replays: the same proposal body under a recorded claim id returns the recorded claim,
whatever became of it; a different body under that id is ALREADY_EXISTS
``CLAIM_ID_REUSED``. The same decision or finish envelope again returns the claim as it
is now and changes nothing.

Deliveries: each node has its own sequence from 1. A delivery row holds the serialised,
*unsigned* ``timebank.v1.Delivery`` (the relayed envelope as received, or the id of the
claim that expired, the claim's state after it, the time); the gRPC layer signs it as a
``delivery`` envelope when it streams it. A node reads its queue with a signed
``subscribe`` request that must be its own and fresh (``subscription``: ``at`` within 5
minutes of the clearinghouse's clock, else PERMISSION_DENIED ``STALE_SUBSCRIBE``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, timedelta

from google.protobuf.message import DecodeError

from clearinghouse.domain import positions as pos
from clearinghouse.domain.claims import (
    Action,
    Claim,
    ClaimKind,
    ClaimState,
    RejectReason,
    accept,
    check_actor,
    check_claim_id,
    check_node_id,
    check_resubmission,
    complete,
    expire,
    reject,
    void,
)
from clearinghouse.storage.repo import ClaimRecord, ProposalContext
from clearinghouse.usecases import log, policies, wire
from clearinghouse.usecases.app import Tx
from clearinghouse.usecases.directory import REGISTER, check_person_ref, verify_node
from runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    InvariantViolation,
    NotFound,
    PermissionDenied,
    Refusal,
    ResourceExhausted,
)
from timebank.envelope import KeyRing, Signed
from timebank.transparency import MAX_LOG_NUMBER
from timebank.v1 import clearing_pb2, node_pb2

PROPOSE = "claim.propose"
DECIDE = "claim.decide"
FINISH = "claim.finish"
SUBSCRIBE = "subscribe"
#: A person has at most one open move; nothing else is proposed for them meanwhile.
MOVE_IN_PROGRESS = "MOVE_IN_PROGRESS"
#: A subscribe request's own time (``SubscribeBody.at``) may be this far from the
#: clearinghouse's clock, either way; beyond it the request is STALE_SUBSCRIBE.
SUBSCRIBE_FRESHNESS = timedelta(minutes=5)
STALE_SUBSCRIBE = "STALE_SUBSCRIBE"
#: Open claims a node may be a party to at once (RESOURCE_EXHAUSTED BUSY beyond).
MAX_PENDING_CLAIMS = 10_000
#: A claim message's body; a delivery relays the whole envelope inside its own body, so
#: this stays far below timebank.envelope.MAX_BODY_BYTES.
MAX_CLAIM_BODY_BYTES = 8 * 1024
MAX_DETAIL_LEN = 200
MAX_RECIPIENT_AGE = 150
#: The most deliveries one read returns, and the most claims one sweep expires.
MAX_DELIVERIES_PER_READ = 1000
EXPIRE_BATCH = 500

#: The origins a moving balance may carry: every one but UNSPECIFIED. (A node takes in
#: only these; one it cannot book would stop its queue.)
_ORIGINS = frozenset(v for v in node_pb2.Origin.values() if v != node_pb2.ORIGIN_UNSPECIFIED)
_KINDS = {
    clearing_pb2.CLAIM_KIND_REDEMPTION: ClaimKind.REDEMPTION,
    clearing_pb2.CLAIM_KIND_MOVE: ClaimKind.MOVE,
}


def _reason(value: clearing_pb2.ClaimReason.ValueType) -> RejectReason | None:
    """The domain reason a message names; None when it names none."""
    if value == clearing_pb2.CLAIM_REASON_UNSPECIFIED:
        return None
    try:
        return RejectReason(clearing_pb2.ClaimReason.Name(value)[len(wire.REASON_PREFIX):])
    except ValueError:
        raise InvalidArgument(f"unknown claim reason {value}", "BAD_REASON") from None


def _small(envelope: Signed, kind: str) -> None:
    if isinstance(envelope, Signed) and len(envelope.body) > MAX_CLAIM_BODY_BYTES:
        raise InvalidArgument(
            f"a {kind!r} body is at most {MAX_CLAIM_BODY_BYTES} bytes, not "
            f"{len(envelope.body)}", "OVERSIZED")


def _deliver(tx: Tx, node_id: str, claim: Claim, relayed: Signed | None) -> int:
    """Queue the unsigned Delivery for ``node_id``: the relayed envelope as received, or
    (``relayed`` None) the claim's expiry. Returns its sequence number."""
    seq = tx.repo.last_delivery_seq(node_id) + 1
    delivery = clearing_pb2.Delivery(seq=seq, recipient_node_id=node_id,
                                     state=wire.wire_state(claim.state))
    if relayed is None:
        delivery.expired_claim_id = claim.claim_id
    else:
        delivery.relayed.ParseFromString(wire.to_bytes(relayed))
    delivery.at.FromDatetime(tx.now.astimezone(UTC))
    tx.repo.insert_delivery(node_id, seq, delivery.SerializeToString(deterministic=True),
                            tx.now)
    return seq


def _check_party(tx: Tx, node_id: str, role: str) -> None:
    admission = tx.repo.admission(node_id)
    if admission is None:
        raise NotFound(f"the {role} {node_id} is not an admitted district", "UNKNOWN_NODE")
    if admission.revoked:
        raise FailedPrecondition(
            f"the {role} {node_id}'s key is revoked; it takes no claims until the bureau "
            "admits a new key", "NODE_REVOKED")


def _proposal_claim(msg: clearing_pb2.ClaimProposal, tx: Tx) -> Claim:
    """The domain claim a proposal asks for, made now (the domain checks its fields)."""
    kind = _KINDS.get(msg.kind)
    if kind is None:
        raise InvalidArgument("a claim is a redemption or a move", "BAD_CLAIM_KIND")
    if not msg.HasField("expires_at"):
        raise InvalidArgument("a claim proposal carries its deadline (expires_at)",
                              "BAD_DEADLINE")
    return Claim(claim_id=msg.claim_id, kind=kind, creditor=msg.creditor_node_id,
                 debtor=msg.debtor_node_id, person_ref=msg.payer_ref, minutes=msg.minutes,
                 created_at=tx.now, expires_at=msg.expires_at.ToDatetime(tzinfo=UTC))


def _check_proposal_extras(msg: clearing_pb2.ClaimProposal, claim: Claim) -> None:
    """The proposal's fields the domain claim does not carry."""
    if msg.recipient_ref:
        check_person_ref(msg.recipient_ref)
    if not 0 <= msg.recipient_age <= MAX_RECIPIENT_AGE:
        raise InvalidArgument(f"an age is 0 to {MAX_RECIPIENT_AGE}", "MALFORMED_AGE")
    if claim.kind is ClaimKind.REDEMPTION:
        if msg.origins:
            raise InvalidArgument("a redemption carries no origins", "MALFORMED_ORIGINS")
        return
    origins = [o.origin for o in msg.origins]
    if any(o not in _ORIGINS for o in origins) or len(set(origins)) != len(origins):
        raise InvalidArgument(
            "a move's origins are each one of individual, group, donated and granted, "
            "at most once", "MALFORMED_ORIGINS")
    if any(o.minutes < 1 for o in msg.origins) or sum(
            o.minutes for o in msg.origins) != claim.minutes:
        raise InvalidArgument(
            f"a move's origins are positive amounts adding up to its {claim.minutes} "
            "minutes", "MALFORMED_ORIGINS")


def _check_limits(claim: Claim, context: ProposalContext, max_pending: int) -> None:
    debtor = context.debtor
    if debtor is None:
        raise InvariantViolation(f"admitted node {claim.debtor} has no position")
    for node_id, open_claims in ((claim.creditor, context.creditor_open_claims),
                                 (claim.debtor, debtor.open_claims)):
        if open_claims >= max_pending:
            raise ResourceExhausted(
                f"district {node_id} is party to {max_pending} open claims, the most "
                "allowed; try again once some are settled", RejectReason.BUSY.value)
    pos.check_limit(debtor.net_minutes - debtor.open_debit_minutes - claim.minutes,
                    debtor.limit_minutes, claim.debtor)


def propose(tx: Tx, envelope: Signed, ring: KeyRing, *,
            max_pending: int = MAX_PENDING_CLAIMS) -> Claim:
    """Record a ``claim.propose`` and queue it for the other party.

    The signer must be the proposer the domain allows (a redemption's creditor, a move's
    debtor); the other party receives the proposal (a redemption's debtor, a move's
    creditor). A move is recorded ACCEPTED at once: its debtor proposes it holding the
    whole balance, so its proposal is its acceptance. INVALID_ARGUMENT: malformed body or
    field, minutes out of range, a claim to oneself, a deadline already past or too far
    (BAD_DEADLINE), an oversized body.
    PERMISSION_DENIED: bad signature, unknown or revoked key, a node proposing for
    another (NOT_YOUR_CLAIM). FAILED_PRECONDITION POLICY_NOT_CURRENT: proposed under a
    policy that is not the city's in force (``policies.check_current``). NOT_FOUND: the
    other party is not admitted (UNKNOWN_NODE), nobody registered the person
    (UNKNOWN_PERSON). FAILED_PRECONDITION: the debtor is not the person's home
    (NOT_HOME_DISTRICT), a party's key is revoked (NODE_REVOKED).
    The person has an open (proposed or accepted) move: FAILED_PRECONDITION
    MOVE_IN_PROGRESS, for a move and for a redemption alike (their balance is in transit).
    RESOURCE_EXHAUSTED: the debtor's net debit limit (LIMIT_REACHED, counting its open
    claims), too many open claims (BUSY). ALREADY_EXISTS: the id was used for another
    body (CLAIM_ID_REUSED).
    """
    _small(envelope, PROPOSE)
    body = verify_node(tx, envelope, PROPOSE, ring)
    msg = wire.parse(clearing_pb2.ClaimProposal, body, PROPOSE)
    recorded = tx.repo.claim(check_claim_id(msg.claim_id))
    if recorded is not None:
        check_actor(recorded.claim, Action.PROPOSE, envelope.signer)
        if wire.from_bytes(recorded.proposal).body == body:
            return recorded.claim  # one claim id, one outcome
        try:
            proposed = _proposal_claim(msg, tx)
        except Refusal:
            proposed = None
        if proposed is not None:
            check_resubmission(recorded.claim, proposed)
        raise AlreadyExists(
            f"claim id {msg.claim_id} was already used for a different proposal; a new "
            "claim needs a new id", "CLAIM_ID_REUSED")
    claim = _proposal_claim(msg, tx)
    check_actor(claim, Action.PROPOSE, envelope.signer)
    policies.check_current(tx, msg.policy_sha256, envelope.signer, "claim proposal")
    _check_proposal_extras(msg, claim)
    other = claim.debtor if envelope.signer == claim.creditor else claim.creditor
    _check_party(tx, other, "debtor" if other == claim.debtor else "creditor")
    context = tx.repo.proposal_context(claim.person_ref, claim.creditor, claim.debtor)
    home = context.home
    if home is None:
        raise NotFound("no district has registered this person; their home must register "
                       "them first", RejectReason.UNKNOWN_PERSON.value)
    if home.home_node_id != claim.debtor:
        raise FailedPrecondition(
            f"district {claim.debtor} is not this person's home; look the person up again",
            RejectReason.NOT_HOME_DISTRICT.value)
    moving = context.open_move
    if moving is not None:
        assert moving.claim.state.open and moving.claim.kind is ClaimKind.MOVE
        raise FailedPrecondition(
            f"this person is moving from district {moving.claim.debtor} to "
            f"{moving.claim.creditor} ({moving.claim.label}, {moving.claim.state.value}); "
            "their hours are in transit, so no other move or redemption can be proposed "
            "until that move is completed, voided, rejected or expired", MOVE_IN_PROGRESS)
    _check_limits(claim, context, max_pending)
    if claim.kind is ClaimKind.MOVE:
        # A move is proposed by its debtor, which holds the whole balance as it proposes:
        # the proposal is also the acceptance (one message less through the city).
        claim = accept(claim, tx.now)
    tx.repo.insert_claim(ClaimRecord(claim, wire.to_bytes(envelope)))
    _deliver(tx, other, claim, envelope)
    return claim


#: The claim messages, by envelope kind: each names the claim it is about.
_MESSAGES: dict[str, type[clearing_pb2.ClaimProposal | clearing_pb2.ClaimDecision
                         | clearing_pb2.ClaimFinish]] = {
    PROPOSE: clearing_pb2.ClaimProposal, DECIDE: clearing_pb2.ClaimDecision,
    FINISH: clearing_pb2.ClaimFinish}


def look_up(tx: Tx, envelopes: Iterable[Signed]) -> None:
    """Read together what these envelopes (a batch) will check, before any is acted on:
    the claims their claim messages are about (``Repo.look_up_claims``), then the people
    those claims and proposals move or pay from, and the people registrations name
    (``Repo.look_up_people``). Each then finds them in memory instead of a round trip or
    two an envelope. Nothing is checked here: an envelope that does not parse, or names
    no valid claim id or person, is left to be refused when it is acted on."""
    ids, people = [], []
    for envelope in envelopes:
        message = _MESSAGES.get(envelope.kind)
        if message is None or len(envelope.body) > MAX_CLAIM_BODY_BYTES:
            if envelope.kind == REGISTER:
                people.append(_registered_ref(envelope.body))
            continue
        try:
            msg = message.FromString(envelope.body)
            ids.append(check_claim_id(msg.claim_id))
        except (DecodeError, Refusal):
            continue
        if isinstance(msg, clearing_pb2.ClaimProposal):
            people.append(msg.payer_ref)
    tx.repo.look_up_claims(ids)
    for claim_id in ids:
        record = tx.repo.claim(claim_id)
        if record is not None:
            people.append(record.claim.person_ref)
    tx.repo.look_up_people(ref for ref in people if ref and len(ref) <= _MAX_REF)


#: A person reference is 64 hex digits (``check_person_ref``); nothing longer is looked up.
_MAX_REF = 64


def _registered_ref(body: bytes) -> str:
    """The person a registration names ("" if it does not parse: refused later)."""
    if len(body) > MAX_CLAIM_BODY_BYTES:
        return ""
    try:
        return str(clearing_pb2.DirectoryRegistration.FromString(body).person_ref)
    except DecodeError:
        return ""


def _recorded(tx: Tx, claim_id: str) -> ClaimRecord:
    record = tx.repo.claim(check_claim_id(claim_id))
    if record is None:
        raise NotFound(f"there is no claim {claim_id}", "UNKNOWN_CLAIM")
    return record


def _same(stored: bytes | None, body: bytes) -> bool:
    return stored is not None and wire.from_bytes(stored).body == body


def decide(tx: Tx, envelope: Signed, ring: KeyRing) -> Claim:
    """The debtor's ``claim.decide``: accept (it holds the minutes) → ACCEPTED, or reject
    with a reason → REJECTED. The creditor receives the decision.

    PERMISSION_DENIED: not the debtor (NOT_YOUR_CLAIM), or the envelope checks.
    NOT_FOUND: no such claim. FAILED_PRECONDITION: already decided (CLAIM_STATE), past
    its deadline (CLAIM_EXPIRED), decided under a policy that is not the city's in force
    (POLICY_NOT_CURRENT). INVALID_ARGUMENT: a rejection without an allowed
    reason, an acceptance with one (BAD_REASON), a detail over 200 characters.
    """
    _small(envelope, DECIDE)
    body = verify_node(tx, envelope, DECIDE, ring)
    msg = wire.parse(clearing_pb2.ClaimDecision, body, DECIDE)
    record = _recorded(tx, msg.claim_id)
    claim = record.claim
    if (claim.kind is ClaimKind.MOVE and msg.accept and claim.state is ClaimState.ACCEPTED
            and envelope.signer == claim.debtor):
        return claim  # accepted when it was proposed; a debtor may still say so
    check_actor(claim, Action.ACCEPT if msg.accept else Action.REJECT, envelope.signer)
    if _same(record.decision, body):
        return claim  # the same decision again
    policies.check_current(tx, msg.policy_sha256, envelope.signer, "claim decision")
    if len(msg.detail) > MAX_DETAIL_LEN:
        raise InvalidArgument(f"a decision's detail is at most {MAX_DETAIL_LEN} characters",
                              "MALFORMED_DETAIL")
    reason = _reason(msg.reason)
    if msg.accept:
        if reason is not None:
            raise InvalidArgument("an acceptance carries no reason", "BAD_REASON")
        after = accept(claim, tx.now)
    else:
        if reason is None:
            raise InvalidArgument("a rejection says why (reason)", "BAD_REASON")
        after = reject(claim, tx.now, reason)
    tx.repo.update_claim(claim, after, decision=wire.to_bytes(envelope))
    _deliver(tx, claim.creditor, after, envelope)
    return after


def finish(tx: Tx, envelope: Signed, ring: KeyRing) -> Claim:
    """The creditor's ``claim.finish``: complete → COMPLETED, or void → VOIDED.

    Completion posts ``posted_minutes`` (0 means all that is held; a redemption may post
    less, a move posts all, per the domain) and moves the running positions: the creditor
    +posted, the debtor −posted; positions still sum to zero. A completed move makes the
    creditor the person's home in the directory; the claim is completed at the log leaf
    ``submit`` appends next, which records this finish. A void's reason defaults to CANCELLED.
    The debtor receives the finish.

    PERMISSION_DENIED: not the creditor (NOT_YOUR_CLAIM), or the envelope checks.
    NOT_FOUND: no such claim. FAILED_PRECONDITION: not accepted (CLAIM_STATE), past its
    deadline (CLAIM_EXPIRED), a move whose debtor is no longer the person's home
    (NOT_HOME_DISTRICT). INVALID_ARGUMENT: posted minutes out of range (MINUTES_OUT_OF_RANGE,
    PARTIAL_MOVE), a reason the action does not take (BAD_REASON).
    """
    _small(envelope, FINISH)
    body = verify_node(tx, envelope, FINISH, ring)
    msg = wire.parse(clearing_pb2.ClaimFinish, body, FINISH)
    record = _recorded(tx, msg.claim_id)
    claim = record.claim
    check_actor(claim, Action.COMPLETE if msg.complete else Action.VOID, envelope.signer)
    if _same(record.finish, body):
        return claim  # the same finish again
    reason = _reason(msg.reason)
    if msg.complete:
        if reason is not None:
            raise InvalidArgument("a completion carries no reason", "BAD_REASON")
        after = complete(claim, tx.now, msg.posted_minutes or None)
    else:
        if msg.posted_minutes:
            raise InvalidArgument("a void posts nothing", "MINUTES_OUT_OF_RANGE")
        after = void(claim, tx.now, reason or RejectReason.CANCELLED)
    received = wire.to_bytes(envelope)
    if (after.state is ClaimState.COMPLETED and after.kind is ClaimKind.MOVE
            and not tx.repo.move_home(after.person_ref, after.debtor, after.creditor,
                                      received, tx.now)):
        # nothing written yet: the refusal leaves the claim as it was
        raise FailedPrecondition(
            f"district {after.debtor} is no longer this person's home; void "
            f"{after.label}", RejectReason.NOT_HOME_DISTRICT.value)
    # the claim, the open totals and (completed) the positions, which must still sum to 0
    completing = log.log_of(tx).size() if after.state is ClaimState.COMPLETED else None
    # (the leaf ``submit`` appends next, which records this completion)
    tx.repo.update_claim(claim, after, finish=received, completed_index=completing)
    if after.state is ClaimState.COMPLETED:
        tx.repo.positions_must_balance(after.label)  # before the transaction commits
    _deliver(tx, claim.debtor, after, envelope)
    return after


def expire_due(tx: Tx, limit: int = EXPIRE_BATCH) -> list[Claim]:
    """Expire up to ``limit`` open claims whose deadline has passed (earliest first),
    telling both parties; returns them. Run it again while it returns ``limit`` claims."""
    if isinstance(limit, bool) or not 1 <= limit <= EXPIRE_BATCH:
        raise InvalidArgument(f"a sweep expires 1 to {EXPIRE_BATCH} claims", "BAD_LIMIT")
    expired = []
    for record in tx.repo.due_claims(tx.now, limit):
        after = expire(record.claim, tx.now)
        tx.repo.update_claim(record.claim, after)
        log.record_expiry(tx, after)
        _deliver(tx, after.creditor, after, None)
        _deliver(tx, after.debtor, after, None)
        expired.append(after)
    return expired


# deliveries ------------------------------------------------------------------------

def _queue_of(tx: Tx, node_id: str) -> int:
    """The node's last acknowledged sequence number (NOT_FOUND if not admitted)."""
    check_node_id("node id", node_id)
    acked = tx.repo.acked_seq(node_id)
    if acked is None:
        raise NotFound(f"node {node_id} is not an admitted district", "UNKNOWN_NODE")
    return acked


def subscription(tx: Tx, envelope: Signed, ring: KeyRing) -> clearing_pb2.SubscribeBody:
    """A node's signed ``subscribe`` request, checked: its own queue (PERMISSION_DENIED
    NOT_YOUR_QUEUE otherwise), and fresh: ``at`` must be set and within
    ``SUBSCRIBE_FRESHNESS`` of the clearinghouse's clock (PERMISSION_DENIED
    STALE_SUBSCRIBE otherwise), so that a captured request cannot be replayed later to
    read the node's deliveries. Within the window a replay is still possible: keep the
    transport private (loopback or TLS)."""
    body = verify_node(tx, envelope, SUBSCRIBE, ring)
    msg = wire.parse(clearing_pb2.SubscribeBody, body, SUBSCRIBE)
    if msg.node_id != envelope.signer:
        raise PermissionDenied(f"node {envelope.signer} may read only its own queue, not "
                               f"{msg.node_id[:16]!r}'s", "NOT_YOUR_QUEUE")
    limit = int(SUBSCRIBE_FRESHNESS.total_seconds() // 60)
    if not msg.HasField("at"):
        raise PermissionDenied(
            f"a subscribe request carries its time (at), within {limit} minutes of the "
            "clearinghouse's clock; sign a new one", STALE_SUBSCRIBE)
    try:
        at = msg.at.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise PermissionDenied("a subscribe request's time (at) is not a valid time",
                               STALE_SUBSCRIBE) from None
    if abs(at - tx.now) > SUBSCRIBE_FRESHNESS:
        raise PermissionDenied(
            f"this subscribe request was made at {at.isoformat(timespec='seconds')}, more "
            f"than {limit} minutes from the clearinghouse's clock "
            f"({tx.now.astimezone(UTC).isoformat(timespec='seconds')}); sign a new one, "
            "and check the node's clock", STALE_SUBSCRIBE)
    _queue_of(tx, msg.node_id)
    return msg


def deliveries_after(tx: Tx, node_id: str, after_seq: int,
                     limit: int = MAX_DELIVERIES_PER_READ) -> list[tuple[int, bytes]]:
    """The node's deliveries with a sequence number above ``after_seq``, in order, as
    (seq, unsigned serialised ``timebank.v1.Delivery``); at most ``limit``."""
    _queue_of(tx, node_id)
    if isinstance(after_seq, bool) or not 0 <= after_seq <= MAX_LOG_NUMBER:
        raise InvalidArgument(f"after_seq is 0 to {MAX_LOG_NUMBER}", "BAD_SEQ")
    if isinstance(limit, bool) or not 1 <= limit <= MAX_DELIVERIES_PER_READ:
        raise InvalidArgument(f"a read returns 1 to {MAX_DELIVERIES_PER_READ} deliveries",
                              "BAD_LIMIT")
    return tx.repo.deliveries_after(node_id, after_seq, limit)


def ack(tx: Tx, node_id: str, seq: int) -> int:
    """The node applied everything up to ``seq``; returns its acknowledged sequence number.

    Acknowledgements only move forward: one at or below the last is a no-op (a repeated
    or late ack). FAILED_PRECONDITION ACK_BEYOND_DELIVERED: ``seq`` was never delivered.
    """
    acked = _queue_of(tx, node_id)
    if isinstance(seq, bool) or not 0 <= seq <= MAX_LOG_NUMBER:
        raise InvalidArgument(f"a sequence number is 0 to {MAX_LOG_NUMBER}", "BAD_SEQ")
    last = tx.repo.last_delivery_seq(node_id)
    if seq > last:
        raise FailedPrecondition(
            f"node {node_id} has deliveries up to {last}; it cannot acknowledge {seq}",
            "ACK_BEYOND_DELIVERED")
    if seq <= acked:
        return acked
    tx.repo.set_acked_seq(node_id, seq)
    return seq


# positions and limits --------------------------------------------------------------

def set_net_debit_limit(tx: Tx, node_id: str, minutes: int) -> None:
    """The bureau sets how far a district may owe, net (0..10^12 minutes). Lowering it
    below what the district already owes refuses its new debts; nothing is undone."""
    check_node_id("node id", node_id)
    pos.check_limit(0, minutes, node_id)  # a zero position never breaks it: checks the value
    if tx.repo.position(node_id) is None:
        raise NotFound(f"node {node_id} is not an admitted district", "UNKNOWN_NODE")
    tx.repo.set_net_debit_limit(node_id, minutes)
    log.record_limit(tx, node_id, minutes)


def position_of(tx: Tx, node_id: str) -> tuple[int, int] | None:
    """(net position, net debit limit) of an admitted district, in minutes."""
    return tx.repo.position(node_id)


def net_debit_limit(tx: Tx, node_id: str) -> int:
    """How far the district may owe, net (0 for a node with no position yet)."""
    position = tx.repo.position(node_id)
    return position[1] if position is not None else 0


def positions(tx: Tx) -> pos.Positions:
    """Net positions and gross bilateral totals of the open settlement period, from the
    completed claims no statement settled; raises InvariantViolation if they disagree
    with the running positions kept per node (closing a period takes its nets out)."""
    computed = pos.positions(pos.flows_of(tx.repo.completed_claims(unsettled=True)))
    stored = tx.repo.net_positions()
    for node_id in set(stored) | set(computed.net):
        if stored.get(node_id, 0) != computed.of(node_id):
            raise InvariantViolation(
                f"district {node_id}: running position {stored.get(node_id, 0)}, completed "
                f"claims give {computed.of(node_id)}")
    return pos.Positions(net={n: stored[n] for n in sorted(stored)}, gross=computed.gross)
