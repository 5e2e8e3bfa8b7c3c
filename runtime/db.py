"""A service's database: engines and transactions on SQLite (the embedded default) or
PostgreSQL, with one writer at a time and many readers.

Writers are serialised: in the process by a first-come, first-served lock; across
processes on SQLite by ``BEGIN IMMEDIATE`` (SQLAlchemy's documented recipe; ``FOR
UPDATE`` is ignored there), on PostgreSQL by locking one row the service names first
(the node its ``ledger_head``, the clearinghouse its ``write_lock``, so several replicas
can share a database). One writer at a time makes every use-case trivially serialisable
with no deadlocks. Readers never block writers (WAL on SQLite, MVCC on PostgreSQL).

A driver error that says the database is busy or gone (``OperationalError``) becomes
``Unavailable``: the caller may try again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.sql.expression import Executable

from runtime import _pipeline
from runtime._core import CoreStatement
from runtime._prepared import DriverStatement
from runtime.errors import ConfigError, InvariantViolation, Unavailable
from runtime.locks import FifoLock
from runtime.statements import EXECUTION_OPTION, Prepared, StatementMode, mode_from_environment

SQLITE_BUSY_TIMEOUT_MS = 10_000


def _sqlite_engine(url: str, *, immediate: bool, mode: StatementMode) -> Engine:
    engine = create_engine(url, pool_size=8, max_overflow=8, pool_timeout=30,
                           hide_parameters=True, execution_options={EXECUTION_OPTION: mode})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # every commit reaches the disk before it returns: a district is told its work
        # is recorded, and the clearinghouse signs tree heads and receipts, only for
        # what survives a power cut or an OS crash (NORMAL survives only a process's)
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    _open_transactions_with(engine, "BEGIN IMMEDIATE" if immediate else "BEGIN", mode)
    return engine


def _open_transactions_with(engine: Engine, sql: str, mode: StatementMode) -> None:
    """Start each transaction on ``engine`` with ``sql`` (SQLite's ``BEGIN IMMEDIATE``),
    from the ``begin`` event, where the connection has no transaction yet and must not
    start one: as SQLAlchemy's recipe does (``exec_driver_sql``), or on the driver."""
    if mode is StatementMode.CORE:
        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql(sql)

        return
    statement = text(sql)
    on_driver = DriverStatement(statement, CoreStatement(statement))

    @event.listens_for(engine, "begin")
    def _begin_on_driver(conn: Connection) -> None:
        on_driver.run(conn, {})


@contextmanager
def _pipelining(conn: Connection) -> Iterator[None]:
    """Let ``Prepared.send`` queue statements on ``conn`` until the block ends, and wait
    for all their answers before it ends (so before the commit)."""
    pipeline = _pipeline.Pipeline(conn.connection.driver_connection)
    conn.info[_pipeline.INFO_KEY] = pipeline
    try:
        yield
        try:
            pipeline.leave()
        except InvariantViolation:
            raise
        except Exception as e:  # the driver's: as Core raises it
            conn._handle_dbapi_exception(e, "(statements sent in a pipeline)", None, None,
                                         None)
    except BaseException as e:
        pipeline.abandon(e)
        raise
    finally:
        del conn.info[_pipeline.INFO_KEY]


#: Where a write transaction keeps the row its write lock statement returned
#: (``locked_row``), for as long as the transaction lasts.
_LOCKED_ROW = "timebank.locked_row"


def locked_row(conn: Connection) -> tuple[Any, ...] | None:
    """The row the write lock statement returned in this write transaction: on
    PostgreSQL, what the service asked it to read under the lock in the same round trip
    (None on SQLite, which locks by ``BEGIN IMMEDIATE``, and outside a write)."""
    found: tuple[Any, ...] | None = conn.info.get(_LOCKED_ROW)
    return found


#: The reason a transaction that could not reach its database is refused with.
STORE_UNAVAILABLE = "STORE_UNAVAILABLE"

#: PostgreSQL settings that, turned off, let a commit return before it is safely on disk.
#: A service signs for what it committed (receipts, tree heads, a district's "recorded"),
#: so it will not serve on a database that can lose commits.
_DURABILITY_SETTINGS = ("fsync", "synchronous_commit", "full_page_writes")
_READ_DURABILITY_SETTINGS = text(
    "SELECT name FROM pg_settings WHERE setting = 'off' AND name IN ("
    + ", ".join(f"'{name}'" for name in _DURABILITY_SETTINGS) + ") ORDER BY name")


class Database:
    """A service's database: one writer at a time, many readers.

    ``service`` names the service in messages ("the node's database is busy...");
    ``write_lock`` is the statement a PostgreSQL writer runs first, locking the one row
    that serialises writers across processes (whatever else it selects is read in the
    same round trip, under the lock: ``locked_row``); ``statements`` chooses how Prepared
    statements run on this database's connections (default: ``TIMEBANK_STATEMENTS``).

    On PostgreSQL, ``pre_ping`` tests every pooled connection with a round trip before
    a transaction takes it (a connection the server dropped is replaced rather than
    failing the transaction): a service whose callers retry on UNAVAILABLE anyway may
    spare that round trip. ``pipelined`` lets a write transaction's ``Prepared.send``
    statements ride with the next statement that waits (``runtime._pipeline``).
    """

    def __init__(self, url: str, *, service: str, write_lock: Executable,
                 statements: StatementMode | None = None, pre_ping: bool = True,
                 pipelined: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.statements = mode_from_environment() if statements is None else statements
        self._unavailable = (f"the {service}'s database is busy or unreachable; "
                             "try again shortly")
        if self.is_sqlite:
            self.writer = _sqlite_engine(url, immediate=True, mode=self.statements)
            self.reader = _sqlite_engine(url, immediate=False, mode=self.statements)
        else:
            self.writer = create_engine(url, pool_size=10, max_overflow=10,
                                        pool_pre_ping=pre_ping, hide_parameters=True,
                                        execution_options={EXECUTION_OPTION: self.statements})
            self.reader = self.writer
        self._pipelined = pipelined and not self.is_sqlite
        if self._pipelined:
            _pipeline.leave_before_core(self.writer)
        self._lock_row = Prepared(write_lock)
        # Writers in this process queue here, first come first served, rather than in
        # SQLite's busy handler, which sleeps between tries (up to 100 ms) and lets the
        # busiest threads starve the rest.
        self._write_lock = FifoLock()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One use-case's transaction: committed on success, rolled back on any error."""
        try:
            with self._write_lock, self.writer.begin() as conn:
                info = conn.info  # the pooled connection's: it outlives the transaction
                if not self.is_sqlite:
                    row = self._lock_row(conn).first()
                    if row is not None:
                        info[_LOCKED_ROW] = tuple(row)
                try:
                    if not self._pipelined:
                        yield conn
                        return
                    with _pipelining(conn):
                        yield conn
                finally:
                    info.pop(_LOCKED_ROW, None)
        except OperationalError as e:
            raise Unavailable(self._unavailable, STORE_UNAVAILABLE) from e

    def refuse_unless_durable(self) -> None:
        """Raise ``ConfigError`` unless a commit here is on disk before it returns.

        On PostgreSQL, the settings this service's own connections get (the server's,
        its role's, its database's or its URL's ``options``) must not turn off
        ``fsync``, ``synchronous_commit`` or ``full_page_writes``: with any of them off a
        crash of the machine drops or tears transactions the service already reported or
        signed (ADR 0022). On SQLite, the pragmas this module sets on every connection
        are read back."""
        with self.read() as conn:
            if self.is_sqlite:
                found = {"synchronous": conn.exec_driver_sql("PRAGMA synchronous").scalar(),
                         "journal_mode": conn.exec_driver_sql("PRAGMA journal_mode").scalar()}
                if found != {"synchronous": 2, "journal_mode": "wal"}:
                    raise InvariantViolation(f"SQLite opened without WAL and FULL sync: {found}")
                return
            unsafe = [str(name) for (name,) in conn.execute(_READ_DURABILITY_SETTINGS)]
        if unsafe:
            named = ", ".join(f"{name}=off" for name in unsafe)
            raise ConfigError(
                f"PostgreSQL 设为提交后不一定写入磁盘（{named}），断电或死机会丢失已签名的记录，"
                f"服务不启动；请把这些设置改回 on 再启动 / PostgreSQL is set so that a commit "
                f"may not be on disk when it returns ({named}): a power cut or an OS crash "
                f"would lose what this service already signed, so it will not start. Set "
                f"them back to on (postgresql.conf, ALTER SYSTEM, ALTER ROLE or ALTER "
                f"DATABASE, or the URL's options) and start again")

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A transaction to read in; it never waits for the writer."""
        try:
            with self.reader.begin() as conn:
                yield conn
        except OperationalError as e:
            raise Unavailable(self._unavailable, STORE_UNAVAILABLE) from e

    def dispose(self) -> None:
        self.writer.dispose()
        if self.reader is not self.writer:
            self.reader.dispose()
