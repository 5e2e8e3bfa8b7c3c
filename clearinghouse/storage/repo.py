"""The repository: every SQL statement the clearinghouse runs, inside one caller's
transaction. Use-cases check the rules and refuse politely; this module only reads
and writes rows (and raises InvariantViolation when a write finds what must not be).
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any, cast

from sqlalchemy import (
    BindParameter,
    Connection,
    Table,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal,
    select,
    text,
    update,
)

from clearinghouse.domain.claims import Claim, ClaimKind, ClaimState, RejectReason
from clearinghouse.storage import schema as s
from clearinghouse.storage.db import Stamp, counts_writes, stamp, writes
from clearinghouse.storage.settlements import Settlements
from runtime import meta
from runtime.errors import InvariantViolation, Refusal
from runtime.statements import Prepared
from timebank.citypolicy import Term

ADMISSIONS = cast(Table, s.Admission.__table__)
RETIRED = cast(Table, s.RetiredKey.__table__)
ROSTERS = cast(Table, s.CityRoster.__table__)
KEY_ACTS = cast(Table, s.CityKeyAct.__table__)
DIRECTORY = cast(Table, s.DirectoryEntry.__table__)
POSITIONS = cast(Table, s.Position.__table__)
ACKS = cast(Table, s.Ack.__table__)
CLAIMS = cast(Table, s.ClaimRow.__table__)
DELIVERIES = cast(Table, s.Delivery.__table__)
#: The states in which a claim is open (counts against limits, may expire).
OPEN_STATES = tuple(state.value for state in ClaimState if state.open)
RECEIPTS = cast(Table, s.Receipt.__table__)
POLICIES = cast(Table, s.CityPolicyRow.__table__)


@dataclass(frozen=True, slots=True)
class AdmissionRecord:
    """An admitted node and its current key (revoked when ``revoked_at`` is set)."""

    node_id: str
    district: str
    public_key: bytes
    key_id: str
    serial: int
    certificate: bytes  # the city-signed envelope as received
    admitted_at: datetime
    revoked_at: datetime | None = None
    revocation: bytes | None = None  # the bureau's revocation envelope as received

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True, slots=True)
class RetiredKeyRecord:
    key_id: str
    node_id: str
    public_key: bytes
    serial: int
    certificate: bytes
    admitted_at: datetime
    revoked_at: datetime
    revocation: bytes | None


@dataclass(frozen=True, slots=True)
class PolicyRecord:
    """A city policy the bureau issued, as recorded."""

    serial: int
    sha256: bytes
    effective_at: datetime
    issued_at: datetime
    envelope: bytes  # the city-signed envelope as received
    recorded_at: datetime

    @property
    def term(self) -> Term:
        return Term(self.serial, self.effective_at, self.sha256)


@dataclass(frozen=True, slots=True)
class Standing:
    """A node's position, its net debit limit and its open claims' running totals."""

    net_minutes: int
    limit_minutes: int
    open_claims: int
    open_debit_minutes: int


@dataclass(frozen=True, slots=True)
class DirectoryRecord:
    person_ref: str
    home_node_id: str
    registered_at: datetime
    registration: bytes  # the home node's signed envelope as received


@dataclass(frozen=True, slots=True)
class ProposalContext:
    """What a proposal checks, read together (``Repo.proposal_context``)."""

    home: DirectoryRecord | None
    open_move: ClaimRecord | None
    creditor_open_claims: int
    debtor: Standing | None


@dataclass(frozen=True, slots=True)
class ClaimRecord:
    """A claim and the signed envelopes that moved it, each as received."""

    claim: Claim
    proposal: bytes
    decision: bytes | None = None
    finish: bytes | None = None


@dataclass(frozen=True, slots=True)
class ListedClaim:
    """A claim as a listing shows it (``Repo.claims_newest_first``): no envelope, and the
    log leaf that completed it and the statement that settled it, if any."""

    claim: Claim
    completed_index: int | None
    settled_serial: int | None


def _claim(row: Any) -> ClaimRecord:
    return ClaimRecord(_claim_of(row), row.proposal, row.decision, row.finish)


def _claim_of(row: Any) -> Claim:
    try:
        return Claim(
            claim_id=row.claim_id, kind=ClaimKind(row.kind), creditor=row.creditor,
            debtor=row.debtor, person_ref=row.payer_ref, minutes=int(row.minutes),
            created_at=row.created_at, expires_at=row.expires_at, state=ClaimState(row.state),
            reason=None if row.reason is None else RejectReason(row.reason),
            updated_at=row.updated_at,
            posted_minutes=None if row.posted_minutes is None else int(row.posted_minutes))
    except (Refusal, ValueError) as e:
        raise InvariantViolation(f"stored claim {row.claim_id} is not a valid claim: {e}") from e


def _admission(row: Any) -> AdmissionRecord:
    return AdmissionRecord(row.node_id, row.district, row.public_key, row.key_id, row.serial,
                           row.certificate, row.admitted_at, row.revoked_at, row.revocation)


# Statements a Submit runs every time, built once and run on the driver's cursor
# (runtime.statements): Core's own execute costs several times what SQLite does.
_ADMISSION = Prepared(select(ADMISSIONS).where(ADMISSIONS.c.node_id == bindparam("node_id")))
_ADMITTED_COUNT = Prepared(
    select(func.count()).select_from(ADMISSIONS).where(ADMISSIONS.c.revoked_at.is_(None)))
_DIRECTORY_ENTRY = Prepared(
    select(DIRECTORY).where(DIRECTORY.c.person_ref == bindparam("ref")))
_INSERT_DIRECTORY_ENTRY = Prepared(insert(DIRECTORY))
_STANDING = Prepared(
    select(POSITIONS.c.net_minutes, POSITIONS.c.net_debit_limit_minutes,
           POSITIONS.c.open_claims, POSITIONS.c.open_debit_minutes)
    .where(POSITIONS.c.node_id == bindparam("node_id")))
_NET_POSITIONS = Prepared(select(POSITIONS.c.node_id, POSITIONS.c.net_minutes))
_NET_TOTAL = Prepared(select(func.coalesce(func.sum(POSITIONS.c.net_minutes), 0)))
_CLAIM = Prepared(select(CLAIMS).where(CLAIMS.c.claim_id == bindparam("claim_id")))
_CLAIMS_BY_ID = Prepared(
    select(CLAIMS).where(CLAIMS.c.claim_id.in_(bindparam("ids", expanding=True))))
# What a batch moved of one district's position, written once at its end (``flush``).
_MOVE_POSITION = Prepared(
    update(POSITIONS).where(POSITIONS.c.node_id == bindparam("b_node"))
    .values(open_claims=POSITIONS.c.open_claims + bindparam("d_claims"),
            open_debit_minutes=POSITIONS.c.open_debit_minutes + bindparam("d_debit"),
            net_minutes=POSITIONS.c.net_minutes + bindparam("d_net")))
# A claim's two parties in one statement: both count it open (or no longer), the debtor
# its minutes too.
_ADD_TO_OPEN = Prepared(
    update(POSITIONS).where(POSITIONS.c.node_id.in_([bindparam("b_creditor"),
                                                     bindparam("b_debtor")]))
    .values(open_claims=POSITIONS.c.open_claims + bindparam("d_claims"),
            open_debit_minutes=POSITIONS.c.open_debit_minutes + case(
                (POSITIONS.c.node_id == bindparam("b_debtor"), bindparam("d_minutes")),
                else_=0)))
_OPEN_MOVE = Prepared(
    select(CLAIMS).where(CLAIMS.c.payer_ref == bindparam("ref"),
                         CLAIMS.c.kind == ClaimKind.MOVE.value,
                         CLAIMS.c.state.in_(OPEN_STATES))
    .order_by(CLAIMS.c.created_at).limit(1))
# every district as a batch's envelopes check it: its admission, its standing and its
# last delivery (read from the deliveries' primary key)
_DISTRICTS = Prepared(
    select(*ADMISSIONS.c, POSITIONS.c.net_minutes, POSITIONS.c.net_debit_limit_minutes,
           POSITIONS.c.open_claims, POSITIONS.c.open_debit_minutes,
           select(func.max(DELIVERIES.c.seq)).where(DELIVERIES.c.node_id == ADMISSIONS.c.node_id)
           .scalar_subquery().label("last_seq"))
    .select_from(ADMISSIONS.outerjoin(POSITIONS, POSITIONS.c.node_id == ADMISSIONS.c.node_id)))
_SET_HOME = Prepared(
    update(DIRECTORY).where(DIRECTORY.c.person_ref == bindparam("ref"),
                            DIRECTORY.c.home_node_id == bindparam("was"))
    .values(home_node_id=bindparam("home"), registered_at=bindparam("at"),
            registration=bindparam("evidence")))
_LAST_DELIVERY = Prepared(
    select(func.max(DELIVERIES.c.seq)).where(DELIVERIES.c.node_id == bindparam("node_id")))
_INSERT_DELIVERY = Prepared(insert(DELIVERIES))
_DELIVERIES_AFTER = Prepared(
    select(DELIVERIES.c.seq, DELIVERIES.c.envelope)
    .where(DELIVERIES.c.node_id == bindparam("node_id"), DELIVERIES.c.seq > bindparam("after"))
    .order_by(DELIVERIES.c.seq).limit(bindparam("limit")))
_ACKED_SEQ = Prepared(select(ACKS.c.acked_seq).where(ACKS.c.node_id == bindparam("node_id")))
_SET_ACKED_SEQ = Prepared(
    update(ACKS).where(ACKS.c.node_id == bindparam("b_node_id"),
                       ACKS.c.acked_seq <= bindparam("seq"))
    .values(acked_seq=bindparam("seq")))
_RECEIPT = Prepared(
    select(RECEIPTS.c.receipt).where(RECEIPTS.c.envelope_sha256 == bindparam("key")))
_INSERT_RECEIPT = Prepared(insert(RECEIPTS))
_INSERT_CLAIM = Prepared(insert(CLAIMS))
# A completed claim in one statement: neither party counts it open any more, and the
# creditor is owed what it posted, the debtor owes it.
_COMPLETE_POSITIONS = Prepared(
    update(POSITIONS).where(POSITIONS.c.node_id.in_([bindparam("b_creditor"),
                                                     bindparam("b_debtor")]))
    .values(open_claims=POSITIONS.c.open_claims - 1,
            open_debit_minutes=POSITIONS.c.open_debit_minutes - case(
                (POSITIONS.c.node_id == bindparam("b_debtor"), bindparam("d_minutes")),
                else_=0),
            net_minutes=POSITIONS.c.net_minutes + case(
                (POSITIONS.c.node_id == bindparam("b_creditor"), bindparam("plus")),
                else_=bindparam("minus"))))
_RECEIPTS_BY_KEY = Prepared(
    select(RECEIPTS.c.envelope_sha256, RECEIPTS.c.receipt)
    .where(RECEIPTS.c.envelope_sha256.in_(bindparam("keys", expanding=True))))
#: The most keys one receipts lookup names (the driver path's longest IN list).
_KEYS_PER_LOOKUP = 32
#: The columns a listing reads of a claim (no envelope), and the most rows one reads.
_LISTED = (CLAIMS.c.claim_id, CLAIMS.c.kind, CLAIMS.c.creditor, CLAIMS.c.debtor,
           CLAIMS.c.payer_ref, CLAIMS.c.minutes, CLAIMS.c.posted_minutes, CLAIMS.c.state,
           CLAIMS.c.reason, CLAIMS.c.created_at, CLAIMS.c.expires_at, CLAIMS.c.updated_at,
           CLAIMS.c.completed_index, CLAIMS.c.settled_serial)
_MOST_LISTED = 1000
_EARLIER_POLICIES = POLICIES.alias("earlier")
# The policy in force at :since and every policy issued after it (a claim message reads
# them to know which digests the city allows around now): a few rows, by serial.
_POLICY_TERMS_SINCE = Prepared(
    select(POLICIES.c.serial, POLICIES.c.effective_at, POLICIES.c.policy_sha256)
    .where(POLICIES.c.serial >= select(func.coalesce(func.max(_EARLIER_POLICIES.c.serial), 0))
           .where(_EARLIER_POLICIES.c.effective_at <= bindparam("since")).scalar_subquery())
    .order_by(POLICIES.c.serial))
_SET_COMPLETED_INDEX = Prepared(
    update(CLAIMS).where(CLAIMS.c.claim_id == bindparam("id"),
                         CLAIMS.c.state == ClaimState.COMPLETED.value,
                         CLAIMS.c.completed_index.is_(None))
    .values(completed_index=bindparam("idx")))
_OPEN_MOVES = CLAIMS.alias("open_move")
_CREDITOR = POSITIONS.alias("creditor")
_DEBTOR = POSITIONS.alias("debtor")
_ONE_ROW = select(literal(1).label("one")).subquery("one_row")
_OPEN_MOVE_OF_THE_PERSON = and_(_OPEN_MOVES.c.payer_ref == DIRECTORY.c.person_ref,
                                _OPEN_MOVES.c.kind == ClaimKind.MOVE.value,
                                _OPEN_MOVES.c.state.in_(OPEN_STATES))
# A batch's people read together (``Repo.look_up_people``): each registered person's
# directory entry with their open moves, earliest first (one row per move, or one with
# no move). A person nobody registered has neither: a move needs a home to be proposed,
# and a directory entry is never removed. The moves are named by the refs too, not only
# joined to them: joined only, PostgreSQL (on tables not yet analysed, as in a new city)
# compared every open claim of the city with every person of the batch (10,800
# comparisons for 30 people in bench/claims.py); named, it compares each once at most.
_REFS: BindParameter[Any] = bindparam("refs", expanding=True)
_PEOPLE_BY_REF = Prepared(
    select(*DIRECTORY.c, *(c.label(f"move_{c.name}") for c in _OPEN_MOVES.c))
    .select_from(DIRECTORY.outerjoin(
        _OPEN_MOVES, and_(_OPEN_MOVE_OF_THE_PERSON, _OPEN_MOVES.c.payer_ref.in_(_REFS))))
    .where(DIRECTORY.c.person_ref.in_(_REFS))
    .order_by(DIRECTORY.c.person_ref, _OPEN_MOVES.c.created_at, _OPEN_MOVES.c.claim_id))
# Everything a proposal checks after its parties, in one read: the person's home, their
# open move (if any: ``_OPEN_MOVE``), the creditor's open claims and the debtor's standing.
_PROPOSAL_CONTEXT = Prepared(
    select(DIRECTORY.c.person_ref, DIRECTORY.c.home_node_id, DIRECTORY.c.registered_at,
           DIRECTORY.c.registration, _CREDITOR.c.open_claims.label("creditor_open"),
           _DEBTOR.c.net_minutes, _DEBTOR.c.net_debit_limit_minutes, _DEBTOR.c.open_claims,
           _DEBTOR.c.open_debit_minutes,
           *(c.label(f"move_{c.name}") for c in _OPEN_MOVES.c))
    .select_from(
        _ONE_ROW
        .outerjoin(DIRECTORY, DIRECTORY.c.person_ref == bindparam("ref"))
        .outerjoin(_OPEN_MOVES, and_(_OPEN_MOVES.c.payer_ref == bindparam("ref"),
                                     _OPEN_MOVES.c.kind == ClaimKind.MOVE.value,
                                     _OPEN_MOVES.c.state.in_(OPEN_STATES)))
        .outerjoin(_CREDITOR, _CREDITOR.c.node_id == bindparam("creditor"))
        .outerjoin(_DEBTOR, _DEBTOR.c.node_id == bindparam("debtor")))
    .order_by(_OPEN_MOVES.c.created_at).limit(1))
# read by every write transaction that signs a head (``citykeys.rotated_log_keys``)
_KEY_ACTS = Prepared(select(KEY_ACTS.c.kind, KEY_ACTS.c.serial, KEY_ACTS.c.envelope)
                     .order_by(KEY_ACTS.c.kind, KEY_ACTS.c.serial))
_LATEST_ROSTER = Prepared(select(ROSTERS.c.epoch, ROSTERS.c.digest, ROSTERS.c.envelope)
                          .order_by(ROSTERS.c.epoch.desc()).limit(1))
_SAVEPOINT = Prepared(text("SAVEPOINT envelope"))
_ROLLBACK_TO_SAVEPOINT = Prepared(text("ROLLBACK TO SAVEPOINT envelope"))
_RELEASE_SAVEPOINT = Prepared(text("RELEASE SAVEPOINT envelope"))
_CLAIM_TRANSITION: dict[str, Any] = dict(
    state=bindparam("new_state"), reason=bindparam("b_reason"),
    updated_at=bindparam("b_updated_at"), posted_minutes=bindparam("b_posted_minutes"))
_UPDATE_CLAIM_WHERE = update(CLAIMS).where(CLAIMS.c.claim_id == bindparam("id"),
                                           CLAIMS.c.state == bindparam("old_state"))
_UPDATE_CLAIM = Prepared(_UPDATE_CLAIM_WHERE.values(**_CLAIM_TRANSITION))
_UPDATE_CLAIM_DECISION = Prepared(_UPDATE_CLAIM_WHERE.values(
    **_CLAIM_TRANSITION, decision=bindparam("b_decision")))
_UPDATE_CLAIM_FINISH = Prepared(_UPDATE_CLAIM_WHERE.values(
    **_CLAIM_TRANSITION, finish=bindparam("b_finish")))
# a completion names the log leaf that completes it in the same UPDATE (one row version
# and one pass over the claim's indexes, not two)
_UPDATE_CLAIM_COMPLETED = Prepared(_UPDATE_CLAIM_WHERE.values(
    **_CLAIM_TRANSITION, finish=bindparam("b_finish"),
    completed_index=bindparam("b_completed_index")))


@dataclass(frozen=True, slots=True)
class _Mark:
    """What a savepoint puts back in memory when it is rolled back."""

    deliveries: int
    receipts: int
    completed: int
    delivery_seq: dict[str, int]
    known_receipts: dict[bytes, bytes | None]
    moved: int
    claims_touched: int
    undo: int


#: What ``Repo._undo`` puts back for a key its table did not hold: nothing.
_ABSENT: Any = object()


class SavepointNeeded(Exception):
    """An optimistic ``Repo.savepoint`` was asked to undo work that had written to the
    database: the transaction must be rolled back and run again with real savepoints."""


class RarelyChanged:
    """The city's key acts, its latest roster and the latest tree head as last read,
    kept between write transactions (one per database: the app's), so that signing a
    head reads none of them again while none changed. Each is taken only for a
    transaction whose ``Stamp`` (read under its write lock, whichever replica wrote
    last) names the same count of acts, the same latest epoch or the same log size: the
    three tables are only ever inserted into (one head a size), so the same count,
    epoch or size is the same rows. A head is remembered once read back committed. (A
    restore replaces those rows, and is made with every replica stopped:
    docs/operations.md.)"""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._acts: tuple[int, list[tuple[str, int, bytes]]] | None = None
        self._roster: tuple[int, tuple[int, bytes, bytes]] | None = None
        self._head: tuple[int, tuple[bytes, str]] | None = None

    def head(self, size: int) -> tuple[bytes, str] | None:
        with self._lock:
            found = self._head
        return found[1] if found is not None and found[0] == size else None

    def remember_head(self, size: int, head: tuple[bytes, str]) -> None:
        with self._lock:
            self._head = (size, head)

    def acts(self, count: int) -> list[tuple[str, int, bytes]] | None:
        with self._lock:
            found = self._acts
        return list(found[1]) if found is not None and found[0] == count else None

    def remember_acts(self, count: int, acts: list[tuple[str, int, bytes]]) -> None:
        if len(acts) != count:
            raise InvariantViolation(f"{len(acts)} city key acts read where the stamp "
                                     f"counted {count}")
        with self._lock:
            self._acts = (count, list(acts))

    def roster(self, epoch: int) -> tuple[int, bytes, bytes] | None:
        with self._lock:
            found = self._roster
        return found[1] if found is not None and found[0] == epoch else None

    def remember_roster(self, roster: tuple[int, bytes, bytes]) -> None:
        with self._lock:
            self._roster = (roster[0], roster)


class Repo:
    """One transaction's statements. What it remembers lives as long as the transaction
    (one writer at a time holds the database, ADR 0021): rows it read or wrote that a
    later statement of the same transaction would read again, and, while ``deferring``,
    the deliveries and receipts it will write together at the end.

    ``optimistic``: ``savepoint`` sends no SAVEPOINT (on PostgreSQL each is a statement
    and a subtransaction, and past 64 in one transaction every other session's snapshot
    must look subtransactions up on disk); work that raises before it wrote anything is
    undone in memory alone, and work that raises after writing raises
    ``SavepointNeeded`` instead, for the caller to run the transaction again without
    ``optimistic``."""

    def __init__(self, conn: Connection, *, optimistic: bool = False,
                 rarely_changed: RarelyChanged | None = None) -> None:
        self.conn = conn
        # a write transaction's memory of rows between transactions (None: a read's), its
        # stamp once read, and whether it wrote to what that memory holds
        self._rarely_changed = rarely_changed
        self._stamp: Stamp | None = None
        self._wrote_rarely_changed = False
        # without a count of the writes, nothing could tell what a savepoint would undo
        self._optimistic = optimistic and counts_writes(conn)
        # On PostgreSQL every statement is a round trip: a released savepoint is one more
        # (nested savepoints of one name are harmless, ROLLBACK TO takes the latest).
        self._release_savepoints = conn.dialect.name != "postgresql"
        # admissions read in this transaction (a Submit checks its signer's twice);
        # every write to admissions below forgets them
        self._admission_rows: dict[str, AdmissionRecord | None] = {}
        # each node's last delivery sequence number, once read, as this transaction
        # left it; receipts looked up (None: none) or written in this transaction
        self._delivery_seq: dict[str, int] = {}
        self._receipts: dict[bytes, bytes | None] = {}
        # rows to write at the end of ``deferring``
        self._deferring = False
        self._pending_deliveries: list[dict[str, Any]] = []
        self._pending_receipts: list[dict[str, Any]] = []
        self._pending_completed: list[dict[str, Any]] = []
        # claims whose completion moved positions since they were last checked to sum to 0
        self._moved: list[str] = []
        # claims read or written in this transaction (None: there is none), as it left
        # them, and the ids in the order they were put there (a savepoint rolled back
        # forgets those put there since it began: they are read again if asked for)
        self._claims: dict[str, ClaimRecord | None] = {}
        self._claims_touched: list[str] = []
        # claims completed in this transaction, and the log leaf each was completed at
        self._completed_at: dict[str, int] = {}
        # people read together (``look_up_people``), as this transaction left them: each
        # one's directory entry (None: none) and the ids of their open moves, earliest
        # first; and every district's standing (None: not read, or forgotten since a
        # write this repository does not follow). What a savepoint rolled back changed
        # in them is put back from ``_undo``: (table, key, value before).
        self._homes: dict[str, DirectoryRecord | None] = {}
        self._open_moves: dict[str, tuple[str, ...]] = {}
        self._standings: dict[str, Standing] | None = None
        # while deferring over those standings: what this batch moved of each district's
        # open claims, open debit and net minutes, written together by ``flush``
        self._position_deltas: dict[str, tuple[int, int, int]] = {}
        self._undo: list[tuple[dict[str, Any], str, Any]] = []
        self._savepoints = 0

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested transaction: what happens inside is undone if it raises, and only
        that (one envelope of a batch), in the database and in what this repository
        remembers. Plain SQL, which both engines take, on the driver's cursor:
        SQLAlchemy's nested-transaction objects cost several times as much."""
        mark = _Mark(len(self._pending_deliveries), len(self._pending_receipts),
                     len(self._pending_completed), dict(self._delivery_seq),
                     dict(self._receipts), len(self._moved), len(self._claims_touched),
                     len(self._undo))
        written = writes(self.conn)
        if not self._optimistic:
            _SAVEPOINT.send(self.conn)
        self._savepoints += 1
        try:
            yield
        except BaseException as e:
            self._savepoints -= 1
            if not self._optimistic:
                _ROLLBACK_TO_SAVEPOINT(self.conn)
                _RELEASE_SAVEPOINT(self.conn)
            elif writes(self.conn) != written:
                raise SavepointNeeded("work that wrote must be undone by a savepoint") from e
            del self._pending_deliveries[mark.deliveries:]
            del self._pending_receipts[mark.receipts:]
            del self._pending_completed[mark.completed:]
            self._delivery_seq, self._receipts = mark.delivery_seq, mark.known_receipts
            del self._moved[mark.moved:]
            for claim_id in self._claims_touched[mark.claims_touched:]:
                self._claims.pop(claim_id, None)
                self._completed_at.pop(claim_id, None)
            del self._claims_touched[mark.claims_touched:]
            while len(self._undo) > mark.undo:
                table, key, before = self._undo.pop()
                if before is _ABSENT:
                    del table[key]
                else:
                    table[key] = before
            self._admission_rows.clear()
            raise
        self._savepoints -= 1
        if self._release_savepoints and not self._optimistic:
            _RELEASE_SAVEPOINT.send(self.conn)

    @contextmanager
    def deferring(self) -> Iterator[None]:
        """Deliveries, receipts and the leaves that completed claims, written inside, are
        kept in memory and written together when it ends (one executemany each,
        pipelined on PostgreSQL; nothing in the transaction reads the last back). Reads
        of them in this transaction answer from memory (``last_delivery_seq``,
        ``receipt``); Subscribe reads them only in other transactions, after the commit.
        If the block raises, nothing is written."""
        if self._deferring:
            raise InvariantViolation("the repository is deferring its writes already")
        self._deferring = True
        try:
            yield
        except BaseException:
            self._pending_deliveries.clear()
            self._pending_receipts.clear()
            self._pending_completed.clear()
            self._position_deltas.clear()
            raise
        finally:
            self._deferring = False
        self.flush()

    def flush(self) -> None:
        """Write the deferred rows."""
        if self._pending_deliveries:
            _INSERT_DELIVERY.send_many(self.conn, self._pending_deliveries)
            self._pending_deliveries = []
        if self._pending_receipts:
            _INSERT_RECEIPT.send_many(self.conn, self._pending_receipts)
            self._pending_receipts = []
        if self._pending_completed:
            _SET_COMPLETED_INDEX.send_many(self.conn, self._pending_completed)
            self._pending_completed = []
        if self._position_deltas:  # one row version a district a batch, not two a claim
            moves = [{"b_node": node, "d_claims": c, "d_debit": d, "d_net": n}
                     for node, (c, d, n) in sorted(self._position_deltas.items())
                     if (c, d, n) != (0, 0, 0)]
            _MOVE_POSITION.send_many(self.conn, moves, changed=len(moves),
                                     otherwise="a district's position row is missing")
            self._position_deltas = {}

    # meta ---------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        return meta.read(self.conn, key)

    def set_meta(self, key: str, value: str) -> None:
        meta.write(self.conn, key, value)

    # admissions and keys ------------------------------------------------------------

    def admission(self, node_id: str) -> AdmissionRecord | None:
        if node_id in self._admission_rows:
            return self._admission_rows[node_id]
        row = _ADMISSION(self.conn, {"node_id": node_id}).first()
        found = None if row is None else _admission(row)
        self._admission_rows[node_id] = found
        return found

    def admitted_count(self) -> int:
        """How many districts are admitted with an unrevoked key (every tree head says)."""
        return int(_ADMITTED_COUNT(self.conn).scalar_one())

    def admissions(self) -> list[AdmissionRecord]:
        rows = self.conn.execute(select(ADMISSIONS).order_by(ADMISSIONS.c.node_id))
        return [_admission(row) for row in rows]

    # city-signed rosters -------------------------------------------------------------

    def rosters(self) -> list[bytes]:
        """Every roster envelope, by epoch."""
        return [r.envelope for r in
                self.conn.execute(select(ROSTERS.c.envelope).order_by(ROSTERS.c.epoch))]

    def latest_roster(self) -> tuple[int, bytes, bytes] | None:
        """(epoch, digest, envelope) of the newest roster, if any: in a write transaction
        that added none, as the stamp names it (``RarelyChanged``)."""
        remembered = self._remembered()
        if remembered is not None:
            epoch = self.stamp().roster_epoch
            if epoch == 0:
                return None
            found = remembered.roster(epoch)
            if found is not None:
                return found
        row = _LATEST_ROSTER(self.conn).first()
        latest = None if row is None else (int(row.epoch), bytes(row.digest),
                                           bytes(row.envelope))
        if remembered is not None:
            if latest is None or latest[0] != self.stamp().roster_epoch:
                raise InvariantViolation("the latest roster is not the one the stamp names")
            remembered.remember_roster(latest)
        return latest

    def stamp(self) -> Stamp:
        """This write transaction's ``Stamp`` (read once)."""
        if self._rarely_changed is None:
            raise InvariantViolation("only a write transaction has a stamp")
        if self._stamp is None:
            self._stamp = stamp(self.conn)
        return self._stamp

    def committed_head(self, size: int) -> tuple[bytes, str] | None:
        """The tree head of ``size`` as an earlier transaction read it back, committed
        (None: not remembered; ``RarelyChanged``)."""
        return None if self._rarely_changed is None else self._rarely_changed.head(size)

    def remember_committed_head(self, size: int, head: tuple[bytes, str]) -> None:
        """A tree head this transaction read back, committed before it began."""
        if self._rarely_changed is not None and size <= self.stamp().log_size:
            self._rarely_changed.remember_head(size, head)

    def log_size_at_lock(self) -> int | None:
        """The log's size when this write transaction took the write lock (None in a
        read transaction: the log reads it itself). Only the transaction's one
        ``MerkleLog`` appends, so this is its size until that appends."""
        return None if self._rarely_changed is None else self.stamp().log_size

    def _remembered(self) -> RarelyChanged | None:
        """The memory between transactions, if this transaction may use it."""
        return None if self._wrote_rarely_changed else self._rarely_changed

    def roster(self, epoch: int) -> bytes | None:
        return self.conn.execute(select(ROSTERS.c.envelope)
                                 .where(ROSTERS.c.epoch == epoch)).scalar_one_or_none()

    def insert_roster(self, epoch: int, digest: bytes, envelope: bytes, at: datetime) -> None:
        self._wrote_rarely_changed = True
        self.conn.execute(insert(ROSTERS).values(epoch=epoch, digest=digest,
                                                 envelope=envelope, recorded_at=at))

    def retired_keys(self, node_id: str | None = None) -> list[RetiredKeyRecord]:
        query = select(RETIRED).order_by(RETIRED.c.node_id, RETIRED.c.serial)
        if node_id is not None:
            query = query.where(RETIRED.c.node_id == node_id)
        return [RetiredKeyRecord(r.key_id, r.node_id, r.public_key, r.serial, r.certificate,
                                 r.admitted_at, r.revoked_at, r.revocation)
                for r in self.conn.execute(query)]

    def key_holder(self, public_key: bytes) -> str | None:
        """The node that holds or held this public key, current or retired."""
        for table in (ADMISSIONS, RETIRED):
            found = self.conn.execute(
                select(table.c.node_id).where(table.c.public_key == public_key)).scalar()
            if found is not None:
                return cast(str, found)
        return None

    def insert_admission(self, record: AdmissionRecord, net_debit_limit_minutes: int) -> None:
        """A newly admitted node: its admission, a zero position and an empty queue."""
        self._admission_rows.clear()
        self._standings = None
        self.conn.execute(insert(ADMISSIONS).values(
            node_id=record.node_id, district=record.district, public_key=record.public_key,
            key_id=record.key_id, serial=record.serial, certificate=record.certificate,
            admitted_at=record.admitted_at, revoked_at=None, revocation=None))
        self.conn.execute(insert(POSITIONS).values(
            node_id=record.node_id, net_minutes=0,
            net_debit_limit_minutes=net_debit_limit_minutes))
        self.conn.execute(insert(ACKS).values(node_id=record.node_id, acked_seq=0))

    def replace_admission(self, old: AdmissionRecord, new: AdmissionRecord,
                          now: datetime) -> None:
        """A higher-serial certificate for an admitted node. A changed key retires the
        old one (revoked now, unless already revoked by the bureau)."""
        self._admission_rows.clear()
        if old.node_id != new.node_id or new.serial <= old.serial:
            raise InvariantViolation("a certificate replaces only a lower serial of its node")
        if old.key_id != new.key_id:
            self.conn.execute(insert(RETIRED).values(
                key_id=old.key_id, node_id=old.node_id, public_key=old.public_key,
                serial=old.serial, certificate=old.certificate, admitted_at=old.admitted_at,
                revoked_at=old.revoked_at or now, revocation=old.revocation))
        elif old.revoked:
            raise InvariantViolation("a revoked key is never admitted again")
        done = self.conn.execute(update(ADMISSIONS).where(
            ADMISSIONS.c.node_id == old.node_id, ADMISSIONS.c.serial == old.serial,
        ).values(district=new.district, public_key=new.public_key, key_id=new.key_id,
                 serial=new.serial, certificate=new.certificate, admitted_at=new.admitted_at,
                 revoked_at=None, revocation=None))
        if done.rowcount != 1:
            raise InvariantViolation(f"admission of {old.node_id} changed underneath")

    def revoke_current_key(self, node_id: str, key_id: str, revocation: bytes,
                           now: datetime) -> None:
        self._admission_rows.clear()
        done = self.conn.execute(update(ADMISSIONS).where(
            ADMISSIONS.c.node_id == node_id, ADMISSIONS.c.key_id == key_id,
            ADMISSIONS.c.revoked_at.is_(None),
        ).values(revoked_at=now, revocation=revocation))
        if done.rowcount != 1:
            raise InvariantViolation(f"key {key_id} of {node_id} is not its current key")

    def record_retired_revocation(self, key_id: str, revocation: bytes) -> None:
        done = self.conn.execute(update(RETIRED).where(
            RETIRED.c.key_id == key_id, RETIRED.c.revocation.is_(None),
        ).values(revocation=revocation))
        if done.rowcount != 1:
            raise InvariantViolation(f"retired key {key_id} already has a revocation")

    # the city's keys ------------------------------------------------------------------

    def key_acts(self) -> list[tuple[str, int, bytes]]:
        """Every key rotation (kind, serial, envelope), by kind and serial: in a write
        transaction that added none, as the stamp counts them (``RarelyChanged``)."""
        remembered = self._remembered()
        if remembered is not None:
            count = self.stamp().key_acts
            found = remembered.acts(count)
            if found is not None:
                return found
        acts = [(r.kind, int(r.serial), bytes(r.envelope)) for r in _KEY_ACTS(self.conn)]
        if remembered is not None:
            remembered.remember_acts(self.stamp().key_acts, acts)
        return acts

    def insert_key_act(self, kind: str, serial: int, envelope: bytes, at: datetime) -> None:
        self._wrote_rarely_changed = True
        self.conn.execute(insert(KEY_ACTS).values(kind=kind, serial=serial, envelope=envelope,
                                                  recorded_at=at))

    # city policies --------------------------------------------------------------------

    def city_policies(self) -> list[PolicyRecord]:
        """Every policy the bureau issued, by serial."""
        rows = self.conn.execute(select(POLICIES).order_by(POLICIES.c.serial))
        return [PolicyRecord(int(r.serial), bytes(r.policy_sha256), r.effective_at,
                             r.issued_at, bytes(r.envelope), r.recorded_at) for r in rows]

    def city_policy(self, serial: int) -> PolicyRecord | None:
        r = self.conn.execute(select(POLICIES).where(POLICIES.c.serial == serial)).first()
        return None if r is None else PolicyRecord(
            int(r.serial), bytes(r.policy_sha256), r.effective_at, r.issued_at,
            bytes(r.envelope), r.recorded_at)

    def last_policy_serial(self) -> int:
        """The highest serial issued (0 before the first policy)."""
        return int(self.conn.execute(
            select(func.coalesce(func.max(POLICIES.c.serial), 0))).scalar_one())

    def policy_terms_since(self, since: datetime) -> list[Term]:
        """The policy in force at ``since`` (if any) and every policy issued after it,
        by serial: all that can be in force from ``since`` on."""
        return [Term(int(r[0]), r[1], bytes(r[2]))
                for r in _POLICY_TERMS_SINCE(self.conn, {"since": since})]

    def insert_city_policy(self, record: PolicyRecord) -> None:
        if record.serial != self.last_policy_serial() + 1 or len(record.sha256) != 32:
            raise InvariantViolation(f"policy {record.serial} does not follow the last one")
        self.conn.execute(insert(POLICIES).values(
            serial=record.serial, policy_sha256=record.sha256,
            effective_at=record.effective_at, issued_at=record.issued_at,
            envelope=record.envelope, recorded_at=record.recorded_at))

    # directory ------------------------------------------------------------------------

    def directory_entry(self, person_ref: str) -> DirectoryRecord | None:
        if person_ref in self._homes:
            return self._homes[person_ref]
        row = _DIRECTORY_ENTRY(self.conn, {"ref": person_ref}).first()
        if row is None:
            return None
        return DirectoryRecord(row.person_ref, row.home_node_id, row.registered_at,
                               row.registration)

    def insert_directory_entry(self, record: DirectoryRecord) -> None:
        if self._homes.get(record.person_ref) is not None:
            raise InvariantViolation("a person has one directory entry")
        _INSERT_DIRECTORY_ENTRY.send(self.conn, dict(
            person_ref=record.person_ref, home_node_id=record.home_node_id,
            registered_at=record.registered_at, registration=record.registration), rows=1,
            otherwise="a directory entry was not written")
        if record.person_ref in self._homes:
            self._change(self._homes, record.person_ref, record)

    def look_up_people(self, person_refs: Iterable[str]) -> None:
        """Read together what a batch's envelopes check of their people and districts:
        each person's directory entry and open moves, and every district's admission,
        standing and last delivery (a few rows: one per district). ``directory_entry``,
        ``proposal_context``, ``move_home``, ``admission`` and ``last_delivery_seq`` then
        answer from memory, kept in step with this transaction's own writes: three
        statements a batch, not a round trip or two an envelope. Only between envelopes:
        inside a savepoint, what it read could be undone under it."""
        if self._savepoints:
            raise InvariantViolation("people are looked up between envelopes, not in one")
        if self._standings is None:
            standings: dict[str, Standing] = {}
            for row in _DISTRICTS(self.conn):
                node_id = str(row.node_id)
                self._admission_rows.setdefault(node_id, _admission(row))
                self._delivery_seq.setdefault(node_id, int(row.last_seq or 0))
                if row.net_minutes is not None:
                    standings[node_id] = Standing(
                        int(row.net_minutes), int(row.net_debit_limit_minutes),
                        int(row.open_claims), int(row.open_debit_minutes))
            self._standings = standings
        wanted = sorted({r for r in person_refs
                         if r not in self._homes or r not in self._open_moves})
        for start in range(0, len(wanted), _KEYS_PER_LOOKUP):
            chunk = wanted[start:start + _KEYS_PER_LOOKUP]
            homes: dict[str, DirectoryRecord | None] = dict.fromkeys(chunk)
            moves: dict[str, list[str]] = {ref: [] for ref in chunk}
            for row in _PEOPLE_BY_REF(self.conn, {"refs": chunk}):
                m = row._mapping
                homes[row.person_ref] = DirectoryRecord(
                    row.person_ref, row.home_node_id, row.registered_at, row.registration)
                if m["move_claim_id"] is None:
                    continue
                record = _claim(SimpleNamespace(**{c.name: m[f"move_{c.name}"]
                                                   for c in _OPEN_MOVES.c}))
                if record.claim.claim_id not in self._claims:
                    self._remember_claim(record.claim.claim_id, record)
                moves[row.person_ref].append(record.claim.claim_id)
            self._homes.update(homes)
            self._open_moves.update((ref, tuple(ids)) for ref, ids in moves.items())

    def _change(self, table: dict[str, Any], key: str, value: Any) -> None:
        """Set a remembered row as this transaction changed it, undoably (``savepoint``)."""
        self._undo.append((table, key, table.get(key, _ABSENT)))
        table[key] = value

    # positions ------------------------------------------------------------------------

    def position(self, node_id: str) -> tuple[int, int] | None:
        """(net minutes, net debit limit minutes) of an admitted node."""
        found = self.standing(node_id)
        return None if found is None else (found.net_minutes, found.limit_minutes)

    def standing(self, node_id: str) -> Standing | None:
        """Everything a proposal checks of its debtor, in one read."""
        if self._standings is not None:
            return self._standings.get(node_id)
        row = _STANDING(self.conn, {"node_id": node_id}).first()
        return None if row is None else self._with_unwritten(
            node_id, Standing(*(int(v) for v in row)))

    def _with_unwritten(self, node_id: str, read: Standing) -> Standing:
        """A standing read from the database, with what this batch moved of it and has
        not written yet (``flush``): the standings read together can be forgotten in the
        middle of a batch (a settlement message), and the database alone is then behind."""
        claims, debit, net = self._position_deltas.get(node_id, (0, 0, 0))
        return Standing(read.net_minutes + net, read.limit_minutes,
                        read.open_claims + claims, read.open_debit_minutes + debit)

    def district_figures(self) -> dict[str, tuple[int, int, int, int, int]]:
        """Each admitted district's net position, net debit limit, open claims, last
        delivery queued for it and last it acknowledged: one row per district, the
        deliveries' maximum read from their primary key's index."""
        last = (select(func.max(DELIVERIES.c.seq))
                .where(DELIVERIES.c.node_id == POSITIONS.c.node_id).scalar_subquery())
        rows = self.conn.execute(
            select(POSITIONS.c.node_id, POSITIONS.c.net_minutes,
                   POSITIONS.c.net_debit_limit_minutes, POSITIONS.c.open_claims,
                   func.coalesce(last, 0), func.coalesce(ACKS.c.acked_seq, 0))
            .select_from(POSITIONS.outerjoin(ACKS, ACKS.c.node_id == POSITIONS.c.node_id)))
        return {str(r[0]): (int(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5]))
                for r in rows}

    def claim_counts(self) -> dict[str, int]:
        """How many claims are in each state (one row per state; the state index answers)."""
        rows = self.conn.execute(select(CLAIMS.c.state, func.count()).group_by(CLAIMS.c.state))
        return {str(state): int(count) for state, count in rows}

    def net_positions(self) -> dict[str, int]:
        """Every admitted node's running net position."""
        return {row[0]: int(row[1]) + self._position_deltas.get(row[0], (0, 0, 0))[2]
                for row in _NET_POSITIONS(self.conn)}

    def positions_must_balance(self, label: str) -> None:
        """Net positions must still sum to zero after ``label`` moved them: checked now,
        or, while deferring, once for the whole transaction before it commits
        (``check_positions_balance``, which the use-case runner calls at the end of every
        write; any InvariantViolation rolls the whole transaction back)."""
        self._moved.append(label)
        if not self._deferring:
            self.check_positions_balance()

    def check_positions_balance(self) -> None:
        """Net positions sum to zero, if anything moved them since the last check."""
        if not self._moved:
            return
        total = int(_NET_TOTAL(self.conn).scalar_one())
        if total != 0:
            raise InvariantViolation(f"net positions sum to {total} after "
                                     f"{', '.join(self._moved[-3:])}")
        self._moved = []

    def set_net_debit_limit(self, node_id: str, minutes: int) -> None:
        self._standings = None
        done = self.conn.execute(update(POSITIONS).where(POSITIONS.c.node_id == node_id)
                                 .values(net_debit_limit_minutes=minutes))
        if done.rowcount != 1:
            raise InvariantViolation(f"node {node_id} has no position")

    # claims ---------------------------------------------------------------------------

    def claim(self, claim_id: str) -> ClaimRecord | None:
        if claim_id in self._claims:
            return self._claims[claim_id]
        row = _CLAIM(self.conn, {"claim_id": claim_id}).first()
        found = None if row is None else _claim(row)
        self._remember_claim(claim_id, found)
        return found

    def look_up_claims(self, claim_ids: Iterable[str]) -> None:
        """Read these claims together (a batch's claim messages), so that ``claim``
        answers each from memory: one statement per 32 ids, not one each."""
        wanted = sorted({i for i in claim_ids if i not in self._claims})
        for start in range(0, len(wanted), _KEYS_PER_LOOKUP):
            chunk = wanted[start:start + _KEYS_PER_LOOKUP]
            found = {r.claim_id: _claim(r) for r in _CLAIMS_BY_ID(self.conn, {"ids": chunk})}
            for claim_id in chunk:
                self._remember_claim(claim_id, found.get(claim_id))

    def _remember_claim(self, claim_id: str, record: ClaimRecord | None) -> None:
        self._claims[claim_id] = record
        self._claims_touched.append(claim_id)

    def insert_claim(self, record: ClaimRecord) -> None:
        c = record.claim
        if self._claims.get(c.claim_id) is not None:
            raise InvariantViolation(f"claim {c.claim_id} exists already")
        self._remember_claim(c.claim_id, record)
        if c.state.open:
            self._count_open(c, +1)
            if c.kind is ClaimKind.MOVE and c.person_ref in self._open_moves:
                self._change(self._open_moves, c.person_ref,
                             (*self._open_moves[c.person_ref], c.claim_id))
        _INSERT_CLAIM.send(self.conn, dict(
            claim_id=c.claim_id, kind=c.kind.value, creditor=c.creditor, debtor=c.debtor,
            payer_ref=c.person_ref, minutes=c.minutes, posted_minutes=c.posted_minutes,
            state=c.state.value, reason=None if c.reason is None else c.reason.value,
            created_at=c.created_at, expires_at=c.expires_at, updated_at=c.updated_at,
            proposal=record.proposal, decision=record.decision, finish=record.finish))

    def update_claim(self, before: Claim, after: Claim, *, decision: bytes | None = None,
                     finish: bytes | None = None, completed_index: int | None = None) -> None:
        """Record a transition; the row must still be in ``before``'s state. A completion
        names its finish and ``completed_index``, the log leaf that will record it (the
        claim's settlement period is by that leaf); nothing else does."""
        values: dict[str, Any] = dict(
            new_state=after.state.value,
            b_reason=None if after.reason is None else after.reason.value,
            b_updated_at=after.updated_at, b_posted_minutes=after.posted_minutes,
            id=before.claim_id, old_state=before.state.value)
        if decision is not None and finish is not None:
            raise InvariantViolation("a transition records a decision or a finish, not both")
        statement = _UPDATE_CLAIM
        if decision is not None:
            statement, values["b_decision"] = _UPDATE_CLAIM_DECISION, decision
        elif finish is not None:
            statement, values["b_finish"] = _UPDATE_CLAIM_FINISH, finish
        if (completed_index is not None) != (after.state is ClaimState.COMPLETED):
            raise InvariantViolation("a completion, and only one, names its completing leaf")
        if completed_index is not None:
            if finish is None or completed_index < 0:
                raise InvariantViolation("a completion is a finish, at a leaf of the log")
            statement, values["b_completed_index"] = _UPDATE_CLAIM_COMPLETED, completed_index
            self._completed_at[before.claim_id] = completed_index
            self._claims_touched.append(before.claim_id)
        statement.send(self.conn, values, rows=1,
                       otherwise=f"claim {before.claim_id} changed underneath")
        known = self._claims.get(before.claim_id)
        if known is not None:
            if known.claim.state is not before.state:
                raise InvariantViolation(f"claim {before.claim_id} changed underneath")
            self._remember_claim(before.claim_id, ClaimRecord(
                after, known.proposal, decision if decision is not None else known.decision,
                finish if finish is not None else known.finish))
        if after.state.open and not before.state.open:
            raise InvariantViolation(f"claim {before.claim_id} cannot open again")
        moves = self._open_moves.get(before.person_ref)
        if before.state.open and not after.state.open and moves and before.claim_id in moves:
            self._change(self._open_moves, before.person_ref,
                         tuple(i for i in moves if i != before.claim_id))
        if after.state is ClaimState.COMPLETED:
            self._complete(before, after)
        elif before.state.open and not after.state.open:
            self._count_open(before, -1)

    def _complete(self, before: Claim, after: Claim) -> None:
        """A claim completed: its parties no longer count it open, and the creditor is
        owed the minutes posted, the debtor owes them (positions still sum to zero:
        ``positions_must_balance``)."""
        if not before.state.open or after.posted_minutes is None or after.creditor == after.debtor:
            raise InvariantViolation(f"{after.label} cannot complete from {before.state.value}")
        if self._positions_deferred():
            self._shift(after.creditor, claims=-1, net=after.posted_minutes, deferred=True)
            self._shift(after.debtor, claims=-1, debit=-before.minutes,
                        net=-after.posted_minutes, deferred=True)
            return
        _COMPLETE_POSITIONS.send(self.conn, {
            "b_creditor": after.creditor, "b_debtor": after.debtor,
            "d_minutes": before.minutes, "plus": after.posted_minutes,
            "minus": -after.posted_minutes}, rows=2,
            otherwise=f"{after.label}: node {after.creditor} or {after.debtor} has no position")
        self._shift(after.creditor, claims=-1, net=after.posted_minutes)
        self._shift(after.debtor, claims=-1, debit=-before.minutes, net=-after.posted_minutes)

    def _positions_deferred(self) -> bool:
        """Whether positions move in memory, written once a batch (``flush``): while
        deferring, over standings read together (``look_up_people``)."""
        return self._deferring and self._standings is not None

    def _shift(self, node_id: str, *, claims: int, debit: int = 0, net: int = 0,
               deferred: bool = False) -> None:
        """Keep a standing read (``look_up_people``) as the statement just sent left it,
        or (``deferred``) as the one ``flush`` will send will leave it."""
        if self._standings is None:
            return
        was = self._standings.get(node_id)
        if was is None:
            raise InvariantViolation(f"node {node_id} has no position")
        now = Standing(was.net_minutes + net, was.limit_minutes, was.open_claims + claims,
                       was.open_debit_minutes + debit)
        if now.open_claims < 0 or now.open_debit_minutes < 0:
            raise InvariantViolation(f"node {node_id}'s open totals would go below zero")
        self._change(self._standings, node_id, now)
        if deferred:
            c, d, n = self._position_deltas.get(node_id, (0, 0, 0))
            self._change(self._position_deltas, node_id, (c + claims, d + debit, n + net))

    def _count_open(self, claim: Claim, sign: int) -> None:
        """Keep the parties' running open-claim totals (``positions``) in step."""
        if claim.creditor == claim.debtor:
            raise InvariantViolation(f"{claim.label}: a node cannot claim from itself")
        if self._positions_deferred():
            self._shift(claim.creditor, claims=sign, deferred=True)
            self._shift(claim.debtor, claims=sign, debit=sign * claim.minutes, deferred=True)
            return
        _ADD_TO_OPEN.send(self.conn, {"b_creditor": claim.creditor, "b_debtor": claim.debtor,
                                      "d_claims": sign, "d_minutes": sign * claim.minutes},
                          rows=2, otherwise=f"{claim.label}: node {claim.creditor} or "
                          f"{claim.debtor} has no position")
        self._shift(claim.creditor, claims=sign)
        self._shift(claim.debtor, claims=sign, debit=sign * claim.minutes)

    def open_claim_count(self, node_id: str) -> int:
        """How many open claims the node is a party to (creditor or debtor): its running
        total."""
        found = self.standing(node_id)
        return 0 if found is None else found.open_claims

    def open_totals_recounted(self) -> dict[str, tuple[int, int, int, int]]:
        """Per node: (open claims, open debit minutes) as kept, then as counted from the
        claims themselves; the two must agree (audits and tests check)."""
        kept = {r.node_id: (int(r.open_claims), int(r.open_debit_minutes))
                for r in self.conn.execute(select(POSITIONS))}
        counted: dict[str, list[int]] = {n: [0, 0] for n in kept}
        for r in self.conn.execute(select(CLAIMS.c.creditor, CLAIMS.c.debtor, CLAIMS.c.minutes)
                                   .where(CLAIMS.c.state.in_(OPEN_STATES))):
            counted.setdefault(r.creditor, [0, 0])[0] += 1
            debtor = counted.setdefault(r.debtor, [0, 0])
            debtor[0] += 1
            debtor[1] += int(r.minutes)
        return {n: (*kept.get(n, (0, 0)), counted[n][0], counted[n][1]) for n in counted}

    def proposal_context(self, person_ref: str, creditor: str, debtor: str,
                         ) -> ProposalContext:
        """``directory_entry``, ``open_move``, the creditor's open claims and the debtor's
        ``standing``, in one statement, or from memory for people looked up together."""
        if (self._standings is not None and person_ref in self._homes
                and person_ref in self._open_moves):
            moves = self._open_moves[person_ref]
            creditor_standing = self._standings.get(creditor)
            return ProposalContext(
                self._homes[person_ref], self.claim(moves[0]) if moves else None,
                0 if creditor_standing is None else creditor_standing.open_claims,
                self._standings.get(debtor))
        row = _PROPOSAL_CONTEXT(self.conn, {"ref": person_ref, "creditor": creditor,
                                            "debtor": debtor}).one()
        m = row._mapping
        home = (None if m["person_ref"] is None else DirectoryRecord(
            m["person_ref"], m["home_node_id"], m["registered_at"], m["registration"]))
        move = (None if m["move_claim_id"] is None else _claim(SimpleNamespace(**{
            c.name: m[f"move_{c.name}"] for c in _OPEN_MOVES.c})))
        standing = (None if m["net_minutes"] is None else self._with_unwritten(debtor, Standing(
            int(m["net_minutes"]), int(m["net_debit_limit_minutes"]), int(m["open_claims"]),
            int(m["open_debit_minutes"]))))
        creditor_open = (int(m["creditor_open"] or 0)
                         + self._position_deltas.get(creditor, (0, 0, 0))[0])
        return ProposalContext(home, move, creditor_open, standing)

    def open_move(self, person_ref: str) -> ClaimRecord | None:
        """The person's open (proposed or accepted) move claim, if there is one."""
        row = _OPEN_MOVE(self.conn, {"ref": person_ref}).first()
        return None if row is None else _claim(row)

    def due_claims(self, now: datetime, limit: int) -> list[ClaimRecord]:
        """Open claims whose deadline has come, earliest deadline first."""
        rows = self.conn.execute(select(CLAIMS).where(
            CLAIMS.c.state.in_(OPEN_STATES), CLAIMS.c.expires_at <= now,
        ).order_by(CLAIMS.c.expires_at, CLAIMS.c.claim_id).limit(limit))
        return [_claim(row) for row in rows]

    def claims_newest_first(self, *, state: ClaimState | None, party: str | None,
                            before: str | None, limit: int) -> list[ListedClaim]:
        """At most ``limit`` claims whose id sorts below ``before`` (all: None), by claim
        id descending: those in ``state``, and those ``party`` is the creditor or the
        debtor of (None: any). Each walk reads one index down from ``before`` and stops
        after ``limit`` rows (the primary key; ``ix_claims_state_claim_id``;
        ``ix_claims_creditor_claim_id`` and ``ix_claims_debtor_claim_id``, a party's two
        walks merged here), so a page costs the same however many claims there are."""
        if isinstance(limit, bool) or not 1 <= limit <= _MOST_LISTED:
            raise InvariantViolation(f"a listing reads 1 to {_MOST_LISTED} claims, not {limit}")

        def walk(*where: Any) -> Iterator[ListedClaim]:
            if state is not None:
                where = (*where, CLAIMS.c.state == state.value)
            if before is not None:
                where = (*where, CLAIMS.c.claim_id < before)
            rows = self.conn.execute(select(*_LISTED).where(*where)
                                     .order_by(CLAIMS.c.claim_id.desc()).limit(limit))
            return (ListedClaim(_claim_of(r), r.completed_index, r.settled_serial)
                    for r in rows.all())

        if party is None:
            return list(walk())
        # a claim is never its own debtor (CHECK not_self): the two walks never meet
        merged = heapq.merge(walk(CLAIMS.c.creditor == party), walk(CLAIMS.c.debtor == party),
                             key=lambda c: c.claim.claim_id, reverse=True)
        return list(itertools.islice(merged, limit))

    def completed_claims(self, *, unsettled: bool = False) -> list[Claim]:
        """The completed claims (only those no statement settled, if ``unsettled``)."""
        where = [CLAIMS.c.state == ClaimState.COMPLETED.value]
        if unsettled:
            where.append(CLAIMS.c.settled_serial.is_(None))
        rows = self.conn.execute(select(CLAIMS).where(*where).order_by(CLAIMS.c.claim_id))
        return [_claim(row).claim for row in rows]

    def set_completed_index(self, claim_id: str, index: int) -> None:
        """The log leaf that completed the claim: the first leaf recording it completed
        sets it; a later one (a finish sent again) leaves it. While deferring, written
        at the end, in order."""
        completed_at = self._completed_at.get(claim_id)
        if completed_at is not None:  # completed in this transaction: written with it
            if completed_at != index:
                raise InvariantViolation(f"claim {claim_id} was completed at leaf "
                                         f"{completed_at}, not {index}")
            return
        row = {"id": claim_id, "idx": index}
        if self._deferring:
            self._pending_completed.append(row)
        else:
            _SET_COMPLETED_INDEX.send(self.conn, row)

    @property
    def settlements(self) -> Settlements:
        """Settlement's rows, in this transaction (it moves positions: the standings
        read are forgotten)."""
        self._standings = None
        return Settlements(self.conn)

    def move_home(self, person_ref: str, old_home: str, new_home: str, evidence: bytes,
                  now: datetime) -> bool:
        """A completed move: the person's home becomes ``new_home`` if it still is
        ``old_home`` (False, and nothing changed, if not); ``evidence`` is the new home's
        signed envelope that completed the move. One statement: the check is the
        UPDATE's condition."""
        values = {"ref": person_ref, "was": old_home, "home": new_home, "at": now,
                  "evidence": evidence}
        if person_ref not in self._homes:
            return _SET_HOME(self.conn, values).rowcount == 1
        home = self._homes[person_ref]  # as this transaction sees it: no need to ask
        if home is None or home.home_node_id != old_home:
            return False
        _SET_HOME.send(self.conn, values, rows=1,
                       otherwise=f"the directory entry of {person_ref} changed underneath")
        self._change(self._homes, person_ref,
                     DirectoryRecord(person_ref, new_home, now, evidence))
        return True

    # deliveries -----------------------------------------------------------------------

    def last_delivery_seq(self, node_id: str) -> int:
        """The node's last delivery sequence number: read once per transaction, then kept
        as this transaction's deliveries move it."""
        found = self._delivery_seq.get(node_id)
        if found is None:
            last = _LAST_DELIVERY(self.conn, {"node_id": node_id}).scalar()
            found = self._delivery_seq[node_id] = int(last or 0)
        return found

    def insert_delivery(self, node_id: str, seq: int, payload: bytes, now: datetime) -> None:
        if seq != self.last_delivery_seq(node_id) + 1:
            raise InvariantViolation(f"delivery {seq} to {node_id} does not follow "
                                     f"{self.last_delivery_seq(node_id)}")
        row = {"node_id": node_id, "seq": seq, "envelope": payload, "created_at": now}
        if self._deferring:
            self._pending_deliveries.append(row)
        else:
            _INSERT_DELIVERY.send(self.conn, row)
        self._delivery_seq[node_id] = seq

    def deliveries_after(self, node_id: str, after_seq: int, limit: int,
                         ) -> list[tuple[int, bytes]]:
        rows = _DELIVERIES_AFTER(self.conn, {"node_id": node_id, "after": after_seq,
                                             "limit": limit})
        return [(int(row[0]), bytes(row[1])) for row in rows]

    def acked_seq(self, node_id: str) -> int | None:
        value = _ACKED_SEQ(self.conn, {"node_id": node_id}).scalar()
        return None if value is None else int(value)

    def set_acked_seq(self, node_id: str, seq: int) -> None:
        _SET_ACKED_SEQ.send(self.conn, {"b_node_id": node_id, "seq": seq}, rows=1,
                            otherwise=f"the acknowledgement of {node_id} would go backwards")

    # receipts -------------------------------------------------------------------------

    def receipt(self, envelope_sha256: bytes) -> bytes | None:
        """The signed receipt given for the submission with this SHA-256, if any."""
        if envelope_sha256 in self._receipts:
            return self._receipts[envelope_sha256]
        value = _RECEIPT(self.conn, {"key": envelope_sha256}).scalar()
        found = self._receipts[envelope_sha256] = None if value is None else bytes(value)
        return found

    def look_up_receipts(self, keys: Iterable[bytes]) -> None:
        """Read the receipts of these SHA-256s together (a batch's envelopes), so that
        ``receipt`` answers each from memory: one statement per 32 keys, not one each."""
        wanted = sorted({k for k in keys if k not in self._receipts})
        for start in range(0, len(wanted), _KEYS_PER_LOOKUP):
            chunk = wanted[start:start + _KEYS_PER_LOOKUP]
            self._receipts.update(dict.fromkeys(chunk))
            self._receipts.update((bytes(r[0]), bytes(r[1]))
                                  for r in _RECEIPTS_BY_KEY(self.conn, {"keys": chunk}))

    def insert_receipt(self, envelope_sha256: bytes, signer: str, kind: str, receipt: bytes,
                       now: datetime) -> None:
        if len(envelope_sha256) != 32:
            raise InvariantViolation("a receipt is keyed by a 32-byte SHA-256")
        if self.receipt(envelope_sha256) is not None:
            raise InvariantViolation("an envelope gets one receipt")
        row = {"envelope_sha256": envelope_sha256, "signer": signer, "kind": kind,
               "receipt": receipt, "created_at": now}
        if self._deferring:
            self._pending_receipts.append(row)
        else:
            _INSERT_RECEIPT.send(self.conn, row)
        self._receipts[envelope_sha256] = receipt
