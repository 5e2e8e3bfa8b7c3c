"""Use-cases of the service loop. "An order is recorded" happens in ``record_order``.

requested → accepted (the payment is held) → checked in → checked out (minutes
measured) → verified (rated; public until the publicity period ends) → recorded
(minutes rounded once, deposited to the volunteer, the payment posted).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from node.domain.access import Principal, Role
from node.domain.claims import Claim, ClaimState, Reason, waiting_reason
from node.domain.consent import MISSING
from node.domain.directory import HomeLookup
from node.domain.ledger import (
    CITY_GRANT,
    CONSUMPTION,
    DONATION_POOL,
    Account,
    Entry,
    EntryKind,
    HoldState,
    Origin,
    account_from_code,
    draw,
    issuance,
    merge_postings,
)
from node.domain.orders import (
    Action,
    OrderState,
    PaymentSource,
    PersonKind,
    already_done,
    check_check_in,
    check_payment,
    check_rating,
    check_stars,
    check_text,
    held_problem,
    measure_service,
    require_state,
    round_to_unit,
    spendable_origins,
    split_deposit,
    stored_rating,
    volunteer_rating_due,
)
from node.domain.policy import Policy, Relation
from node.domain.publicity import mask_name
from node.storage.ledger import AccountRecord
from node.storage.orders import NewOrder, OrderEvent, OrderRecord
from node.storage.people import PersonRecord
from node.usecases import claims, consent, people
from node.usecases.access import require_call
from node.usecases.app import Tx, city_time
from node.usecases.people import facts, require_actor, require_acts_for
from node.usecases.views import Actor, OpenRequestView, OrderView, PublicOrderView
from runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    InvariantViolation,
    PermissionDenied,
    ResourceExhausted,
)
from timebank.minutes import format_hours

#: How far in the future a reported check-in/out time may be (clock skew of a phone).
CLOCK_SKEW = timedelta(minutes=5)
#: How far back staff may enter a check-in after the fact.
MAX_BACKDATE = timedelta(days=30)
MAX_RECORD_BATCH = 10_000
#: The most orders of the public supervision page (``public_orders``) one call lists.
MAX_PUBLIC_LIST = 200
#: The most requests waiting for a volunteer (``open_requests``) one call lists.
MAX_OPEN_LIST = 100


@dataclass(frozen=True, slots=True)
class Bucket:
    """A place a payment can be held from, and how much of it this order may use."""

    account: Account
    record: AccountRecord
    available: int
    floor: int  # the lowest balance - held the account may reach


def order_view(tx: Tx, order: OrderRecord) -> OrderView:
    category = tx.policy.category(order.category)
    told = notices(order, tx.policy)
    if order.state == OrderState.ACCEPTED and order.claim_id:
        claim = tx.repo.claims.get(order.claim_id)
        if claim is not None and _awaits_home(claim):
            told += (_AWAITING_HOME.format(d=claim.counterparty),)
        if claim is not None and claim.state is ClaimState.PROPOSED:
            told += _awaits_clearinghouse(tx, claim)
    agreed = 0
    if order.payment_source == PaymentSource.RELATIVE.value and order.payer_id:
        use = tx.repo.consents.use_of(order_id=order.id)
        agreed = 0 if use is None else use.consent_id
        if order.state == OrderState.REQUESTED:
            told += _awaits_consent(tx, order)
    return OrderView(order, category.name if category else order.category, told, agreed)


def _awaits_consent(tx: Tx, order: OrderRecord) -> tuple[str, ...]:
    """Why a requested order paid from a relative's hours kept here cannot be accepted
    yet: no consent of the payer's covers it now (revoked, expired, used …)."""
    payer = tx.repo.people.get(order.payer_id or 0)
    if payer.visitor:
        return ()  # their home district decides, when the order is accepted
    recipient = tx.repo.people.get(order.recipient_id)
    found = consent.cover(tx, payer, recipient.person_ref, order.planned_minutes, order.id)
    if found.covered:
        return ()
    zh, en = MISSING[found.missing]
    return (f"等待付款人同意：{zh} (waits for the payer's consent: {en}; the payer, their "
            f"proxy or staff can confirm it: `timebank node consent grant --once --order "
            f"{order.id}`) [NO_CONSENT]",)


#: What an order waiting for the city directory tells the operator.
_AWAITING_HOME = ("正在查询付款人的新户籍区 (district {d} no longer keeps the payer's hours; "
                  "this node is asking the city directory where they are now, and will ask "
                  "that district for the payment)")


def _awaits_clearinghouse(tx: Tx, claim: Claim) -> tuple[str, ...]:
    """Why the payment of an accepted order is not taken by the clearinghouse yet (e.g.
    the payer's district is at its net debit limit), with the clearinghouse's own words
    and when it is tried again; nothing while it has not been refused."""
    waiting = tx.repo.outbox.waiting([claim.claim_id]).get(claim.claim_id)
    if waiting is None:
        return ()
    said = f"; {waiting.detail}" if waiting.detail else ""
    return (f"付款等待中 payment waiting: {waiting_reason(waiting.reason, claim.counterparty)}"
            f"{said} (claim {claim.claim_id}, {waiting.attempts} "
            f"{'try' if waiting.attempts == 1 else 'tries'}, next "
            f"{city_time(waiting.next_attempt_at)})",)


def _awaits_home(claim: Claim) -> bool:
    return claim.state is ClaimState.REJECTED and claim.reason == Reason.NOT_HOME_DISTRICT


def notices(order: OrderRecord, policy: Policy) -> tuple[str, ...]:
    """What the volunteer or the recipient should be told about a recorded order."""
    if order.state != OrderState.RECORDED:
        return ()
    out = []
    if order.recorded_minutes != order.measured_minutes:
        out.append(f"service of {order.measured_minutes} min was recorded as "
                   f"{order.recorded_minutes} min (rounded to the city's "
                   f"{policy.rounding_unit_minutes}-minute unit)")
    if order.excess_to_pool_minutes:
        out.append(f"{format_hours(order.excess_to_pool_minutes)} over the stored-hours cap of "
                   f"{format_hours(policy.cap_minutes)} went to the donation pool")
    if order.unbanked_minutes:
        out.append(f"{format_hours(order.unbanked_minutes)} over the daily earning cap were "
                   "recorded as service but not stored")
    return tuple(out)


def _category_code(tx: Tx, category: str) -> str:
    found = tx.policy.category(category.strip())
    if found is None:
        known = ", ".join(f"{c.code} ({c.name})" for c in tx.policy.categories)
        raise InvalidArgument(f"unknown service category {category!r}; the city's categories "
                              f"are: {known}", "UNKNOWN_CATEGORY")
    return found.code


def _check_minutes(policy: Policy, minutes: int, what: str) -> None:
    if minutes <= 0:
        raise InvalidArgument(f"{what} must be a positive number of minutes, not {minutes}",
                              "MINUTES_OUT_OF_RANGE")
    if minutes > policy.max_order_minutes:
        raise InvalidArgument(f"{what} of {minutes} min is more than one order may take "
                              f"({policy.max_order_minutes} min)", "MINUTES_OUT_OF_RANGE")


def _payer(tx: Tx, order: OrderRecord) -> PersonRecord | None:
    if order.payment_source == PaymentSource.OWN:
        return tx.repo.people.get(order.recipient_id)
    if order.payment_source == PaymentSource.RELATIVE:
        assert order.payer_id is not None
        return tx.repo.people.get(order.payer_id)
    return None


def buckets(tx: Tx, source: PaymentSource, payer: PersonRecord | None,
            recipient_priority: bool) -> list[Bucket]:
    """Where this payment may be held from, in the order it is drawn."""
    repo, policy = tx.repo, tx.policy
    if payer is not None:
        out = []
        for origin in spendable_origins(source, PersonKind(payer.kind)):
            account = Account.of_person(payer.person_ref, origin)
            record = repo.ledger.ensure_account(account, payer.id)
            out.append(Bucket(account, record, record.available, 0))
        return out
    if source is PaymentSource.DONATION_POOL:
        record = repo.ledger.ensure_account(DONATION_POOL)
        reserve = 0 if recipient_priority else policy.donation_priority_reserve_minutes
        return [Bucket(DONATION_POOL, record, max(0, record.available - reserve), 0)]
    record = repo.ledger.ensure_account(CITY_GRANT)
    budget = policy.grant_budget_minutes
    return [Bucket(CITY_GRANT, record, max(0, budget + record.available), -budget)]


def _source_label(source: PaymentSource, payer: PersonRecord | None) -> str:
    if payer is not None:
        return f"person {payer.id}"
    return "the donation pool" if source is PaymentSource.DONATION_POOL else "the city fund"


def _require_available(source: PaymentSource, payer: PersonRecord | None,
                       found: list[Bucket], minutes: int) -> None:
    available = sum(b.available for b in found)
    if available < minutes and source is PaymentSource.CITY_GRANT and payer is None:
        # the same refusal as ledger.grant: the fund's budget on this node is a quota
        raise ResourceExhausted(
            f"the city fund has {format_hours(available)} left on this node; this service "
            f"needs {format_hours(minutes)}", "GRANT_BUDGET_EXHAUSTED")
    if available < minutes:
        raise FailedPrecondition(
            f"{_source_label(source, payer)} has {format_hours(available)} available to pay "
            f"for this service, which needs {format_hours(minutes)}", "INSUFFICIENT_BALANCE")


def request_order(tx: Tx, recipient_id: int, category: str, planned_minutes: int,
                  source: PaymentSource, payer_id: int, requested_by: Actor,
                  note: str) -> OrderView:
    _check_minutes(tx.policy, planned_minutes, "the planned service time")
    code = _category_code(tx, category)
    note = check_text("note", note)
    recipient = tx.repo.people.get(recipient_id)
    payer = tx.repo.people.get(payer_id) if payer_id else None
    require_acts_for(tx, requested_by, recipient_id, "request service")
    relation: Relation | None = None
    if payer is not None:
        family = sorted(r for r in tx.repo.people.relations(payer.id, recipient.id) if r.is_family)
        allowed = [r for r in family if r in tx.policy.relative_kinds]
        relation = next(iter(allowed or family), None)
        # the hours are the payer's: only the payer, their proxy or family, or staff may spend them
        require_acts_for(tx, requested_by, payer.id, "spend hours")
    paying = recipient if source is PaymentSource.OWN else payer
    remote = paying is not None and paying.visitor
    if remote and not tx.node.federated:
        raise FailedPrecondition("this person's hours are kept in another district and this "
                                 "node is not connected to the city clearinghouse",
                                 "NOT_FEDERATED")
    check_payment(tx.policy, source, facts(tx, recipient),
                  None if payer is None else facts(tx, payer), relation, payer_remote=remote)
    # the payer's consent (ADR 0017): checked here when this node keeps the hours, by
    # their home district otherwise; the payer's own request is their confirmation. It
    # comes before the balance: without it, the payer's balance is nobody else's business
    confirm = False
    if payer is not None and not remote:
        covered = consent.cover(tx, payer, recipient.person_ref, planned_minutes)
        confirm = not covered.covered
        if confirm and requested_by.person_id != payer.id:
            raise consent.refusal(0, covered.missing)
    if not remote:  # a remote balance is checked by the home district, at acceptance
        found = buckets(tx, source, paying, recipient.priority)
        _require_available(source, paying, found, planned_minutes)
    order_id = tx.repo.orders.add(NewOrder(
        recipient_id=recipient_id, category=code, planned_minutes=planned_minutes,
        payment_source=source.value, payer_id=payer_id or None,
        requested_by=requested_by.label, note=note, requested_at=tx.now))
    tx.repo.orders.add_event(OrderEvent(order_id, tx.now, "", OrderState.REQUESTED.value,
                                        requested_by.label,
                                        f"{code} {planned_minutes} min, paid by {source.value}"))
    if confirm:
        assert payer is not None
        consent.self_confirmation(tx, payer, recipient.person_ref, planned_minutes, order_id,
                                  requested_by)
    return order_view(tx, tx.repo.orders.get(order_id))


def check_held(after: OrderRecord) -> None:
    """Refuse to store an order that shows minutes held once it is final (a bug)."""
    problem = held_problem(OrderState(after.state), after.held_minutes, None)
    if problem is not None:
        raise InvariantViolation(f"order {after.id} {problem}")


def _transition(tx: Tx, order: OrderRecord, after: OrderRecord, actor: str,
                detail: str = "") -> OrderView:
    """Store the order's change (its state checked by the caller) with its event."""
    check_held(after)
    tx.repo.orders.update(order, after)
    tx.repo.orders.add_event(OrderEvent(order.id, tx.now, order.state, after.state, actor,
                                        detail))
    return order_view(tx, tx.repo.orders.get(order.id))


def _load(tx: Tx, order_id: int, action: Action) -> OrderRecord:
    order = tx.repo.orders.get(order_id)
    require_state(order.id, action, OrderState(order.state))
    return order


def _for_volunteer(actor: Actor | None, volunteer_id: int) -> str:
    """The recorded actor of a volunteer's step: the volunteer, or who acted for them
    ("staff:3 for person:7"); a person other than the volunteer may not."""
    if actor is None or (actor.person_id == volunteer_id and not actor.by):
        return f"person:{volunteer_id}"
    if actor.person_id and actor.person_id != volunteer_id:
        raise PermissionDenied(f"只有志愿者本人可以办理 (only the volunteer, person "
                               f"{volunteer_id}, or staff may do this, not "
                               f"{actor.label})", "NOT_THE_VOLUNTEER")
    by = actor.by or actor.label
    return replace(actor, person_id=volunteer_id, staff_id=0, by=by).label


def accept_order(tx: Tx, order_id: int, volunteer_id: int, *,
                 actor: Actor | None = None) -> OrderView:
    """A volunteer takes the order; the payment is held now, so it cannot be spent twice.
    ``actor``: the authenticated caller (the volunteer, or staff acting for them)."""
    label = _for_volunteer(actor, volunteer_id)
    order = _load(tx, order_id, Action.ACCEPT)
    volunteer = tx.repo.people.get(volunteer_id)
    if volunteer_id == order.recipient_id:
        raise PermissionDenied("a volunteer cannot serve an order they receive themselves",
                               "SELF_SERVICE")
    if volunteer_id == order.payer_id:
        raise PermissionDenied("a volunteer cannot serve an order paid with their own hours",
                               "SELF_SERVICE")
    if volunteer.visitor:
        raise PermissionDenied(
            f"person {volunteer.id}'s hours are kept in district {volunteer.home_node_id}; "
            "they earn hours by serving there (or move their home here first)",
            "VISITOR_VOLUNTEER")
    recipient = tx.repo.people.get(order.recipient_id)
    source = PaymentSource(order.payment_source)
    payer = _payer(tx, order)
    if payer is not None and payer.visitor:
        claim_id = claims.propose_redemption(tx, order, payer, recipient)
        return _transition(tx, order, replace(
            order, state=OrderState.ACCEPTED.value, volunteer_id=volunteer.id,
            accepted_at=tx.now, claim_id=claim_id), label,
            f"{format_hours(order.planned_minutes)} asked of district "
            f"{payer.home_node_id} (claim {claim_id})")
    agreed = None
    if source is PaymentSource.RELATIVE and payer is not None:
        agreed = consent.require(tx, payer, recipient.person_ref, order.planned_minutes,
                                 order.id)
    found = buckets(tx, source, payer, recipient.priority)
    _require_available(source, payer, found, order.planned_minutes)
    by_code = {b.account.code: b for b in found}
    for account, minutes in draw(((b.account, b.available) for b in found),
                                 order.planned_minutes):
        bucket = by_code[account.code]
        tx.repo.holds.hold_for_order(order.id, bucket.record.id, minutes, bucket.floor,
                                     tx.now)
    if agreed is not None:  # with the hold, once: a retry or a crash never uses it twice
        consent.spend(tx, agreed, order.planned_minutes, order_id=order.id)
    return _transition(tx, order, replace(
        order, state=OrderState.ACCEPTED.value, volunteer_id=volunteer.id,
        accepted_at=tx.now, held_minutes=order.planned_minutes), label,
        f"{format_hours(order.planned_minutes)} held" + (
            "" if agreed is None else f" under the payer's consent {agreed.id}"))


def _reported_time(tx: Tx, at: datetime | None, what: str) -> datetime:
    if at is None:
        return tx.now
    if at.tzinfo is None:
        raise InvalidArgument(f"the {what} time needs a timezone")
    if at > tx.now + CLOCK_SKEW:
        raise InvalidArgument(f"the {what} time {city_time(at)} is in the future",
                              "TIME_IN_FUTURE")
    if at < tx.now - MAX_BACKDATE:
        raise InvalidArgument(f"the {what} time is more than {MAX_BACKDATE.days} days ago",
                              "TIME_TOO_OLD")
    return at


def check_in(tx: Tx, order_id: int, at: datetime | None = None, *,
             actor: Actor | None = None) -> OrderView:
    order = _load(tx, order_id, Action.CHECK_IN)
    label = _for_volunteer(actor, order.volunteer_id or 0)
    if order.claim_id is not None:
        claim = claims.get_claim(tx, order.claim_id)
        if claim.state is ClaimState.REJECTED and claim.reason == Reason.NOT_HOME_DISTRICT:
            raise FailedPrecondition(
                f"order {order.id}'s payer no longer keeps their hours in district "
                f"{claim.counterparty}; this node is asking the city directory where they are "
                "now, and the service starts once that district holds the payment",
                "PAYMENT_NOT_HELD")
        if claim.state is not ClaimState.ACCEPTED:
            raise FailedPrecondition(
                f"order {order.id}'s payment from district {claim.counterparty} is "
                f"{claim.state.value}, not yet held; the service starts once it is",
                "PAYMENT_NOT_HELD")
    when = _reported_time(tx, at, "check-in")
    check_check_in(order.id, order.requested_at, when)
    return _transition(tx, order, replace(
        order, state=OrderState.CHECKED_IN.value, checked_in_at=when,
        service_day=tx.local_date(when)), label)


def check_out(tx: Tx, order_id: int, at: datetime | None = None, *,
              actor: Actor | None = None) -> OrderView:
    order = _load(tx, order_id, Action.CHECK_OUT)
    label = _for_volunteer(actor, order.volunteer_id or 0)
    when = _reported_time(tx, at, "check-out")
    assert order.checked_in_at is not None
    measured = measure_service(order.id, order.checked_in_at, when)
    _check_minutes(tx.policy, measured, "the measured service time")
    return _transition(tx, order, replace(
        order, state=OrderState.CHECKED_OUT.value, checked_out_at=when,
        measured_minutes=measured), label, f"{measured} min")


def verify_order(tx: Tx, order_id: int, verifier: Actor, rating: int,
                 comment: str) -> OrderView:
    """The recipient, their proxy or family, or staff confirm the service and rate it."""
    check_stars(rating)
    comment = check_text("comment", comment)
    order = tx.repo.orders.get(order_id)
    require_actor(tx, verifier)
    if verifier.person_id and verifier.person_id == order.volunteer_id:
        raise PermissionDenied("a volunteer cannot verify their own service", "NOT_AUTHORISED")
    require_acts_for(tx, verifier, order.recipient_id, "verify a service")
    require_state(order.id, Action.VERIFY, OrderState(order.state))
    until = tx.now + timedelta(days=tx.policy.publicity_days)
    return _transition(tx, order, replace(
        order, state=OrderState.VERIFIED.value, rating=rating, comment=comment,
        verified_by=verifier.label, verified_at=tx.now, public_until=until),
        verifier.label, f"rated {rating}")


def rate_order(tx: Tx, order_id: int, rating: int, comment: str, *,
               actor: Actor | None = None) -> OrderView:
    """The volunteer rates the person served (满意度互评), once the service was done: the
    second half of the mutual rating, whose first the recipient's side gives when it
    verifies. ``actor``: the authenticated caller (the volunteer, or staff acting for
    them, as for the volunteer's other steps); another person is PERMISSION_DENIED.

    One rating per order: the same rating again changes nothing and answers the order;
    a different one is ALREADY_RATED (``volunteer_rating_due``). It moves no hours and
    is no part of the ledger; the order's history records it, as every change of it."""
    given = check_rating(rating, comment)
    order = tx.repo.orders.get(order_id)
    label = _for_volunteer(actor, order.volunteer_id or 0)
    before = stored_rating(order.rating_by_volunteer, order.comment_by_volunteer)
    if not volunteer_rating_due(order.id, OrderState(order.state), before, given):
        return order_view(tx, order)
    return _transition(tx, order, replace(
        order, rating_by_volunteer=given.stars, comment_by_volunteer=given.comment,
        rated_by_volunteer_at=tx.now), label,
        f"志愿者评价 {given.stars} 星 (the volunteer rated the person served {given.stars})")


def dispute_order(tx: Tx, order_id: int, raised_by: Actor, reason: str) -> OrderView:
    """Anyone known to the node may dispute an order while it is public (社会监督)."""
    reason = check_text("reason", reason)
    if not reason:
        raise InvalidArgument("say why the order is disputed")
    require_actor(tx, raised_by)
    order = _load(tx, order_id, Action.DISPUTE)
    assert order.public_until is not None
    if tx.now >= order.public_until:
        raise FailedPrecondition(f"order {order.id}'s publicity period ended at "
                                 f"{city_time(order.public_until)}; it can no longer be "
                                 "disputed", "PUBLICITY_ENDED")
    return _transition(tx, order, replace(order, state=OrderState.DISPUTED.value,
                                          dispute_reason=reason), raised_by.label, reason)


def resolve_dispute(tx: Tx, order_id: int, staff_id: int, uphold: bool,
                    corrected_minutes: int, resolution: str, *,
                    actor: Actor | None = None) -> OrderView:
    """Staff settle a dispute: the service stands (maybe corrected) or is void.
    ``actor``: the authenticated caller (else staff ``staff_id``)."""
    who = people.district_actor(tx, actor, staff_id)
    resolution = check_text("resolution", resolution)
    if not resolution:
        raise InvalidArgument("record how the dispute was resolved")
    order = _load(tx, order_id, Action.RESOLVE)
    label = who.label
    if not uphold:
        if corrected_minutes:
            raise InvalidArgument("corrected minutes only apply when the service is upheld")
        tx.repo.holds.resolve_order(order.id, HoldState.RELEASED, tx.now)
        if order.claim_id:
            claims.void_redemption(tx, order)
        return _transition(tx, order, replace(
            order, state=OrderState.CANCELLED.value, resolution=resolution,
            cancelled_at=tx.now, held_minutes=0,
            cancel_reason=f"争议核实后作废 (the service was voided by {label} after a "
                          f"dispute: {resolution})"), label, resolution)
    if not corrected_minutes:
        return _transition(tx, order, replace(order, state=OrderState.VERIFIED.value,
                                              resolution=resolution), label, resolution)
    _check_minutes(tx.policy, corrected_minutes, "the corrected service time")
    # a corrected record is shown again for a full publicity period before it counts
    return _transition(tx, order, replace(
        order, state=OrderState.VERIFIED.value, resolution=resolution,
        measured_minutes=corrected_minutes,
        public_until=tx.now + timedelta(days=tx.policy.publicity_days)), label, resolution)


def cancel_order(tx: Tx, order_id: int, cancelled_by: Actor, reason: str) -> OrderView:
    reason = check_text("reason", reason)
    order = tx.repo.orders.get(order_id)
    require_actor(tx, cancelled_by)
    if not (cancelled_by.person_id and cancelled_by.person_id == order.volunteer_id):
        require_acts_for(tx, cancelled_by, order.recipient_id, "cancel an order")
    require_state(order.id, Action.CANCEL, OrderState(order.state))
    tx.repo.holds.resolve_order(order.id, HoldState.RELEASED, tx.now)
    if order.claim_id:
        claims.void_redemption(tx, order)
    said = f"已取消 (cancelled by {cancelled_by.label}" + (f": {reason})" if reason else ")")
    return _transition(tx, order, replace(order, state=OrderState.CANCELLED.value,
                                          cancelled_at=tx.now, held_minutes=0,
                                          cancel_reason=said),
                       cancelled_by.label, reason)


#: The notice of ``record_order`` on an order recorded before: nothing changed.
ALREADY_RECORDED = "ALREADY_RECORDED"


def record_order(tx: Tx, order_id: int) -> OrderView:
    """Record one verified service once its publicity period is over.

    Recording an order that is recorded already changes nothing and succeeds, saying so
    in a notice: the node records due orders by itself, so staff who run ``order
    record`` after it did must not be told they failed."""
    order = tx.repo.orders.get(order_id)
    if already_done(Action.RECORD, OrderState(order.state)):
        assert order.recorded_at is not None
        view = order_view(tx, order)
        said = (f"已记录 (order {order.id} was already recorded at "
                f"{city_time(order.recorded_at)}; nothing changed) [{ALREADY_RECORDED}]")
        return replace(view, notices=(said, *view.notices))
    require_state(order.id, Action.RECORD, OrderState(order.state))
    assert order.public_until is not None
    if tx.now < order.public_until:
        raise FailedPrecondition(
            f"公示期未满 (order {order.id} is public until {city_time(order.public_until)}, "
            "the end of its publicity period; from then on the node records it by itself, "
            f"or run `timebank node order record {order.id}` (an operator: `timebank node "
            "order record-due`))", "PUBLICITY_NOT_OVER")
    return _record(tx, [order])[0]


def record_due_orders(tx: Tx, limit: int) -> list[OrderView]:
    """Record every order whose publicity period is over (at most ``limit``), in one batch."""
    if not 1 <= limit <= MAX_RECORD_BATCH:
        raise InvalidArgument(f"record 1 to {MAX_RECORD_BATCH} orders at a time")
    return _record(tx, tx.repo.orders.by_ids(tx.repo.orders.due_ids(tx.now, limit)))


def due_order_ids(tx: Tx, limit: int) -> list[int]:
    """The orders whose publicity period is over, oldest first."""
    return tx.repo.orders.due_ids(tx.now, limit)


def _record(tx: Tx, batch: list[OrderRecord]) -> list[OrderView]:
    """Where an order is recorded: one ledger entry per order, all or nothing.

    The rounded minutes are minted for the volunteer (past the stored-hours cap,
    to the donation pool; past the daily cap, not stored) and the payment is
    taken from what was held at acceptance. Batched: a few statements per batch.
    """
    if not batch:
        return []
    repo, policy = tx.repo, tx.policy
    for order in batch:
        require_state(order.id, Action.RECORD, OrderState(order.state))
        if order.public_until is None or order.public_until > tx.now or not order.volunteer_id:
            raise InvariantViolation(f"order {order.id} is not due for recording")
    ids = [o.id for o in batch]
    holds = repo.holds.of_orders(ids)
    accounts = repo.ledger.accounts_by_ids([h.account_id for hs in holds.values() for h in hs])
    volunteers = repo.people.by_ids([o.volunteer_id or 0 for o in batch])
    totals = repo.ledger.person_totals(list(volunteers))
    days = (repo.orders.banked_on_days([(o.volunteer_id or 0, o.service_day) for o in batch
                                        if o.service_day is not None])
            if policy.daily_cap_minutes else {})
    person_ids = {v.person_ref: v.id for v in volunteers.values()}
    person_ids.update({a.code.split("/")[1]: a.person_id for a in accounts.values()
                       if a.person_id is not None})
    agreed = repo.consents.uses_of_orders([o.id for o in batch if o.payer_id])
    entries: list[Entry] = []
    updates: list[tuple[OrderRecord, OrderRecord]] = []
    events: list[OrderEvent] = []
    for order in batch:
        volunteer = volunteers[order.volunteer_id or 0]
        recorded = round_to_unit(order.measured_minutes, policy.rounding_unit_minutes)
        day = (volunteer.id, order.service_day) if order.service_day else None
        today = days.get(day, 0) if day else 0
        split = split_deposit(recorded, totals[volunteer.id], policy.cap_minutes,
                              policy.daily_cap_minutes, today)
        if day:
            days[day] = today + split.banked + split.to_pool
        origin = Origin.GROUP if volunteer.kind == PersonKind.GROUP else Origin.INDIVIDUAL
        charge = min(recorded, sum(h.minutes for h in holds[order.id]))
        if order.claim_id:  # paid by another district: charged when the claim completes
            assert not holds[order.id]
            claims.finish_redemption(tx, order, recorded)
        parts: list[tuple[Account, int]] = [
            (issuance(origin), -(split.banked + split.to_pool)),
            (Account.of_person(volunteer.person_ref, origin), split.banked),
            (DONATION_POOL, split.to_pool),
        ]
        left = charge
        for hold in holds[order.id]:
            take = min(left, hold.minutes)
            left -= take
            parts.append((account_from_code(accounts[hold.account_id].code), -take))
        parts.append((CONSUMPTION, charge))
        postings = merge_postings(parts)
        for p in postings:
            if p.account.person_ref is not None:
                owner = person_ids[p.account.person_ref]
                if owner in totals:
                    totals[owner] += p.minutes
        if postings:
            memo = f"order {order.id}" + (f" (consent {agreed[order.id]})"
                                          if order.id in agreed else "")
            entries.append(Entry(EntryKind.SERVICE, postings, tx.now, memo=memo,
                                 order_id=order.id))
        updates.append((order, replace(
            order, state=OrderState.RECORDED.value, held_minutes=0, recorded_minutes=recorded,
            banked_minutes=split.banked, excess_to_pool_minutes=split.to_pool,
            unbanked_minutes=split.unbanked, charged_minutes=charge, recorded_at=tx.now)))
        events.append(OrderEvent(order.id, tx.now, order.state, OrderState.RECORDED.value,
                                 "node", f"{recorded} min recorded, {split.banked} banked"))
    repo.holds.close([h for hs in holds.values() for h in hs], HoldState.POSTED, tx.now)
    repo.ledger.append_many(entries, person_ids)
    repo.orders.update_all(updates)
    repo.orders.add_events(events)
    return [order_view(tx, o) for o in repo.orders.by_ids(ids)]


# ------------------------------------------------------------------ a payer who moved


@dataclass(frozen=True, slots=True)
class HomeQuestion:
    """An order waiting for the city directory: its payer's hours are no longer kept in
    the district its claim asked (``claim_id``, rejected NOT_HOME_DISTRICT)."""

    order_id: int
    claim_id: str
    person_ref: str


def awaiting_home(tx: Tx, limit: int) -> list[HomeQuestion]:
    """The orders whose payer the link should look up in the city directory, oldest first."""
    if not 1 <= limit <= MAX_RECORD_BATCH:
        raise InvalidArgument(f"ask about 1 to {MAX_RECORD_BATCH} orders at a time")
    return [HomeQuestion(*row) for row in tx.repo.orders.awaiting_home(limit)]


def redirect_payment(tx: Tx, order_id: int, claim_id: str,
                     answer: HomeLookup) -> OrderView | None:
    """Act on the city directory's answer for an order whose payer's hours moved.

    The district the order's claim asked said it no longer keeps the payer's hours. If
    the directory names another district, this node notes it as the payer's home (its
    cached home, with a person event) and asks that district with a fresh claim; the
    order stays accepted and waits for the answer, as at acceptance. Otherwise the order
    is cancelled, saying why: nobody registered the payer, the directory names this
    district, or it still names the district that refused. Returns the order, or None
    when it was settled meanwhile (cancelled, or asked again already) or the directory
    could not be reached (the link asks again later)."""
    if not answer.reached:
        return None
    order = tx.repo.orders.get(order_id)
    claim = tx.repo.claims.get(claim_id)
    if (claim is None or order.claim_id != claim_id or order.state != OrderState.ACCEPTED
            or not _awaits_home(claim)):
        return None
    payer = _payer(tx, order)
    if payer is None or payer.person_ref != claim.person_ref:
        raise InvariantViolation(f"order {order.id}'s claim {claim_id} is not its payer's")
    old, new = claim.counterparty, answer.home_node_id
    if not answer.registered:
        why = (f"城市目录中没有付款人 (district {old} no longer keeps the payer's hours, and "
               "no district has registered them in the city directory) [UNKNOWN_PERSON]")
    elif new == tx.node.node_id:
        why = ("付款人的时间现已记录在本区 (the city directory names this district as the "
               "payer's home: request the service again, paid from their hours here) "
               "[HOME_IS_HERE]")
    elif new == old:
        why = (f"城市目录仍指向原户籍区 (the city directory still names district {old}, which "
               "says it does not keep the payer's hours; ask the city bureau to check the "
               "directory) [NOT_HOME_DISTRICT]")
    else:
        if payer.home_node_id != new:
            people.move_home(tx, payer, new, "directory",
                             f"the city directory names district {new} (district {old} no "
                             f"longer keeps the hours; asked for order {order.id})")
            payer = tx.repo.people.get(payer.id)
        recipient = (payer if payer.id == order.recipient_id
                     else tx.repo.people.get(order.recipient_id))
        fresh = claims.propose_redemption(tx, order, payer, recipient)
        return _transition(tx, order, replace(order, claim_id=fresh), "directory",
                           f"付款人已迁至{new} (the payer's hours moved from district {old} "
                           f"to {new}, per the city directory; "
                           f"{format_hours(order.planned_minutes)} asked of {new}, "
                           f"claim {fresh})")
    claims.cancel_on_payment_lost(tx, order, why)
    return order_view(tx, tx.repo.orders.get(order.id))


def get_order(tx: Tx, order_id: int) -> OrderView:
    return order_view(tx, tx.repo.orders.get(order_id))


def list_orders(tx: Tx, person_id: int, state: OrderState | None, after_id: int,
                limit: int) -> list[OrderView]:
    if not 1 <= limit <= 1000:
        raise InvalidArgument("list at most 1000 orders at a time")
    if person_id:
        tx.repo.people.get(person_id)
    return [order_view(tx, o) for o in tx.repo.orders.list(
        person_id, state, after_id, limit)]


# ------------------------------------------------------------------ requests to take


def _point_names(tx: Tx, people: Iterable[PersonRecord]) -> dict[int, str]:
    """The names of the service points of ``people``, each read once ("" for one that
    is gone; people at none have no entry)."""
    names: dict[int, str] = {}
    for person in people:
        point = person.service_point_id or 0
        if point and point not in names:
            where = tx.repo.staff.service_point(point)
            names[point] = "" if where is None else where.name
    return names


def open_requests(tx: Tx, who: Principal, service_point_id: int, after_id: int,
                  limit: int) -> list[OpenRequestView]:
    """The requests waiting for a volunteer (志愿接单) after ``after_id``, in id order, at
    most ``limit``, of recipients at service point ``service_point_id`` (0: at any or
    none), as a volunteer choosing one to take sees them: the recipient only by their
    masked name (``node.domain.publicity``), never by their full name, ID number, phone
    or person id. People and service points are read once per call, not once per order.

    Staff see only the requests of their own service point's people and of people
    enrolled at none (as ``may_touch``); asking for another service point is
    PERMISSION_DENIED. Members, operators, auditors and programs see every service
    point's (a member looking for one to take nearby asks for a service point)."""
    require_call("ListOpenRequests", who)
    if not 1 <= limit <= MAX_OPEN_LIST:
        raise InvalidArgument(f"每次最多列出 {MAX_OPEN_LIST} 条待接单的服务请求 (list 1 to "
                              f"{MAX_OPEN_LIST} open requests at a time, not {limit})",
                              "LIMIT_OUT_OF_RANGE")
    within: tuple[int, ...] | None = None
    if who.role is Role.STAFF:
        within = (who.service_point_id,)
        if service_point_id not in (0, who.service_point_id):
            raise PermissionDenied(
                f"服务点工作人员只能查看本服务点的服务请求 ({who.label} works at service "
                f"point {who.service_point_id}: they see the requests of its people and of "
                f"people enrolled at no service point, not those of service point "
                f"{service_point_id})", "NOT_YOUR_SERVICE_POINT")
    if service_point_id:
        people.require_service_point(tx, service_point_id)
    found = tx.repo.orders.requested(after_id, limit, service_point_id=service_point_id,
                                     within=within)
    named = tx.repo.people.by_ids(sorted({o.recipient_id for o in found}))
    points = _point_names(tx, (named[o.recipient_id] for o in found))
    out = []
    for order in found:
        recipient = named[order.recipient_id]
        point = recipient.service_point_id or 0
        category = tx.policy.category(order.category)
        out.append(OpenRequestView(
            id=order.id, category=order.category,
            category_name=category.name if category else order.category,
            planned_minutes=order.planned_minutes, service_point_id=point,
            service_point=points.get(point, ""), recipient=mask_name(recipient.name),
            requested_at=order.requested_at, note=order.note))
    return out


# ------------------------------------------------------------------ the publicity period


def public_orders(tx: Tx, after_id: int, limit: int) -> list[PublicOrderView]:
    """The orders on public display now (verified ones until their publicity period
    ends, disputed ones until resolved) after ``after_id``, in id order, as the public
    supervision page (社会监督) shows them: anyone may ask, so only what the public
    may see is taken from the records, and names only masked
    (``node.domain.publicity``). People and service points are read once per call,
    not once per order."""
    if not 1 <= limit <= MAX_PUBLIC_LIST:
        raise InvalidArgument(f"每次最多列出 {MAX_PUBLIC_LIST} 条公示订单 (list 1 to "
                              f"{MAX_PUBLIC_LIST} public orders at a time, not {limit})",
                              "LIMIT_OUT_OF_RANGE")
    found = tx.repo.orders.in_publicity(tx.now, after_id, limit)
    named = tx.repo.people.by_ids(sorted(
        {o.recipient_id for o in found} | {o.volunteer_id for o in found if o.volunteer_id}))
    points = _point_names(tx, (named[o.recipient_id] for o in found))
    out = []
    for order in found:
        recipient = named[order.recipient_id]
        point = recipient.service_point_id or 0
        category = tx.policy.category(order.category)
        if order.checked_out_at is None or order.public_until is None or not order.volunteer_id:
            raise InvariantViolation(f"order {order.id} is {order.state} but was never "
                                     "served and verified")
        out.append(PublicOrderView(
            id=order.id, category=order.category,
            category_name=category.name if category else order.category,
            service_point=points.get(point, ""), minutes=order.measured_minutes,
            recipient=mask_name(recipient.name),
            volunteer=mask_name(named[order.volunteer_id].name),
            served_at=order.checked_out_at, public_until=order.public_until,
            disputed=order.state == OrderState.DISPUTED))
    return out
