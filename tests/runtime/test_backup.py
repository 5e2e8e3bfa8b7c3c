"""Backups of a service's database (``runtime.backup``), on SQLite and real PostgreSQL:
taken while a writer keeps writing, consistent, restored only where told to."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from node.domain.clock import ManualClock
from node.domain.policy import DEFAULT_POLICY_TOML, load_policy
from node.storage.db import Database
from node.storage.repo import Repo
from node.usecases.app import NodeApp, NodeIdentity
from node.usecases.ledger import check_ledger
from runtime import backup as backups
from tests.conftest import CITY_SECRET, DISTRICT, NODE_ID, make_node_app
from tests.helpers import earn, enrol
from tests.postgres import fresh_database
from tests.sqlite import migrated_sqlite


@pytest.fixture
def node(db_url: str, clock: ManualClock) -> Iterator[NodeApp]:
    yield from make_node_app(db_url, clock)


@pytest.fixture
def empty_target(db_url: str, tmp_path: Path, pg_template: str | None) -> Iterator[str]:
    """Another database of the same engine, with no tables (where a restore goes)."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'restored.sqlite3'}"
        return
    for url in fresh_database(pg_template, "tb_rst"):
        db = Database(url)
        with db.writer.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        db.dispose()
        yield url


def _head(url: str) -> tuple[int, bool]:
    db = Database(url)
    try:
        with db.read() as conn:
            count, _ = Repo(conn).ledger.head()
        return count, check_ledger_ok(db)
    finally:
        db.dispose()


def check_ledger_ok(db: Database) -> bool:
    app = NodeApp(db, load_policy(DEFAULT_POLICY_TOML), ManualClock(),
                  NodeIdentity(NODE_ID, DISTRICT, CITY_SECRET))
    return app.query(check_ledger).ok


def test_a_backup_taken_while_the_node_writes_is_consistent_and_restores(
        node: NodeApp, clock: ManualClock, db_url: str, empty_target: str, tmp_path: Path) -> None:
    elder = enrol(node, "张秀英", 1940, priority=True).id
    volunteer = enrol(node, "李明", 1990).id
    earn(node, clock, volunteer, 60, elder)
    stop, wrote = threading.Event(), []

    def keep_writing() -> None:
        while not stop.is_set():
            earn(node, clock, volunteer, 30, elder)
            wrote.append(1)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        while len(wrote) < 2:
            stop.wait(0.01)
        info = backups.backup(db_url, tmp_path / "node.backup")
        while len(wrote) < 4:
            stop.wait(0.01)
    finally:
        stop.set()
        writer.join()
    assert info.engine == ("sqlite" if db_url.startswith("sqlite") else "postgresql")
    assert (tmp_path / "node.backup").stat().st_mode & 0o077 == 0
    assert backups.backup_engine(tmp_path / "node.backup") == info.engine
    backups.restore(empty_target, tmp_path / "node.backup")
    restored, ok = _head(empty_target)
    live, live_ok = _head(db_url)
    assert ok and live_ok  # a snapshot: the chain and every sum hold in the copy
    assert 0 < restored < live  # taken mid-way: writes went on after it


def test_a_restore_refuses_a_database_that_holds_tables_unless_told(
        node: NodeApp, clock: ManualClock, db_url: str, tmp_path: Path) -> None:
    before, _ = _head(db_url)
    backups.backup(db_url, tmp_path / "b1")
    elder = enrol(node, "张秀英", 1940, priority=True).id
    volunteer = enrol(node, "李明", 1990).id
    earn(node, clock, volunteer, 60, elder)
    after, _ = _head(db_url)
    assert after > before
    node.db.dispose()
    with pytest.raises(backups.BackupError, match="not empty"):
        backups.restore(db_url, tmp_path / "b1")
    assert _head(db_url)[0] == after  # nothing changed
    backups.restore(db_url, tmp_path / "b1", replace=True)
    assert _head(db_url) == (before, True)


def test_a_backup_never_replaces_a_file_and_a_restore_checks_what_it_reads(
        db_url: str, tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_bytes(b"something else")
    with pytest.raises(backups.BackupError, match="exists already"):
        backups.backup(db_url, taken)
    assert taken.read_bytes() == b"something else"
    with pytest.raises(backups.BackupError, match="neither a SQLite database"):
        backups.restore(db_url, taken)
    other = tmp_path / "other.sqlite3"
    migrated_sqlite(other)
    backups.backup(f"sqlite:///{other}", tmp_path / "sqlite.backup")
    if not db_url.startswith("sqlite"):
        with pytest.raises(backups.BackupError, match="is a sqlite backup"):
            backups.restore(db_url, tmp_path / "sqlite.backup")
