"""Statements a PostgreSQL writer sends without waiting for their answer (psycopg's
pipeline mode), for ``Prepared.send`` inside ``runtime.db.Database.write``.

The one writer holds the write lock while it waits for each statement's round trip. A
savepoint, an INSERT or an UPDATE whose only answer is a row count the writer already
knows (an invariant, not a decision) needs no answer before the next statement: sent in
pipeline mode, it travels with the next statement that must be answered (a read, a
conditional UPDATE that decides something, the commit), and all of them cost one round
trip. What a sent statement would have checked is checked when its answer arrives:
its row count against the one expected (``InvariantViolation`` otherwise) and its error,
raised as Core raises it, from the statement that waited for it. Either way the whole
transaction rolls back, as it did when the error came at once: no caller turns a
database error or a broken invariant into a refusal.

Only the driver path sends (``runtime._prepared``); a statement run through Core leaves
pipeline mode first (an engine listener), since Core reads the cursor at once.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Connection, Engine, event

from runtime.errors import InvariantViolation

#: Where an open write transaction keeps its pipeline (the connection's ``info``).
INFO_KEY = "timebank.pipeline"
#: The most statements sent before the writer waits for their answers anyway.
MAX_PENDING = 256


class Pipeline:
    """A write transaction's statements sent and not yet answered, on one psycopg
    connection. Pipeline mode is entered at the first ``send`` and left by ``leave``."""

    __slots__ = ("_context", "_driver", "_pending", "_pipeline")

    def __init__(self, driver_connection: Any) -> None:
        self._driver = driver_connection
        self._context: AbstractContextManager[Any] | None = None
        self._pipeline: Any = None
        self._pending: list[tuple[Any, int | None, str]] = []

    @property
    def active(self) -> bool:
        return self._context is not None

    def enter(self) -> None:
        if self._context is None:
            context = self._driver.pipeline()
            self._pipeline = context.__enter__()
            self._context = context

    def sent(self, cursor: Any, rows: int | None, otherwise: str) -> None:
        """Remember ``cursor``'s statement, sent, to check when its answer arrives."""
        self._pending.append((cursor, rows, otherwise))

    @property
    def full(self) -> bool:
        return len(self._pending) >= MAX_PENDING

    def sync(self) -> None:
        """Wait for every answer (one round trip with whatever was last queued), then
        check each sent statement's row count. The driver's error propagates as is."""
        self._answered(self._pipeline.sync)

    def leave(self) -> None:
        """Wait for every answer and leave pipeline mode (before a Core statement, or
        the commit), then check each sent statement's row count. One round trip: the
        driver syncs as it leaves pipeline mode, and fetches every answer then."""
        if self._context is not None:
            self._answered(lambda: self._exit(None))

    def _answered(self, wait: Callable[[], None]) -> None:
        """``wait`` for the answers of the statements sent, then check their row counts
        (``InvariantViolation`` otherwise); their cursors are closed either way."""
        pending, self._pending = self._pending, []
        try:
            wait()
            for cursor, rows, otherwise in pending:
                if rows is not None and cursor.rowcount != rows:
                    raise InvariantViolation(otherwise)
        finally:
            for cursor, _, _ in pending:
                cursor.close()

    def abandon(self, exc: BaseException) -> None:
        """Leave pipeline mode after ``exc``: the transaction is rolled back anyway."""
        for cursor, _, _ in self._pending:
            cursor.close()
        self._pending = []
        if self._context is not None:
            self._exit(exc)

    def _exit(self, exc: BaseException | None) -> None:
        context, self._context, self._pipeline = self._context, None, None
        assert context is not None
        context.__exit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None)


def of(conn: Connection) -> Pipeline | None:
    """The pipeline the write transaction on ``conn`` may send in (None: it may not)."""
    return conn.info.get(INFO_KEY)


def leave_before_core(engine: Engine) -> None:
    """Have a statement Core runs on ``engine`` first leave pipeline mode (the driver
    path passes no execution context; Core always does)."""

    @event.listens_for(engine, "before_cursor_execute")
    def _leave(conn: Connection, _cursor: Any, _sql: str, _params: Any, context: Any,
               _many: bool) -> None:
        if context is not None:
            pipeline = of(conn)
            if pipeline is not None and pipeline.active:
                pipeline.leave()
