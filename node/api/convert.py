"""Messages ↔ use-case values: enums, ids, timestamps, actors, views.

Pure translation. Requests are checked only for what the wire allows and the
use-cases cannot see (an enum left unspecified, a required id left 0, an id
beyond what any row can have, a timestamp outside the calendar); every rule of
the time bank stays in the use-cases. Input problems raise ``InvalidArgument``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from node.domain.claims import TEMPORARY, ClaimState, Role
from node.domain.consent import ConsentKind, ConsentState
from node.domain.ledger import Origin, StoredEntry
from node.domain.orders import OrderState, PaymentSource, PersonKind
from node.domain.policy import Relation
from node.usecases import views
from node.usecases.claims import ClaimView, ClearingView
from node.usecases.consent import ConsentView
from node.usecases.log_watch import LogStatus
from node.usecases.policies import PolicyView
from runtime.errors import InvalidArgument
from timebank.v1 import node_pb2 as pb

#: Rows (people, orders, staff, service points) have 32-bit ids on every supported
#: database (PostgreSQL ``integer``): a larger id cannot name a row, and would make
#: PostgreSQL fail the query instead of finding nothing. Ledger sequence numbers are
#: 64-bit.
MAX_ROW_ID = 2**31 - 1
MAX_SEQ = 2**63 - 1

K = TypeVar("K")
V = TypeVar("V")

PERSON_KINDS: dict[PersonKind, pb.PersonKind.ValueType] = {
    PersonKind.INDIVIDUAL: pb.PERSON_KIND_INDIVIDUAL,
    PersonKind.GROUP: pb.PERSON_KIND_GROUP,
}
RELATIONS: dict[Relation, pb.LinkKind.ValueType] = {
    Relation.SPOUSE: pb.LINK_KIND_SPOUSE,
    Relation.PARENT: pb.LINK_KIND_PARENT,
    Relation.CHILD: pb.LINK_KIND_CHILD,
    Relation.SIBLING: pb.LINK_KIND_SIBLING,
    Relation.GRANDPARENT: pb.LINK_KIND_GRANDPARENT,
    Relation.GRANDCHILD: pb.LINK_KIND_GRANDCHILD,
    Relation.PROXY: pb.LINK_KIND_PROXY,
}
PAYMENT_SOURCES: dict[PaymentSource, pb.PaymentSource.ValueType] = {
    PaymentSource.OWN: pb.PAYMENT_SOURCE_OWN,
    PaymentSource.RELATIVE: pb.PAYMENT_SOURCE_RELATIVE,
    PaymentSource.DONATION_POOL: pb.PAYMENT_SOURCE_DONATION_POOL,
    PaymentSource.CITY_GRANT: pb.PAYMENT_SOURCE_CITY_GRANT,
}
ORDER_STATES: dict[OrderState, pb.OrderState.ValueType] = {
    OrderState.REQUESTED: pb.ORDER_STATE_REQUESTED,
    OrderState.ACCEPTED: pb.ORDER_STATE_ACCEPTED,
    OrderState.CHECKED_IN: pb.ORDER_STATE_CHECKED_IN,
    OrderState.CHECKED_OUT: pb.ORDER_STATE_CHECKED_OUT,
    OrderState.VERIFIED: pb.ORDER_STATE_VERIFIED,
    OrderState.DISPUTED: pb.ORDER_STATE_DISPUTED,
    OrderState.RECORDED: pb.ORDER_STATE_RECORDED,
    OrderState.CANCELLED: pb.ORDER_STATE_CANCELLED,
}
ORIGINS: dict[Origin, pb.Origin.ValueType] = {
    Origin.INDIVIDUAL: pb.ORIGIN_INDIVIDUAL,
    Origin.GROUP: pb.ORIGIN_GROUP,
    Origin.DONATED: pb.ORIGIN_DONATED,
    Origin.GRANTED: pb.ORIGIN_GRANTED,
}
#: Whether the service is upheld → DisputeOutcome.
OUTCOMES: dict[bool, pb.DisputeOutcome.ValueType] = {
    True: pb.DISPUTE_OUTCOME_UPHOLD_SERVICE,
    False: pb.DISPUTE_OUTCOME_VOID_SERVICE,
}


def _from_wire(table: Mapping[K, V], value: int, field: str, names: str) -> K:
    for domain, wire in table.items():
        if wire == value:
            return domain
    if value == 0:
        raise InvalidArgument(f"{field} is required: one of {names}", "MISSING_FIELD")
    raise InvalidArgument(f"{field} {value} is not a known value; use one of {names}",
                          "UNKNOWN_ENUM_VALUE")


_PERSON_KIND_NAMES = ", ".join(pb.PersonKind.Name(v) for v in PERSON_KINDS.values())
_LINK_KIND_NAMES = ", ".join(pb.LinkKind.Name(v) for v in RELATIONS.values())
_PAYMENT_SOURCE_NAMES = ", ".join(pb.PaymentSource.Name(v) for v in PAYMENT_SOURCES.values())
_ORDER_STATE_NAMES = ", ".join(pb.OrderState.Name(v) for v in ORDER_STATES.values())
_OUTCOME_NAMES = ", ".join(pb.DisputeOutcome.Name(v) for v in OUTCOMES.values())


# ---------------------------------------------------------------- requests → use-case values

def person_kind(value: int, field: str = "kind") -> PersonKind:
    return _from_wire(PERSON_KINDS, value, field, _PERSON_KIND_NAMES)


def relation(value: int, field: str = "kind") -> Relation:
    return _from_wire(RELATIONS, value, field, _LINK_KIND_NAMES)


def payment_source(value: int, field: str = "payment_source") -> PaymentSource:
    return _from_wire(PAYMENT_SOURCES, value, field, _PAYMENT_SOURCE_NAMES)


def order_state_filter(value: int, field: str = "state") -> OrderState | None:
    """An order state used as a filter: unspecified means any state."""
    if value == pb.ORDER_STATE_UNSPECIFIED:
        return None
    return _from_wire(ORDER_STATES, value, field, _ORDER_STATE_NAMES)


def uphold(value: int, field: str = "outcome") -> bool:
    """Whether a DisputeOutcome upholds the service."""
    return _from_wire(OUTCOMES, value, field, _OUTCOME_NAMES)


def optional_id(value: int, field: str, maximum: int = MAX_ROW_ID) -> int:
    """An id that may be left 0 (meaning none); one above any possible row is refused."""
    if value > maximum:
        raise InvalidArgument(f"{field} {value} is out of range (at most {maximum})",
                              "ID_OUT_OF_RANGE")
    return value


def required_id(value: int, field: str, maximum: int = MAX_ROW_ID) -> int:
    """An id the call cannot do without."""
    if value == 0:
        raise InvalidArgument(f"{field} is required", "MISSING_FIELD")
    return optional_id(value, field, maximum)


def limit(value: int, default: int) -> int:
    """A page size: 0 means the call's default; the use-case checks the range."""
    return default if value == 0 else value


def actor(has: bool, message: pb.Actor, field: str) -> views.Actor:
    """The Actor oneof: exactly one of a person id or a staff id, not 0."""
    which = message.WhichOneof("who") if has else None
    if which is None:
        raise InvalidArgument(f"{field} is required: set {field}.person_id or "
                              f"{field}.staff_id", "MISSING_FIELD")
    if which == "person_id":
        return views.Actor(person_id=required_id(message.person_id, f"{field}.person_id"))
    return views.Actor(staff_id=required_id(message.staff_id, f"{field}.staff_id"))


def time_or_none(has: bool, ts: Timestamp, field: str) -> datetime | None:
    """A timestamp that may be unset (meaning now), as a UTC-aware datetime."""
    if not has:
        return None
    try:
        return ts.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument(f"{field} is not a valid time (seconds {ts.seconds}, "
                              f"nanos {ts.nanos})", "BAD_TIMESTAMP") from None


# ---------------------------------------------------------------- use-case values → responses

def timestamp(at: datetime | None) -> Timestamp | None:
    """A time as a Timestamp (None: unset)."""
    if at is None:
        return None
    out = Timestamp()
    out.FromDatetime(at.astimezone(UTC))
    return out


def _set_time(target: Timestamp, at: datetime | None) -> None:
    if at is not None:
        target.FromDatetime(at.astimezone(UTC))


def service_point_pb(v: views.ServicePointView) -> pb.ServicePoint:
    return pb.ServicePoint(id=v.id, code=v.code, name=v.name, street=v.street)


def staff_pb(v: views.StaffView) -> pb.Staff:
    return pb.Staff(id=v.id, name=v.name, service_point_id=v.service_point_id)


def person_pb(v: views.PersonView) -> pb.Person:
    out = pb.Person(id=v.id, person_ref=v.person_ref, kind=PERSON_KINDS[PersonKind(v.kind)],
                    name=v.name, priority=v.priority, service_point_id=v.service_point_id,
                    age=v.age, home_node_id=v.home_node_id, phone=v.phone)
    _set_time(out.enrolled_at, v.enrolled_at)
    for c in v.changes:
        change = out.changes.add(actor=c.actor, kind=c.kind, detail=c.detail)
        _set_time(change.at, c.at)
    for link in v.links:
        shown = out.links.add(other_id=link.other_id, kind=RELATIONS[link.standing.relation],
                              acts_for_other=link.standing.acts_for_other)
        _set_time(shown.linked_at, link.at)
    return out


def people_pb(vs: list[views.PersonView]) -> list[pb.Person]:
    """People as found (FindPeople): the views hold no change history, so neither do
    the messages."""
    return [person_pb(v) for v in vs]


def link_pb(v: views.LinkView) -> pb.Link:
    return pb.Link(person_id=v.person_id, other_id=v.other_id,
                   kind=RELATIONS[Relation(v.relation)])


def order_pb(v: views.OrderView) -> pb.Order:
    o = v.record
    out = pb.Order(
        id=o.id, state=ORDER_STATES[OrderState(o.state)], recipient_id=o.recipient_id,
        volunteer_id=o.volunteer_id or 0, category=o.category, category_name=v.category_name,
        planned_minutes=o.planned_minutes,
        payment_source=PAYMENT_SOURCES[PaymentSource(o.payment_source)],
        payer_id=o.payer_id or 0, held_minutes=o.held_minutes,
        measured_minutes=o.measured_minutes, recorded_minutes=o.recorded_minutes,
        banked_minutes=o.banked_minutes, excess_to_pool_minutes=o.excess_to_pool_minutes,
        unbanked_minutes=o.unbanked_minutes, charged_minutes=o.charged_minutes,
        rating=o.rating, comment=o.comment, dispute_reason=o.dispute_reason,
        resolution=o.resolution, note=o.note, notices=list(v.notices),
        claim_id=o.claim_id or "", cancel_reason=o.cancel_reason, consent_id=v.consent_id,
        rating_by_volunteer=o.rating_by_volunteer,
        comment_by_volunteer=o.comment_by_volunteer)
    _set_time(out.requested_at, o.requested_at)
    _set_time(out.checked_in_at, o.checked_in_at)
    _set_time(out.checked_out_at, o.checked_out_at)
    _set_time(out.verified_at, o.verified_at)
    _set_time(out.public_until, o.public_until)
    _set_time(out.recorded_at, o.recorded_at)
    _set_time(out.cancelled_at, o.cancelled_at)
    _set_time(out.rated_by_volunteer_at, o.rated_by_volunteer_at)
    return out


def orders_pb(vs: list[views.OrderView]) -> list[pb.Order]:
    return [order_pb(v) for v in vs]


def public_order_pb(v: views.PublicOrderView) -> pb.PublicOrder:
    """An order in its publicity period, for anyone: only the view's fields, which name
    nobody but by a masked name."""
    out = pb.PublicOrder(
        id=v.id, category=v.category, category_name=v.category_name,
        service_point=v.service_point, minutes=v.minutes, recipient=v.recipient,
        volunteer=v.volunteer, disputed=v.disputed)
    _set_time(out.served_at, v.served_at)
    _set_time(out.public_until, v.public_until)
    return out


def open_request_pb(v: views.OpenRequestView) -> pb.OpenRequest:
    """A request waiting for a volunteer: only the view's fields, which name the
    recipient by a masked name only."""
    out = pb.OpenRequest(
        id=v.id, category=v.category, category_name=v.category_name,
        planned_minutes=v.planned_minutes, service_point_id=v.service_point_id,
        service_point=v.service_point, recipient=v.recipient, note=v.note)
    _set_time(out.requested_at, v.requested_at)
    return out


def transaction_pb(e: StoredEntry) -> pb.LedgerTransaction:
    out = pb.LedgerTransaction(
        seq=e.seq, kind=e.entry.kind.value, order_id=e.entry.order_id,
        reverses_seq=e.entry.reverses_seq, memo=e.entry.memo,
        postings=[pb.Posting(account=p.account.code, minutes=p.minutes)
                  for p in e.entry.postings],
        prev_hash=e.prev_hash, hash=e.hash)
    _set_time(out.at, e.entry.at)
    return out


def balance_pb(v: views.BalanceView) -> pb.GetBalanceResponse:
    return pb.GetBalanceResponse(
        person_id=v.person_id, person_ref=v.person_ref, total_minutes=v.total,
        held_minutes=v.held, available_minutes=v.available, cap_minutes=v.cap,
        by_origin=[pb.OriginBalance(origin=ORIGINS[b.origin], total_minutes=b.total,
                                    held_minutes=b.held) for b in v.by_origin])


def history_pb(v: views.HistoryView) -> pb.GetHistoryResponse:
    return pb.GetHistoryResponse(person_id=v.person_id, entries=[
        pb.HistoryEntry(transaction=transaction_pb(e), delta_minutes=delta)
        for e, delta in v.entries])


def policy_pb(v: PolicyView) -> pb.GetPolicyResponse:
    p = v.policy
    out = pb.GetPolicyResponse(
        digest=p.digest, rounding_unit_minutes=p.rounding_unit_minutes,
        cap_minutes=p.cap_minutes, daily_cap_minutes=p.daily_cap_minutes,
        publicity_days=p.publicity_days, group_hours_donate_only=p.group_hours_donate_only,
        categories=[pb.Category(code=c.code, name=c.name) for c in p.categories],
        own_min_age=p.own_min_age, relative_min_age=p.relative_min_age,
        relative_kinds=sorted(RELATIONS[r] for r in p.relative_kinds),
        source_toml=p.source_toml)
    if v.city is not None:
        out.city_serial = v.city.serial
        out.effective_at.FromDatetime(v.city.effective_at.astimezone(UTC))
    if v.next is not None:
        out.next_serial = v.next.serial
        out.next_digest = v.next.sha256.hex()
        out.next_effective_at.FromDatetime(v.next.effective_at.astimezone(UTC))
    return out


def ledger_report_pb(r: views.LedgerReport) -> pb.CheckLedgerResponse:
    return pb.CheckLedgerResponse(
        ok=r.ok, transactions=r.transactions, accounts=r.accounts, head_hash=r.head_hash,
        problems=list(r.problems), issued_minutes=r.issued,
        held_by_people_minutes=r.held_by_people, donation_pool_minutes=r.donation_pool,
        consumed_minutes=r.consumed, granted_minutes=r.granted,
        clearing_minutes=r.clearing, refused_deliveries=r.refused_deliveries,
        refusals=list(r.refusals))


_ROLES = {Role.CREDITOR: pb.CLAIM_ROLE_CREDITOR, Role.DEBTOR: pb.CLAIM_ROLE_DEBTOR}


def claim_pb(v: ClaimView) -> pb.Claim:
    out = pb.Claim(claim_id=v.claim_id, kind=v.kind.value, role=_ROLES[v.role],
                   counterparty_node_id=v.counterparty, minutes=v.minutes,
                   posted_minutes=v.posted_minutes, state=v.state.value, reason=v.reason,
                   detail=v.detail, order_id=v.order_id, person_id=v.person_id,
                   temporary=v.reason in TEMPORARY)
    _set_time(out.expires_at, v.expires_at)
    _set_time(out.updated_at, v.updated_at)
    if v.waiting is not None:
        out.waiting_reason = v.waiting.reason
        out.waiting_detail = v.waiting.detail
        out.attempts = v.waiting.attempts
        _set_time(out.next_attempt_at, v.waiting.next_attempt_at)
    return out


def claim_state_filter(value: str, field: str = "state") -> ClaimState | None:
    if not value:
        return None
    try:
        return ClaimState(value)
    except ValueError:
        names = ", ".join(s.value for s in ClaimState)
        raise InvalidArgument(f"{field} is one of {names}, not {value[:32]!r}",
                              "BAD_ENUM") from None


def claim_id(value: str, field: str = "claim_id") -> str:
    if len(value) != 36 or not value.isascii():
        raise InvalidArgument(f"{field} is a claim id (a UUID, 36 characters)",
                              "MALFORMED_CLAIM_ID")
    return value


def clearing_pb(v: ClearingView, address: str) -> pb.GetClearingResponse:
    return pb.GetClearingResponse(federated=bool(address), clearinghouse=address,
                       net_minutes=v.net_minutes, open_claims=v.open_claims,
                       unsent_messages=v.unsent_messages, last_delivery_seq=v.last_delivery,
                       orders_awaiting_home=v.awaiting_home)


def log_heads_pb(status: LogStatus, out: pb.GetLogHeadsResponse,
                 clearinghouse_key: bytes) -> pb.GetLogHeadsResponse:
    """The heads a node holds and its alarms, into ``out`` (which names the node)."""
    out.clearinghouse_key = clearinghouse_key.hex()
    out.verified = "" if status.verified is None else status.verified.note
    out.cosigned = "" if status.cosigned is None else status.cosigned.note
    out.final = "" if status.final is None else status.final.note
    for alarm in status.alarms:
        item = out.alarms.add(kind=alarm.kind, detail=alarm.detail)
        if alarm.since:
            item.since.FromSeconds(alarm.since)
    out.evidence.extend(f.document for f in status.forks)
    return out


# ---------------------------------------------------------------- consent (ADR 0017)

CONSENT_KINDS = {ConsentKind.STANDING: pb.CONSENT_KIND_STANDING,
                 ConsentKind.ONCE: pb.CONSENT_KIND_ONCE}
CONSENT_STATES = {ConsentState.ACTIVE: pb.CONSENT_STATE_ACTIVE,
                  ConsentState.USED: pb.CONSENT_STATE_USED,
                  ConsentState.REVOKED: pb.CONSENT_STATE_REVOKED}
_CONSENT_KIND_NAMES = ", ".join(pb.ConsentKind.Name(v) for v in CONSENT_KINDS.values())


def consent_kind(value: int, field: str = "kind") -> ConsentKind:
    return _from_wire(CONSENT_KINDS, value, field, _CONSENT_KIND_NAMES)


def consent_pb(v: ConsentView) -> pb.Consent:
    c = v.consent
    out = pb.Consent(
        id=c.id, payer_id=c.payer_id, grantee_ref=c.grantee_ref, grantee_id=v.grantee_id,
        kind=CONSENT_KINDS[c.kind], state=CONSENT_STATES[c.state], max_minutes=c.max_minutes,
        total_minutes=c.total_minutes, used_minutes=c.used_minutes, order_id=c.order_id or 0,
        granted_by=c.granted_by, revoked_by=c.revoked_by, in_force=v.in_force)
    _set_time(out.granted_at, c.granted_at)
    _set_time(out.expires_at, c.expires_at)
    _set_time(out.revoked_at, c.revoked_at)
    return out
