"""This node's side of claims between districts (ADR 0005, 0006).

Where things happen:
- a redemption is *proposed* when a volunteer accepts an order paid with hours kept in
  another district (``propose_redemption``, called by ``orders.accept_order``);
- a redemption is *accepted or rejected* by the person's home in ``_decide_redemption``;
- a move is *started* by the old home (``start_move``) and *taken in* by the new home
  (``_take_in_move``);
- each node posts its leg when it learns the clearinghouse completed the claim: the
  creditor in ``apply_receipt``, the debtor in ``_finished``.

Every change of a claim is made by ``node.domain.claims`` (its transition table, by role:
ADR 0012) and stored by ``_save`` from the state it was read in.

Every proposal and decision states the digest of the policy this node decided under
(``policy_sha256``, the policy in force at the transaction's time): the clearinghouse
refuses one made under a policy that is not the city's in force (POLICY_NOT_CURRENT),
and ``apply_refusal`` shows that on the claim.

Every message to the clearinghouse is written to the outbox in the same transaction as
the change that needs it (unsigned: the link signs it as it sends; Ed25519 signatures
are deterministic, so a resend is byte-identical). Every delivery applies once: its
sequence number goes into the inbox in the same transaction as its effects.

The clearinghouse's signature on a delivery says only that it relays it. What another
district said (a proposal, a decision, a finish) is acted on only once its own signature
verifies under a key the city's certificates give that district, and only if that
district is the party who says it (``apply_delivery``); otherwise the delivery is
refused: recorded, acknowledged, and nothing else changes.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

from node.domain import claims as model
from node.domain.claims import (
    Claim,
    ClaimKind,
    ClaimState,
    Decision,
    OutboxRecord,
    Reason,
    Role,
    arrival,
    decide_redemption,
    new_claim_id,
    payment_lost_reason,
)
from node.domain.ledger import (
    CLEARING,
    CONSUMPTION,
    DONATION_POOL,
    Account,
    AccountKind,
    Entry,
    EntryKind,
    HoldState,
    Origin,
    account_from_code,
    draw,
    merge_postings,
)
from node.domain.orders import (
    OrderState,
    PaymentSource,
    PersonKind,
    held_problem,
    spendable_origins,
)
from node.storage.ledger import AccountRecord
from node.storage.messages import RefusedDeliveryRecord
from node.storage.orders import OrderEvent, OrderRecord
from node.storage.people import PersonRecord
from node.usecases import admissions, checkpoints, consent, settlement
from node.usecases.app import Tx
from node.usecases.people import facts, move_home, note_change
from runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    InvariantViolation,
    NotFound,
    ResourceExhausted,
)
from timebank.admissions import CityAdmissions
from timebank.envelope import EnvelopeError, Signed
from timebank.ids import is_node_id
from timebank.minutes import format_hours
from timebank.v1 import clearing_pb2 as pb
from timebank.v1 import node_pb2

PROPOSE = "claim.propose"
DECIDE = "claim.decide"
FINISH = "claim.finish"
REGISTER = "directory.register"
#: A redemption stays open through the service and the publicity period; a move is
#: taken in at once by a node that is online.
REDEMPTION_WINDOW = timedelta(days=30)
MOVE_WINDOW = timedelta(days=1)
#: Open claims this node keeps at once; beyond, new ones are refused (RESOURCE_EXHAUSTED).
MAX_OPEN_CLAIMS = 10_000
MAX_LIST = 1000
#: The most districts asked again for one order's payment after the one asked said the
#: payer's hours had moved (each asks the city directory first).
MAX_REDIRECTS = 3
#: Backoff for a message the clearinghouse could not take yet.
FIRST_RETRY = timedelta(milliseconds=200)
MAX_RETRY = timedelta(seconds=30)

_ORIGIN_TO_WIRE = {Origin.INDIVIDUAL: node_pb2.ORIGIN_INDIVIDUAL,
                   Origin.GROUP: node_pb2.ORIGIN_GROUP,
                   Origin.DONATED: node_pb2.ORIGIN_DONATED,
                   Origin.GRANTED: node_pb2.ORIGIN_GRANTED}
_ORIGIN_FROM_WIRE = {v: k for k, v in _ORIGIN_TO_WIRE.items()}
_KIND_TO_WIRE = {ClaimKind.REDEMPTION: pb.CLAIM_KIND_REDEMPTION,
                 ClaimKind.MOVE: pb.CLAIM_KIND_MOVE}
_KIND_FROM_WIRE = {v: k for k, v in _KIND_TO_WIRE.items()}
_REASON_PREFIX = "CLAIM_REASON_"


@dataclass(frozen=True, slots=True)
class ClaimView:
    """A claim as an operator sees it on this node."""

    claim_id: str
    kind: ClaimKind
    role: Role
    counterparty: str
    minutes: int
    posted_minutes: int
    state: ClaimState
    reason: str
    detail: str
    order_id: int
    person_id: int
    expires_at: datetime
    updated_at: datetime
    waiting: Waiting | None = None


@dataclass(frozen=True, slots=True)
class Waiting:
    """A message of an open claim the clearinghouse has not taken yet, for a reason that
    may pass (the debtor's limit, too many open claims, the clearinghouse away): why,
    how often it was tried, and when this node tries again."""

    reason: str  # LIMIT_REACHED, BUSY, DEBTOR_OFFLINE …; or a status, e.g. UNAVAILABLE
    detail: str
    attempts: int
    next_attempt_at: datetime


def _view(c: Claim, waiting: OutboxRecord | None = None) -> ClaimView:
    return ClaimView(c.claim_id, c.kind, c.role, c.counterparty, c.minutes, c.posted_minutes,
                     c.state, c.reason, c.detail, c.order_id or 0, c.person_id or 0,
                     c.expires_at, c.updated_at,
                     None if waiting is None or c.state.final else Waiting(
                         waiting.reason or "RETRYING", waiting.detail, waiting.attempts,
                         waiting.next_attempt_at))


def _ts(at: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(at.astimezone(UTC))
    return t


def _wire_reason(reason: Reason | None) -> pb.ClaimReason.ValueType:
    if reason is None:
        return pb.CLAIM_REASON_UNSPECIFIED
    return pb.ClaimReason.Value(_REASON_PREFIX + reason.value)


def _reason_of(value: int) -> str:
    if value == pb.CLAIM_REASON_UNSPECIFIED:
        return ""
    try:
        return pb.ClaimReason.Name(value)[len(_REASON_PREFIX):]  # type: ignore[arg-type]
    except ValueError:
        return "UNKNOWN"


def _enqueue(tx: Tx, kind: str, claim_id: str | None, body: Message) -> None:
    tx.repo.outbox.enqueue(kind, claim_id, body.SerializeToString(deterministic=True), tx.now)


def _save(tx: Tx, before: Claim, after: Claim) -> Claim:
    """Store ``after`` (a change of ``before``, as the domain made it); return it."""
    tx.repo.claims.update(before, after)
    return after


def _stored(tx: Tx, claim_id: str) -> Claim:
    claim = tx.repo.claims.get(claim_id)
    if claim is None:
        raise InvariantViolation(f"claim {claim_id[:36]} is not recorded on this node")
    return claim


def _check_capacity(tx: Tx) -> None:
    open_now = tx.repo.claims.open_count()
    if open_now >= MAX_OPEN_CLAIMS:
        raise ResourceExhausted(f"this node has {open_now} open claims with other districts, "
                                "the most it keeps at once; try again once some settle",
                                "TOO_MANY_OPEN_CLAIMS")


def _post(tx: Tx, kind: EntryKind, parts: list[tuple[Account, int]], memo: str,
          order_id: int = 0, known: PersonRecord | None = None) -> None:
    """Append the entry; ``known``: the person it concerns, already read."""
    postings = merge_postings(parts)
    if not postings:
        return
    person_ids: dict[str, int] = {} if known is None else {known.person_ref: known.id}
    for p in postings:
        if p.account.kind is AccountKind.PERSON and p.account.person_ref not in person_ids:
            owner = tx.repo.people.by_ref(p.account.person_ref or "")
            if owner is None:
                raise InvariantViolation(f"no person holds {p.account.code}")
            person_ids[owner.person_ref] = owner.id
    tx.repo.ledger.append(Entry(kind, postings, tx.now, memo=memo, order_id=order_id),
                          person_ids)


def _order_changed(tx: Tx, order: OrderRecord, after: OrderRecord, detail: str) -> None:
    """Store a change the clearinghouse caused to an order, with its event."""
    problem = held_problem(OrderState(after.state), after.held_minutes, None)
    if problem is not None:
        raise InvariantViolation(f"order {after.id} {problem}")
    tx.repo.orders.update(order, after)
    tx.repo.orders.add_event(OrderEvent(order.id, tx.now, order.state, after.state,
                                        "clearinghouse", detail))


# ------------------------------------------------------------------ directory


def register_home(tx: Tx, person: PersonRecord) -> None:
    """Tell the directory that this node keeps ``person``'s hours (at enrolment)."""
    if person.visitor:
        raise InvariantViolation("only a home node registers a person")
    body = pb.DirectoryRegistration(person_ref=person.person_ref, home_node_id=tx.node.node_id)
    body.at.CopyFrom(_ts(tx.now))
    _enqueue(tx, REGISTER, None, body)


# ------------------------------------------------------------------ redemption (creditor)


def propose_redemption(tx: Tx, order: OrderRecord, payer: PersonRecord,
                       recipient: PersonRecord) -> str:
    """Ask the payer's home district to hold the order's planned minutes; return the
    claim id. The order cannot start (check-in) until the home district accepts."""
    if payer.home_node_id is None or payer.home_node_id == tx.node.node_id:
        raise InvariantViolation("a redemption claim is for hours kept in another district")
    admissions.require_admitted(tx, payer.home_node_id,
                                f"a redemption of person {payer.id}'s hours kept there")
    _check_capacity(tx)
    claim = model.redemption_proposed(
        new_claim_id(int(tx.now.timestamp() * 1000)), payer.home_node_id, payer.person_ref,
        recipient.person_ref, order.planned_minutes, order.id, payer.id, tx.now,
        tx.now + REDEMPTION_WINDOW)
    recipient_facts = facts(tx, recipient)
    body = pb.ClaimProposal(
        claim_id=claim.claim_id, kind=pb.CLAIM_KIND_REDEMPTION,
        creditor_node_id=tx.node.node_id, debtor_node_id=claim.counterparty,
        payer_ref=claim.person_ref, recipient_ref=claim.recipient_ref,
        recipient_age=recipient_facts.age, recipient_priority=recipient.priority,
        minutes=claim.minutes, policy_sha256=tx.policy.sha256)
    body.created_at.CopyFrom(_ts(claim.created_at))
    body.expires_at.CopyFrom(_ts(claim.expires_at))
    tx.repo.claims.add(claim)
    _enqueue(tx, PROPOSE, claim.claim_id, body)
    return claim.claim_id


def finish_redemption(tx: Tx, order: OrderRecord, recorded_minutes: int) -> None:
    """At recording: complete the order's claim for min(recorded, held), or void it when
    nothing is to be paid. The charge is posted when the clearinghouse confirms."""
    claim = _stored(tx, order.claim_id or "")
    if claim.state is not ClaimState.ACCEPTED:
        return  # rejected or expired while the service went on: recorded unpaid
    posted = min(recorded_minutes, claim.minutes)
    body = pb.ClaimFinish(claim_id=claim.claim_id, complete=posted > 0,
                          posted_minutes=posted)
    if posted == 0:
        body.reason = pb.CLAIM_REASON_CANCELLED
    body.at.CopyFrom(_ts(tx.now))
    _save(tx, claim, model.finish(claim, tx.now, posted))
    _enqueue(tx, FINISH, claim.claim_id, body)


def void_redemption(tx: Tx, order: OrderRecord) -> None:
    """The order was cancelled: withdraw its claim, so the home district releases the hold."""
    claim = tx.repo.claims.get(order.claim_id or "")
    if claim is None or claim.state not in (ClaimState.PROPOSED, ClaimState.ACCEPTED):
        return
    if claim.state is ClaimState.PROPOSED:
        # the home district has not answered; its hold (if it accepts) ends when the
        # claim expires, or at once when the acceptance arrives (``_decided``)
        _save(tx, claim, model.annotate(claim, tx.now, "order cancelled before acceptance"))
        return
    body = pb.ClaimFinish(claim_id=claim.claim_id, complete=False,
                          reason=pb.CLAIM_REASON_CANCELLED)
    body.at.CopyFrom(_ts(tx.now))
    _save(tx, claim, model.finish(claim, tx.now, 0))
    _enqueue(tx, FINISH, claim.claim_id, body)


# ------------------------------------------------------------------ moves (debtor)


def start_move(tx: Tx, person_id: int, to_node_id: str) -> ClaimView:
    """The old home sends a person's whole balance, origins and all, to their new home.

    Everything the person has is held at once; the new home takes it in and the
    clearinghouse then names it the person's home. However large the balance, the city's
    cap allowed it, so the claim carries it (the new home applies its own cap)."""
    person = tx.repo.people.get(person_id)
    if not is_node_id(to_node_id):
        raise InvalidArgument("the new home is a district's 6-digit node id, e.g. 320113",
                              "MALFORMED_NODE_ID")
    if to_node_id == tx.node.node_id:
        raise InvalidArgument("the person already lives in this district", "MOVE_TO_SELF")
    if person.visitor:
        raise FailedPrecondition(f"person {person.id}'s hours are kept in district "
                                 f"{person.home_node_id}; the move starts there",
                                 "NOT_HOME_DISTRICT")
    admissions.require_admitted(tx, to_node_id, "a move there")
    if tx.repo.claims.open_count_of(person.person_ref):
        raise FailedPrecondition(f"person {person.id} has a claim in progress; try again "
                                 "once it is settled", "CLAIM_IN_PROGRESS")
    accounts = [a for a in tx.repo.ledger.accounts_of(person.id) if a.balance > 0]
    held = sum(a.held for a in accounts)
    if held:
        raise FailedPrecondition(
            f"person {person.id} has {format_hours(held)} held for accepted services; "
            "record or cancel them before moving", "HOURS_HELD")
    if not accounts:
        raise FailedPrecondition(f"person {person.id} has no stored hours to move",
                                 "NOTHING_TO_MOVE")
    _check_capacity(tx)
    claim = model.move_started(
        new_claim_id(int(tx.now.timestamp() * 1000)), to_node_id, person.person_ref,
        [(Origin(a.origin or ""), a.balance) for a in accounts], person.id, tx.now,
        tx.now + MOVE_WINDOW, person.priority)
    # The person's priority status travels with the balance, in the signed proposal: the
    # new home takes both on at completion (a new home that re-assessed the person from
    # scratch could leave a priority elder without the city's grant for a while).
    body = pb.ClaimProposal(
        claim_id=claim.claim_id, kind=pb.CLAIM_KIND_MOVE, creditor_node_id=to_node_id,
        debtor_node_id=tx.node.node_id, payer_ref=claim.person_ref, minutes=claim.minutes,
        recipient_priority=claim.person_priority,
        origins=[pb.OriginMinutes(origin=_ORIGIN_TO_WIRE[o], minutes=m)
                 for o, m in claim.origins], policy_sha256=tx.policy.sha256)
    body.created_at.CopyFrom(_ts(claim.created_at))
    body.expires_at.CopyFrom(_ts(claim.expires_at))
    tx.repo.claims.add(claim)
    for a in accounts:
        tx.repo.holds.hold_for_claim(claim.claim_id, a.id, a.balance, tx.now)
    _enqueue(tx, PROPOSE, claim.claim_id, body)  # held as proposed: the proposal accepts it
    return _view(claim)


# ------------------------------------------------------------------ deliveries


def last_applied_seq(tx: Tx) -> int:
    return tx.repo.inbox.last_seq()


@dataclass(frozen=True, slots=True)
class Applied:
    """What became of one delivery: applied now (``new``), applied before (not ``new``),
    or ``refused``, which also counts as applied: it is in the inbox, and the
    clearinghouse may be told it was taken, so it is never offered again."""

    seq: int
    new: bool
    refused: RefusedDeliveryRecord | None = None
    kind: str = ""  # of the message delivered ("expiry" for an expired claim)
    claim_id: str = ""  # the claim it concerns (for the log)


class _NotTheParty(Exception):
    """A relayed message signed by a district that is not the claim's party who says it."""


#: What each relayed kind's body is, to read the claim id of one refused.
_BODIES: dict[str, type[pb.ClaimProposal | pb.ClaimDecision | pb.ClaimFinish]] = {
    PROPOSE: pb.ClaimProposal, DECIDE: pb.ClaimDecision, FINISH: pb.ClaimFinish}


def apply_delivery(tx: Tx, delivery: pb.Delivery, city: CityAdmissions) -> Applied:
    """Apply one delivery from the clearinghouse, once.

    A relayed envelope is acted on only if ``city`` (the city's acts as this node
    verified them) gives its signer the key it is signed with, unrevoked, and the
    signature verifies, and only if the signer is the party who says such a thing about
    the claim. Otherwise the delivery is refused: it goes into the inbox with why, and
    nothing else changes. Deliveries come in sequence; a gap means something was lost
    and is a bug."""
    if delivery.recipient_node_id != tx.node.node_id:
        raise InvariantViolation(f"delivery {delivery.seq} is for node "
                                 f"{delivery.recipient_node_id}")
    last = tx.repo.inbox.last_seq()
    if delivery.seq <= last:
        return Applied(delivery.seq, False)
    if delivery.seq != last + 1:
        raise InvariantViolation(f"delivery {delivery.seq} arrived after {last}: a gap")
    if delivery.expired_claim_id:
        claim_id, kind = delivery.expired_claim_id, "expiry"
        _expired(tx, claim_id)
    else:
        relayed = delivery.relayed
        kind = relayed.kind
        try:
            body = city.verify(Signed(relayed.kind, relayed.body, relayed.signer,
                                      relayed.key_id, relayed.signature))
        except EnvelopeError as e:
            return _refuse(tx, delivery, e.reason.value, e.message)
        try:
            claim_id = _apply_relayed(tx, kind, body, delivery.state, relayed.signer)
        except _NotTheParty as e:
            return _refuse(tx, delivery, "NOT_THE_PARTY", str(e))
    tx.repo.inbox.add(delivery.seq, kind[:32], claim_id[:36], tx.now)
    return Applied(delivery.seq, True, kind=kind[:32], claim_id=claim_id[:36])


def _refuse(tx: Tx, delivery: pb.Delivery, reason: str, detail: str) -> Applied:
    """Record a delivery refused; the claim id is what its (untrusted) body says."""
    relayed = delivery.relayed
    claim_id = ""
    body_type = _BODIES.get(relayed.kind)
    if body_type is not None:
        with suppress(DecodeError):
            claim_id = body_type.FromString(relayed.body).claim_id
    refused = RefusedDeliveryRecord(
        delivery.seq, relayed.kind[:32], relayed.signer[:16], relayed.key_id[:16],
        claim_id[:36] if claim_id.isascii() and claim_id.isprintable() else "",
        reason, detail, tx.now)
    tx.repo.inbox.refuse(refused)
    return Applied(delivery.seq, True, refused)


def _parse(message_type: type[Message], body: bytes) -> Message:
    try:
        return message_type.FromString(body)
    except DecodeError:
        raise InvariantViolation(f"a relayed body is not a {message_type.__name__}") from None


def _party(signer: str, expected: str, what: str) -> None:
    """Refuse a relayed message unless ``expected`` (its party) signed it."""
    if signer != expected:
        raise _NotTheParty(f"{what} is said by district {expected}, but {signer} signed it")


def _apply_relayed(tx: Tx, kind: str, body: bytes, state: int, signer: str) -> str:
    """Act on a relayed message whose signature verified (by ``signer``). Whose word each
    is (checked before anything is written): a move's proposal, its debtor's; a
    redemption's, its creditor's; a decision, the claim's debtor's; a finish, its
    creditor's."""
    if kind == PROPOSE:
        proposal = _parse(pb.ClaimProposal, body)
        assert isinstance(proposal, pb.ClaimProposal)
        proposer = (proposal.debtor_node_id if proposal.kind == pb.CLAIM_KIND_MOVE
                    else proposal.creditor_node_id)
        _party(signer, proposer, f"the proposal of claim {proposal.claim_id[:36]}")
        _proposed(tx, proposal, state)
        return proposal.claim_id
    if kind == DECIDE:
        decision = _parse(pb.ClaimDecision, body)
        assert isinstance(decision, pb.ClaimDecision)
        _decided(tx, decision, signer)
        return decision.claim_id
    if kind == FINISH:
        finish = _parse(pb.ClaimFinish, body)
        assert isinstance(finish, pb.ClaimFinish)
        _finished(tx, finish, signer)
        return finish.claim_id
    raise InvariantViolation(f"the clearinghouse relayed a {kind!r} message")


def _proposed(tx: Tx, msg: pb.ClaimProposal, state: int) -> None:
    kind = _KIND_FROM_WIRE.get(msg.kind)
    if kind is None:
        raise InvariantViolation("the clearinghouse relayed a claim of no kind")
    if tx.repo.claims.get(msg.claim_id) is not None:
        raise InvariantViolation(f"claim {msg.claim_id} was proposed twice")
    expires = msg.expires_at.ToDatetime(tzinfo=UTC)
    if kind is ClaimKind.MOVE:
        if msg.creditor_node_id != tx.node.node_id:
            raise InvariantViolation("a move was relayed to a node that is not its new home")
        origins = []
        for o in msg.origins:
            origin = _ORIGIN_FROM_WIRE.get(o.origin)
            if origin is None:
                raise InvariantViolation(f"a relayed move carries hours of no origin ({o.origin})")
            origins.append((origin, o.minutes))
        person = tx.repo.people.by_ref(msg.payer_ref)
        # Its debtor accepted it as it proposed it. Relayed PROPOSED, it waits for a
        # separate acceptance (``_decided``), as the protocol had it before.
        claim = model.move_relayed(
            msg.claim_id, msg.debtor_node_id, msg.payer_ref, msg.minutes, origins,
            None if person is None else person.id, state == pb.CLAIM_STATE_ACCEPTED,
            tx.now, expires, msg.recipient_priority)
        tx.repo.claims.add(claim)
        if claim.state is ClaimState.ACCEPTED:
            _take_in_move(tx, claim)
        return
    if msg.debtor_node_id != tx.node.node_id:
        raise InvariantViolation("a redemption was relayed to a node that is not its debtor")
    _decide_redemption(tx, msg, expires)


def _decide_redemption(tx: Tx, msg: pb.ClaimProposal, expires: datetime) -> None:
    """Where a redemption is accepted: the payer's own rules at home, then the hold."""
    payer = tx.repo.people.by_ref(msg.payer_ref)
    own = msg.recipient_ref in ("", msg.payer_ref)
    found_buckets: list[tuple[AccountRecord, int]] = []
    if payer is not None and payer.visitor:
        decision = Decision(Reason.NOT_HOME_DISTRICT,
                            f"this person's hours are kept in {payer.home_node_id}")
    else:
        relation = None
        if payer is not None and not own:
            other = tx.repo.people.by_ref(msg.recipient_ref)
            if other is not None:
                family = sorted(r for r in tx.repo.people.relations(payer.id, other.id)
                                if r.is_family)
                allowed = [r for r in family if r in tx.policy.relative_kinds]
                relation = next(iter(allowed or family), None)
        agreed = None
        if payer is not None and not own:
            agreed = consent.cover(tx, payer, msg.recipient_ref, msg.minutes)
        if payer is not None:
            source = PaymentSource.OWN if own else PaymentSource.RELATIVE
            for origin in spendable_origins(source, PersonKind(payer.kind)):
                record = tx.repo.ledger.account(Account.of_person(payer.person_ref, origin).code)
                if record is not None and record.available > 0:
                    found_buckets.append((record, record.available))
        decision = decide_redemption(
            tx.policy, None if payer is None else facts(tx, payer), own, msg.recipient_age,
            msg.recipient_priority, relation, sum(m for _, m in found_buckets), msg.minutes,
            agreed)
    claim = model.redemption_decided(
        msg.claim_id, msg.creditor_node_id, msg.payer_ref, msg.recipient_ref, msg.minutes,
        None if payer is None else payer.id, decision, tx.now, expires)
    tx.repo.claims.add(claim)
    if decision.accept:
        by_code = {r.code: r for r, _ in found_buckets}
        for account, minutes in draw(((account_from_code(r.code), m)
                                      for r, m in found_buckets), msg.minutes):
            tx.repo.holds.hold_for_claim(claim.claim_id, by_code[account.code].id, minutes,
                                         tx.now)
        if agreed is not None and agreed.consent is not None:
            # with the hold, once: the delivery is applied once (the inbox), in this
            # transaction
            consent.spend(tx, agreed.consent, msg.minutes, claim_id=claim.claim_id)
    body = pb.ClaimDecision(claim_id=msg.claim_id, accept=decision.accept,
                            reason=_wire_reason(decision.reason), detail=decision.detail,
                            policy_sha256=tx.policy.sha256)
    body.at.CopyFrom(_ts(tx.now))
    _enqueue(tx, DECIDE, msg.claim_id, body)


def _decided(tx: Tx, msg: pb.ClaimDecision, signer: str) -> None:
    claim = tx.repo.claims.get(msg.claim_id)
    if claim is None or claim.role is not Role.CREDITOR:
        raise InvariantViolation(f"a decision on claim {msg.claim_id} this node did not make")
    _party(signer, claim.counterparty, f"the decision on claim {claim.claim_id}")
    if claim.state is not ClaimState.PROPOSED:
        return  # already settled here (e.g. refused locally, then expired)
    if not msg.accept:
        claim = _save(tx, claim, model.reject(claim, tx.now, _reason_of(msg.reason),
                                              msg.detail[:200]))
        if claim.order_id:
            _payment_lost(tx, claim)
        return
    claim = _save(tx, claim, model.accept(claim, tx.now))
    if claim.kind is ClaimKind.MOVE:
        _take_in_move(tx, claim)
        return
    assert claim.order_id is not None
    order = tx.repo.orders.get(claim.order_id)
    if order.state == OrderState.CANCELLED:
        void_redemption(tx, order)  # cancelled while the answer was on its way
        return
    _order_changed(tx, order, replace(order, held_minutes=claim.minutes),
                   f"{format_hours(claim.minutes)} held by district {claim.counterparty}")


def _take_in_move(tx: Tx, claim: Claim) -> None:
    """The new home completes a move of someone enrolled here; voids it otherwise."""
    person = tx.repo.people.by_ref(claim.person_ref)
    body = pb.ClaimFinish(claim_id=claim.claim_id, complete=person is not None)
    if person is None:
        body.reason = pb.CLAIM_REASON_POLICY
        after = model.finish(claim, tx.now, 0, detail="the person is not enrolled here; "
                             "enrol them as a visitor first")
    else:
        after = model.finish(claim, tx.now, claim.minutes, person_id=person.id)
    body.at.CopyFrom(_ts(tx.now))
    _save(tx, claim, after)
    _enqueue(tx, FINISH, claim.claim_id, body)


def _payment_lost(tx: Tx, claim: Claim) -> None:
    """A redemption was rejected or expired: an order not yet started is cancelled, saying
    why; one already under way is kept and will be recorded unpaid (the service
    happened). One exception: a district that says it no longer keeps the payer's hours
    (NOT_HOME_DISTRICT: they moved) leaves the order waiting while the link asks the city
    directory where the hours are now (``awaiting_home``, ``orders.redirect_payment``)."""
    assert claim.order_id is not None
    order = tx.repo.orders.get(claim.order_id)
    if order.claim_id != claim.claim_id:
        return  # the order is paid through a later claim now
    if (order.state == OrderState.ACCEPTED and claim.state is ClaimState.REJECTED
            and claim.reason == Reason.NOT_HOME_DISTRICT and tx.node.federated
            and tx.repo.orders.claims_of(order.id) <= MAX_REDIRECTS):
        tx.repo.orders.add_event(OrderEvent(
            order.id, tx.now, order.state, order.state, "clearinghouse",
            f"district {claim.counterparty} no longer keeps the payer's hours; asking the "
            "city directory where they are now"))
        return
    why = payment_lost_reason(claim.reason, claim.counterparty, claim.state.value,
                              claim.detail[:200])
    cancel_on_payment_lost(tx, order, why)


def cancel_on_payment_lost(tx: Tx, order: OrderRecord, why: str) -> None:
    """The order cannot be paid as planned: cancel it if it has not started, saying why;
    otherwise keep it, to be recorded unpaid."""
    if order.state in (OrderState.REQUESTED, OrderState.ACCEPTED):
        _order_changed(tx, order, replace(order, state=OrderState.CANCELLED.value,
                                          cancelled_at=tx.now, held_minutes=0,
                                          cancel_reason=why), why)
    elif not OrderState(order.state).final:
        _order_changed(tx, order, replace(order, held_minutes=0),
                       why + "; it will be recorded unpaid")


def _finished(tx: Tx, msg: pb.ClaimFinish, signer: str) -> None:
    """The debtor learns the creditor's complete or void: post its leg, or release."""
    claim = tx.repo.claims.get(msg.claim_id)
    if claim is None or claim.role is not Role.DEBTOR:
        raise InvariantViolation(f"a finish of claim {msg.claim_id} this node does not owe")
    _party(signer, claim.counterparty, f"the finish of claim {claim.claim_id}")
    holds = tx.repo.holds.of_claim(claim.claim_id)
    if not msg.complete:
        voided = model.void(claim, tx.now, _reason_of(msg.reason) or Reason.CANCELLED.value)
        tx.repo.holds.close(holds, HoldState.RELEASED, tx.now)
        _save(tx, claim, voided)
        return
    done = model.complete(claim, tx.now, msg.posted_minutes or claim.minutes)
    posted = done.posted_minutes
    accounts = tx.repo.ledger.accounts_by_ids([h.account_id for h in holds])
    parts: list[tuple[Account, int]] = []
    left = posted
    for hold in holds:
        take = min(left, hold.minutes)
        left -= take
        parts.append((account_from_code(accounts[hold.account_id].code), -take))
    if left:
        raise InvariantViolation(f"claim {claim.claim_id}'s holds cover less than it posts")
    parts.append((CLEARING, posted))
    tx.repo.holds.close(holds, HoldState.POSTED, tx.now)
    what = "moved to" if claim.kind is ClaimKind.MOVE else "spent in"
    use = tx.repo.consents.use_of(claim_id=claim.claim_id)
    _post(tx, EntryKind.CLAIM, parts, f"claim {claim.claim_id}: {what} {claim.counterparty}"
          + ("" if use is None else f" (consent {use.consent_id})"))
    _save(tx, claim, done)
    if claim.kind is ClaimKind.MOVE and claim.person_id:
        move_home(tx, tx.repo.people.get(claim.person_id), claim.counterparty, "clearinghouse",
                  f"moved with {format_hours(posted)} (claim {claim.claim_id})")


def _expired(tx: Tx, claim_id: str) -> None:
    claim = tx.repo.claims.get(claim_id)
    if claim is None:
        raise InvariantViolation(f"the expiry of claim {claim_id}, unknown here")
    if claim.state.final:
        return  # refused here already (the clearinghouse took nothing) — never expected
    tx.repo.holds.close(tx.repo.holds.of_claim(claim.claim_id), HoldState.RELEASED, tx.now)
    claim = _save(tx, claim, model.expire(claim, tx.now))
    if claim.order_id:
        _payment_lost(tx, claim)


# ------------------------------------------------------------------ receipts


def outbox_due(tx: Tx, limit: int) -> list[OutboxRecord]:
    return tx.repo.outbox.due(tx.now, limit)


def apply_receipt(tx: Tx, message_id: int, state: int, reason: int, *,
                  sent: OutboxRecord | None = None) -> None:
    """The clearinghouse took a message (``state``: the claim's state after it). For this
    node's own complete, this is where the creditor learns it is done and posts its leg.
    ``sent``: the outbox row as the sender read it (its kind and claim never change), so
    that it is not read again."""
    message = sent if sent is not None else tx.repo.outbox.get(message_id)
    if message.id != message_id:
        raise InvariantViolation(f"a receipt for message {message_id} given message {message.id}")
    if not tx.repo.outbox.done(message_id, "receipt", pb.ClaimState.Name(state), tx.now):  # type: ignore[arg-type]
        return
    if message.kind != FINISH or message.claim_id is None:
        return
    claim = tx.repo.claims.get(message.claim_id)
    if claim is None or claim.state is not ClaimState.FINISHING:
        return
    if state == pb.CLAIM_STATE_COMPLETED:
        _creditor_posts(tx, claim)
    elif state == pb.CLAIM_STATE_VOIDED:
        _save(tx, claim, model.void(claim, tx.now,
                                    _reason_of(reason) or Reason.CANCELLED.value))
    elif state == pb.CLAIM_STATE_EXPIRED:
        pass  # the expiry delivery settles it


def _creditor_posts(tx: Tx, claim: Claim) -> None:
    posted, detail = claim.posted_minutes, claim.detail
    if claim.kind is ClaimKind.REDEMPTION:
        assert claim.order_id is not None
        _post(tx, EntryKind.CLAIM, [(CLEARING, -posted), (CONSUMPTION, posted)],
              f"claim {claim.claim_id}: order {claim.order_id} paid by {claim.counterparty}",
              order_id=claim.order_id)
        order = tx.repo.orders.get(claim.order_id)
        _order_changed(tx, order, replace(order, charged_minutes=posted),
                       f"{format_hours(posted)} paid by district {claim.counterparty}")
    else:
        person = tx.repo.people.by_ref(claim.person_ref)
        if person is None:
            raise InvariantViolation(f"claim {claim.claim_id} moved a person not enrolled")
        already = sum(a.balance for a in tx.repo.ledger.accounts_of(person.id))
        split = arrival(claim.origins, already, tx.policy.cap_minutes)
        if split.total != posted:
            raise InvariantViolation(f"claim {claim.claim_id}'s origins do not add up")
        parts: list[tuple[Account, int]] = [(CLEARING, -posted)]
        parts += [(Account.of_person(person.person_ref, o), m) for o, m in split.banked]
        parts.append((DONATION_POOL, split.to_pool))
        _post(tx, EntryKind.CLAIM, parts,
              f"claim {claim.claim_id}: moved here from {claim.counterparty}", known=person)
        move_home(tx, person, None, "clearinghouse",
                  f"moved here from district {claim.counterparty} with "
                  f"{format_hours(posted)} (claim {claim.claim_id})")
        if person.priority != claim.person_priority:
            _take_priority(tx, person, claim)
        if split.to_pool:
            detail = (f"{format_hours(split.to_pool)} over the stored-hours cap went to the "
                      "donation pool")
    _save(tx, claim, model.complete(claim, tx.now, posted, detail))


def _take_priority(tx: Tx, person: PersonRecord, claim: Claim) -> None:
    """A move completed here: the person is a priority elder (重点老人) here exactly when
    the old home said so in its signed proposal, as it assessed them up to the move. A
    group is never one, whatever a proposal says (refusing here would stop every later
    delivery: the move itself is settled already)."""
    if person.kind != PersonKind.INDIVIDUAL.value:
        return
    now = tx.repo.people.get(person.id)
    tx.repo.people.update(now, replace(now, priority=claim.person_priority))
    flag = {True: "yes", False: "no"}
    note_change(tx, person.id, "clearinghouse", "update",
                f"priority elder (重点老人): {flag[person.priority]} → "
                f"{flag[claim.person_priority]}, as district {claim.counterparty} kept it "
                f"(claim {claim.claim_id})")


def apply_refusal(tx: Tx, message_id: int, status: str, reason: str, message: str) -> None:
    """The clearinghouse refused a message for good. A refused proposal was not recorded
    there at all, so this node closes its side now; any other refusal is settled later
    by the clearinghouse's expiry."""
    found = tx.repo.outbox.get(message_id)
    if not tx.repo.outbox.done(message_id, "refused", f"{status} {reason}: {message}", tx.now):
        return
    if found.kind == DECIDE and found.claim_id is not None:
        _decision_refused(tx, found.claim_id, reason, message)
        return
    if found.kind == checkpoints.CHECKPOINT:
        checkpoints.refused(tx, found.envelope)
        return
    if found.kind in settlement.ANSWER_KINDS:
        settlement.answer_refused(tx, message_id, reason, message)
        return
    if found.kind != PROPOSE or found.claim_id is None:
        return
    claim = tx.repo.claims.get(found.claim_id)
    if claim is None or not model.may_become(claim, ClaimState.REJECTED):
        # final already, or decided since: the proposal was taken after all, and the
        # clearinghouse's deliveries settle it
        return
    # the clearinghouse's own reason (e.g. MOVE_IN_PROGRESS, NOT_HOME_DISTRICT) says most
    code = reason[:32] if reason.isascii() and reason.isupper() else Reason.POLICY.value
    tx.repo.holds.close(tx.repo.holds.of_claim(claim.claim_id), HoldState.RELEASED, tx.now)
    claim = _save(tx, claim, model.reject(claim, tx.now, code, message[:200]))
    if claim.order_id:
        _payment_lost(tx, claim)


def _decision_refused(tx: Tx, claim_id: str, reason: str, message: str) -> None:
    """The clearinghouse refused this node's decision (e.g. POLICY_NOT_CURRENT): the
    claim stays proposed there and expires at its deadline, which releases any hold
    here. Until then the claim says why, for the operator."""
    claim = tx.repo.claims.get(claim_id)
    if claim is None or claim.state.final:
        return
    note = f"the clearinghouse refused this node's decision: {reason[:32]}: {message}"
    _save(tx, claim, model.annotate(claim, tx.now, note[:model.MAX_DETAIL_CHARS]))


def retry_later(tx: Tx, message_id: int, detail: str, reason: str = "") -> None:
    """A temporary failure: back off exponentially; a proposal the clearinghouse still
    cannot take at its deadline is given up here (it was never recorded there).
    ``reason``: the clearinghouse's stable reason (LIMIT_REACHED, BUSY …) or the call's
    status (UNAVAILABLE …), kept so an operator sees why the claim waits."""
    found = tx.repo.outbox.get(message_id)
    if found.done_at is not None:
        return
    if found.kind == PROPOSE and found.claim_id is not None:
        claim = tx.repo.claims.get(found.claim_id)
        if claim is not None and tx.now >= claim.expires_at:
            apply_refusal(tx, message_id, "DEADLINE_EXCEEDED", Reason.EXPIRED.value,
                          f"not taken before its deadline: {detail}")
            return
    delay = min(MAX_RETRY, FIRST_RETRY * (2 ** min(found.attempts, 10)))
    code = reason if reason.isascii() and reason.replace("_", "").isalnum() else ""
    tx.repo.outbox.retry(message_id, tx.now + delay, detail, code.upper()[:32])


# ------------------------------------------------------------------ reads


def get_claim(tx: Tx, claim_id: str) -> ClaimView:
    found = tx.repo.claims.get(claim_id)
    if found is None:
        raise NotFound(f"this node has no claim {claim_id}", "UNKNOWN_CLAIM")
    return _view(found, tx.repo.outbox.waiting([claim_id]).get(claim_id))


def list_claims(tx: Tx, state: ClaimState | None, after: str, limit: int) -> list[ClaimView]:
    if not 1 <= limit <= MAX_LIST:
        raise InvalidArgument(f"list 1 to {MAX_LIST} claims at a time")
    found = tx.repo.claims.list(state, after, limit)
    waiting = tx.repo.outbox.waiting([c.claim_id for c in found if c.state.open])
    return [_view(c, waiting.get(c.claim_id)) for c in found]


@dataclass(frozen=True, slots=True)
class ClearingView:
    """This node's position toward the rest of the city, as its own ledger says."""

    net_minutes: int  # owed to this district (+) or by it (-): minus the clearing balance
    open_claims: int
    unsent_messages: int
    last_delivery: int
    awaiting_home: int = 0  # orders whose payer's home the directory is being asked for


def clearing_view(tx: Tx) -> ClearingView:
    record = tx.repo.ledger.account(CLEARING.code)
    return ClearingView(-(record.balance if record else 0),
                        tx.repo.claims.open_count(),
                        tx.repo.outbox.pending(), tx.repo.inbox.last_seq(),
                        tx.repo.orders.awaiting_home_count())
