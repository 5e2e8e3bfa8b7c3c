"""The ledger as stored: accounts with their cached balances, the hash chain of entries
and their postings, and the head naming the chain's last entry.

It enforces the ledger's storage invariants as it writes (chain order, cached balances,
holder accounts never below their holds) and raises InvariantViolation when a caller
breaks one: use-cases check user-facing rules first and refuse politely.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, union_all, update

from node.domain.ledger import (
    NEVER_NEGATIVE_KINDS,
    Account,
    AccountKind,
    Entry,
    EntryKind,
    Posting,
    StoredEntry,
    account_from_code,
    chain_hash,
)
from node.storage.tables import ACCOUNTS, ENTRIES, HEAD, PEOPLE, POSTINGS, record
from runtime.errors import InvariantViolation, NotFound
from runtime.statements import Prepared


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


class LedgerRepo:
    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # ------------------------------------------------------------ the head

    def head(self) -> tuple[int, bytes]:
        row = _HEAD(self.conn).first()
        if row is None:
            raise InvariantViolation("the ledger head is missing: was `timebank node init` run?")
        return int(row.seq), bytes(row.hash)

    def init_head(self, genesis: bytes) -> None:
        self.conn.execute(insert(HEAD).values(id=1, seq=0, hash=genesis))

    # ------------------------------------------------------------ accounts

    def account(self, code: str) -> AccountRecord | None:
        row = _ACCOUNT_BY_CODE(self.conn, {"code": code}).first()
        return None if row is None else record(AccountRecord, row)

    def accounts_by_ids(self, account_ids: Sequence[int]) -> dict[int, AccountRecord]:
        rows = _ACCOUNTS_BY_IDS(self.conn, {"ids": list(account_ids)})
        return {r.id: record(AccountRecord, r) for r in rows}

    def accounts_by_codes(self, codes: Sequence[str]) -> dict[str, AccountRecord]:
        if not codes:
            return {}
        rows = _ACCOUNTS_BY_CODES(self.conn, {"codes": list(codes)})
        return {r.code: record(AccountRecord, r) for r in rows}

    def accounts_of(self, person_id: int) -> list[AccountRecord]:
        return [record(AccountRecord, r) for r in _ACCOUNTS_OF(self.conn, {"pid": person_id})]

    def all_accounts(self) -> list[AccountRecord]:
        return [record(AccountRecord, r)
                for r in self.conn.execute(select(ACCOUNTS).order_by(ACCOUNTS.c.id))]

    def ensure_account(self, account: Account, person_id: int | None = None) -> AccountRecord:
        return self.ensure_accounts([(account, person_id)])[account.code]

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

    # ------------------------------------------------------------ entries

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
        found: int | None = self.conn.execute(
            select(ENTRIES.c.seq).where(ENTRIES.c.reverses_seq == seq)).scalar()
        return found

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

    def latest_entries_touching(self, account_ids: Sequence[int], before_seq: int,
                                limit: int) -> list[StoredEntry]:
        """The newest ``limit`` entries touching any of the accounts, before ``before_seq``
        (0: up to the newest), newest first.

        One query bounded by the page however long the history: each account's postings
        are read backwards from ``before_seq`` on its index (account_id, seq), at most
        ``limit`` of them, and the newest ``limit`` entries among those are taken. (One
        range over every account at once would be read whole and sorted on SQLite, and
        walked back through the whole node's postings on PostgreSQL.)
        """
        if not account_ids:
            return []
        latest = []
        for account_id in dict.fromkeys(account_ids):
            seqs = select(POSTINGS.c.seq).where(POSTINGS.c.account_id == account_id)
            if before_seq:
                seqs = seqs.where(POSTINGS.c.seq < before_seq)
            page = seqs.order_by(POSTINGS.c.seq.desc()).limit(limit).subquery()
            latest.append(select(page.c.seq))
        found = union_all(*latest).subquery()
        rows = self.conn.execute(select(ENTRIES).where(ENTRIES.c.seq.in_(select(found.c.seq)))
                                 .order_by(ENTRIES.c.seq.desc()).limit(limit)).all()
        return list(self._entries_from(rows))

    def entry_hashes(self, count: int) -> list[bytes]:
        """The hashes of entries 1..count, in sequence order (the ledger tree's leaves)."""
        hashes = [bytes(h) for h in self.conn.execute(
            select(ENTRIES.c.hash).where(ENTRIES.c.seq <= count).order_by(ENTRIES.c.seq))
            .scalars()]
        if len(hashes) != count:
            raise InvariantViolation(f"the ledger has {len(hashes)} of entries 1..{count}")
        return hashes

    def _entries_from(self, rows: Sequence[Any]) -> Iterator[StoredEntry]:
        """The entries of ``rows`` (of ENTRIES), in their order, with their postings: one
        query, each posting with the code of its account (only the accounts these entries
        touch are read, not every account of the node)."""
        if not rows:
            return
        seqs = [r.seq for r in rows]
        postings: dict[int, list[Posting]] = {q: [] for q in seqs}
        for p in self.conn.execute(
            select(POSTINGS.c.seq, POSTINGS.c.account_id, ACCOUNTS.c.code, POSTINGS.c.minutes)
            .select_from(POSTINGS.outerjoin(ACCOUNTS, ACCOUNTS.c.id == POSTINGS.c.account_id))
            .where(POSTINGS.c.seq.in_(seqs)).order_by(POSTINGS.c.seq, POSTINGS.c.position)
        ):
            if p.code is None:  # a foreign key prevents it: a database edited by hand
                raise InvariantViolation(f"entry {p.seq} posts to account {p.account_id}, "
                                         "which does not exist")
            postings[p.seq].append(Posting(account_from_code(p.code), int(p.minutes)))
        for r in rows:
            entry = Entry(kind=EntryKind(r.kind), postings=tuple(postings[r.seq]), at=r.at,
                          memo=r.memo, order_id=int(r.order_id),
                          reverses_seq=int(r.reverses_seq or 0))
            yield StoredEntry(int(r.seq), entry, bytes(r.prev_hash), bytes(r.hash))


# Statements run for every claim or order, built once. Those on the hot paths are Prepared:
# they run on the driver's cursor, skipping Core's per-execute cost (several times SQLite's
# own).
_HEAD = Prepared(select(HEAD.c.seq, HEAD.c.hash).where(HEAD.c.id == 1))
_MOVE_HEAD = Prepared(update(HEAD).where(HEAD.c.id == 1, HEAD.c.seq == bindparam("old_seq"))
                      .values(seq=bindparam("b_seq"), hash=bindparam("b_hash")))
_ACCOUNT_BY_CODE = Prepared(select(ACCOUNTS).where(ACCOUNTS.c.code == bindparam("code")))
_ACCOUNTS_BY_IDS = Prepared(
    select(ACCOUNTS).where(ACCOUNTS.c.id.in_(bindparam("ids", expanding=True))))
_ACCOUNTS_BY_CODES = Prepared(
    select(ACCOUNTS).where(ACCOUNTS.c.code.in_(bindparam("codes", expanding=True))))
_ACCOUNTS_OF = Prepared(select(ACCOUNTS).where(ACCOUNTS.c.person_id == bindparam("pid"))
                        .order_by(ACCOUNTS.c.id))
_BALANCE_AND_HELD = Prepared(
    select(ACCOUNTS.c.code, ACCOUNTS.c.kind, ACCOUNTS.c.balance, ACCOUNTS.c.held)
    .where(ACCOUNTS.c.id.in_(bindparam("ids", expanding=True))))
_BALANCES = Prepared(
    select(PEOPLE.c.person_ref, ACCOUNTS.c.origin, ACCOUNTS.c.balance, ACCOUNTS.c.held)
    .select_from(PEOPLE.outerjoin(ACCOUNTS, ACCOUNTS.c.person_id == PEOPLE.c.id))
    .where(PEOPLE.c.id == bindparam("pid")).order_by(ACCOUNTS.c.id))
_INSERT_ACCOUNT = Prepared(insert(ACCOUNTS))
_INSERT_ENTRY = Prepared(insert(ENTRIES))
_INSERT_POSTING = Prepared(insert(POSTINGS))
_ADD_TO_BALANCE = Prepared(update(ACCOUNTS).where(ACCOUNTS.c.id == bindparam("aid"))
                           .values(balance=ACCOUNTS.c.balance + bindparam("delta")))
#: Account kinds whose balance never goes below what is held on them.
_NEVER_NEGATIVE = frozenset(k.value for k in NEVER_NEGATIVE_KINDS)
