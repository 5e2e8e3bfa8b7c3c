"""The repository: every SQL statement the node runs, inside one caller's transaction.

It enforces the ledger's storage invariants as it writes (chain order, cached
balances, holds never exceeding balances) and raises InvariantViolation when a
caller breaks one: use-cases check user-facing rules first and refuse politely.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Table,
    and_,
    bindparam,
    func,
    insert,
    or_,
    select,
    update,
)

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
from runtime.errors import InvariantViolation, NotFound
from runtime.statements import Prepared

ACCOUNTS = cast(Table, s.LedgerAccount.__table__)
ENTRIES = cast(Table, s.LedgerEntry.__table__)
POSTINGS = cast(Table, s.LedgerPosting.__table__)
HOLDS = cast(Table, s.Hold.__table__)
ORDERS = cast(Table, s.Order.__table__)
PEOPLE = cast(Table, s.Person.__table__)
LINKS = cast(Table, s.PersonLink.__table__)
EVENTS = cast(Table, s.OrderEvent.__table__)
IDEM = cast(Table, s.IdempotencyRecord.__table__)
HEAD = cast(Table, s.LedgerHead.__table__)
META = cast(Table, s.Meta.__table__)
POINTS = cast(Table, s.ServicePoint.__table__)
STAFF = cast(Table, s.StaffMember.__table__)
CLAIMS = cast(Table, s.ClaimRow.__table__)
OUTBOX = cast(Table, s.OutboxMessage.__table__)
INBOX = cast(Table, s.InboxDelivery.__table__)
ANCHORS = cast(Table, s.LogAnchor.__table__)


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
    home_node_id: str | None = None  # None: this node keeps the person's hours

    @property
    def visitor(self) -> bool:
        """Whether the person's hours are kept in another district."""
        return self.home_node_id is not None


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
    order_id: int | None
    account_id: int
    minutes: int
    state: str


@dataclass(frozen=True, slots=True)
class ClaimRecord:
    claim_id: str
    kind: str
    role: str
    counterparty: str
    person_ref: str
    recipient_ref: str
    minutes: int
    posted_minutes: int
    origins: str
    state: str
    reason: str
    detail: str
    order_id: int | None
    person_id: int | None
    expires_at: datetime
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    id: int
    kind: str
    claim_id: str | None
    envelope: bytes
    created_at: datetime
    attempts: int
    next_attempt_at: datetime
    done_at: datetime | None
    outcome: str
    detail: str


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
        value: str | None = _META(self.conn, {"key": key}).scalar()
        return value

    def set_meta(self, key: str, value: str) -> None:
        if _SET_META(self.conn, {"b_key": key, "value": value}).rowcount == 0:
            _INSERT_META(self.conn, {"key": key, "value": value})

    def head(self) -> tuple[int, bytes]:
        row = _HEAD(self.conn).first()
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
        return int(_INSERT_PERSON(self.conn, values).scalar_one())

    def person(self, person_id: int) -> PersonRecord:
        row = _PERSON(self.conn, {"pid": person_id}).first()
        if row is None:
            raise NotFound(f"no person {person_id} is enrolled on this node", "UNKNOWN_PERSON")
        rec: PersonRecord = _record(PersonRecord, row)
        return rec

    def person_by_ref(self, person_ref: str) -> PersonRecord | None:
        row = _PERSON_BY_REF(self.conn, {"ref": person_ref}).first()
        return None if row is None else _record(PersonRecord, row)

    def person_by_id_number(self, id_number: str) -> PersonRecord | None:
        row = self.conn.execute(
            select(PEOPLE).where(PEOPLE.c.id_number == id_number)).one_or_none()
        return None if row is None else _record(PersonRecord, row)

    def count_people(self) -> int:
        return int(self.conn.execute(select(func.count()).select_from(PEOPLE)).scalar_one())

    def insert_link(self, person_id: int, other_id: int, relation: Relation,
                    staff_id: int | None, at: datetime) -> None:
        self.conn.execute(insert(LINKS).values(
            person_id=person_id, other_id=other_id, relation=relation.value,
            staff_id=staff_id, created_at=at))

    def relations(self, person_id: int, other_id: int) -> set[Relation]:
        """How ``other`` stands to ``person``, by every link recorded."""
        rows = _RELATIONS(self.conn, {"pid": person_id, "oid": other_id}).scalars()
        return {Relation(r) for r in rows}

    # ------------------------------------------------------------ accounts

    def account(self, code: str) -> AccountRecord | None:
        row = _ACCOUNT_BY_CODE(self.conn, {"code": code}).first()
        return None if row is None else _record(AccountRecord, row)

    def account_by_id(self, account_id: int) -> AccountRecord:
        row = self.conn.execute(select(ACCOUNTS).where(ACCOUNTS.c.id == account_id)).one()
        rec: AccountRecord = _record(AccountRecord, row)
        return rec

    def ensure_account(self, account: Account, person_id: int | None = None) -> AccountRecord:
        return self.ensure_accounts([(account, person_id)])[account.code]

    def accounts_by_ids(self, account_ids: Sequence[int]) -> dict[int, AccountRecord]:
        rows = _ACCOUNTS_BY_IDS(self.conn, {"ids": list(account_ids)})
        return {r.id: _record(AccountRecord, r) for r in rows}

    def person_totals(self, person_ids: Sequence[int]) -> dict[int, int]:
        """Each person's total stored minutes, all origins together (what the cap counts)."""
        rows = self.conn.execute(
            select(ACCOUNTS.c.person_id, func.sum(ACCOUNTS.c.balance).label("total"))
            .where(ACCOUNTS.c.person_id.in_(list(person_ids))).group_by(ACCOUNTS.c.person_id))
        found = {int(r.person_id): int(r.total) for r in rows}
        return {p: found.get(p, 0) for p in person_ids}

    def balances_of(self, person_id: int) -> tuple[str, list[tuple[str, int, int]]]:
        """A person's ref and (origin, balance, held) per account: one prepared query."""
        rows = _BALANCES(self.conn, {"pid": person_id}).all()
        if not rows:
            raise NotFound(f"no person {person_id} is enrolled on this node", "UNKNOWN_PERSON")
        return rows[0].person_ref, [(r.origin, int(r.balance), int(r.held))
                                    for r in rows if r.origin is not None]

    def accounts_of(self, person_id: int) -> list[AccountRecord]:
        rows = _ACCOUNTS_OF(self.conn, {"pid": person_id})
        return [_record(AccountRecord, r) for r in rows]

    def all_accounts(self) -> list[AccountRecord]:
        return [_record(AccountRecord, r)
                for r in self.conn.execute(select(ACCOUNTS).order_by(ACCOUNTS.c.id))]

    # ------------------------------------------------------------ ledger

    def ensure_accounts(self, wanted: Sequence[tuple[Account, int | None]],
                        ) -> dict[str, AccountRecord]:
        """Load the accounts by code, creating those that do not exist yet (one query each way)."""
        codes = list(dict.fromkeys(a.code for a, _ in wanted))
        found = self.accounts_by_codes(codes)
        missing: dict[str, dict[str, Any]] = {}
        for account, person_id in wanted:
            if account.code in found or account.code in missing:
                continue
            if (account.kind is AccountKind.PERSON) != (person_id is not None):
                raise InvariantViolation("person accounts, and only they, belong to a person")
            missing[account.code] = {
                "code": account.code, "kind": account.kind.value,
                "origin": None if account.origin is None else account.origin.value,
                "person_id": person_id, "balance": 0, "held": 0}
        if missing:
            _INSERT_ACCOUNT.many(self.conn, list(missing.values()))
            found.update(self.accounts_by_codes(list(missing)))
        return found

    def accounts_by_codes(self, codes: Sequence[str]) -> dict[str, AccountRecord]:
        if not codes:
            return {}
        rows = _ACCOUNTS_BY_CODES(self.conn, {"codes": list(codes)})
        return {r.code: _record(AccountRecord, r) for r in rows}

    def append(self, entry: Entry, person_ids: dict[str, int]) -> StoredEntry:
        """Append one entry to the chain and apply it to the cached balances."""
        return self.append_many([entry], person_ids)[0]

    def append_many(self, entries: Sequence[Entry], person_ids: dict[str, int],
                    ) -> list[StoredEntry]:
        """Append entries in order to the chain and apply them to the cached balances.

        ``person_ids`` maps person_ref → person id for the person accounts touched.
        A handful of statements however many entries: recording is batched.
        """
        if not entries:
            return []
        head_seq, prev = self.head()
        accounts = self.ensure_accounts([
            (p.account, person_ids[p.account.person_ref] if p.account.person_ref else None)
            for e in entries for p in e.postings])
        stored: list[StoredEntry] = []
        entry_rows, posting_rows = [], []
        deltas: dict[int, int] = {}
        for offset, entry in enumerate(entries, start=1):
            seq = head_seq + offset
            digest = chain_hash(prev, seq, entry)
            stored.append(StoredEntry(seq, entry, prev, digest))
            entry_rows.append({
                "seq": seq, "kind": entry.kind.value, "at": entry.at, "memo": entry.memo,
                "order_id": entry.order_id, "reverses_seq": entry.reverses_seq or None,
                "prev_hash": prev, "hash": digest})
            for position, posting in enumerate(entry.postings):
                account_id = accounts[posting.account.code].id
                posting_rows.append({"seq": seq, "position": position,
                                     "account_id": account_id, "minutes": posting.minutes})
                deltas[account_id] = deltas.get(account_id, 0) + posting.minutes
            prev = digest
        _INSERT_ENTRY.many(self.conn, entry_rows)
        _INSERT_POSTING.many(self.conn, posting_rows)
        _ADD_TO_BALANCE.many(self.conn, [{"aid": a, "delta": d} for a, d in deltas.items()
                                         if d != 0])
        for r in _BALANCE_AND_HELD(self.conn, {"ids": list(deltas)}):
            if r.kind in _NEVER_NEGATIVE and r.balance < r.held:
                raise InvariantViolation(f"{r.code} would go below its holds "
                                         f"(balance {r.balance}, held {r.held})")
        last = stored[-1]
        updated = _MOVE_HEAD(self.conn, {"old_seq": head_seq, "b_seq": last.seq,
                                         "b_hash": last.hash})
        if updated.rowcount != 1:
            raise InvariantViolation("the ledger head moved under a writer: writers must be serial")
        return stored

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

    def place_hold(self, order_id: int | None, account_id: int, minutes: int, floor: int,
                   at: datetime, claim_id: str | None = None) -> None:
        """Reserve minutes; ``floor`` is how low balance - held may go (0 for holders)."""
        if minutes <= 0:
            raise InvariantViolation("a hold is for a positive number of minutes")
        after = _ADD_TO_HELD(self.conn, {"aid": account_id, "minutes": minutes}).one()
        if after.balance - after.held < floor:
            raise InvariantViolation(f"hold on account {account_id} exceeds what is available")
        if (order_id is None) == (claim_id is None):
            raise InvariantViolation("a hold is for an order or for a claim")
        _INSERT_HOLD(self.conn, {"order_id": order_id, "claim_id": claim_id,
                                 "account_id": account_id, "minutes": minutes,
                                 "state": "active", "created_at": at})

    def claim_holds(self, claim_id: str) -> list[HoldRecord]:
        rows = _CLAIM_HOLDS(self.conn, {"claim_id": claim_id})
        return [_record(HoldRecord, r) for r in rows]

    def holds_of_final_claims(self) -> int:
        """Active holds whose claim is already final: must always be zero."""
        return int(self.conn.execute(
            select(func.count()).select_from(
                HOLDS.join(CLAIMS, HOLDS.c.claim_id == CLAIMS.c.claim_id))
            .where(and_(HOLDS.c.state == "active",
                        CLAIMS.c.state.in_(["completed", "voided", "rejected", "expired"])))
        ).scalar_one())

    def active_holds(self, order_id: int) -> list[HoldRecord]:
        rows = _ORDER_HOLDS(self.conn, {"order_id": order_id})
        return [_record(HoldRecord, r) for r in rows]

    def holds_of_orders(self, order_ids: Sequence[int]) -> dict[int, list[HoldRecord]]:
        out: dict[int, list[HoldRecord]] = {i: [] for i in order_ids}
        for r in self.conn.execute(
            select(HOLDS.c.id, HOLDS.c.order_id, HOLDS.c.account_id, HOLDS.c.minutes,
                   HOLDS.c.state)
            .where(HOLDS.c.order_id.in_(list(order_ids)), HOLDS.c.state == "active")
            .order_by(HOLDS.c.id)
        ):
            out[r.order_id].append(_record(HoldRecord, r))
        return out

    def resolve_holds(self, order_id: int, state: str, at: datetime) -> list[HoldRecord]:
        """Mark every active hold of an order posted or released; give back their minutes."""
        holds = self.active_holds(order_id)
        self.close_holds(holds, state, at)
        return holds

    def close_holds(self, holds: Sequence[HoldRecord], state: str, at: datetime) -> None:
        assert state in ("posted", "released")
        if not holds:
            return
        if any(h.state != "active" for h in holds):
            raise InvariantViolation("only active holds can be closed")
        _SUB_FROM_HELD.many(self.conn, [{"aid": h.account_id, "minutes": h.minutes}
                                        for h in holds])
        _CLOSE_HOLD.many(self.conn, [{"hid": h.id, "new_state": state, "at": at}
                                     for h in holds])

    # ------------------------------------------------------------ orders

    def insert_order(self, **values: Any) -> int:
        return int(self.conn.execute(insert(ORDERS).values(**values).returning(ORDERS.c.id))
                   .scalar_one())

    def order(self, order_id: int) -> OrderRecord:
        row = _ORDER(self.conn, {"order_id": order_id}).first()
        if row is None:
            raise NotFound(f"there is no order {order_id} on this node", "UNKNOWN_ORDER")
        rec: OrderRecord = _record(OrderRecord, row)
        return rec

    def orders_by_ids(self, order_ids: Sequence[int]) -> list[OrderRecord]:
        rows = self.conn.execute(select(ORDERS).where(ORDERS.c.id.in_(list(order_ids)))
                                 .order_by(ORDERS.c.id))
        return [_record(OrderRecord, r) for r in rows]

    def people_by_ids(self, person_ids: Sequence[int]) -> dict[int, PersonRecord]:
        rows = self.conn.execute(select(PEOPLE).where(PEOPLE.c.id.in_(list(person_ids))))
        return {r.id: _record(PersonRecord, r) for r in rows}

    def update_orders(self, expected_state: str, rows: Sequence[dict[str, Any]]) -> None:
        """Update many orders in one statement; each row has ``_id`` and the same columns."""
        if not rows:
            return
        columns = [k for k in rows[0] if k != "_id"]
        stmt = (update(ORDERS)
                .where(ORDERS.c.id == bindparam("_id"), ORDERS.c.state == expected_state)
                .values({c: bindparam(f"v_{c}") for c in columns}))
        self.conn.execute(stmt, [{"_id": r["_id"], **{f"v_{c}": r[c] for c in columns}}
                                 for r in rows])

    def add_events(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            _INSERT_EVENT.many(self.conn, rows)

    def update_order(self, order_id: int, expected_state: str, **values: Any) -> None:
        done = _update_order(frozenset(values))(self.conn, {
            "w_id": order_id, "w_state": expected_state,
            **{f"b_{k}": v for k, v in values.items()}})
        if done.rowcount != 1:
            raise InvariantViolation(f"order {order_id} changed under a writer")

    def add_event(self, order_id: int, at: datetime, from_state: str, to_state: str,
                  actor: str, detail: str = "") -> None:
        _INSERT_EVENT(self.conn, {"order_id": order_id, "at": at, "from_state": from_state,
                                  "to_state": to_state, "actor": actor, "detail": detail})

    def due_order_ids(self, now: datetime, limit: int) -> list[int]:
        return [int(i) for i in self.conn.execute(
            select(ORDERS.c.id).where(ORDERS.c.state == "verified", ORDERS.c.public_until <= now)
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
                    ORDERS.c.state == "recorded")
             .group_by(ORDERS.c.volunteer_id, ORDERS.c.service_day))
        found = {(int(r.volunteer_id), r.service_day): int(r.total) for r in self.conn.execute(q)}
        return {p: found.get(p, 0) for p in pairs}

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

    # ------------------------------------------------------------ claims

    def insert_claim(self, **values: Any) -> None:
        _INSERT_CLAIM(self.conn, values)

    def claim(self, claim_id: str) -> ClaimRecord | None:
        row = _CLAIM(self.conn, {"claim_id": claim_id}).first()
        return None if row is None else _record(ClaimRecord, row)

    def update_claim(self, claim_id: str, expected_state: str, **values: Any) -> None:
        """Move a claim on from the state the caller read (a lost update is a bug)."""
        done = _update_claim(frozenset(values))(self.conn, {
            "w_claim_id": claim_id, "w_state": expected_state,
            **{f"b_{k}": v for k, v in values.items()}})
        if done.rowcount != 1:
            raise InvariantViolation(f"claim {claim_id} changed under us")

    def list_claims(self, state: str | None, after: str, limit: int) -> list[ClaimRecord]:
        q = select(CLAIMS).where(CLAIMS.c.claim_id > after)
        if state:
            q = q.where(CLAIMS.c.state == state)
        return [_record(ClaimRecord, r) for r in
                self.conn.execute(q.order_by(CLAIMS.c.claim_id).limit(limit))]

    def open_claims_of(self, person_ref: str) -> int:
        return int(_OPEN_CLAIMS_OF(self.conn, {"ref": person_ref}).scalar_one())

    def open_claim_total(self) -> int:
        """Claims not yet final (proposed, accepted, finishing)."""
        return int(_OPEN_CLAIMS(self.conn).scalar_one())

    def count_claims(self, state: str | None = None) -> int:
        q = select(func.count()).select_from(CLAIMS)
        if state:
            q = q.where(CLAIMS.c.state == state)
        return int(self.conn.execute(q).scalar_one())

    def claim_counts(self) -> dict[tuple[str, str], int]:
        """(role, state) → number of claims."""
        return {(r.role, r.state): int(r.n) for r in self.conn.execute(
            select(CLAIMS.c.role, CLAIMS.c.state, func.count().label("n"))
            .group_by(CLAIMS.c.role, CLAIMS.c.state))}

    def set_home(self, person_id: int, home_node_id: str | None) -> None:
        _SET_HOME(self.conn, {"pid": person_id, "b_home": home_node_id})

    # ------------------------------------------------------------ outbox and inbox

    def enqueue(self, kind: str, claim_id: str | None, body: bytes, at: datetime) -> int:
        return int(_ENQUEUE(self.conn, dict(
            kind=kind, claim_id=claim_id, envelope=body, created_at=at, attempts=0,
            next_attempt_at=at, outcome="", detail="")).scalar_one())

    def outbox_due(self, now: datetime, limit: int) -> list[OutboxRecord]:
        """Unsent messages due now, oldest first, skipping any whose claim has an older
        message still unsent (a claim's messages go in order)."""
        rows = _OUTBOX_DUE(self.conn, {"now": now, "limit": limit})
        return [_record(OutboxRecord, r) for r in rows]

    def outbox_message(self, message_id: int) -> OutboxRecord:
        row = _OUTBOX_MESSAGE(self.conn, {"message_id": message_id}).one()
        return cast(OutboxRecord, _record(OutboxRecord, row))

    def outbox_pending(self) -> int:
        return int(_OUTBOX_PENDING(self.conn).scalar_one())

    def outbox_done(self, message_id: int, outcome: str, detail: str, at: datetime) -> bool:
        """Mark a message sent (or refused for good); False if it already was."""
        done = _OUTBOX_DONE(self.conn, {"message_id": message_id, "b_done_at": at,
                                        "b_outcome": outcome, "b_detail": detail[:500]})
        return done.rowcount == 1

    def outbox_retry(self, message_id: int, next_at: datetime, detail: str) -> None:
        _OUTBOX_RETRY(self.conn, {"message_id": message_id, "b_next": next_at,
                                  "b_detail": detail[:500]})

    def inbox_last_seq(self) -> int:
        return int(_INBOX_LAST(self.conn).scalar_one())

    def inbox_add(self, seq: int, kind: str, claim_id: str, at: datetime) -> None:
        _INBOX_ADD(self.conn, {"seq": seq, "kind": kind, "claim_id": claim_id,
                               "applied_at": at})

    # ------------------------------------------------------------ log anchors

    def entry_hashes(self, count: int) -> list[bytes]:
        """The hashes of entries 1..count, in sequence order (the ledger tree's leaves)."""
        hashes = [bytes(h) for h in self.conn.execute(
            select(ENTRIES.c.hash).where(ENTRIES.c.seq <= count).order_by(ENTRIES.c.seq))
            .scalars()]
        if len(hashes) != count:
            raise InvariantViolation(f"the ledger has {len(hashes)} of entries 1..{count}")
        return hashes

    def insert_anchor(self, entry_count: int, chain_head: bytes, ledger_root: bytes,
                      checkpoint: bytes, at: datetime) -> None:
        self.conn.execute(insert(ANCHORS).values(
            entry_count=entry_count, chain_head=chain_head, ledger_root=ledger_root,
            checkpoint=checkpoint, created_at=at))

    def anchor(self, entry_count: int) -> Any:
        return self.conn.execute(select(ANCHORS).where(ANCHORS.c.entry_count == entry_count)
                                 ).one_or_none()

    def latest_anchored(self) -> Any:
        """The anchor of the most entries that the log has recorded (None if none)."""
        return self.conn.execute(
            select(ANCHORS).where(ANCHORS.c.log_index.is_not(None))
            .order_by(ANCHORS.c.entry_count.desc()).limit(1)).one_or_none()

    def set_anchored(self, entry_count: int, checkpoint: bytes, log_index: int,
                     log_entry: bytes, log_proof: bytes, tree_head: str,
                     at: datetime) -> None:
        done = self.conn.execute(
            update(ANCHORS).where(ANCHORS.c.entry_count == entry_count,
                                  ANCHORS.c.log_index.is_(None))
            .values(checkpoint=checkpoint, log_index=log_index, log_entry=log_entry,
                    log_proof=log_proof, tree_head=tree_head, anchored_at=at))
        if done.rowcount not in (0, 1):
            raise InvariantViolation(f"anchor {entry_count} is not one row")

    # ------------------------------------------------------------ idempotency

    def idempotent_response(self, key: str) -> tuple[str, bytes, bytes] | None:
        row = _IDEMPOTENT_RESPONSE(self.conn, {"key": key}).first()
        return None if row is None else (row.method, bytes(row.fingerprint), bytes(row.response))

    def save_response(self, key: str, method: str, fingerprint: bytes, response: bytes,
                      at: datetime) -> None:
        _SAVE_RESPONSE(self.conn, {"key": key, "method": method, "fingerprint": fingerprint,
                                   "response": response, "created_at": at})


# Statements run for every claim or order, built once. Those on the hot paths are Prepared:
# they run on the driver's cursor, skipping Core's per-execute cost (several times SQLite's
# own).
_HEAD = Prepared(select(HEAD.c.seq, HEAD.c.hash).where(HEAD.c.id == 1))
_META = Prepared(select(META.c.value).where(META.c.key == bindparam("key")))
_SET_META = Prepared(update(META).where(META.c.key == bindparam("b_key"))
                     .values(value=bindparam("value")))
_INSERT_META = Prepared(insert(META))
_MOVE_HEAD = Prepared(update(HEAD).where(HEAD.c.id == 1, HEAD.c.seq == bindparam("old_seq"))
                      .values(seq=bindparam("b_seq"), hash=bindparam("b_hash")))
_ACCOUNTS_BY_IDS = Prepared(
    select(ACCOUNTS).where(ACCOUNTS.c.id.in_(bindparam("ids", expanding=True))))
_ACCOUNTS_BY_CODES = Prepared(
    select(ACCOUNTS).where(ACCOUNTS.c.code.in_(bindparam("codes", expanding=True))))
_ACCOUNTS_OF = Prepared(select(ACCOUNTS).where(ACCOUNTS.c.person_id == bindparam("pid"))
                        .order_by(ACCOUNTS.c.id))
_BALANCE_AND_HELD = Prepared(
    select(ACCOUNTS.c.code, ACCOUNTS.c.kind, ACCOUNTS.c.balance, ACCOUNTS.c.held)
    .where(ACCOUNTS.c.id.in_(bindparam("ids", expanding=True))))
_INSERT_ACCOUNT = Prepared(insert(ACCOUNTS))
_INSERT_ENTRY = Prepared(insert(ENTRIES))
_INSERT_POSTING = Prepared(insert(POSTINGS))
_ADD_TO_BALANCE = Prepared(update(ACCOUNTS).where(ACCOUNTS.c.id == bindparam("aid"))
                           .values(balance=ACCOUNTS.c.balance + bindparam("delta")))
_ADD_TO_HELD = Prepared(update(ACCOUNTS).where(ACCOUNTS.c.id == bindparam("aid"))
                        .values(held=ACCOUNTS.c.held + bindparam("minutes"))
                        .returning(ACCOUNTS.c.balance, ACCOUNTS.c.held))
_SUB_FROM_HELD = Prepared(update(ACCOUNTS).where(ACCOUNTS.c.id == bindparam("aid"))
                          .values(held=ACCOUNTS.c.held - bindparam("minutes")))
_BALANCES = Prepared(
    select(PEOPLE.c.person_ref, ACCOUNTS.c.origin, ACCOUNTS.c.balance, ACCOUNTS.c.held)
    .select_from(PEOPLE.outerjoin(ACCOUNTS, ACCOUNTS.c.person_id == PEOPLE.c.id))
    .where(PEOPLE.c.id == bindparam("pid")).order_by(ACCOUNTS.c.id))
_ACCOUNT_BY_CODE = Prepared(select(ACCOUNTS).where(ACCOUNTS.c.code == bindparam("code")))
_HOLD_COLUMNS = (HOLDS.c.id, HOLDS.c.order_id, HOLDS.c.account_id, HOLDS.c.minutes,
                 HOLDS.c.state)
_INSERT_HOLD = Prepared(insert(HOLDS))
_CLAIM_HOLDS = Prepared(select(*_HOLD_COLUMNS)
                        .where(HOLDS.c.claim_id == bindparam("claim_id"),
                               HOLDS.c.state == "active")
                        .order_by(HOLDS.c.id))
_ORDER_HOLDS = Prepared(select(*_HOLD_COLUMNS)
                        .where(HOLDS.c.order_id == bindparam("order_id"),
                               HOLDS.c.state == "active")
                        .order_by(HOLDS.c.id))
_CLOSE_HOLD = Prepared(update(HOLDS).where(HOLDS.c.id == bindparam("hid"),
                                           HOLDS.c.state == "active")
                       .values(state=bindparam("new_state"), resolved_at=bindparam("at")))
_INSERT_PERSON = Prepared(insert(PEOPLE).returning(PEOPLE.c.id))
_PERSON = Prepared(select(PEOPLE).where(PEOPLE.c.id == bindparam("pid")))
_PERSON_BY_REF = Prepared(select(PEOPLE).where(PEOPLE.c.person_ref == bindparam("ref")))
_RELATIONS = Prepared(select(LINKS.c.relation).where(LINKS.c.person_id == bindparam("pid"),
                                                     LINKS.c.other_id == bindparam("oid")))
_SET_HOME = Prepared(update(PEOPLE).where(PEOPLE.c.id == bindparam("pid"))
                     .values(home_node_id=bindparam("b_home")))
_ORDER = Prepared(select(ORDERS).where(ORDERS.c.id == bindparam("order_id")))
_INSERT_EVENT = Prepared(insert(EVENTS))
_INSERT_CLAIM = Prepared(insert(CLAIMS))
_CLAIM = Prepared(select(CLAIMS).where(CLAIMS.c.claim_id == bindparam("claim_id")))
_OPEN_STATES = ["proposed", "accepted", "finishing"]
_OPEN_CLAIMS = Prepared(select(func.count()).select_from(CLAIMS)
                        .where(CLAIMS.c.state.in_(_OPEN_STATES)))
_OPEN_CLAIMS_OF = Prepared(select(func.count()).select_from(CLAIMS)
                           .where(CLAIMS.c.person_ref == bindparam("ref"),
                                  CLAIMS.c.state.in_(_OPEN_STATES)))
_ENQUEUE = Prepared(insert(OUTBOX).returning(OUTBOX.c.id))
_OLDER = OUTBOX.alias("older")
_OUTBOX_DUE = Prepared(
    select(OUTBOX)
    .where(OUTBOX.c.done_at.is_(None), OUTBOX.c.next_attempt_at <= bindparam("now"),
           ~select(_OLDER.c.id).where(_OLDER.c.claim_id == OUTBOX.c.claim_id,
                                      _OLDER.c.id < OUTBOX.c.id,
                                      _OLDER.c.done_at.is_(None)).exists())
    .order_by(OUTBOX.c.id).limit(bindparam("limit")))
_OUTBOX_MESSAGE = Prepared(select(OUTBOX).where(OUTBOX.c.id == bindparam("message_id")))
_OUTBOX_PENDING = Prepared(select(func.count()).select_from(OUTBOX)
                           .where(OUTBOX.c.done_at.is_(None)))
_OUTBOX_DONE = Prepared(update(OUTBOX)
                        .where(OUTBOX.c.id == bindparam("message_id"),
                               OUTBOX.c.done_at.is_(None))
                        .values(done_at=bindparam("b_done_at"), outcome=bindparam("b_outcome"),
                                detail=bindparam("b_detail"), attempts=OUTBOX.c.attempts + 1))
_OUTBOX_RETRY = Prepared(update(OUTBOX).where(OUTBOX.c.id == bindparam("message_id"))
                         .values(next_attempt_at=bindparam("b_next"),
                                 detail=bindparam("b_detail"), attempts=OUTBOX.c.attempts + 1))
_INBOX_LAST = Prepared(select(func.coalesce(func.max(INBOX.c.seq), 0)))
_INBOX_ADD = Prepared(insert(INBOX))
_IDEMPOTENT_RESPONSE = Prepared(select(IDEM.c.method, IDEM.c.fingerprint, IDEM.c.response)
                                .where(IDEM.c.key == bindparam("key")))
_SAVE_RESPONSE = Prepared(insert(IDEM))


@functools.cache
def _update_claim(columns: frozenset[str]) -> Prepared:
    """The update of a claim's ``columns`` from an expected state, prepared once per set."""
    return Prepared(update(CLAIMS).where(CLAIMS.c.claim_id == bindparam("w_claim_id"),
                                         CLAIMS.c.state == bindparam("w_state"))
                    .values({c: bindparam(f"b_{c}") for c in sorted(columns)}))


@functools.cache
def _update_order(columns: frozenset[str]) -> Prepared:
    """The update of an order's ``columns`` from an expected state, prepared once per set."""
    return Prepared(update(ORDERS).where(ORDERS.c.id == bindparam("w_id"),
                                         ORDERS.c.state == bindparam("w_state"))
                    .values({c: bindparam(f"b_{c}") for c in sorted(columns)}))


_NEVER_NEGATIVE = {k.value for k in AccountKind if Account(
    k, Origin.INDIVIDUAL if k in (AccountKind.PERSON, AccountKind.ISSUANCE) else None,
    "x" if k is AccountKind.PERSON else None).never_negative}


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
