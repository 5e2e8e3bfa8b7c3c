"""The offline audit of a city: ``timebank audit``.

Given a city's data directory (what ``timebank demo --data-dir`` leaves, or a bureau's
copy of every district's files), it opens every database read-only and checks that the
records hold together: each district's hash chain and the anchors of it in the
clearinghouse's transparency log, the log itself (leaves, stored hashes, every signed
tree head, every cosignature), claims on both sides, receipts, positions and
admissions. Given a running clearinghouse's address and public key instead, it checks
what anyone can fetch over gRPC: the signed head, every entry, claims and positions.

Each check says what it looked at and, when it fails, the first bad record: which file,
which table, which entry. Nothing is ever written.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import grpc
from google.protobuf.message import DecodeError
from rich.markup import escape
from sqlalchemy import Connection, Engine, Table, create_engine, select
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from clearinghouse import config as ch_config
from clearinghouse.domain.claims import TRANSITIONS
from clearinghouse.domain.claims import ClaimState as ChState
from clearinghouse.storage import schema as chs
from clearinghouse.storage.merkle_log import LogCorrupted, MerkleLog
from node import config as node_config
from node.domain.errors import InvariantViolation
from node.domain.ledger import Entry, EntryKind, Posting, chain_hash, genesis_hash
from node.storage import schema as ns
from node.storage.repo import account_from_code
from timebank import checkpoint as notes
from timebank import merkle, transparency
from timebank.envelope import CLEARINGHOUSE, EnvelopeError, Reason, Signed, verify
from timebank.keys import KeyFileError, key_id, public_key, read_seed
from timebank.v1 import clearing_pb2 as pb
from timebank.v1 import clearing_pb2_grpc

__all__ = ["AuditError", "BadRecord", "Check", "Report", "audit_data_dir", "audit_remote",
           "run_audit"]

PAGE = 1000
RPC_TIMEOUT = 15.0


class AuditError(Exception):
    """The audit cannot start: a missing directory, an unreadable key, no answer."""


@dataclass(frozen=True, slots=True)
class BadRecord:
    """The first record a check found wrong."""

    file: str   # the database (relative to the data directory) or the address
    table: str
    entry: str  # which row: "seq 3", "idx 12", "claim 0190…", "node 320115"
    problem: str


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str  # what was checked (counts), or why it failed
    first_bad: BadRecord | None = None


@dataclass(frozen=True, slots=True)
class Report:
    source: str
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def first_bad(self) -> BadRecord | None:
        return next((c.first_bad for c in self.checks if not c.ok and c.first_bad), None)

    def summary(self) -> dict[str, Any]:
        return {"ok": self.ok, "source": self.source,
                "checks": [asdict(c) for c in self.checks],
                "first_bad": None if self.first_bad is None else asdict(self.first_bad)}


class _Bad(Exception):
    """Raised inside a check at its first bad record."""

    def __init__(self, record: BadRecord) -> None:
        super().__init__(record.problem)
        self.record = record


def _run(name: str, body: Callable[[], str]) -> Check:
    try:
        return Check(name, True, body())
    except _Bad as e:
        return Check(name, False, e.record.problem, e.record)


def _table(model: Any) -> Table:
    return cast(Table, model.__table__)


# reading databases read-only -----------------------------------------------------------

def _engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite"):
        path = Path(parsed.database or "").resolve()
        if not path.is_file():
            raise AuditError(f"no database at {path}")
        # With no write-ahead log beside it, the file is the whole database: open it
        # immutable, so SQLite makes no -wal/-shm files (a read-only WAL open would).
        wal = path.with_name(path.name + "-wal")
        live = wal.exists() and wal.stat().st_size > 0
        uri = f"file:{quote(str(path))}?mode=ro" + ("" if live else "&immutable=1")
        return create_engine("sqlite://", poolclass=NullPool,
                             creator=lambda: sqlite3.connect(uri, uri=True))
    return create_engine(url, poolclass=NullPool,
                         execution_options={"postgresql_readonly": True})


def _label(url: str, root: Path) -> str:
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite"):
        path = Path(parsed.database or "").resolve()
        try:
            return str(path.relative_to(root.resolve()))
        except ValueError:
            return str(path)
    return parsed.render_as_string(hide_password=True)


# the log, streamed once ----------------------------------------------------------------

class _Roots:
    """RFC 9162 roots of a log read leaf by leaf: O(log n) memory."""

    def __init__(self) -> None:
        self.stack: list[tuple[int, bytes]] = []
        self.size = 0

    def add(self, data: bytes) -> None:
        h, level = merkle.leaf_hash(data), 0
        while self.stack and self.stack[-1][0] == level:
            h = merkle.node_hash(self.stack.pop()[1], h)
            level += 1
        self.stack.append((level, h))
        self.size += 1

    def root(self) -> bytes:
        if not self.stack:
            return merkle.EMPTY_ROOT
        acc = self.stack[-1][1]
        for _, left in reversed(self.stack[:-1]):
            acc = merkle.node_hash(left, acc)
        return acc


def _state(value: int) -> str:
    return pb.ClaimState.Name(cast(Any, value)).removeprefix("CLAIM_STATE_").lower()


@dataclass
class _LogScan:
    """What one pass over the log's entries tells every other check."""

    where: str  # the file (or address) for bad records
    sizes: set[int] = field(default_factory=set)  # sizes whose root to keep
    roots: dict[int, bytes] = field(default_factory=dict)
    latest: dict[str, tuple[int, pb.LogEntry]] = field(default_factory=dict)
    completed: dict[str, tuple[int, pb.LogEntry]] = field(default_factory=dict)
    admissions: dict[bytes, int] = field(default_factory=dict)  # sha256(envelope) -> idx
    node_keys: dict[str, bytes] = field(default_factory=dict)  # from admission leaves
    kinds: dict[str, int] = field(default_factory=dict)
    districts: dict[int, int] = field(default_factory=dict)  # size -> admitted, unrevoked
    bad: BadRecord | None = None
    _roots: _Roots = field(default_factory=_Roots)
    _current: dict[str, str] = field(default_factory=dict)  # node -> current key id
    _revoked: set[str] = field(default_factory=set)  # nodes whose current key is revoked

    def add(self, idx: int, data: bytes) -> None:
        if idx != self._roots.size and self.bad is None:
            self.bad = BadRecord(self.where, "log_leaves", f"idx {self._roots.size}",
                                 "leaf missing (gap in idx)")
        self._roots.add(data)
        if self._roots.size in self.sizes:
            self.roots[self._roots.size] = self._roots.root()
        try:
            entry = pb.LogEntry.FromString(data)
        except DecodeError:
            self._fail(idx, "the leaf is not a timebank.v1.LogEntry")
            return
        self.kinds[entry.kind] = self.kinds.get(entry.kind, 0) + 1
        if entry.kind == "admission":
            self.admissions[hashlib.sha256(entry.envelope).digest()] = idx
            self._admitted_key(entry)
        elif entry.kind == "revocation":
            self._revocation(entry)
        if entry.claim_id:
            self._claim(idx, entry)
        if self._roots.size in self.sizes:
            self.districts[self._roots.size] = len(set(self._current) - self._revoked)

    def _fail(self, idx: int, problem: str) -> None:
        if self.bad is None:
            self.bad = BadRecord(self.where, "log_leaves", f"idx {idx}", problem)

    def _admitted_key(self, entry: pb.LogEntry) -> None:
        try:
            envelope = pb.Envelope.FromString(entry.envelope)
            cert = pb.AdmissionCertificate.FromString(envelope.body)
        except DecodeError:
            return
        self.node_keys[cert.node_id] = bytes(cert.public_key)
        self._current[cert.node_id] = key_id(bytes(cert.public_key))
        self._revoked.discard(cert.node_id)

    def _revocation(self, entry: pb.LogEntry) -> None:
        try:
            act = pb.Revocation.FromString(pb.Envelope.FromString(entry.envelope).body)
        except DecodeError:
            return
        if self._current.get(act.node_id) == act.key_id:
            self._revoked.add(act.node_id)

    def _claim(self, idx: int, entry: pb.LogEntry) -> None:
        state = _state(entry.state)
        before = self.latest.get(entry.claim_id)
        if state not in ChState.__members__.values():
            self._fail(idx, f"claim {entry.claim_id}: no such state {entry.state}")
        elif before is not None:
            old = ChState(_state(before[1].state))
            if ChState(state) != old and ChState(state) not in TRANSITIONS[old]:
                self._fail(idx, f"claim {entry.claim_id} goes from {old} to {state} "
                                f"(leaf {before[0]} to leaf {idx})")
            if (before[1].creditor_node_id, before[1].debtor_node_id) != (
                    entry.creditor_node_id, entry.debtor_node_id):
                self._fail(idx, f"claim {entry.claim_id} changes its parties")
        if state == ChState.COMPLETED and entry.claim_id not in self.completed:
            self.completed[entry.claim_id] = (idx, entry)
        self.latest[entry.claim_id] = (idx, entry)

    @property
    def size(self) -> int:
        return self._roots.size

    def root(self) -> bytes:
        return self._roots.root()

    def positions(self) -> dict[str, int]:
        net: dict[str, int] = {}
        for _, entry in self.completed.values():
            net[entry.creditor_node_id] = net.get(entry.creditor_node_id, 0) + entry.minutes
            net[entry.debtor_node_id] = net.get(entry.debtor_node_id, 0) - entry.minutes
        return net

    def final_states(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, entry in self.latest.values():
            counts[_state(entry.state)] = counts.get(_state(entry.state), 0) + 1
        return counts


def _plural(n: int, word: str) -> str:
    many = {"entry": "entries", "leaf": "leaves"}.get(word, word + "s")
    return f"{n} {word}" if n == 1 else f"{n} {many}"


# the clearinghouse's database ----------------------------------------------------------

@dataclass
class _Clearinghouse:
    conn: Connection
    file: str
    key: bytes
    city_key: bytes | None
    node_keys: dict[str, list[bytes]]  # admitted and retired keys, current first
    districts: dict[str, str]
    claims: dict[str, Any]
    scan: _LogScan
    open_totals: dict[str, tuple[int, int]]  # node -> (open claims, open debit minutes)


def _log_check(ch: _Clearinghouse) -> str:
    log = MerkleLog(ch.conn)
    try:
        size, root = log.rebuild_check()
    except LogCorrupted as e:
        raise _Bad(BadRecord(ch.file, e.table, f"idx {e.index}", str(e))) from None
    scan = ch.scan
    if scan.bad is not None:
        raise _Bad(scan.bad)
    if (scan.size, scan.root()) != (size, root):
        raise _Bad(BadRecord(ch.file, "log_leaves", f"size {size}",
                             "two reads of the log disagree"))
    for at in sorted(scan.sizes):
        if at > size:
            continue
        try:
            stored = log.root(at)
        except LogCorrupted as e:
            raise _Bad(BadRecord(ch.file, e.table, f"idx {e.index}", str(e))) from None
        if stored != scan.roots.get(at, merkle.EMPTY_ROOT):
            raise _Bad(BadRecord(ch.file, "log_hashes", f"size {at}",
                                 "the stored subtree hashes give another root than the "
                                 "leaves at this size"))
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(scan.kinds.items()))
    return f"{_plural(size, 'leaf')} rebuilt from their data, root {root.hex()[:16]}… ({kinds})"


def _tree_heads_check(ch: _Clearinghouse) -> str:
    heads = _table(chs.TreeHead)
    count = 0
    for row in ch.conn.execute(select(heads).order_by(heads.c.size)):
        where = f"size {row.size}"
        try:
            head = transparency.check_head(row.note, ch.key)
        except transparency.LogError as e:
            raise _Bad(BadRecord(ch.file, "tree_heads", where, str(e))) from None
        if head.size != row.size or head.root != bytes(row.root):
            raise _Bad(BadRecord(ch.file, "tree_heads", where,
                                 f"the signed note states size {head.size}, root "
                                 f"{head.root.hex()[:16]}…, not the row's"))
        if row.size > ch.scan.size or ch.scan.roots.get(row.size, merkle.EMPTY_ROOT) != head.root:
            raise _Bad(BadRecord(ch.file, "tree_heads", where,
                                 "the signed root is not the log's root at this size"))
        if head.districts is not None and head.districts != ch.scan.districts.get(row.size, 0):
            raise _Bad(BadRecord(ch.file, "tree_heads", where,
                                 f"the head says the city had {head.districts} districts; "
                                 f"the log's admissions give "
                                 f"{ch.scan.districts.get(row.size, 0)}"))
        count += 1
    if count == 0:
        return "no tree head published yet"
    return f"{_plural(count, 'tree head')} signed by the clearinghouse, each the log's root"


def _cosignatures_check(ch: _Clearinghouse) -> str:
    cosigs, heads = _table(chs.Cosignature), _table(chs.TreeHead)
    rows = ch.conn.execute(select(cosigs.c.size, cosigs.c.witness, cosigs.c.line, heads.c.note)
                           .join(heads, heads.c.size == cosigs.c.size, isouter=True)
                           .order_by(cosigs.c.size, cosigs.c.witness)).all()
    by_size: dict[int, int] = {}
    for size, witness, line, note in rows:
        where = f"size {size}, witness {witness}"
        if note is None:
            raise _Bad(BadRecord(ch.file, "cosignatures", where, "no tree head of this size"))
        name = transparency.witness_name(witness)
        full = note + line.rstrip("\n") + "\n"
        if not any(_cosigned(full, name, key) for key in ch.node_keys.get(witness, [])):
            raise _Bad(BadRecord(ch.file, "cosignatures", where,
                                 f"the cosignature does not verify under {witness}'s key"))
        by_size[size] = by_size.get(size, 0) + 1
    if not rows:
        return "no cosignatures yet"
    quorum = len(ch.node_keys) // 2 + 1
    best = max((s for s, n in by_size.items() if n >= quorum), default=None)
    latest = "none" if best is None else f"size {best}"
    return (f"{_plural(len(rows), 'cosignature')} on {_plural(len(by_size), 'head')} verify; "
            f"latest head cosigned by a quorum ({quorum}): {latest}")


def _cosigned(note: str, name: str, key: bytes) -> bool:
    try:
        notes.verify_cosignature(note, name, key)
    except notes.CheckpointError:
        return False
    return True


def _claims_check(ch: _Clearinghouse) -> str:
    latest = ch.scan.latest
    for claim_id, row in ch.claims.items():
        found = latest.get(claim_id)
        if found is None:
            raise _Bad(BadRecord(ch.file, "claims", f"claim {claim_id}",
                                 "no log leaf records this claim"))
        idx, leaf = found
        minutes = row.posted_minutes if row.state == ChState.COMPLETED else row.minutes
        wanted = (_state(leaf.state), leaf.minutes, leaf.creditor_node_id,
                  leaf.debtor_node_id,
                  "move" if leaf.claim_kind == pb.CLAIM_KIND_MOVE else "redemption")
        stored = (row.state, minutes, row.creditor, row.debtor, row.kind)
        if stored != wanted:
            raise _Bad(BadRecord(ch.file, "claims", f"claim {claim_id}",
                                 f"row says {_claim_text(stored)}; its latest log leaf "
                                 f"{idx} says {_claim_text(wanted)}"))
    for claim_id, (idx, _) in latest.items():
        if claim_id not in ch.claims:
            raise _Bad(BadRecord(ch.file, "claims", f"claim {claim_id}",
                                 f"missing: log leaf {idx} records it"))
    states = ", ".join(f"{s} {n}" for s, n in sorted(ch.scan.final_states().items()))
    return f"{_plural(len(ch.claims), 'claim')} as their latest log leaf says ({states})"


def _claim_text(fields: tuple[Any, ...]) -> str:
    state, minutes, creditor, debtor, kind = fields
    return f"{kind} {state} {minutes} min {debtor}→{creditor}"


def _receipts_check(ch: _Clearinghouse) -> str:
    receipts = _table(chs.Receipt)
    log = MerkleLog(ch.conn)
    count = 0
    for row in ch.conn.execute(select(receipts).order_by(receipts.c.created_at)):
        key = bytes(row.envelope_sha256)
        where = f"receipt for envelope {key.hex()[:16]}…"
        try:
            signed = _signed(bytes(row.receipt))
            if signed.signer != CLEARINGHOUSE or signed.kind != "receipt":
                raise EnvelopeError(Reason.MALFORMED, "not a clearinghouse receipt")
            body = pb.Receipt.FromString(verify(signed, ch.key))
        except (EnvelopeError, DecodeError, ValueError) as e:
            raise _Bad(BadRecord(ch.file, "receipts", where,
                                 f"does not verify under the clearinghouse key: {e}")) from None
        if bytes(body.envelope_sha256) != key:
            raise _Bad(BadRecord(ch.file, "receipts", where,
                                 "the signed receipt names another envelope"))
        if body.log_index >= ch.scan.size:
            raise _Bad(BadRecord(ch.file, "receipts", where,
                                 f"names log leaf {body.log_index}, past the log's end"))
        leaf = pb.LogEntry.FromString(log.leaf(body.log_index))
        if hashlib.sha256(leaf.envelope).digest() != key or leaf.node_id != row.signer:
            raise _Bad(BadRecord(ch.file, "receipts", where,
                                 f"log leaf {body.log_index} records another envelope"))
        count += 1
    return f"{_plural(count, 'receipt')} signed by the clearinghouse, each recorded in its leaf"


def _signed(data: bytes) -> Signed:
    message = pb.Envelope.FromString(data)
    return Signed(message.kind, message.body, message.signer, message.key_id,
                  message.signature)


def _positions_check(ch: _Clearinghouse) -> str:
    positions = _table(chs.Position)
    rows = {r.node_id: int(r.net_minutes) for r in ch.conn.execute(select(positions))}
    expected = ch.scan.positions()
    for node_id in sorted(set(rows) | set(expected)):
        if rows.get(node_id, 0) != expected.get(node_id, 0):
            raise _Bad(BadRecord(ch.file, "positions", f"node {node_id}",
                                 f"net {rows.get(node_id, 0):+d} min, but the completed "
                                 f"claims in the log give {expected.get(node_id, 0):+d}"))
    if sum(rows.values()) != 0:
        raise _Bad(BadRecord(ch.file, "positions", "all nodes",
                             f"positions sum to {sum(rows.values())}, not 0"))
    for row in ch.conn.execute(select(positions)):
        kept = (int(row.open_claims), int(row.open_debit_minutes))
        counted = ch.open_totals.get(row.node_id, (0, 0))
        if kept != counted:
            raise _Bad(BadRecord(ch.file, "positions", f"node {row.node_id}",
                                 f"{kept[0]} open claims owing {kept[1]} min kept, but the "
                                 f"claims give {counted[0]} owing {counted[1]} min"))
    shown = ", ".join(f"{ch.districts.get(n, n)} {v:+d}" for n, v in sorted(rows.items()))
    return (f"{_plural(len(ch.scan.completed), 'completed claim')} in the log give every "
            f"position; they sum to 0 ({shown})")


def _admissions_check(ch: _Clearinghouse) -> str:
    admissions = _table(chs.Admission)
    count = 0
    for row in ch.conn.execute(select(admissions).order_by(admissions.c.node_id)):
        where = f"node {row.node_id}"
        cert = bytes(row.certificate)
        try:
            signed = _signed(cert)
            body = signed.body if ch.city_key is None else verify(signed, ch.city_key)
            parsed = pb.AdmissionCertificate.FromString(body)
        except (EnvelopeError, DecodeError, ValueError) as e:
            raise _Bad(BadRecord(ch.file, "admissions", where,
                                 f"the certificate does not verify under the city key: {e}")
                       ) from None
        if parsed.node_id != row.node_id or bytes(parsed.public_key) != bytes(row.public_key):
            raise _Bad(BadRecord(ch.file, "admissions", where,
                                 "the row's node or key is not the certificate's"))
        if hashlib.sha256(cert).digest() not in ch.scan.admissions:
            raise _Bad(BadRecord(ch.file, "admissions", where,
                                 "its certificate is not an admission leaf of the log"))
        count += 1
    signed_by = "the city root key" if ch.city_key is not None else "(no city key to verify)"
    return f"{_plural(count, 'admission')} signed by {signed_by}, each an admission leaf"


# a district's database -----------------------------------------------------------------

@dataclass
class _Node:
    node_id: str
    district: str
    conn: Connection
    file: str
    hashes: list[bytes] = field(default_factory=list)  # recomputed chain, entry 1..n


def _entries(node: _Node) -> Iterator[tuple[Any, list[Any]]]:
    entries, postings = _table(ns.LedgerEntry), _table(ns.LedgerPosting)
    after = 0
    while True:
        rows = node.conn.execute(select(entries).where(entries.c.seq > after)
                                 .order_by(entries.c.seq).limit(PAGE)).all()
        if not rows:
            return
        by_seq: dict[int, list[Any]] = {r.seq: [] for r in rows}
        for p in node.conn.execute(select(postings).where(postings.c.seq.in_(list(by_seq)))
                                   .order_by(postings.c.seq, postings.c.position)):
            by_seq[p.seq].append(p)
        for r in rows:
            yield r, by_seq[r.seq]
        after = rows[-1].seq


def _ledger_check(node: _Node) -> str:
    accounts = {r.id: r for r in node.conn.execute(select(_table(ns.LedgerAccount)))}
    prev = genesis_hash(node.node_id)
    first: BadRecord | None = None
    sums: dict[int, int] = {}
    count = postings_seen = 0

    def bad(table: str, entry: str, problem: str) -> None:
        nonlocal first
        if first is None:
            first = BadRecord(node.file, table, entry, problem)

    for row, postings in _entries(node):
        count += 1
        where = f"seq {row.seq}"
        if row.seq != count:
            bad("entries", f"seq {count}", f"entry {count} is missing (the next is "
                                           f"entry {row.seq})")
            count = int(row.seq)
        parts: list[Posting] = []
        for p in postings:
            postings_seen += 1
            sums[p.account_id] = sums.get(p.account_id, 0) + int(p.minutes)
            account = accounts.get(p.account_id)
            if account is None:
                bad("postings", f"{where}, posting {p.position}", "no such account")
                continue
            parts.append(Posting(account_from_code(account.code), int(p.minutes)))
        try:
            entry = Entry(kind=EntryKind(row.kind), postings=tuple(parts), at=row.at,
                          memo=row.memo, order_id=int(row.order_id),
                          reverses_seq=int(row.reverses_seq or 0))
        except (InvariantViolation, ValueError) as e:
            total = sum(p.minutes for p in parts)
            problem = (f"its postings sum to {total:+d} min, not 0" if total else
                       f"its postings are not a valid entry: {str(e)[:120]}")
            bad("postings", where, problem)
            node.hashes.append(bytes(row.hash))
            prev = bytes(row.hash)
            continue
        if bytes(row.prev_hash) != prev:
            bad("entries", where, f"does not follow entry {row.seq - 1} (prev_hash)")
        recomputed = chain_hash(prev, int(row.seq), entry)
        if recomputed != bytes(row.hash):
            bad("entries", where, "its contents (row or postings) do not match its hash")
        node.hashes.append(recomputed)
        prev = recomputed
    if first is not None:
        raise _Bad(first)
    head = node.conn.execute(select(_table(ns.LedgerHead))).first()
    if head is None or (int(head.seq), bytes(head.hash)) != (count, prev):
        raise _Bad(BadRecord(node.file, "ledger_head", "id 1",
                             f"the head says entry {None if head is None else head.seq}; "
                             f"the chain ends at entry {count}"))
    for account_id, account in accounts.items():
        if sums.get(account_id, 0) != account.balance:
            raise _Bad(BadRecord(node.file, "accounts", account.code,
                                 f"balance {account.balance}, postings sum to "
                                 f"{sums.get(account_id, 0)}"))
    return (f"{_plural(count, 'entry')} and {_plural(postings_seen, 'posting')} chain to the "
            f"head; {_plural(len(accounts), 'account')} balance")


def _anchors_check(node: _Node, ch: _Clearinghouse) -> str:
    anchors = _table(ns.LogAnchor)
    log = MerkleLog(ch.conn)
    rows = node.conn.execute(select(anchors).order_by(anchors.c.entry_count)).all()
    keys = ch.node_keys.get(node.node_id, [])
    logged = 0
    for row in rows:
        where = f"entry_count {row.entry_count}"

        def bad(problem: str, file: str = node.file, table: str = "log_anchors",
                entry: str = where) -> _Bad:
            return _Bad(BadRecord(file, table, entry, problem))

        count = int(row.entry_count)
        if count > len(node.hashes):
            raise bad(f"anchors {count} entries; the ledger has {len(node.hashes)}")
        head = node.hashes[count - 1] if count else genesis_hash(node.node_id)
        if bytes(row.chain_head) != head:
            raise bad(f"chain_head is not the chain's hash at entry {count}")
        if bytes(row.ledger_root) != merkle.root(node.hashes[:count]):
            raise bad(f"ledger_root is not the Merkle root of entries 1..{count}")
        if row.log_index is None:
            continue  # sent, not yet logged
        sent = bytes(row.checkpoint)
        try:
            signed = _signed(sent)
            if signed.signer != node.node_id or signed.kind != "node.checkpoint":
                raise ValueError(f"a {signed.kind} signed by {signed.signer}")
            body = next((verify(signed, k) for k in keys if _key_matches(signed, k)), None)
            if body is None:
                raise ValueError("not signed by the node's admitted key")
            cp = pb.NodeCheckpoint.FromString(body)
        except (EnvelopeError, DecodeError, ValueError) as e:
            raise bad(f"the checkpoint envelope does not verify: {e}") from None
        if (cp.node_id, cp.entry_count, cp.chain_head, cp.ledger_root) != (
                node.node_id, count, bytes(row.chain_head), bytes(row.ledger_root)):
            raise bad("the signed checkpoint states another count, head or root")
        idx = int(row.log_index)
        if idx >= ch.scan.size:
            raise bad(f"log_index {idx} is past the log's end ({ch.scan.size})")
        leaf = log.leaf(idx)
        if bytes(row.log_entry or b"") != leaf:
            raise bad(f"log_entry is not the clearinghouse's leaf {idx}")
        entry = pb.LogEntry.FromString(leaf)
        if entry.kind != "checkpoint" or entry.envelope != sent:
            raise bad(f"leaf {idx} does not record this checkpoint", ch.file, "log_leaves",
                      f"idx {idx}")
        try:
            th = transparency.check_head(str(row.tree_head or ""), ch.key)
            path = [bytes(row.log_proof or b"")[i:i + 32]
                    for i in range(0, len(row.log_proof or b""), 32)]
            transparency.check_included(leaf, idx, th, path)
        except transparency.LogError as e:
            raise bad(f"the inclusion proof does not hold: {e}") from None
        if ch.scan.roots.get(th.size) != th.root:
            raise bad(f"its tree head (size {th.size}) is not the clearinghouse's log")
        logged += 1
    if not rows:
        return "no anchors yet"
    pending = len(rows) - logged
    last = rows[-1]
    waiting = f", {pending} not yet logged" if pending else ""
    return (f"{_plural(len(rows), 'anchor')} of the chain hold (latest: "
            f"{_plural(last.entry_count, 'entry')}); {logged} proven in the log{waiting}")


def _key_matches(signed: Signed, key: bytes) -> bool:
    return signed.key_id == key_id(key)


FINAL = {"completed", "voided", "rejected", "expired"}


def _node_claims_check(node: _Node, ch: _Clearinghouse) -> str:
    claims = _table(ns.ClaimRow)
    checked = open_ = local = 0
    for row in node.conn.execute(select(claims).order_by(claims.c.claim_id)):
        if row.state not in FINAL:
            open_ += 1
            continue
        where = f"claim {row.claim_id}"
        theirs = ch.claims.get(row.claim_id)
        if theirs is None:
            if row.state in ("rejected", "expired"):
                local += 1  # refused or given up before the clearinghouse recorded it
                continue
            raise _Bad(BadRecord(node.file, "claims", where,
                                 f"{row.state} here; the clearinghouse has no such claim"))
        creditor, debtor = ((node.node_id, row.counterparty) if row.role == "creditor"
                            else (row.counterparty, node.node_id))
        ours = (row.state, row.kind, creditor, debtor, row.minutes,
                row.posted_minutes if row.state == "completed" else None)
        city = (theirs.state, theirs.kind, theirs.creditor, theirs.debtor, theirs.minutes,
                theirs.posted_minutes if theirs.state == "completed" else None)
        if ours != city:
            raise _Bad(BadRecord(node.file, "claims", where,
                                 f"{row.state} ({row.posted_minutes} of {row.minutes} min "
                                 f"posted) here; the clearinghouse has it {theirs.state} "
                                 f"({theirs.posted_minutes} of {theirs.minutes} min)"))
        checked += 1
    extra = f"; {open_} still open" if open_ else ""
    extra += f"; {local} ended before the clearinghouse recorded them" if local else ""
    return f"{_plural(checked, 'final claim')} as the clearinghouse records them{extra}"


# the whole directory -------------------------------------------------------------------

def _load_key(path: Path, what: str) -> bytes:
    try:
        return public_key(read_seed(path))
    except (KeyFileError, OSError) as e:
        raise AuditError(f"cannot read the {what} key {path}: {e}") from None


def _keys_of(conn: Connection) -> tuple[dict[str, list[bytes]], dict[str, str]]:
    admissions, retired = _table(chs.Admission), _table(chs.RetiredKey)
    keys: dict[str, list[bytes]] = {}
    districts: dict[str, str] = {}
    for r in conn.execute(select(admissions)):
        keys[r.node_id] = [bytes(r.public_key)]
        districts[r.node_id] = r.district
    for r in conn.execute(select(retired)):
        keys.setdefault(r.node_id, []).append(bytes(r.public_key))
    return keys, districts


def _open_clearinghouse(file: str, conn: Connection, key: bytes,
                        city_key: bytes | None) -> _Clearinghouse:
    node_keys, districts = _keys_of(conn)
    claims_t = _table(chs.ClaimRow)
    claims = {r.claim_id: r for r in conn.execute(select(claims_t))}
    open_totals: dict[str, tuple[int, int]] = {}
    for r in claims.values():
        if r.state in ("proposed", "accepted"):
            n, m = open_totals.get(r.creditor, (0, 0))
            open_totals[r.creditor] = (n + 1, m)
            n, m = open_totals.get(r.debtor, (0, 0))
            open_totals[r.debtor] = (n + 1, m + int(r.minutes))
    heads = _table(chs.TreeHead)
    scan = _LogScan(file, sizes=set(conn.execute(select(heads.c.size)).scalars()))
    leaves = _table(chs.LogLeaf)
    after = -1
    while True:
        rows = conn.execute(select(leaves.c.idx, leaves.c.data).where(leaves.c.idx > after)
                            .order_by(leaves.c.idx).limit(PAGE)).all()
        for idx, data in rows:
            scan.add(int(idx), bytes(data))
        if len(rows) < PAGE:
            break
        after = rows[-1][0]
    return _Clearinghouse(conn, file, key, city_key, node_keys, districts, claims, scan,
                          open_totals)


def _clearinghouse_checks(ch: _Clearinghouse) -> list[Check]:
    return [
        _run("clearinghouse log", lambda: _log_check(ch)),
        _run("tree heads", lambda: _tree_heads_check(ch)),
        _run("cosignatures", lambda: _cosignatures_check(ch)),
        _run("admissions", lambda: _admissions_check(ch)),
        _run("clearinghouse claims", lambda: _claims_check(ch)),
        _run("receipts", lambda: _receipts_check(ch)),
        _run("positions", lambda: _positions_check(ch)),
    ]


def audit_clearinghouse_database(url: str, clearinghouse_key: bytes,
                                 city_key: bytes | None = None) -> Report:
    """The clearinghouse's part of the audit, on its database alone (no district files):
    the log rebuilt, every head and cosignature, admissions, claims, receipts, positions."""
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            ch = _open_clearinghouse(url, conn, clearinghouse_key, city_key)
            return Report(url, tuple(_clearinghouse_checks(ch)))
    finally:
        engine.dispose()


def audit_data_dir(data_dir: Path, clearinghouse_key: bytes | None = None) -> Report:
    """Audit a city's data directory; raises AuditError only when it cannot start."""
    root = data_dir.resolve()
    ch_toml = root / "clearinghouse" / "clearinghouse.toml"
    if not ch_toml.is_file():
        raise AuditError(f"{ch_toml} not found: is {data_dir} a city's data directory?")
    try:
        cfg = ch_config.load_config(ch_toml)
        node_cfgs = [node_config.load_config(p) for p in sorted(root.glob("*/node.toml"))]
    except (ch_config.ConfigError, node_config.ConfigError) as e:
        raise AuditError(str(e)) from None
    own_key = _load_key(cfg.signing_key_file, "clearinghouse")
    key = clearinghouse_key or own_key
    city_key = _load_key(cfg.city_key_file, "city root") if cfg.city_key_file.exists() else None
    checks: list[Check] = []
    engines: list[Engine] = []
    try:
        engines.append(_engine(cfg.effective_database_url))
        with engines[-1].connect() as conn:
            ch = _open_clearinghouse(_label(cfg.effective_database_url, root), conn, key,
                                     city_key)
            checks.append(_run("keys", lambda: _keys_check(ch, own_key, node_cfgs)))
            checks += _clearinghouse_checks(ch)
            for ncfg in node_cfgs:
                engines.append(_engine(ncfg.effective_database_url))
                with engines[-1].connect() as nconn:
                    node = _Node(ncfg.node_id, ncfg.district, nconn,
                                 _label(ncfg.effective_database_url, root))
                    checks += _node_checks(node, ch)
    finally:
        for engine in engines:
            engine.dispose()
    return Report(str(data_dir), tuple(checks))


def _node_checks(node: _Node, ch: _Clearinghouse) -> list[Check]:
    name = f"{node.district} {node.node_id}"
    return [_run(f"{name} ledger", lambda: _ledger_check(node)),
            _run(f"{name} anchors", lambda: _anchors_check(node, ch)),
            _run(f"{name} claims", lambda: _node_claims_check(node, ch))]


def _keys_check(ch: _Clearinghouse, own_key: bytes,
                node_cfgs: list[node_config.NodeConfig]) -> str:
    if ch.key != own_key:
        raise _Bad(BadRecord(ch.file, "-", "clearinghouse.key",
                             "the clearinghouse's key file is not the key given"))
    for ncfg in node_cfgs:
        trusted = ncfg.clearinghouse_public_key
        if trusted and trusted != ch.key.hex():
            raise _Bad(BadRecord(f"{ncfg.node_id}/node.toml", "[clearinghouse]", "public_key",
                                 "this district trusts another clearinghouse key"))
        if ncfg.node_id not in ch.node_keys:
            raise _Bad(BadRecord(ch.file, "admissions", f"node {ncfg.node_id}",
                                 "a district in the directory was never admitted"))
    return (f"clearinghouse key {ch.key.hex()[:16]}…, trusted by "
            f"{_plural(len(node_cfgs), 'district')}")


# a running clearinghouse over gRPC -----------------------------------------------------

def _rpc(address: str, method: Callable[..., Any], request: Any) -> Any:
    try:
        return method(request, timeout=RPC_TIMEOUT)
    except grpc.RpcError as e:
        code = e.code().name if hasattr(e, "code") else "UNKNOWN"
        details = e.details() if hasattr(e, "details") else str(e)
        raise AuditError(f"the clearinghouse at {address} did not answer: {code}: "
                         f"{details}") from None


def audit_remote(address: str, clearinghouse_key: bytes) -> Report:
    """Audit a running clearinghouse from what it serves to anyone."""
    with grpc.insecure_channel(address) as channel:
        stub = clearing_pb2_grpc.ClearinghouseServiceStub(channel)
        head_msg = _rpc(address, stub.GetTreeHead, pb.GetTreeHeadRequest())
        try:
            head = transparency.check_head(head_msg.note, clearinghouse_key)
        except transparency.LogError as e:
            raise AuditError(f"the latest tree head from {address} does not verify under "
                             f"the key given (wrong --clearinghouse-key?): {e}") from None
        scan = _LogScan(address, sizes={head.size})
        for start in range(0, head.size, PAGE):
            end = min(head.size, start + PAGE)
            request = pb.GetEntriesRequest(start=start, end=end)
            page = _rpc(address, stub.GetEntries, request)
            for offset, data in enumerate(page.entries):
                scan.add(start + offset, bytes(data))
            if len(page.entries) != end - start:
                scan.bad = scan.bad or BadRecord(address, "GetEntries", f"{start}..{end}",
                                                 f"{len(page.entries)} entries, not "
                                                 f"{end - start}")
                break
        positions = _rpc(address, stub.GetPositions, pb.GetPositionsRequest())
        cosigned = _cosigned_head(stub, address)
        consistency = None
        if cosigned is not None and 0 < cosigned.size < head.size:
            consistency = _rpc(address, stub.GetConsistencyProof, pb.GetConsistencyProofRequest(
                old_size=cosigned.size, new_size=head.size))
    checks = [
        _run("tree head", lambda: f"size {head.size}, signed by the clearinghouse"),
        _run("log entries", lambda: _remote_log(scan, head, address)),
        _run("cosigners", lambda: _remote_cosigners(scan, head, cosigned, consistency,
                                                    clearinghouse_key, address)),
        _run("claims", lambda: _remote_claims(scan)),
        _run("positions", lambda: _remote_positions(scan, positions, address)),
    ]
    return Report(address, tuple(checks))


def _cosigned_head(stub: clearing_pb2_grpc.ClearinghouseServiceStub,
                   address: str) -> pb.TreeHead | None:
    try:
        found: pb.TreeHead = stub.GetTreeHead(pb.GetTreeHeadRequest(cosigned=True),
                                              timeout=RPC_TIMEOUT)
        return found
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise AuditError(f"the clearinghouse at {address} did not answer: "
                         f"{e.code().name}: {e.details()}") from None


def _remote_log(scan: _LogScan, head: transparency.Head, address: str) -> str:
    if scan.bad is not None:
        raise _Bad(scan.bad)
    if scan.root() != head.root:
        raise _Bad(BadRecord(address, "GetEntries", f"size {head.size}",
                             "the entries served do not hash to the signed root"))
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(scan.kinds.items()))
    return f"{_plural(scan.size, 'entry')} fetched and rebuilt to the signed root ({kinds})"


def _remote_cosigners(scan: _LogScan, head: transparency.Head, cosigned: pb.TreeHead | None,
                      consistency: pb.ConsistencyProof | None, key: bytes,
                      address: str) -> str:
    witnesses = {transparency.witness_name(n): k for n, k in scan.node_keys.items()}
    latest = sorted(notes.cosigners(head.note, witnesses))
    if cosigned is None:
        return f"latest head cosigned by {latest or 'nobody'}; no head cosigned by a quorum"
    try:
        old = transparency.check_head(cosigned.note, key)
        transparency.check_extends(old, head, list(consistency.path) if consistency else [])
    except transparency.LogError as e:
        raise _Bad(BadRecord(address, "GetConsistencyProof", f"size {cosigned.size}",
                             str(e))) from None
    valid = sorted(notes.cosigners(cosigned.note, witnesses))
    claimed = sorted(cosigned.cosigners)
    if [transparency.witness_name(n) for n in claimed] != valid:
        raise _Bad(BadRecord(address, "GetTreeHead", f"size {cosigned.size}",
                             f"claims cosigners {claimed}; valid cosignatures: {valid}"))
    return (f"head of size {cosigned.size} cosigned by {', '.join(claimed)}, and the latest "
            f"head extends it")


def _remote_claims(scan: _LogScan) -> str:
    if scan.bad is not None:
        raise _Bad(scan.bad)
    states = ", ".join(f"{s} {n}" for s, n in sorted(scan.final_states().items()))
    return f"{_plural(len(scan.latest), 'claim')}, every step an allowed transition ({states})"


def _remote_positions(scan: _LogScan, positions: pb.Positions, address: str) -> str:
    served = {p.node_id: p.net_minutes for p in positions.nodes}
    expected = scan.positions()
    for node_id in sorted(set(served) | set(expected)):
        if served.get(node_id, 0) != expected.get(node_id, 0):
            raise _Bad(BadRecord(address, "GetPositions", f"node {node_id}",
                                 f"net {served.get(node_id, 0):+d} min served; the log's "
                                 f"completed claims give {expected.get(node_id, 0):+d}"))
    if sum(served.values()):
        raise _Bad(BadRecord(address, "GetPositions", "all nodes",
                             f"positions sum to {sum(served.values())}, not 0"))
    return f"{_plural(len(served), 'position')} equal the log's completed claims; sum 0"


# the command ---------------------------------------------------------------------------

def _print(report: Report) -> None:
    from node.cli.common import console

    out = console()
    out.print(f"[bold]Audit of {escape(report.source)}[/]")
    for c in report.checks:
        mark = "[green]✓[/]" if c.ok else "[bold red]✗[/]"
        out.print(f"  {mark}  {escape(c.name)}: {escape(c.detail)}", soft_wrap=True)
        if c.first_bad is not None:
            b = c.first_bad
            out.print(f"       [red]first bad record: {escape(b.file)}, table {escape(b.table)}"
                      f", {escape(b.entry)}[/]", soft_wrap=True)
    if report.ok:
        out.print(f"[bold green]All {len(report.checks)} checks passed.[/]")
    else:
        failed = sum(not c.ok for c in report.checks)
        out.print(f"[bold red]{failed} of {len(report.checks)} checks failed.[/]")


def _hex_key(text: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) != 32:
        raise AuditError("--clearinghouse-key is the clearinghouse's Ed25519 public key: "
                         "64 hex digits")
    return key


def run_audit(data_dir: Path | None, address: str | None, key_hex: str | None, *,
              as_json: bool = False) -> int:
    """``timebank audit``: print each check; 0 if all pass, 1 naming the first bad record."""
    from node.cli.common import CliError, print_error

    try:
        if (data_dir is None) == (address is None):
            raise AuditError("give either --data-dir DIR or --clearinghouse HOST:PORT")
        if address is not None:
            if key_hex is None:
                raise AuditError("--clearinghouse needs --clearinghouse-key HEX")
            report = audit_remote(address, _hex_key(key_hex))
        else:
            assert data_dir is not None
            if not data_dir.is_dir():
                raise AuditError(f"{data_dir} is not a directory")
            report = audit_data_dir(data_dir, _hex_key(key_hex) if key_hex else None)
    except AuditError as e:
        raise CliError(str(e)) from None
    _print(report)
    bad = report.first_bad
    if bad is not None:
        print_error(f"first bad record: {bad.file}, table {bad.table}, {bad.entry}: "
                    f"{bad.problem}")
    if as_json:
        sys.stdout.write(json.dumps(report.summary(), ensure_ascii=False) + "\n")
        sys.stdout.flush()
    return 0 if report.ok else 1
