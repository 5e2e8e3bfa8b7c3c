"""kill -9 halfway through closing a large period: a real `timebank clearinghouse settle
close` process is killed while its transaction is writing (its SQLite write-ahead log
growing under the write lock). Nothing of the period is left: no statement, no leaf, no
claim marked, no position moved. Run again, it closes the period once; a third run is
refused ALREADY_CLOSED."""

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


def _state(db: Path) -> tuple[int, int, int, list[tuple[str, int]]]:
    """(statements, settled claims, log leaves, positions), read beside the process."""
    with sqlite3.connect(db) as conn:
        statements = conn.execute("SELECT count(*) FROM settlement_statements").fetchone()[0]
        settled = conn.execute(
            "SELECT count(*) FROM claims WHERE settled_serial IS NOT NULL").fetchone()[0]
        leaves = conn.execute("SELECT count(*) FROM log_leaves").fetchone()[0]
        positions = conn.execute(
            "SELECT node_id, net_minutes FROM positions ORDER BY node_id").fetchall()
    return statements, settled, leaves, positions


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


def test_a_close_killed_halfway_leaves_nothing_and_runs_again_once(tmp_path: Path) -> None:
    config = tmp_path / "ch" / "clearinghouse.toml"
    assert cli("clearinghouse", "init", "--data-dir", str(tmp_path / "ch")).exit_code == 0
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
    db = load_config(config).data_dir / "clearinghouse.sqlite3"
    assert db.exists()
    before = _state(db)
    wal = Path(f"{db}-wal")
    wal_before = wal.stat().st_size if wal.exists() else 0
    args = ("clearinghouse", "settle", "close", "--config", str(config), "--up-to",
            str(size), "--label", "big")
    closing = _timebank(*args)
    deadline = time.monotonic() + 60
    while not _writing(db, wal_before):
        assert closing.poll() is None, "the close finished before it could be killed: " \
            "make the period larger"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(closing.pid, signal.SIGKILL)
    assert closing.wait(10) == -signal.SIGKILL
    closing.communicate()
    assert _state(db) == before  # nothing of the period: all or nothing
    assert before[0] == 0 and before[1] == 0

    again = _timebank(*args)
    out, err = again.communicate(timeout=90)
    assert again.returncode == 0, out + err
    statements, settled, leaves, positions = _state(db)
    assert (statements, settled, leaves) == (1, CLAIMS, before[2] + 1)
    assert {n: m for n, m in positions} == {JN: 0, GL: 0, QX: 0}

    third = _timebank(*args)
    out, err = third.communicate(timeout=60)
    assert third.returncode == 1 and "ALREADY_CLOSED" in err and "Traceback" not in err
    assert _state(db)[:3] == (1, CLAIMS, before[2] + 1)
