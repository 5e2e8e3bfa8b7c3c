"""Orders of service and their history of events (only ever inserted).

An order changes from the state its caller read: ``update`` writes the columns that
differ between the record read and the record after, on the condition that the row is
still in the state read (a lost update would be a bug: writers are serial).
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import Connection, FromClause, and_, bindparam, func, insert, or_, select, update

from node.domain.claims import ClaimState, Reason
from node.domain.orders import OrderState
from node.storage.tables import CLAIMS, EVENTS, ORDERS, PEOPLE, changed, record, values
from runtime.errors import InvariantViolation, NotFound
from runtime.statements import Prepared


@dataclass(frozen=True, slots=True)
class NewOrder:
    """An order as requested, before the node numbers it."""

    recipient_id: int
    category: str
    planned_minutes: int
    payment_source: str
    payer_id: int | None
    requested_by: str
    note: str
    requested_at: datetime


@dataclass(frozen=True, slots=True)
class OrderRecord:
    id: int
    state: str
    recipient_id: int
    volunteer_id: int | None
    category: str
    planned_minutes: int
    payment_source: str
    payer_id: int | None
    requested_by: str
    note: str
    held_minutes: int
    measured_minutes: int
    recorded_minutes: int
    banked_minutes: int
    excess_to_pool_minutes: int
    unbanked_minutes: int
    charged_minutes: int
    rating: int
    comment: str
    verified_by: str
    dispute_reason: str
    resolution: str
    service_day: date | None
    requested_at: datetime
    accepted_at: datetime | None
    checked_in_at: datetime | None
    checked_out_at: datetime | None
    verified_at: datetime | None
    public_until: datetime | None
    recorded_at: datetime | None
    cancelled_at: datetime | None
    claim_id: str | None = None  # paid by the payer's home district through this claim
    cancel_reason: str = ""  # why a cancelled order was cancelled, for the operator
    #: The volunteer's rating of the person served (0: not yet), its comment and when.
    rating_by_volunteer: int = 0
    comment_by_volunteer: str = ""
    rated_by_volunteer_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """One change of an order: from which state to which, who made it and why."""

    order_id: int
    at: datetime
    from_state: str  # "" for the request that made the order
    to_state: str
    actor: str
    detail: str = ""


class OrderRepo:
    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, order: NewOrder) -> int:
        """Record a new order, REQUESTED and with nothing held, measured or paid yet."""
        return int(self.conn.execute(
            insert(ORDERS).values(
                state=OrderState.REQUESTED.value, held_minutes=0, measured_minutes=0,
                recorded_minutes=0, banked_minutes=0, excess_to_pool_minutes=0,
                unbanked_minutes=0, charged_minutes=0, rating=0, comment="", verified_by="",
                dispute_reason="", resolution="", cancel_reason="", rating_by_volunteer=0,
                comment_by_volunteer="", **values(order))
            .returning(ORDERS.c.id)).scalar_one())

    def get(self, order_id: int) -> OrderRecord:
        row = _BY_ID(self.conn, {"order_id": order_id}).first()
        if row is None:
            raise NotFound(f"there is no order {order_id} on this node", "UNKNOWN_ORDER")
        return record(OrderRecord, row)

    def by_ids(self, order_ids: Sequence[int]) -> list[OrderRecord]:
        rows = self.conn.execute(select(ORDERS).where(ORDERS.c.id.in_(list(order_ids)))
                                 .order_by(ORDERS.c.id))
        return [record(OrderRecord, r) for r in rows]

    def update(self, before: OrderRecord, after: OrderRecord) -> None:
        """Write ``after`` over ``before`` (as read in this transaction)."""
        self.update_all([(before, after)])

    def update_all(self, changes: Iterable[tuple[OrderRecord, OrderRecord]]) -> None:
        """Write each ``after`` over its ``before``: one statement per set of changed
        columns (a batch of orders recorded together changes the same ones)."""
        batches: dict[frozenset[str], list[dict[str, object]]] = {}
        for before, after in changes:
            if before.id != after.id:
                raise InvariantViolation(f"order {before.id} cannot become order {after.id}")
            columns = changed(before, after)
            if columns:
                batches.setdefault(frozenset(columns), []).append(
                    {"w_id": before.id, "w_state": before.state,
                     **{f"b_{c}": getattr(after, c) for c in columns}})
        for batch, rows in batches.items():
            statement = _update(batch)
            done = (statement(self.conn, rows[0]).rowcount if len(rows) == 1
                    else statement.many(self.conn, rows))
            if done != len(rows):
                raise InvariantViolation("an order changed under a writer: writers are serial")

    def add_event(self, event: OrderEvent) -> None:
        _INSERT_EVENT(self.conn, values(event))

    def add_events(self, events: Sequence[OrderEvent]) -> None:
        if events:
            _INSERT_EVENT.many(self.conn, [values(e) for e in events])

    def events(self, order_id: int) -> list[OrderEvent]:
        """An order's history, in the order it happened."""
        return [OrderEvent(r.order_id, r.at, r.from_state, r.to_state, r.actor, r.detail)
                for r in self.conn.execute(select(EVENTS).where(EVENTS.c.order_id == order_id)
                                           .order_by(EVENTS.c.id))]

    def due_ids(self, now: datetime, limit: int) -> list[int]:
        """Verified orders whose publicity period is over, oldest first."""
        return [int(i) for i in self.conn.execute(
            select(ORDERS.c.id).where(ORDERS.c.state == OrderState.VERIFIED.value,
                                      ORDERS.c.public_until <= now)
            .order_by(ORDERS.c.public_until, ORDERS.c.id).limit(limit)).scalars()]

    def banked_on_days(self, pairs: Sequence[tuple[int, date]]) -> dict[tuple[int, date], int]:
        """Minutes already banked (or sent to the pool) per (volunteer, service day)."""
        if not pairs:
            return {}
        volunteers = list({v for v, _ in pairs})
        days = list({d for _, d in pairs})
        q = (select(ORDERS.c.volunteer_id, ORDERS.c.service_day,
                    func.sum(ORDERS.c.banked_minutes + ORDERS.c.excess_to_pool_minutes)
                    .label("total"))
             .where(ORDERS.c.volunteer_id.in_(volunteers), ORDERS.c.service_day.in_(days),
                    ORDERS.c.state == OrderState.RECORDED.value)
             .group_by(ORDERS.c.volunteer_id, ORDERS.c.service_day))
        found = {(int(r.volunteer_id), r.service_day): int(r.total) for r in self.conn.execute(q)}
        return {p: found.get(p, 0) for p in pairs}

    def awaiting_home(self, limit: int) -> list[tuple[int, str, str]]:
        """(order id, claim id, payer's PersonRef) of accepted orders whose payment was
        refused because the district asked no longer keeps the payer's hours: the node
        asks the city directory where they are now. Oldest order first."""
        rows = self.conn.execute(_AWAITING.limit(limit))
        return [(int(r.id), r.claim_id, r.person_ref) for r in rows]

    def awaiting_home_count(self) -> int:
        return int(self.conn.execute(
            select(func.count()).select_from(_AWAITING_FROM).where(_AWAITING_WHERE)
        ).scalar_one())

    def claims_of(self, order_id: int) -> int:
        """How many claims this node has made to pay for the order (one per district asked)."""
        return int(self.conn.execute(
            select(func.count()).select_from(CLAIMS).where(CLAIMS.c.order_id == order_id)
        ).scalar_one())

    def in_publicity(self, now: datetime, after_id: int, limit: int) -> list[OrderRecord]:
        """Orders on public display at ``now``, after ``after_id``, in id order: verified
        ones until their publicity period ends, and disputed ones until the dispute is
        resolved (the public sees that a complaint is open for as long as it is)."""
        rows = self.conn.execute(
            select(ORDERS).where(
                ORDERS.c.id > after_id,
                or_(and_(ORDERS.c.state == OrderState.VERIFIED.value,
                         ORDERS.c.public_until > now),
                    ORDERS.c.state == OrderState.DISPUTED.value))
            .order_by(ORDERS.c.id).limit(limit))
        return [record(OrderRecord, r) for r in rows]

    def requested(self, after_id: int, limit: int, *, service_point_id: int = 0,
                  within: Collection[int] | None = None) -> list[OrderRecord]:
        """Orders waiting for a volunteer (REQUESTED) after ``after_id``, in id order, at
        most ``limit``. ``service_point_id``: only those whose recipient is at that
        service point (0: at any or none). ``within``: only those whose recipient is at
        one of these service points or at none (a staff member's view; None: every
        one). One SELECT, the recipient joined only when one of the two filters it."""
        where = [ORDERS.c.id > after_id, ORDERS.c.state == OrderState.REQUESTED.value]
        source: FromClause = ORDERS
        if service_point_id or within is not None:
            source = ORDERS.join(PEOPLE, PEOPLE.c.id == ORDERS.c.recipient_id)
        if service_point_id:
            where.append(PEOPLE.c.service_point_id == service_point_id)
        if within is not None:
            where.append(or_(PEOPLE.c.service_point_id.in_(sorted(within)),
                             PEOPLE.c.service_point_id.is_(None)))
        rows = self.conn.execute(select(ORDERS).select_from(source).where(*where)
                                 .order_by(ORDERS.c.id).limit(limit))
        return [record(OrderRecord, r) for r in rows]

    def list(self, person_id: int, state: OrderState | None, after_id: int,
             limit: int) -> list[OrderRecord]:
        """Orders after ``after_id`` in id order: a person's (as recipient, volunteer or
        payer; 0 for everyone's), in one state or any."""
        q = select(ORDERS).where(ORDERS.c.id > after_id)
        if person_id:
            q = q.where(or_(ORDERS.c.recipient_id == person_id,
                            ORDERS.c.volunteer_id == person_id,
                            ORDERS.c.payer_id == person_id))
        if state is not None:
            q = q.where(ORDERS.c.state == state.value)
        rows = self.conn.execute(q.order_by(ORDERS.c.id).limit(limit))
        return [record(OrderRecord, r) for r in rows]


_BY_ID = Prepared(select(ORDERS).where(ORDERS.c.id == bindparam("order_id")))


#: Accepted orders whose current claim was rejected NOT_HOME_DISTRICT.
_AWAITING_FROM = ORDERS.join(CLAIMS, CLAIMS.c.claim_id == ORDERS.c.claim_id)
_AWAITING_WHERE = and_(ORDERS.c.state == OrderState.ACCEPTED.value,
                       CLAIMS.c.state == ClaimState.REJECTED.value,
                       CLAIMS.c.reason == Reason.NOT_HOME_DISTRICT.value)
_AWAITING = (select(ORDERS.c.id, CLAIMS.c.claim_id, CLAIMS.c.person_ref)
             .select_from(_AWAITING_FROM).where(_AWAITING_WHERE).order_by(ORDERS.c.id))
_INSERT_EVENT = Prepared(insert(EVENTS))


@functools.cache
def _update(columns: frozenset[str]) -> Prepared:
    """The update of an order's ``columns`` from an expected state, prepared once per set."""
    return Prepared(update(ORDERS).where(ORDERS.c.id == bindparam("w_id"),
                                         ORDERS.c.state == bindparam("w_state"))
                    .values({c: bindparam(f"b_{c}") for c in sorted(columns)}))
