"""This node's side of claims between districts (ADR 0005, 0006).

Where things happen:
- a redemption is *proposed* when a volunteer accepts an order paid with hours kept in
  another district (``propose_redemption``, called by ``orders.accept_order``);
- a redemption is *accepted or rejected* by the person's home in ``_decide_redemption``;
- a move is *started* by the old home (``start_move``) and *taken in* by the new home
  (``_take_in_move``);
- each node posts its leg when it learns the clearinghouse completed the claim: the
  creditor in ``apply_receipt``, the debtor in ``_finished``.

Every message to the clearinghouse is written to the outbox in the same transaction as
the change that needs it (unsigned: the link signs it as it sends; Ed25519 signatures
are deterministic, so a resend is byte-identical). Every delivery applies once: its
sequence number goes into the inbox in the same transaction as its effects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

from node.domain.claims import (
    ClaimKind,
    ClaimState,
    Decision,
    Reason,
    Role,
    arrival,
    decide_redemption,
    new_claim_id,
)
from node.domain.ledger import (
    CLEARING,
    CONSUMPTION,
    DONATION_POOL,
    Account,
    AccountKind,
    Entry,
    EntryKind,
    Origin,
    draw,
    merge_postings,
)
from node.domain.orders import OrderState, PaymentSource, PersonKind, spendable_origins
from node.storage.repo import (
    AccountRecord,
    ClaimRecord,
    OrderRecord,
    OutboxRecord,
    PersonRecord,
    account_from_code,
)
from node.usecases.app import Tx
from node.usecases.people import facts
from runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    InvariantViolation,
    NotFound,
    ResourceExhausted,
)
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


def _view(c: ClaimRecord) -> ClaimView:
    return ClaimView(c.claim_id, ClaimKind(c.kind), Role(c.role), c.counterparty, c.minutes,
                     c.posted_minutes, ClaimState(c.state), c.reason, c.detail,
                     c.order_id or 0, c.person_id or 0, c.expires_at, c.updated_at)


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
    tx.repo.enqueue(kind, claim_id, body.SerializeToString(deterministic=True), tx.now)


def _set(tx: Tx, claim: ClaimRecord, state: ClaimState, **values: Any) -> ClaimRecord:
    """Move the claim to ``state`` (the row must still be in ``claim``'s); return the
    record as now stored, without reading it back."""
    tx.repo.update_claim(claim.claim_id, claim.state, state=state.value, updated_at=tx.now,
                         **values)
    return replace(claim, state=state.value, updated_at=tx.now, **values)


def _check_capacity(tx: Tx) -> None:
    open_now = tx.repo.open_claim_total()
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
            owner = tx.repo.person_by_ref(p.account.person_ref or "")
            if owner is None:
                raise InvariantViolation(f"no person holds {p.account.code}")
            person_ids[owner.person_ref] = owner.id
    tx.repo.append(Entry(kind, postings, tx.now, memo=memo, order_id=order_id), person_ids)


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
    _check_capacity(tx)
    claim_id = new_claim_id(int(tx.now.timestamp() * 1000))
    expires = tx.now + REDEMPTION_WINDOW
    recipient_facts = facts(tx, recipient)
    body = pb.ClaimProposal(
        claim_id=claim_id, kind=pb.CLAIM_KIND_REDEMPTION, creditor_node_id=tx.node.node_id,
        debtor_node_id=payer.home_node_id, payer_ref=payer.person_ref,
        recipient_ref=recipient.person_ref, recipient_age=recipient_facts.age,
        recipient_priority=recipient.priority, minutes=order.planned_minutes)
    body.created_at.CopyFrom(_ts(tx.now))
    body.expires_at.CopyFrom(_ts(expires))
    tx.repo.insert_claim(
        claim_id=claim_id, kind=ClaimKind.REDEMPTION.value, role=Role.CREDITOR.value,
        counterparty=payer.home_node_id, person_ref=payer.person_ref,
        recipient_ref=recipient.person_ref, minutes=order.planned_minutes, posted_minutes=0,
        origins="", state=ClaimState.PROPOSED.value, reason="", detail="",
        order_id=order.id, person_id=payer.id, expires_at=expires, created_at=tx.now,
        updated_at=tx.now)
    _enqueue(tx, PROPOSE, claim_id, body)
    return claim_id


def finish_redemption(tx: Tx, order: OrderRecord, recorded_minutes: int) -> None:
    """At recording: complete the order's claim for min(recorded, held), or void it when
    nothing is to be paid. The charge is posted when the clearinghouse confirms."""
    claim = tx.repo.claim(order.claim_id or "")
    if claim is None:
        raise InvariantViolation(f"order {order.id} names a claim this node does not have")
    if claim.state != ClaimState.ACCEPTED:
        return  # rejected or expired while the service went on: recorded unpaid
    posted = min(recorded_minutes, claim.minutes)
    body = pb.ClaimFinish(claim_id=claim.claim_id, complete=posted > 0,
                          posted_minutes=posted)
    if posted == 0:
        body.reason = pb.CLAIM_REASON_CANCELLED
    body.at.CopyFrom(_ts(tx.now))
    _set(tx, claim, ClaimState.FINISHING, posted_minutes=posted)
    _enqueue(tx, FINISH, claim.claim_id, body)


def void_redemption(tx: Tx, order: OrderRecord) -> None:
    """The order was cancelled: withdraw its claim, so the home district releases the hold."""
    claim = tx.repo.claim(order.claim_id or "")
    if claim is None or claim.state not in (ClaimState.PROPOSED, ClaimState.ACCEPTED):
        return
    if claim.state == ClaimState.PROPOSED:
        # the home district has not answered; its hold (if it accepts) ends when the
        # claim expires, or at once when the acceptance arrives (``_decided``)
        _set(tx, claim, ClaimState.PROPOSED, detail="order cancelled before acceptance")
        return
    body = pb.ClaimFinish(claim_id=claim.claim_id, complete=False,
                          reason=pb.CLAIM_REASON_CANCELLED)
    body.at.CopyFrom(_ts(tx.now))
    _set(tx, claim, ClaimState.FINISHING)
    _enqueue(tx, FINISH, claim.claim_id, body)


# ------------------------------------------------------------------ moves (debtor)


def start_move(tx: Tx, person_id: int, to_node_id: str) -> ClaimView:
    """The old home sends a person's whole balance, origins and all, to their new home.

    Everything the person has is held at once; the new home takes it in and the
    clearinghouse then names it the person's home."""
    person = tx.repo.person(person_id)
    if not (len(to_node_id) == 6 and to_node_id.isdigit() and to_node_id.isascii()):
        raise InvalidArgument("the new home is a district's 6-digit node id, e.g. 320113",
                              "MALFORMED_NODE_ID")
    if to_node_id == tx.node.node_id:
        raise InvalidArgument("the person already lives in this district", "MOVE_TO_SELF")
    if person.visitor:
        raise FailedPrecondition(f"person {person.id}'s hours are kept in district "
                                 f"{person.home_node_id}; the move starts there",
                                 "NOT_HOME_DISTRICT")
    if tx.repo.open_claims_of(person.person_ref):
        raise FailedPrecondition(f"person {person.id} has a claim in progress; try again "
                                 "once it is settled", "CLAIM_IN_PROGRESS")
    accounts = [a for a in tx.repo.accounts_of(person.id) if a.balance > 0]
    held = sum(a.held for a in accounts)
    if held:
        raise FailedPrecondition(
            f"person {person.id} has {format_hours(held)} held for accepted services; "
            "record or cancel them before moving", "HOURS_HELD")
    total = sum(a.balance for a in accounts)
    if total == 0:
        raise FailedPrecondition(f"person {person.id} has no stored hours to move",
                                 "NOTHING_TO_MOVE")
    if total > 90_000:
        raise InvariantViolation("a stored balance is never over the 1,500 h cap")
    _check_capacity(tx)
    claim_id = new_claim_id(int(tx.now.timestamp() * 1000))
    expires = tx.now + MOVE_WINDOW
    origins = [(Origin(a.origin or ""), a.balance) for a in accounts]
    body = pb.ClaimProposal(
        claim_id=claim_id, kind=pb.CLAIM_KIND_MOVE, creditor_node_id=to_node_id,
        debtor_node_id=tx.node.node_id, payer_ref=person.person_ref, minutes=total,
        origins=[pb.OriginMinutes(origin=_ORIGIN_TO_WIRE[o], minutes=m) for o, m in origins])
    body.created_at.CopyFrom(_ts(tx.now))
    body.expires_at.CopyFrom(_ts(expires))
    tx.repo.insert_claim(
        claim_id=claim_id, kind=ClaimKind.MOVE.value, role=Role.DEBTOR.value,
        counterparty=to_node_id, person_ref=person.person_ref, recipient_ref="",
        minutes=total, posted_minutes=0,
        origins=json.dumps([[o.value, m] for o, m in origins]),
        state=ClaimState.ACCEPTED.value, reason="", detail="", order_id=None,
        person_id=person.id, expires_at=expires, created_at=tx.now, updated_at=tx.now)
    for a in accounts:
        tx.repo.place_hold(None, a.id, a.balance, 0, tx.now, claim_id=claim_id)
    _enqueue(tx, PROPOSE, claim_id, body)  # held as proposed: the proposal accepts it
    found = tx.repo.claim(claim_id)
    assert found is not None
    return _view(found)


# ------------------------------------------------------------------ deliveries


def last_applied_seq(tx: Tx) -> int:
    return tx.repo.inbox_last_seq()


def apply_delivery(tx: Tx, delivery: pb.Delivery) -> bool:
    """Apply one delivery from the clearinghouse, once; False if it was applied before.

    Deliveries come in sequence; a gap means something was lost and is a bug."""
    if delivery.recipient_node_id != tx.node.node_id:
        raise InvariantViolation(f"delivery {delivery.seq} is for node "
                                 f"{delivery.recipient_node_id}")
    last = tx.repo.inbox_last_seq()
    if delivery.seq <= last:
        return False
    if delivery.seq != last + 1:
        raise InvariantViolation(f"delivery {delivery.seq} arrived after {last}: a gap")
    if delivery.expired_claim_id:
        claim_id, kind = delivery.expired_claim_id, "expiry"
        _expired(tx, claim_id)
    else:
        kind = delivery.relayed.kind
        claim_id = _apply_relayed(tx, kind, delivery.relayed.body, delivery.state)
    tx.repo.inbox_add(delivery.seq, kind[:32], claim_id[:36], tx.now)
    return True


def _parse(message_type: type[Message], body: bytes) -> Message:
    try:
        return message_type.FromString(body)
    except DecodeError:
        raise InvariantViolation(f"a relayed body is not a {message_type.__name__}") from None


def _apply_relayed(tx: Tx, kind: str, body: bytes, state: int) -> str:
    if kind == PROPOSE:
        proposal = _parse(pb.ClaimProposal, body)
        assert isinstance(proposal, pb.ClaimProposal)
        _proposed(tx, proposal, state)
        return proposal.claim_id
    if kind == DECIDE:
        decision = _parse(pb.ClaimDecision, body)
        assert isinstance(decision, pb.ClaimDecision)
        _decided(tx, decision)
        return decision.claim_id
    if kind == FINISH:
        finish = _parse(pb.ClaimFinish, body)
        assert isinstance(finish, pb.ClaimFinish)
        _finished(tx, finish)
        return finish.claim_id
    raise InvariantViolation(f"the clearinghouse relayed a {kind!r} message")


def _proposed(tx: Tx, msg: pb.ClaimProposal, state: int) -> None:
    kind = _KIND_FROM_WIRE.get(msg.kind)
    if kind is None:
        raise InvariantViolation("the clearinghouse relayed a claim of no kind")
    if tx.repo.claim(msg.claim_id) is not None:
        raise InvariantViolation(f"claim {msg.claim_id} was proposed twice")
    expires = msg.expires_at.ToDatetime(tzinfo=UTC)
    if kind is ClaimKind.MOVE:
        if msg.creditor_node_id != tx.node.node_id:
            raise InvariantViolation("a move was relayed to a node that is not its new home")
        origins = [[_ORIGIN_FROM_WIRE[o.origin].value, o.minutes] for o in msg.origins]
        person = tx.repo.person_by_ref(msg.payer_ref)
        # Its debtor accepted it as it proposed it. Relayed PROPOSED, it waits for a
        # separate acceptance (``_decided``), as the protocol had it before.
        accepted = state == pb.CLAIM_STATE_ACCEPTED
        tx.repo.insert_claim(
            claim_id=msg.claim_id, kind=kind.value, role=Role.CREDITOR.value,
            counterparty=msg.debtor_node_id, person_ref=msg.payer_ref, recipient_ref="",
            minutes=msg.minutes, posted_minutes=0, origins=json.dumps(origins),
            state=(ClaimState.ACCEPTED if accepted else ClaimState.PROPOSED).value,
            reason="", detail="", order_id=None,
            person_id=None if person is None else person.id, expires_at=expires,
            created_at=tx.now, updated_at=tx.now)
        if accepted:
            found = tx.repo.claim(msg.claim_id)
            assert found is not None
            _take_in_move(tx, found)
        return
    if msg.debtor_node_id != tx.node.node_id:
        raise InvariantViolation("a redemption was relayed to a node that is not its debtor")
    _decide_redemption(tx, msg, expires)


def _decide_redemption(tx: Tx, msg: pb.ClaimProposal, expires: datetime) -> None:
    """Where a redemption is accepted: the payer's own rules at home, then the hold."""
    payer = tx.repo.person_by_ref(msg.payer_ref)
    own = msg.recipient_ref in ("", msg.payer_ref)
    found_buckets: list[tuple[AccountRecord, int]] = []
    if payer is not None and payer.visitor:
        decision = Decision(Reason.NOT_HOME_DISTRICT,
                            f"this person's hours are kept in {payer.home_node_id}")
    else:
        relation = None
        if payer is not None and not own:
            other = tx.repo.person_by_ref(msg.recipient_ref)
            if other is not None:
                family = sorted(r for r in tx.repo.relations(payer.id, other.id)
                                if r.is_family)
                allowed = [r for r in family if r in tx.policy.relative_kinds]
                relation = next(iter(allowed or family), None)
        if payer is not None:
            source = PaymentSource.OWN if own else PaymentSource.RELATIVE
            for origin in spendable_origins(source, PersonKind(payer.kind)):
                record = tx.repo.account(Account.of_person(payer.person_ref, origin).code)
                if record is not None and record.available > 0:
                    found_buckets.append((record, record.available))
        decision = decide_redemption(
            tx.policy, None if payer is None else facts(tx, payer), own, msg.recipient_age,
            msg.recipient_priority, relation, sum(m for _, m in found_buckets), msg.minutes)
    state = ClaimState.ACCEPTED if decision.accept else ClaimState.REJECTED
    tx.repo.insert_claim(
        claim_id=msg.claim_id, kind=ClaimKind.REDEMPTION.value, role=Role.DEBTOR.value,
        counterparty=msg.creditor_node_id, person_ref=msg.payer_ref,
        recipient_ref=msg.recipient_ref, minutes=msg.minutes, posted_minutes=0, origins="",
        state=state.value, reason="" if decision.reason is None else decision.reason.value,
        detail=decision.detail, order_id=None, person_id=None if payer is None else payer.id,
        expires_at=expires, created_at=tx.now, updated_at=tx.now)
    if decision.accept:
        by_code = {r.code: r for r, _ in found_buckets}
        for account, minutes in draw(((account_from_code(r.code), m)
                                      for r, m in found_buckets), msg.minutes):
            tx.repo.place_hold(None, by_code[account.code].id, minutes, 0, tx.now,
                               claim_id=msg.claim_id)
    body = pb.ClaimDecision(claim_id=msg.claim_id, accept=decision.accept,
                            reason=_wire_reason(decision.reason), detail=decision.detail)
    body.at.CopyFrom(_ts(tx.now))
    _enqueue(tx, DECIDE, msg.claim_id, body)


def _decided(tx: Tx, msg: pb.ClaimDecision) -> None:
    claim = tx.repo.claim(msg.claim_id)
    if claim is None or claim.role != Role.CREDITOR:
        raise InvariantViolation(f"a decision on claim {msg.claim_id} this node did not make")
    if claim.state != ClaimState.PROPOSED:
        return  # already settled here (e.g. refused locally, then expired)
    if not msg.accept:
        claim = _set(tx, claim, ClaimState.REJECTED, reason=_reason_of(msg.reason),
                     detail=msg.detail[:200])
        if claim.order_id:
            _payment_lost(tx, claim)
        return
    claim = _set(tx, claim, ClaimState.ACCEPTED)
    if claim.kind == ClaimKind.MOVE:
        _take_in_move(tx, claim)
        return
    assert claim.order_id is not None
    order = tx.repo.order(claim.order_id)
    if order.state == OrderState.CANCELLED:
        void_redemption(tx, order)  # cancelled while the answer was on its way
        return
    tx.repo.update_order(order.id, order.state, held_minutes=claim.minutes)
    tx.repo.add_event(order.id, tx.now, order.state, OrderState(order.state), "clearinghouse",
                      f"{format_hours(claim.minutes)} held by district {claim.counterparty}")


def _take_in_move(tx: Tx, claim: ClaimRecord) -> None:
    """The new home completes a move of someone enrolled here; voids it otherwise."""
    person = tx.repo.person_by_ref(claim.person_ref)
    body = pb.ClaimFinish(claim_id=claim.claim_id, complete=person is not None)
    if person is None:
        body.reason = pb.CLAIM_REASON_POLICY
        _set(tx, claim, ClaimState.FINISHING, detail="the person is not enrolled here; "
             "enrol them as a visitor first")
    else:
        _set(tx, claim, ClaimState.FINISHING, posted_minutes=claim.minutes,
             person_id=person.id)
    body.at.CopyFrom(_ts(tx.now))
    _enqueue(tx, FINISH, claim.claim_id, body)


def _payment_lost(tx: Tx, claim: ClaimRecord) -> None:
    """A redemption was rejected or expired: an order not yet started is cancelled; one
    already under way is kept and will be recorded unpaid (the service happened)."""
    assert claim.order_id is not None
    order = tx.repo.order(claim.order_id)
    why = f"the payment from district {claim.counterparty} was {claim.state}" + (
        f" ({claim.reason})" if claim.reason else "")
    if order.state in (OrderState.REQUESTED, OrderState.ACCEPTED):
        tx.repo.update_order(order.id, order.state, state=OrderState.CANCELLED.value,
                             cancelled_at=tx.now, held_minutes=0)
        tx.repo.add_event(order.id, tx.now, order.state, OrderState.CANCELLED,
                          "clearinghouse", why)
    elif not OrderState(order.state).final:
        tx.repo.update_order(order.id, order.state, held_minutes=0)
        tx.repo.add_event(order.id, tx.now, order.state, OrderState(order.state),
                          "clearinghouse", why + "; it will be recorded unpaid")


def _finished(tx: Tx, msg: pb.ClaimFinish) -> None:
    """The debtor learns the creditor's complete or void: post its leg, or release."""
    claim = tx.repo.claim(msg.claim_id)
    if claim is None or claim.role != Role.DEBTOR:
        raise InvariantViolation(f"a finish of claim {msg.claim_id} this node does not owe")
    if claim.state != ClaimState.ACCEPTED:
        raise InvariantViolation(f"claim {claim.claim_id} finished while {claim.state}")
    holds = tx.repo.claim_holds(claim.claim_id)
    if not msg.complete:
        tx.repo.close_holds(holds, "released", tx.now)
        _set(tx, claim, ClaimState.VOIDED, reason=_reason_of(msg.reason) or "CANCELLED")
        return
    posted = msg.posted_minutes or claim.minutes
    if not 1 <= posted <= claim.minutes:
        raise InvariantViolation(f"claim {claim.claim_id} posts {posted} of {claim.minutes}")
    accounts = tx.repo.accounts_by_ids([h.account_id for h in holds])
    parts: list[tuple[Account, int]] = []
    left = posted
    for hold in holds:
        take = min(left, hold.minutes)
        left -= take
        code = accounts[hold.account_id].code
        parts.append((Account.of_person(claim.person_ref, Origin(code.split("/")[2])), -take))
    if left:
        raise InvariantViolation(f"claim {claim.claim_id}'s holds cover less than it posts")
    parts.append((CLEARING, posted))
    tx.repo.close_holds(holds, "posted", tx.now)
    what = "moved to" if claim.kind == ClaimKind.MOVE else "spent in"
    _post(tx, EntryKind.CLAIM, parts, f"claim {claim.claim_id}: {what} {claim.counterparty}")
    _set(tx, claim, ClaimState.COMPLETED, posted_minutes=posted)
    if claim.kind == ClaimKind.MOVE and claim.person_id:
        tx.repo.set_home(claim.person_id, claim.counterparty)


def _expired(tx: Tx, claim_id: str) -> None:
    claim = tx.repo.claim(claim_id)
    if claim is None:
        raise InvariantViolation(f"the expiry of claim {claim_id}, unknown here")
    if ClaimState(claim.state).final:
        return  # refused here already (the clearinghouse took nothing) — never expected
    tx.repo.close_holds(tx.repo.claim_holds(claim.claim_id), "released", tx.now)
    claim = _set(tx, claim, ClaimState.EXPIRED, reason=Reason.EXPIRED.value, posted_minutes=0)
    if claim.order_id:
        _payment_lost(tx, claim)


# ------------------------------------------------------------------ receipts


def outbox_due(tx: Tx, limit: int) -> list[OutboxRecord]:
    return tx.repo.outbox_due(tx.now, limit)


def apply_receipt(tx: Tx, message_id: int, state: int, reason: int, *,
                  sent: OutboxRecord | None = None) -> None:
    """The clearinghouse took a message (``state``: the claim's state after it). For this
    node's own complete, this is where the creditor learns it is done and posts its leg.
    ``sent``: the outbox row as the sender read it (its kind and claim never change), so
    that it is not read again."""
    message = sent if sent is not None else tx.repo.outbox_message(message_id)
    if message.id != message_id:
        raise InvariantViolation(f"a receipt for message {message_id} given message {message.id}")
    if not tx.repo.outbox_done(message_id, "receipt", pb.ClaimState.Name(state), tx.now):  # type: ignore[arg-type]
        return
    if message.kind != FINISH or message.claim_id is None:
        return
    claim = tx.repo.claim(message.claim_id)
    if claim is None or claim.state != ClaimState.FINISHING:
        return
    if state == pb.CLAIM_STATE_COMPLETED:
        _creditor_posts(tx, claim)
    elif state == pb.CLAIM_STATE_VOIDED:
        _set(tx, claim, ClaimState.VOIDED, reason=_reason_of(reason) or "CANCELLED",
             posted_minutes=0)
    elif state == pb.CLAIM_STATE_EXPIRED:
        pass  # the expiry delivery settles it


def _creditor_posts(tx: Tx, claim: ClaimRecord) -> None:
    posted, detail = claim.posted_minutes, claim.detail
    if not 1 <= posted <= claim.minutes:
        raise InvariantViolation(f"claim {claim.claim_id} completed posting {posted}")
    if claim.kind == ClaimKind.REDEMPTION:
        assert claim.order_id is not None
        _post(tx, EntryKind.CLAIM, [(CLEARING, -posted), (CONSUMPTION, posted)],
              f"claim {claim.claim_id}: order {claim.order_id} paid by {claim.counterparty}",
              order_id=claim.order_id)
        order = tx.repo.order(claim.order_id)
        tx.repo.update_order(order.id, order.state, charged_minutes=posted)
        tx.repo.add_event(order.id, tx.now, order.state, OrderState(order.state),
                          "clearinghouse", f"{format_hours(posted)} paid by district "
                          f"{claim.counterparty}")
    else:
        person = tx.repo.person_by_ref(claim.person_ref)
        if person is None:
            raise InvariantViolation(f"claim {claim.claim_id} moved a person not enrolled")
        origins = [(Origin(o), int(m)) for o, m in json.loads(claim.origins)]
        already = sum(a.balance for a in tx.repo.accounts_of(person.id))
        split = arrival(origins, already, tx.policy.cap_minutes)
        if split.total != posted:
            raise InvariantViolation(f"claim {claim.claim_id}'s origins do not add up")
        parts: list[tuple[Account, int]] = [(CLEARING, -posted)]
        parts += [(Account.of_person(person.person_ref, o), m) for o, m in split.banked]
        parts.append((DONATION_POOL, split.to_pool))
        _post(tx, EntryKind.CLAIM, parts,
              f"claim {claim.claim_id}: moved here from {claim.counterparty}", known=person)
        tx.repo.set_home(person.id, None)
        if split.to_pool:
            detail = (f"{format_hours(split.to_pool)} over the stored-hours cap went to the "
                      "donation pool")
    _set(tx, claim, ClaimState.COMPLETED, detail=detail)


def apply_refusal(tx: Tx, message_id: int, status: str, reason: str, message: str) -> None:
    """The clearinghouse refused a message for good. A refused proposal was not recorded
    there at all, so this node closes its side now; any other refusal is settled later
    by the clearinghouse's expiry."""
    found = tx.repo.outbox_message(message_id)
    if not tx.repo.outbox_done(message_id, "refused", f"{status} {reason}: {message}", tx.now):
        return
    if found.kind != PROPOSE or found.claim_id is None:
        return
    claim = tx.repo.claim(found.claim_id)
    if claim is None or ClaimState(claim.state).final:
        return
    # the clearinghouse's own reason (e.g. MOVE_IN_PROGRESS, NOT_HOME_DISTRICT) says most
    code = reason[:32] if reason.isascii() and reason.isupper() else Reason.POLICY.value
    tx.repo.close_holds(tx.repo.claim_holds(claim.claim_id), "released", tx.now)
    claim = _set(tx, claim, ClaimState.REJECTED, reason=code, detail=message[:200])
    if claim.order_id:
        _payment_lost(tx, claim)


def retry_later(tx: Tx, message_id: int, detail: str) -> None:
    """A temporary failure: back off exponentially; a proposal the clearinghouse still
    cannot take at its deadline is given up here (it was never recorded there)."""
    found = tx.repo.outbox_message(message_id)
    if found.done_at is not None:
        return
    if found.kind == PROPOSE and found.claim_id is not None:
        claim = tx.repo.claim(found.claim_id)
        if claim is not None and tx.now >= claim.expires_at:
            apply_refusal(tx, message_id, "DEADLINE_EXCEEDED", Reason.EXPIRED.value,
                          f"not taken before its deadline: {detail}")
            return
    delay = min(MAX_RETRY, FIRST_RETRY * (2 ** min(found.attempts, 10)))
    tx.repo.outbox_retry(message_id, tx.now + delay, detail)


# ------------------------------------------------------------------ reads


def get_claim(tx: Tx, claim_id: str) -> ClaimView:
    found = tx.repo.claim(claim_id)
    if found is None:
        raise NotFound(f"this node has no claim {claim_id}", "UNKNOWN_CLAIM")
    return _view(found)


def list_claims(tx: Tx, state: ClaimState | None, after: str, limit: int) -> list[ClaimView]:
    if not 1 <= limit <= MAX_LIST:
        raise InvalidArgument(f"list 1 to {MAX_LIST} claims at a time")
    return [_view(c) for c in tx.repo.list_claims(state.value if state else None, after,
                                                  limit)]


@dataclass(frozen=True, slots=True)
class ClearingView:
    """This node's position toward the rest of the city, as its own ledger says."""

    net_minutes: int  # owed to this district (+) or by it (-): minus the clearing balance
    open_claims: int
    unsent_messages: int
    last_delivery: int


def clearing_view(tx: Tx) -> ClearingView:
    record = tx.repo.account(CLEARING.code)
    return ClearingView(-(record.balance if record else 0),
                        tx.repo.open_claim_total(),
                        tx.repo.outbox_pending(), tx.repo.inbox_last_seq())
