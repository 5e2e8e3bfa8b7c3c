"""The repository: every SQL statement the node runs, inside one caller's transaction.

It enforces the ledger's storage invariants as it writes (chain order, cached
balances, holds never exceeding balances) and raises InvariantViolation when a
caller breaks one: use-cases check user-facing rules first and refuse politely.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, and_, func, insert, or_, select, update

from node.domain.errors import InvariantViolation, NotFound
from node.domain.ledger import (
    Account,
    AccountKind,
    Entry,
    EntryKind,
    Origin,
    Posting,
    chain_hash,
)
from node.domain.policy import Relation
from node.storage import schema as s

ACCOUNTS = s.LedgerAccount.__table__
ENTRIES = s.LedgerEntry.__table__
POSTINGS = s.LedgerPosting.__table__
HOLDS = s.Hold.__table__
ORDERS = s.Order.__table__
PEOPLE = s.Person.__table__
LINKS = s.PersonLink.__table__
EVENTS = s.OrderEvent.__table__
IDEM = s.IdempotencyRecord.__table__
HEAD = s.LedgerHead.__table__
META = s.Meta.__table__
POINTS = s.ServicePoint.__table__
STAFF = s.StaffMember.__table__


@dataclass(frozen=True, slots=True)
class PersonRecord:
    id: int
    person_ref: str
    kind: str
    name: str
    id_number: str
    phone: str
    birth_date: date | None
    priority: bool
    service_point_id: int | None
    enrolled_at: datetime


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


@dataclass(frozen=True, slots=True)
class AccountRecord:
    id: int
    code: str
    kind: str
    origin: str | None
    person_id: int | None
    balance: int
    held: int

    @property
    def available(self) -> int:
        return self.balance - self.held


@dataclass(frozen=True, slots=True)
class HoldRecord:
    id: int
    order_id: int
    account_id: int
    minutes: int
    state: str


@dataclass(frozen=True, slots=True)
class StoredEntry:
    seq: int
    entry: Entry
    prev_hash: bytes
    hash: bytes


def _record(cls: Any, row: Any) -> Any:
    return cls(**row._mapping)


class Repo:
    """All reads and writes of one transaction."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # ------------------------------------------------------------ meta and head

    def meta(self, key: str) -> str | None:
        return self.conn.execute(select(META.c.value).where(META.c.key == key)).scalar()

    def set_meta(self, key: str, value: str) -> None:
        if self.meta(key) is None:
            self.conn.execute(insert(META).values(key=key, value=value))
        else:
            self.conn.execute(update(META).where(META.c.key == key).values(value=value))

    def head(self) -> tuple[int, bytes]:
        row = self.conn.execute(select(HEAD.c.seq, HEAD.c.hash).where(HEAD.c.id == 1)).one_or_none()
        if row is None:
            raise InvariantViolation("the ledger head is missing: was `timebank node init` run?")
        return int(row.seq), bytes(row.hash)

    def init_head(self, genesis: bytes) -> None:
        self.conn.execute(insert(HEAD).values(id=1, seq=0, hash=genesis))

    # ------------------------------------------------------------ service points and staff

    def insert_service_point(self, code: str, name: str, street: str, at: datetime) -> int:
        return int(self.conn.execute(
            insert(POINTS).values(code=code, name=name, street=street, created_at=at)
            .returning(POINTS.c.id)).scalar_one())

    def service_point(self, point_id: int) -> Any:
        return self.conn.execute(select(POINTS).where(POINTS.c.id == point_id)).one_or_none()

    def service_point_by_code(self, code: str) -> Any:
        return self.conn.execute(select(POINTS).where(POINTS.c.code == code)).one_or_none()

    def insert_staff(self, name: str, service_point_id: int, at: datetime) -> int:
        return int(self.conn.execute(
            insert(STAFF).values(name=name, service_point_id=service_point_id, created_at=at)
            .returning(STAFF.c.id)).scalar_one())

    def staff(self, staff_id: int) -> Any:
        return self.conn.execute(select(STAFF).where(STAFF.c.id == staff_id)).one_or_none()

    # ------------------------------------------------------------ people

    def insert_person(self, **values: Any) -> int:
        return int(self.conn.execute(insert(PEOPLE).values(**values).returning(PEOPLE.c.id))
                   .scalar_one())

    def person(self, person_id: int) -> PersonRecord:
        row = self.conn.execute(select(PEOPLE).where(PEOPLE.c.id == person_id)).one_or_none()
        if row is None:
            raise NotFound(f"no person {person_id} is enrolled on this node", "UNKNOWN_PERSON")
        rec: PersonRecord = _record(PersonRecord, row)
        return rec

    def person_by_ref(self, person_ref: str) -> PersonRecord | None:
        row = self.conn.execute(
            select(PEOPLE).where(PEOPLE.c.person_ref == person_ref)).one_or_none()
        return None if row is None else _record(PersonRecord, row)  # type: ignore[no-any-return]

    def count_people(self) -> int:
        return int(self.conn.execute(select(func.count()).select_from(PEOPLE)).scalar_one())

    def insert_link(self, person_id: int, other_id: int, relation: Relation,
                    staff_id: int | None, at: datetime) -> None:
        self.conn.execute(insert(LINKS).values(
            person_id=person_id, other_id=other_id, relation=relation.value,
            staff_id=staff_id, created_at=at))

    def relations(self, person_id: int, other_id: int) -> set[Relation]:
        """How ``other`` stands to ``person``, by every link recorded."""
        rows = self.conn.execute(select(LINKS.c.relation).where(
            LINKS.c.person_id == person_id, LINKS.c.other_id == other_id)).scalars()
        return {Relation(r) for r in rows}

    # ------------------------------------------------------------ accounts

    def account(self, code: str) -> AccountRecord | None:
        row = self.conn.execute(select(ACCOUNTS).where(ACCOUNTS.c.code == code)).one_or_none()
        return None if row is None else _record(AccountRecord, row)  # type: ignore[no-any-return]

    def account_by_id(self, account_id: int) -> AccountRecord:
        row = self.conn.execute(select(ACCOUNTS).where(ACCOUNTS.c.id == account_id)).one()
        rec: AccountRecord = _record(AccountRecord, row)
        return rec

    def ensure_account(self, account: Account, person_id: int | None = None) -> AccountRecord:
        existing = self.account(account.code)
        if existing is not None:
            return existing
        if (account.kind is AccountKind.PERSON) != (person_id is not None):
            raise InvariantViolation("person accounts, and only they, belong to a person")
        self.conn.execute(insert(ACCOUNTS).values(
            code=account.code, kind=account.kind.value,
            origin=None if account.origin is None else account.origin.value,
            person_id=person_id, balance=0, held=0))
        created = self.account(account.code)
        assert created is not None
        return created

    def accounts_of(self, person_id: int) -> list[AccountRecord]:
        rows = self.conn.execute(select(ACCOUNTS).where(ACCOUNTS.c.person_id == person_id)
                                 .order_by(ACCOUNTS.c.id))
        return [_record(AccountRecord, r) for r in rows]

    def all_accounts(self) -> list[AccountRecord]:
        return [_record(AccountRecord, r)
                for r in self.conn.execute(select(ACCOUNTS).order_by(ACCOUNTS.c.id))]

    # ------------------------------------------------------------ ledger

    def append(self, entry: Entry, person_ids: dict[str, int]) -> StoredEntry:
        """Append an entry to the chain and apply it to the cached balances.

        ``person_ids`` maps person_ref → person id for the person accounts it touches.
        """
        seq, prev = self.head()
        seq += 1
        digest = chain_hash(prev, seq, entry)
        self.conn.execute(insert(ENTRIES).values(
            seq=seq, kind=entry.kind.value, at=entry.at, memo=entry.memo,
            order_id=entry.order_id, reverses_seq=entry.reverses_seq or None,
            prev_hash=prev, hash=digest))
        rows = []
        for position, posting in enumerate(entry.postings):
            acct = posting.account
            person_id = person_ids[acct.person_ref] if acct.person_ref is not None else None
            record = self.ensure_account(acct, person_id)
            rows.append({"seq": seq, "position": position, "account_id": record.id,
                         "minutes": posting.minutes})
            after = self.conn.execute(
                update(ACCOUNTS).where(ACCOUNTS.c.id == record.id)
                .values(balance=ACCOUNTS.c.balance + posting.minutes)
                .returning(ACCOUNTS.c.balance, ACCOUNTS.c.held)).one()
            if acct.never_negative and after.balance < after.held:
                raise InvariantViolation(
                    f"entry {seq} would take {acct.code} below its holds "
                    f"(balance {after.balance}, held {after.held})")
        self.conn.execute(insert(POSTINGS), rows)
        updated = self.conn.execute(update(HEAD).where(HEAD.c.id == 1, HEAD.c.seq == seq - 1)
                                    .values(seq=seq, hash=digest))
        if updated.rowcount != 1:
            raise InvariantViolation("the ledger head moved under a writer: writers must be serial")
        return StoredEntry(seq, entry, prev, digest)

    def entry(self, seq: int) -> StoredEntry | None:
        row = self.conn.execute(select(ENTRIES).where(ENTRIES.c.seq == seq)).one_or_none()
        if row is None:
            return None
        return next(self._entries_from([row]))

    def reversal_of_seq(self, seq: int) -> int | None:
        return self.conn.execute(
            select(ENTRIES.c.seq).where(ENTRIES.c.reverses_seq == seq)).scalar()

    def _entries_from(self, rows: Sequence[Any]) -> Iterator[StoredEntry]:
        if not rows:
            return
        seqs = [r.seq for r in rows]
        postings: dict[int, list[Posting]] = {q: [] for q in seqs}
        accounts = self._account_cache()
        for p in self.conn.execute(
            select(POSTINGS.c.seq, POSTINGS.c.account_id, POSTINGS.c.minutes)
            .where(POSTINGS.c.seq.in_(seqs)).order_by(POSTINGS.c.seq, POSTINGS.c.position)
        ):
            postings[p.seq].append(Posting(accounts[p.account_id], int(p.minutes)))
        for r in rows:
            entry = Entry(kind=EntryKind(r.kind), postings=tuple(postings[r.seq]), at=r.at,
                          memo=r.memo, order_id=int(r.order_id),
                          reverses_seq=int(r.reverses_seq or 0))
            yield StoredEntry(int(r.seq), entry, bytes(r.prev_hash), bytes(r.hash))

    def _account_cache(self) -> dict[int, Account]:
        out: dict[int, Account] = {}
        for r in self.conn.execute(select(ACCOUNTS.c.id, ACCOUNTS.c.code, ACCOUNTS.c.kind,
                                          ACCOUNTS.c.origin)):
            out[r.id] = account_from_code(r.code)
        return out

    def iter_entries(self, batch: int = 2000) -> Iterator[StoredEntry]:
        """Every entry in chain order, read in bounded batches."""
        after = 0
        while True:
            rows = self.conn.execute(select(ENTRIES).where(ENTRIES.c.seq > after)
                                     .order_by(ENTRIES.c.seq).limit(batch)).all()
            if not rows:
                return
            yield from self._entries_from(rows)
            after = rows[-1].seq

    def entries_touching(self, account_ids: Sequence[int], after_seq: int,
                         limit: int) -> list[StoredEntry]:
        if not account_ids:
            return []
        seqs = select(POSTINGS.c.seq).where(POSTINGS.c.account_id.in_(account_ids),
                                            POSTINGS.c.seq > after_seq).distinct()
        rows = self.conn.execute(select(ENTRIES).where(ENTRIES.c.seq.in_(seqs))
                                 .order_by(ENTRIES.c.seq).limit(limit)).all()
        return list(self._entries_from(rows))

    def posting_sums(self) -> dict[int, int]:
        return {int(r.account_id): int(r.total) for r in self.conn.execute(
            select(POSTINGS.c.account_id, func.sum(POSTINGS.c.minutes).label("total"))
            .group_by(POSTINGS.c.account_id))}

    def active_hold_sums(self) -> dict[int, int]:
        return {int(r.account_id): int(r.total) for r in self.conn.execute(
            select(HOLDS.c.account_id, func.sum(HOLDS.c.minutes).label("total"))
            .where(HOLDS.c.state == "active").group_by(HOLDS.c.account_id))}

    # ------------------------------------------------------------ holds

    def place_hold(self, order_id: int, account_id: int, minutes: int, floor: int,
                   at: datetime) -> None:
        """Reserve minutes; ``floor`` is how low balance - held may go (0 for holders)."""
        if minutes <= 0:
            raise InvariantViolation("a hold is for a positive number of minutes")
        after = self.conn.execute(
            update(ACCOUNTS).where(ACCOUNTS.c.id == account_id)
            .values(held=ACCOUNTS.c.held + minutes)
            .returning(ACCOUNTS.c.balance, ACCOUNTS.c.held)).one()
        if after.balance - after.held < floor:
            raise InvariantViolation(f"hold on account {account_id} exceeds what is available")
        self.conn.execute(insert(HOLDS).values(order_id=order_id, account_id=account_id,
                                               minutes=minutes, state="active", created_at=at))

    def active_holds(self, order_id: int) -> list[HoldRecord]:
        rows = self.conn.execute(select(HOLDS.c.id, HOLDS.c.order_id, HOLDS.c.account_id,
                                        HOLDS.c.minutes, HOLDS.c.state)
                                 .where(HOLDS.c.order_id == order_id, HOLDS.c.state == "active")
                                 .order_by(HOLDS.c.id))
        return [_record(HoldRecord, r) for r in rows]

    def resolve_holds(self, order_id: int, state: str, at: datetime) -> list[HoldRecord]:
        """Mark every active hold of an order posted or released; give back their minutes."""
        assert state in ("posted", "released")
        holds = self.active_holds(order_id)
        for h in holds:
            self.conn.execute(update(ACCOUNTS).where(ACCOUNTS.c.id == h.account_id)
                              .values(held=ACCOUNTS.c.held - h.minutes))
            self.conn.execute(update(HOLDS).where(HOLDS.c.id == h.id)
                              .values(state=state, resolved_at=at))
        return holds

    # ------------------------------------------------------------ orders

    def insert_order(self, **values: Any) -> int:
        return int(self.conn.execute(insert(ORDERS).values(**values).returning(ORDERS.c.id))
                   .scalar_one())

    def order(self, order_id: int) -> OrderRecord:
        row = self.conn.execute(select(ORDERS).where(ORDERS.c.id == order_id)).one_or_none()
        if row is None:
            raise NotFound(f"there is no order {order_id} on this node", "UNKNOWN_ORDER")
        rec: OrderRecord = _record(OrderRecord, row)
        return rec

    def update_order(self, order_id: int, expected_state: str, **values: Any) -> None:
        done = self.conn.execute(update(ORDERS).where(ORDERS.c.id == order_id,
                                                      ORDERS.c.state == expected_state)
                                 .values(**values))
        if done.rowcount != 1:
            raise InvariantViolation(f"order {order_id} changed under a writer")

    def add_event(self, order_id: int, at: datetime, from_state: str, to_state: str,
                  actor: str, detail: str = "") -> None:
        self.conn.execute(insert(EVENTS).values(order_id=order_id, at=at, from_state=from_state,
                                                to_state=to_state, actor=actor, detail=detail))

    def due_order_ids(self, now: datetime, limit: int) -> list[int]:
        return [int(i) for i in self.conn.execute(
            select(ORDERS.c.id).where(ORDERS.c.state == "verified", ORDERS.c.public_until <= now)
            .order_by(ORDERS.c.public_until, ORDERS.c.id).limit(limit)).scalars()]

    def banked_on_day(self, volunteer_id: int, day: date) -> int:
        total = self.conn.execute(select(func.coalesce(func.sum(ORDERS.c.banked_minutes
                                                                + ORDERS.c.excess_to_pool_minutes), 0))
                                  .where(ORDERS.c.volunteer_id == volunteer_id,
                                         ORDERS.c.state == "recorded",
                                         ORDERS.c.service_day == day)).scalar_one()
        return int(total)

    def list_orders(self, person_id: int, state: str | None, after_id: int,
                    limit: int) -> list[OrderRecord]:
        q = select(ORDERS).where(ORDERS.c.id > after_id)
        if person_id:
            q = q.where(or_(ORDERS.c.recipient_id == person_id,
                            ORDERS.c.volunteer_id == person_id,
                            ORDERS.c.payer_id == person_id))
        if state:
            q = q.where(ORDERS.c.state == state)
        rows = self.conn.execute(q.order_by(ORDERS.c.id).limit(limit))
        return [_record(OrderRecord, r) for r in rows]

    def order_events(self, order_id: int) -> list[Any]:
        return list(self.conn.execute(select(EVENTS).where(EVENTS.c.order_id == order_id)
                                      .order_by(EVENTS.c.id)))

    def count_orders(self, state: str | None = None) -> int:
        q = select(func.count()).select_from(ORDERS)
        if state:
            q = q.where(ORDERS.c.state == state)
        return int(self.conn.execute(q).scalar_one())

    def holds_of_final_orders(self) -> int:
        """Active holds whose order is already final: must always be zero."""
        return int(self.conn.execute(
            select(func.count()).select_from(HOLDS.join(ORDERS, HOLDS.c.order_id == ORDERS.c.id))
            .where(and_(HOLDS.c.state == "active",
                        ORDERS.c.state.in_(["recorded", "cancelled"])))).scalar_one())

    # ------------------------------------------------------------ idempotency

    def idempotent_response(self, key: str) -> tuple[str, bytes, bytes] | None:
        row = self.conn.execute(select(IDEM.c.method, IDEM.c.fingerprint, IDEM.c.response)
                                .where(IDEM.c.key == key)).one_or_none()
        return None if row is None else (row.method, bytes(row.fingerprint), bytes(row.response))

    def save_response(self, key: str, method: str, fingerprint: bytes, response: bytes,
                      at: datetime) -> None:
        self.conn.execute(insert(IDEM).values(key=key, method=method, fingerprint=fingerprint,
                                              response=response, created_at=at))


def account_from_code(code: str) -> Account:
    """Parse an account code back into an Account (the inverse of Account.code)."""
    parts = code.split("/")
    kind = AccountKind(parts[0])
    if kind is AccountKind.PERSON and len(parts) == 3:
        return Account(kind, Origin(parts[2]), parts[1])
    if kind is AccountKind.ISSUANCE and len(parts) == 2:
        return Account(kind, Origin(parts[1]))
    if len(parts) == 1:
        origin = {AccountKind.DONATION_POOL: Origin.DONATED,
                  AccountKind.CITY_GRANT: Origin.GRANTED}.get(kind)
        return Account(kind, origin)
    raise InvariantViolation(f"not an account code: {code!r}")
