"""The clearinghouse's database (``runtime.db``). On PostgreSQL every writer first locks
the one ``write_lock`` row, so that several clearinghouse replicas can share a database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, event, select

from clearinghouse.storage.schema import WriteLock
from runtime.db import Database as _RuntimeDatabase
from runtime.statements import StatementMode

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


class Database(_RuntimeDatabase):
    """The clearinghouse's database: one writer at a time, many readers."""

    def __init__(self, url: str, *, statements: StatementMode | None = None) -> None:
        lock = select(WriteLock.id).where(WriteLock.id == 1).with_for_update()
        # No pre-ping: a node's link retries a call that found a dropped connection
        # (UNAVAILABLE), and the round trip would be paid by every transaction.
        super().__init__(url, service="clearinghouse", write_lock=lock,
                         statements=statements, pre_ping=False, pipelined=True)
        event.listen(self.writer, "before_cursor_execute", _count_write)
