"""The clearinghouse's database (``runtime.db``). On PostgreSQL every writer first locks
the one ``write_lock`` row, so that several clearinghouse replicas can share a database."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, event, func, select

from clearinghouse.storage.schema import CityKeyAct, CityRoster, LogLeaf, WriteLock
from runtime.db import Database as _RuntimeDatabase
from runtime.db import locked_row
from runtime.errors import InvariantViolation
from runtime.statements import Prepared, StatementMode

#: Where a writer connection counts the statements it ran that may change a row
#: (``writes``): anything but a read or a savepoint's own statement.
_WRITES = "timebank_writes"
_NOT_WRITES = ("SELECT", "SAVEPOINT", "RELEASE", "ROLLBACK")


def _count_write(conn: Connection, cursor: Any, statement: str, *_: Any) -> None:
    if not statement.lstrip().upper().startswith(_NOT_WRITES):
        conn.info[_WRITES] = conn.info.get(_WRITES, 0) + 1


def counts_writes(conn: Connection) -> bool:
    """Whether ``writes`` counts for ``conn`` (its engine is a clearinghouse writer's)."""
    return event.contains(conn.engine, "before_cursor_execute", _count_write)


def writes(conn: Connection) -> int:
    """How many statements that may change a row ``conn`` has run (it only grows): equal
    before and after a piece of work, the work changed nothing in the database."""
    found: int = conn.info.get(_WRITES, 0)
    return found


@dataclass(frozen=True, slots=True)
class Stamp:
    """What a write transaction found, under the write lock, of the tables that are only
    ever inserted into and that every head reads: how many city key acts there are, the
    latest roster's epoch (0: none) and the log's size. Equal stamps mean equal rows,
    so what was read of them in an earlier transaction can be used again
    (``repo.RarelyChanged``)."""

    key_acts: int
    roster_epoch: int
    log_size: int

    def __post_init__(self) -> None:
        if min(self.key_acts, self.roster_epoch, self.log_size) < 0:
            raise InvariantViolation(f"a stamp counts from zero: {self}")


_STAMP_COLUMNS = (
    select(func.count()).select_from(CityKeyAct).scalar_subquery(),
    select(func.coalesce(func.max(CityRoster.epoch), 0)).scalar_subquery(),
    select(func.coalesce(func.max(LogLeaf.idx) + 1, 0)).scalar_subquery())
_STAMP = Prepared(select(*_STAMP_COLUMNS))


def stamp(conn: Connection) -> Stamp:
    """This write transaction's ``Stamp``: on PostgreSQL read with the write lock, in
    the same round trip; on SQLite (locked by ``BEGIN IMMEDIATE``) read now."""
    row = locked_row(conn)
    values = row[1:] if row is not None else tuple(_STAMP(conn).one())
    return Stamp(*(int(v) for v in values))


class Database(_RuntimeDatabase):
    """The clearinghouse's database: one writer at a time, many readers."""

    def __init__(self, url: str, *, statements: StatementMode | None = None) -> None:
        # the lock row, and the stamp read under it (``stamp``)
        lock = (select(WriteLock.id, *_STAMP_COLUMNS).where(WriteLock.id == 1)
                .with_for_update(of=WriteLock))
        # No pre-ping: a node's link retries a call that found a dropped connection
        # (UNAVAILABLE), and the round trip would be paid by every transaction.
        super().__init__(url, service="clearinghouse", write_lock=lock,
                         statements=statements, pre_ping=False, pipelined=True)
        event.listen(self.writer, "before_cursor_execute", _count_write)
