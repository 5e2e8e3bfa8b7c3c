"""A node process killed with SIGKILL while it posts a final settlement statement leaves
it posted once or not at all (SQLite and PostgreSQL), and running it again completes it
exactly once.

The parent makes the statement final on the node's database through the use-cases; a
real child process (``crash_poster.py``) opens the same database and posts it. Killed
inside the posting transaction (every row written, nothing committed), the node is as
before: the statement final, no settlement entry, no claim settled, clearing untouched.
Killed after the commit, it is posted once. Either way a rerun leaves it posted once.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from node.domain.settlement import SettlementState
from node.usecases import settlement
from node.usecases.app import NodeApp, Tx
from tests.conftest import CITY_SECRET
from tests.helpers import assert_ledger_ok, snapshot
from tests.node import settlement_support as kit
from tests.node.settlement_support import GL, QX

SCRIPT = Path(__file__).with_name("crash_poster.py")
ROOT = Path(__file__).resolve().parents[3]


def _child(url: str, listed: Path, mode: str, *, kill_on: str = "") -> str:
    """Run the poster; with ``kill_on``, SIGKILL it once it prints that. Its last line."""
    proc = subprocess.Popen([sys.executable, str(SCRIPT), url, CITY_SECRET.hex(), str(listed),
                             mode], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stderr is not None
    line, deadline = "", time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if ready:
                line = proc.stdout.readline().strip()
                if not kill_on or line.startswith(kill_on) or not line:
                    break
        if kill_on:
            assert line.startswith(kill_on), (line, proc.stderr.read())
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == (-signal.SIGKILL if kill_on else 0), stderr
    return line


def _final(app: NodeApp, tmp_path: Path) -> Path:
    claims = [kit.completed(app, GL, 60, creditor=True), kit.completed(app, QX, 25,
                                                                       creditor=False)]
    kit.completed(app, QX, 15, creditor=False)  # after the period: carried forward
    envelope = kit.statement(claims)
    app.execute(settlement.record_seen,
                settlement.verify_statement(envelope, kit.LOG_KEYS, kit.rosters))
    app.execute(settlement.decide, 1, 1, kit.mine(claims))
    app.execute(settlement.mark_final, 1, 1, b"")
    listed = tmp_path / "listed.json"
    listed.write_text(json.dumps([asdict(c) for c in kit.mine(claims)]))
    return listed


def _posted_once(app: NodeApp) -> None:
    def read(tx: Tx) -> tuple[str, int, int, int]:
        found = tx.repo.settlements.get(1, 1)
        assert found is not None
        entries = sum(1 for e in tx.repo.ledger.iter_entries() if e.entry.kind == "settlement")
        return found.state, entries, tx.repo.settlements.settled_by(1), \
            tx.repo.settlements.unsettled_net()
    assert app.query(read) == (SettlementState.POSTED, 1, 2, -15)
    assert kit.clearing(app) == 15
    assert_ledger_ok(app)


@pytest.mark.timeout(120)
def test_a_node_killed_inside_the_posting_posts_nothing_then_once(
        node_app: NodeApp, db_url: str, tmp_path: Path) -> None:
    listed = _final(node_app, tmp_path)
    before = snapshot(node_app)

    _child(db_url, listed, "inside", kill_on="posted, not committed")

    assert snapshot(node_app) == before  # not at all: still final, nothing moved
    assert node_app.query(settlement.show, 1).record.state == SettlementState.FINAL
    assert _child(db_url, listed, "run").startswith("done")
    _posted_once(node_app)
    assert _child(db_url, listed, "run").endswith("True")  # already: nothing again
    _posted_once(node_app)


@pytest.mark.timeout(120)
def test_a_node_killed_after_the_posting_committed_has_posted_once(
        node_app: NodeApp, db_url: str, tmp_path: Path) -> None:
    listed = _final(node_app, tmp_path)
    _child(db_url, listed, "after", kill_on="committed")
    _posted_once(node_app)
    after = snapshot(node_app)
    assert _child(db_url, listed, "run").endswith("True")
    assert snapshot(node_app) == after
