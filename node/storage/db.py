"""Engines and transactions for SQLite (embedded default) and PostgreSQL.

Writers are serialised: on SQLite by ``BEGIN IMMEDIATE`` (SQLAlchemy's
documented recipe; ``FOR UPDATE`` is ignored there), on PostgreSQL by locking
the single ``ledger_head`` row first. A district's write rate is modest, and one
writer at a time makes every use-case trivially serialisable with no deadlocks.
Readers never block writers (WAL on SQLite, MVCC on PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError, OperationalError

from runtime.errors import Unavailable
from runtime.locks import FifoLock
from runtime.statements import Prepared

SQLITE_BUSY_TIMEOUT_MS = 10_000
# on the driver's cursor: every transaction starts with one (runtime.statements)
_BEGIN_IMMEDIATE = Prepared(text("BEGIN IMMEDIATE"))
_BEGIN = Prepared(text("BEGIN"))


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'node.sqlite3').resolve()}"


def _sqlite_engine(url: str, *, immediate: bool) -> Engine:
    engine = create_engine(url, pool_size=8, max_overflow=8, pool_timeout=30)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    begin = _BEGIN_IMMEDIATE if immediate else _BEGIN

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        begin(conn)

    return engine


class Database:
    """The node's database: one writer at a time, many readers."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.writer = _sqlite_engine(url, immediate=True)
            self.reader = _sqlite_engine(url, immediate=False)
        else:
            self.writer = create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
            self.reader = self.writer
        # Writers in this process queue here, first come first served, rather than in
        # SQLite's busy handler, which sleeps between tries (up to 100 ms) and lets the
        # busiest threads starve the rest.
        self._write_lock = FifoLock()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One use-case's transaction: committed on success, rolled back on any error."""
        try:
            with self._write_lock, self.writer.begin() as conn:
                if not self.is_sqlite:
                    conn.execute(text("SELECT seq FROM ledger_head WHERE id = 1 FOR UPDATE"))
                yield conn
        except OperationalError as e:
            raise Unavailable(
                "the node's database is busy or unreachable; try again shortly",
                "STORE_UNAVAILABLE",
            ) from e

    @contextmanager
    def read(self) -> Iterator[Connection]:
        try:
            with self.reader.begin() as conn:
                yield conn
        except OperationalError as e:
            raise Unavailable(
                "the node's database is busy or unreachable; try again shortly",
                "STORE_UNAVAILABLE",
            ) from e

    def dispose(self) -> None:
        self.writer.dispose()
        if self.reader is not self.writer:
            self.reader.dispose()


__all__ = ["DBAPIError", "Database", "sqlite_url"]
