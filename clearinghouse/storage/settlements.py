"""Settlement rows: statements, the acts on them, and which claims each statement settled.

Every SQL statement settlement runs, inside the caller's transaction (``Repo.settlements``).
Closing a period touches every claim it settles, so those statements are set-based (one
UPDATE marks them all) and the claims are read back streamed, in claim-id order, a
chunk at a time: never a million rows in memory at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, and_, func, insert, or_, select, update

from clearinghouse.domain.claims import ClaimState
from clearinghouse.storage import schema as s
from runtime.errors import InvariantViolation
from timebank.settlement import SettledClaim

CLAIMS = cast(Table, s.ClaimRow.__table__)
STATEMENTS = cast(Table, s.SettlementStatementRow.__table__)
ACTS = cast(Table, s.SettlementActRow.__table__)
LEAVES = cast(Table, s.LogLeaf.__table__)
POSITIONS = cast(Table, s.Position.__table__)
_COMPLETED = ClaimState.COMPLETED.value
#: Rows fetched from the driver at a time while a period's claims are streamed.
STREAM_CHUNK = 10_000


@dataclass(frozen=True, slots=True)
class StatementRecord:
    """One revision of a statement, as stored."""

    serial: int
    revision: int
    period: str
    start: int
    end: int
    statement_sha256: bytes
    envelope: bytes  # the clearinghouse-signed ``settlement`` envelope as logged
    log_index: int
    closed_at: datetime
    final: bool


@dataclass(frozen=True, slots=True)
class ActRecord:
    """A countersign, dispute, decision or default, as logged."""

    log_index: int
    serial: int
    revision: int
    kind: str
    node_id: str | None
    envelope: bytes
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class ClaimRef:
    """A settled (or to be settled) claim as settlement reads it."""

    claim_id: str
    kind: str
    creditor: str
    debtor: str
    minutes: int  # posted
    completed_index: int
    completed_at: datetime | None = None  # the claim's last change: its completion


def _statement(r: Any) -> StatementRecord:
    return StatementRecord(int(r.serial), int(r.revision), str(r.period), int(r.start_index),
                           int(r.end_index), bytes(r.statement_sha256), bytes(r.envelope),
                           int(r.log_index), r.closed_at, bool(r.final))


def _act(r: Any) -> ActRecord:
    return ActRecord(int(r.log_index), int(r.serial), int(r.revision), str(r.kind),
                     r.node_id, bytes(r.envelope), r.recorded_at)


def _ref(r: Any) -> ClaimRef:
    return ClaimRef(str(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]), int(r[5]), r[6])


_REF_COLUMNS = (CLAIMS.c.claim_id, CLAIMS.c.kind, CLAIMS.c.creditor, CLAIMS.c.debtor,
                CLAIMS.c.posted_minutes, CLAIMS.c.completed_index, CLAIMS.c.updated_at)


class Settlements:
    """The settlement rows one transaction (``conn``) sees."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # statements ------------------------------------------------------------------------

    def latest(self, serial: int | None = None) -> StatementRecord | None:
        """The latest revision of statement ``serial`` (None: of the highest serial)."""
        q = select(STATEMENTS)
        if serial is not None:
            q = q.where(STATEMENTS.c.serial == serial)
        row = self.conn.execute(q.order_by(STATEMENTS.c.serial.desc(),
                                           STATEMENTS.c.revision.desc()).limit(1)).first()
        return None if row is None else _statement(row)

    def serial_of(self, period: str) -> int | None:
        return self.conn.execute(select(STATEMENTS.c.serial).where(
            STATEMENTS.c.period == period, STATEMENTS.c.revision == 1)).scalar_one_or_none()

    def revisions(self, serial: int) -> list[StatementRecord]:
        rows = self.conn.execute(select(STATEMENTS).where(STATEMENTS.c.serial == serial)
                                 .order_by(STATEMENTS.c.revision))
        return [_statement(r) for r in rows]

    def insert_statement(self, record: StatementRecord) -> None:
        self.conn.execute(insert(STATEMENTS).values(
            serial=record.serial, revision=record.revision, period=record.period,
            start_index=record.start, end_index=record.end,
            statement_sha256=record.statement_sha256, envelope=record.envelope,
            log_index=record.log_index, closed_at=record.closed_at, final=record.final))

    def set_final(self, serial: int, revision: int) -> None:
        done = self.conn.execute(update(STATEMENTS).where(
            STATEMENTS.c.serial == serial, STATEMENTS.c.revision == revision,
            STATEMENTS.c.final.is_(False)).values(final=True))
        if done.rowcount != 1:
            raise InvariantViolation(f"statement {serial} revision {revision} was final "
                                     "already or is not stored")

    # acts ------------------------------------------------------------------------------

    def insert_act(self, record: ActRecord) -> None:
        self.conn.execute(insert(ACTS).values(
            log_index=record.log_index, serial=record.serial, revision=record.revision,
            kind=record.kind, node_id=record.node_id, envelope=record.envelope,
            recorded_at=record.recorded_at))

    def acts(self, serial: int) -> list[ActRecord]:
        """Every act on statement ``serial``, in log order."""
        rows = self.conn.execute(select(ACTS).where(ACTS.c.serial == serial)
                                 .order_by(ACTS.c.log_index))
        return [_act(r) for r in rows]

    def city_acts(self) -> list[bytes]:
        """Every city-signed act on a statement (decisions, defaults), in log order."""
        return [bytes(e) for e in self.conn.execute(
            select(ACTS.c.envelope).where(ACTS.c.kind.in_(
                ("settlement.decision", "settlement.default"))).order_by(ACTS.c.log_index))
            .scalars()]

    # claims ----------------------------------------------------------------------------

    def settle(self, serial: int, end: int) -> int:
        """Mark every completed, unsettled claim completed below leaf ``end`` as settled
        by ``serial``; returns how many (one statement, whatever the number)."""
        done = self.conn.execute(update(CLAIMS).where(
            CLAIMS.c.settled_serial.is_(None), CLAIMS.c.completed_index < end,
            CLAIMS.c.state == _COMPLETED).values(settled_serial=serial))
        return int(done.rowcount)

    def unsettle(self, serial: int, claim_ids: Iterable[str]) -> int:
        """A bureau decision leaves these claims out of ``serial``: the next period
        takes them."""
        ids = sorted(set(claim_ids))
        total = 0
        for i in range(0, len(ids), 500):
            done = self.conn.execute(update(CLAIMS).where(
                CLAIMS.c.settled_serial == serial, CLAIMS.c.claim_id.in_(ids[i:i + 500]))
                .values(settled_serial=None))
            total += int(done.rowcount)
        return total

    def stream(self, serial: int) -> Iterator[SettledClaim]:
        """The claims ``serial`` settles, by claim id, streamed in chunks, each as the
        contract reads it (made here, once: a million of them are read at a close)."""
        # the option on the statement, not the connection: on the connection it would
        # stay for every later statement of the transaction (server-side cursors)
        result = self.conn.execute(
            select(*_REF_COLUMNS).where(CLAIMS.c.settled_serial == serial)
            .order_by(CLAIMS.c.claim_id).execution_options(yield_per=STREAM_CHUNK))
        # A driver returns new strings for every row: the few district ids and kinds are
        # shared instead (a million claims would otherwise keep three million copies).
        shared: dict[str, str] = {}
        try:
            for r in result:
                yield SettledClaim(str(r[0]), shared.setdefault(r[2], r[2]),
                                   shared.setdefault(r[3], r[3]), int(r[4]),
                                   shared.setdefault(r[1], r[1]), int(r[5]))
        finally:
            result.close()

    def page(self, serial: int, node_id: str, after: str, limit: int) -> list[ClaimRef]:
        """Up to ``limit`` claims ``serial`` settles, by claim id after ``after``, those
        ``node_id`` is a party to (every one for "")."""
        q = select(*_REF_COLUMNS).where(CLAIMS.c.settled_serial == serial,
                                        CLAIMS.c.claim_id > after)
        if node_id:
            q = q.where(or_(CLAIMS.c.creditor == node_id, CLAIMS.c.debtor == node_id))
        return [_ref(r) for r in self.conn.execute(q.order_by(CLAIMS.c.claim_id).limit(limit))]

    def refs(self, claim_ids: Iterable[str]) -> dict[str, ClaimRef]:
        """The completed claims among these ids."""
        ids = sorted(set(claim_ids))
        out: dict[str, ClaimRef] = {}
        for i in range(0, len(ids), 500):
            rows = self.conn.execute(select(*_REF_COLUMNS, CLAIMS.c.settled_serial).where(
                CLAIMS.c.claim_id.in_(ids[i:i + 500]), CLAIMS.c.state == _COMPLETED))
            out.update((str(r[0]), _ref(r)) for r in rows)
        return out

    def settled_by(self, claim_ids: Iterable[str]) -> dict[str, int | None]:
        """Which statement settled each of these claims (None: none), for those stored."""
        ids = sorted(set(claim_ids))
        out: dict[str, int | None] = {}
        for i in range(0, len(ids), 500):
            rows = self.conn.execute(select(CLAIMS.c.claim_id, CLAIMS.c.settled_serial)
                                     .where(CLAIMS.c.claim_id.in_(ids[i:i + 500])))
            out.update((str(r[0]), None if r[1] is None else int(r[1])) for r in rows)
        return out

    def unsettled_nets(self) -> dict[str, int]:
        """Each district's net over its completed, unsettled claims: what its running
        position must be (summed in SQL, over the few claims of the open period)."""
        out: dict[str, int] = {}
        base = and_(CLAIMS.c.settled_serial.is_(None), CLAIMS.c.state == _COMPLETED)
        for side, sign in ((CLAIMS.c.creditor, 1), (CLAIMS.c.debtor, -1)):
            rows = self.conn.execute(select(side, func.sum(CLAIMS.c.posted_minutes))
                                     .where(base).group_by(side))
            for node_id, minutes in rows:
                out[str(node_id)] = out.get(str(node_id), 0) + sign * int(minutes)
        return out

    def add_to_positions(self, deltas: dict[str, int]) -> None:
        """Move running net positions by ``deltas`` (a period's nets taken out, or
        excluded claims put back)."""
        for node_id, delta in sorted(deltas.items()):
            if not delta:
                continue
            done = self.conn.execute(update(POSITIONS).where(POSITIONS.c.node_id == node_id)
                                     .values(net_minutes=POSITIONS.c.net_minutes + delta))
            if done.rowcount != 1:
                raise InvariantViolation(f"node {node_id} has no position")

    # the log ---------------------------------------------------------------------------

    def first_leaf_from(self, at: datetime) -> int | None:
        """The first leaf (lowest index) stamped at or after ``at``."""
        value = self.conn.execute(select(LEAVES.c.idx).where(LEAVES.c.created_at >= at)
                                  .order_by(LEAVES.c.idx).limit(1)).scalar_one_or_none()
        return None if value is None else int(value)


__all__ = ["ActRecord", "ClaimRef", "Settlements", "StatementRecord"]
