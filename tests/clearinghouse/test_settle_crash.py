"""kill -9 halfway through closing a large period: a real `timebank clearinghouse settle
close` process is killed while its transaction is writing (on SQLite, its write-ahead
log growing under the write lock; on PostgreSQL, its UPDATE of the claims running).
Nothing of the period is left: no statement, no leaf, no claim marked, no position
moved. Run again, it closes the period once; a third run is refused ALREADY_CLOSED."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from clearinghouse.config import load_config
from tests.clearinghouse.settling import (
    GL,
    JN,
    KEYS,
    NAMES,
    QX,
    bulk_completed,
    cosign_latest,
    log_size,
    own_app,
)
from tests.clearinghouse.test_cli import cli
from timebank.keys import public_key

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

CLAIMS = 40_000
ROOT = Path(__file__).resolve().parents[2]


def _timebank(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMEBANK_")}
    env["PYTHONIOENCODING"] = "utf-8"
    return subprocess.Popen([sys.executable, "-m", "city", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            encoding="utf-8")


def _state(url: str) -> tuple[int, int, int, list[tuple[str, int]]]:
    """(statements, settled claims, log leaves, positions), read beside the process."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            def one(sql: str) -> int:
                return int(conn.execute(text(sql)).scalar_one())
            statements = one("SELECT count(*) FROM settlement_statements")
            settled = one("SELECT count(*) FROM claims WHERE settled_serial IS NOT NULL")
            leaves = one("SELECT count(*) FROM log_leaves")
            positions = [(str(n), int(m)) for n, m in conn.execute(text(
                "SELECT node_id, net_minutes FROM positions ORDER BY node_id"))]
    finally:
        engine.dispose()
    return statements, settled, leaves, positions


def _pg_updating(url: str) -> bool:
    """Whether another session is running the UPDATE that marks the period's claims."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return bool(conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND "
                "query LIKE 'UPDATE claims SET settled_serial%'")).scalar_one())
    finally:
        engine.dispose()


def _writing(db: Path, wal_before: int) -> bool:
    """Whether another process holds the write lock and has written pages of its
    transaction to the write-ahead log."""
    conn = sqlite3.connect(db, timeout=0)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.rollback()
        return False
    except sqlite3.OperationalError:  # locked: a writer is in its transaction
        wal = Path(f"{db}-wal")
        return wal.exists() and wal.stat().st_size > wal_before + 256 * 1024
    finally:
        conn.close()


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_a_close_killed_halfway_leaves_nothing_and_runs_again_once(
        tmp_path: Path, engine: str, request: pytest.FixtureRequest) -> None:
    config = tmp_path / "ch" / "clearinghouse.toml"
    pg_url = "" if engine == "sqlite" else str(request.getfixturevalue("ch_pg_url"))
    init = ["--database-url", pg_url] if pg_url else []
    assert cli("clearinghouse", "init", "--data-dir", str(tmp_path / "ch"),
               *init).exit_code == 0
    for node, district in NAMES.items():
        assert cli("clearinghouse", "admit", "--config", str(config), "--node-id", node,
                   "--district", district, "--public-key",
                   public_key(KEYS[node]).hex()).exit_code == 0
    app = own_app(config)
    try:
        bulk_completed(app, CLAIMS, (JN, GL, QX), random.Random(16))
        app.execute(lambda tx: None)  # a head for the log as it is
        cosign_latest(app)
        size = log_size(app)
    finally:
        app.db.dispose()
    url = load_config(config).effective_database_url
    db = load_config(config).data_dir / "clearinghouse.sqlite3"
    before = _state(url)
    wal = Path(f"{db}-wal")
    wal_before = wal.stat().st_size if wal.exists() else 0
    args = ("clearinghouse", "settle", "close", "--config", str(config), "--up-to",
            str(size), "--label", "big")
    closing = _timebank(*args)
    deadline = time.monotonic() + 60
    while not (_pg_updating(url) if pg_url else _writing(db, wal_before)):
        assert closing.poll() is None, "the close finished before it could be killed: " \
            "make the period larger"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(closing.pid, signal.SIGKILL)
    assert closing.wait(10) == -signal.SIGKILL
    closing.communicate()
    assert _state(url) == before  # nothing of the period: all or nothing
    assert before[0] == 0 and before[1] == 0

    again = _timebank(*args)
    out, err = again.communicate(timeout=90)
    assert again.returncode == 0, out + err
    statements, settled, leaves, positions = _state(url)
    assert (statements, settled, leaves) == (1, CLAIMS, before[2] + 1)
    assert {n: m for n, m in positions} == {JN: 0, GL: 0, QX: 0}

    third = _timebank(*args)
    out, err = third.communicate(timeout=60)
    assert third.returncode == 1 and "ALREADY_CLOSED" in err and "Traceback" not in err
    assert _state(url)[:3] == (1, CLAIMS, before[2] + 1)
