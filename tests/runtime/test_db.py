"""``runtime.db``: one writer at a time across Database objects (as across processes),
errors that mean "try again" as Unavailable, and the statement mode as a setting."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, bindparam, select, text
from sqlalchemy.exc import IntegrityError

import runtime.db
from runtime.db import Database
from runtime.errors import ConfigError, InvariantViolation, Unavailable
from runtime.statements import Prepared, StatementMode, mode_of
from tests.postgres import admin_engine

metadata = MetaData()
LOCK = Table("one_writer", metadata, Column("id", Integer, primary_key=True))
COUNTER = Table("counter", metadata, Column("id", Integer, primary_key=True),
                Column("n", Integer, nullable=False))
TAKE_LOCK = select(LOCK.c.id).where(LOCK.c.id == 1).with_for_update()
ADD_ONE = Prepared(COUNTER.update().values(n=COUNTER.c.n + 1))


def open_db(url: str, mode: StatementMode | None = None, *, pipelined: bool = False,
            ) -> Database:
    return Database(url, service="测试服务", write_lock=TAKE_LOCK, statements=mode,
                    pipelined=pipelined)


def prepared(url: str, mode: StatementMode, *, pipelined: bool = False) -> Database:
    made = open_db(url, mode, pipelined=pipelined)
    metadata.create_all(made.writer)
    with made.write() as conn:
        conn.execute(LOCK.insert().values(id=1))
        conn.execute(COUNTER.insert().values(id=1, n=0))
    return made


@pytest.fixture(params=list(StatementMode))
def db(request: pytest.FixtureRequest, empty_db_url: str) -> Iterator[Database]:
    made = prepared(empty_db_url, request.param)
    yield made
    made.dispose()


@pytest.fixture(params=list(StatementMode))
def pg_db(request: pytest.FixtureRequest, empty_pg_url: str) -> Iterator[Database]:
    made = prepared(empty_pg_url, request.param)
    yield made
    made.dispose()


@pytest.fixture(params=list(StatementMode))
def sending_db(request: pytest.FixtureRequest, empty_db_url: str) -> Iterator[Database]:
    """A database whose writes may send statements without waiting (PostgreSQL)."""
    made = prepared(empty_db_url, request.param, pipelined=True)
    yield made
    made.dispose()


def count(db: Database) -> int:
    with db.read() as conn:
        n: int = conn.execute(select(COUNTER.c.n)).scalar_one()
        return n


def test_a_write_commits_and_an_error_undoes_it(db: Database) -> None:
    with db.write() as conn:
        conn.execute(COUNTER.update().values(n=COUNTER.c.n + 1))
    with pytest.raises(RuntimeError), db.write() as conn:
        conn.execute(COUNTER.update().values(n=COUNTER.c.n + 1))
        raise RuntimeError("undo")
    assert count(db) == 1


def test_writers_of_two_databases_on_one_store_take_turns(db: Database) -> None:
    """A second Database (another process, or a replica) waits for the first writer:
    BEGIN IMMEDIATE on SQLite, the lock row on PostgreSQL."""
    other = open_db(db.url, db.statements)
    entered = threading.Event()
    seen: list[int] = []

    def second() -> None:
        with other.write() as conn:
            entered.set()
            seen.append(conn.execute(select(COUNTER.c.n)).scalar_one())

    try:
        with db.write() as conn:
            thread = threading.Thread(target=second)
            thread.start()
            time.sleep(0.3)
            assert not entered.is_set()
            conn.execute(COUNTER.update().values(n=7))
        thread.join(timeout=30)
        assert seen == [7]  # it ran after the first committed, and saw its write
    finally:
        other.dispose()


def test_the_statement_mode_is_the_databases_setting(empty_db_url: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    setup = open_db(empty_db_url)
    metadata.create_all(setup.writer)
    setup.dispose()
    for mode in StatementMode:
        made = open_db(empty_db_url, mode)
        with made.read() as reading, made.write() as writing:
            assert mode_of(reading) is mode_of(writing) is mode
        made.dispose()
    monkeypatch.setenv("TIMEBANK_STATEMENTS", "core")
    made = open_db(empty_db_url)
    assert made.statements is StatementMode.CORE
    made.dispose()


def test_a_busy_sqlite_store_is_unavailable_and_says_whose(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime.db, "SQLITE_BUSY_TIMEOUT_MS", 50)
    path = tmp_path / "busy.sqlite3"
    db = open_db(f"sqlite:///{path}")
    metadata.create_all(db.writer)
    other_process = sqlite3.connect(path, isolation_level=None)
    other_process.execute("BEGIN IMMEDIATE")  # holds the write lock
    try:
        with pytest.raises(Unavailable) as refused, db.write():
            pass
        assert refused.value.reason == "STORE_UNAVAILABLE"
        assert str(refused.value) == ("the 测试服务's database is busy or unreachable; "
                                      "try again shortly")
    finally:
        other_process.rollback()
        other_process.close()
    with db.write() as conn:  # free again
        conn.execute(COUNTER.insert().values(id=1, n=0))
    assert count(db) == 0
    db.dispose()


def test_a_killed_postgres_connection_is_unavailable_then_the_next_write_works(
        pg_db: Database) -> None:
    with pytest.raises(Unavailable), pg_db.write() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        admin = admin_engine()
        with admin.connect() as killer:
            killer.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        admin.dispose()
        ADD_ONE(conn)  # in the driver mode, on the driver's cursor
    with pg_db.write() as conn:
        ADD_ONE(conn)
    assert count(pg_db) == 1


N = Prepared(select(COUNTER.c.n).where(COUNTER.c.id == 1))
INSERT_COUNTER = Prepared(COUNTER.insert())


def test_statements_sent_take_effect_and_later_statements_see_them(
        sending_db: Database) -> None:
    with sending_db.write() as conn:
        ADD_ONE.send(conn, rows=1, otherwise="one counter")
        ADD_ONE.send(conn, rows=1, otherwise="one counter")
        assert N(conn).scalar_one() == 2  # a statement that waits answers after them
        ADD_ONE.send(conn, rows=1, otherwise="one counter")
        assert conn.execute(select(COUNTER.c.n)).scalar_one() == 3  # and one through Core
        ADD_ONE.send(conn, rows=1, otherwise="one counter")
    assert count(sending_db) == 4


def test_a_sent_statement_changing_other_rows_than_said_undoes_the_write(
        sending_db: Database) -> None:
    with pytest.raises(InvariantViolation, match="two counters"), sending_db.write() as conn:
        ADD_ONE.send(conn, rows=2, otherwise="two counters")
    with pytest.raises(InvariantViolation, match="two counters"), sending_db.write() as conn:
        ADD_ONE.send(conn, rows=2, otherwise="two counters")
        N(conn)
    assert count(sending_db) == 0
    with sending_db.write() as conn:
        ADD_ONE.send(conn, rows=1)
    assert count(sending_db) == 1


ADD_TO = Prepared(COUNTER.update().where(COUNTER.c.id == bindparam("b_id"))
                  .values(n=COUNTER.c.n + bindparam("d")))


def test_statements_sent_many_changing_other_rows_than_said_undo_the_write(
        sending_db: Database) -> None:
    """Their rows changed together are checked, as one sent statement's are."""
    moves = [{"b_id": 1, "d": 2}, {"b_id": 7, "d": 3}]  # no counter 7
    with (pytest.raises(InvariantViolation, match="two counters"),
          sending_db.write() as conn):
        ADD_TO.send_many(conn, moves, changed=2, otherwise="two counters")
    with (pytest.raises(InvariantViolation, match="two counters"),
          sending_db.write() as conn):
        ADD_TO.send_many(conn, moves, changed=2, otherwise="two counters")
        N(conn)
    assert count(sending_db) == 0
    with sending_db.write() as conn:
        ADD_TO.send_many(conn, [{"b_id": 1, "d": 2}, {"b_id": 1, "d": 3}], changed=2)
    assert count(sending_db) == 5


def test_a_sent_statement_that_fails_undoes_the_write_as_core_raises_it(
        sending_db: Database) -> None:
    with pytest.raises(IntegrityError), sending_db.write() as conn:
        ADD_ONE.send(conn)
        INSERT_COUNTER.send(conn, {"id": 1, "n": 5})  # the counter exists already
    with pytest.raises(IntegrityError), sending_db.write() as conn:
        INSERT_COUNTER.send_many(conn, [{"id": 2, "n": 0}, {"id": 1, "n": 5}])
        ADD_ONE(conn)
    assert count(sending_db) == 0
    with sending_db.write() as conn:
        ADD_ONE.send(conn)
        INSERT_COUNTER.send_many(conn, [{"id": 2, "n": 0}, {"id": 3, "n": 0}])
    with sending_db.read() as conn:
        assert conn.execute(select(COUNTER.c.id, COUNTER.c.n).order_by(COUNTER.c.id)
                            ).all() == [(1, 1), (2, 0), (3, 0)]


def test_a_sqlite_commit_is_on_disk_before_it_returns(tmp_path: Path) -> None:
    """WAL with ``synchronous=FULL`` on every connection: a commit survives a power cut,
    not only the process's crash (what a signed tree head or receipt promises)."""
    made = open_db(f"sqlite:///{tmp_path / 'durable.sqlite3'}")
    try:
        for engine in (made.writer, made.reader):
            with engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        made.dispose()


def test_sqlite_reads_back_wal_and_full_sync(tmp_path: Path) -> None:
    made = open_db(f"sqlite:///{tmp_path / 'durable.sqlite3'}")
    try:
        made.refuse_unless_durable()  # raises if a connection came without the pragmas
    finally:
        made.dispose()


def test_a_postgresql_database_that_may_lose_commits_is_refused(empty_pg_url: str) -> None:
    """``synchronous_commit=off`` set on the database, or by the service's own URL, is
    refused by name; the same database with it back on is accepted."""
    name = empty_pg_url.rsplit("/", 1)[1]
    admin = admin_engine()
    fine = open_db(empty_pg_url)
    try:
        fine.refuse_unless_durable()
    finally:
        fine.dispose()
    by_url = open_db(f"{empty_pg_url}?options=-c%20synchronous_commit%3Doff")
    try:
        with pytest.raises(ConfigError, match=r"synchronous_commit=off") as refused:
            by_url.refuse_unless_durable()
        assert "服务不启动" in str(refused.value) and "will not start" in str(refused.value)
    finally:
        by_url.dispose()
    try:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
        off = open_db(empty_pg_url)
        try:
            with pytest.raises(ConfigError, match=r"\(synchronous_commit=off\)"):
                off.refuse_unless_durable()
        finally:
            off.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit = on'))
        on = open_db(empty_pg_url)
        try:
            on.refuse_unless_durable()
        finally:
            on.dispose()
    finally:
        admin.dispose()
