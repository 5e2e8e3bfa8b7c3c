"""Settlement with real processes (city/launcher.py): a clearinghouse and three district
nodes, each `serve` process with its own SQLite file. Elders of 江宁区 and 鼓楼区 are
served in other districts; the witnesses cosign; the bureau stops the clearinghouse,
closes the period on its database (as `timebank clearinghouse settle close` does) and
starts it again. Nothing else is done: every node's own settler (every second here)
finds the statement, checks its line, countersigns through its outbox, sees it final and
posts it. Then each node's clearing account is back at zero (nothing completed after
the end), its ledger checks, `timebank node settlement show` reads it, and the offline
audit of every district passes with the settlement entries in the chain."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from city.audit import audit_data_dir
from city.launcher import CLEARINGHOUSE, CityProcesses, layout
from clearinghouse.bootstrap import open_app, signing_key
from clearinghouse.config import load_config as load_ch_config
from clearinghouse.usecases import settlement as ch_settlement
from runtime import devclock
from tests.city.workload import (
    CityClient,
    enrol_elder,
    node_database,
    read_only,
    record_due,
    redeem,
    sent_everything,
    setup_desk,
    wait_quiet,
)
from timebank.envelope import CLEARINGHOUSE as CH_SIGNER
from timebank.envelope import Signed, sign
from timebank.v1 import clearing_pb2, node_pb2

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

JN, GL, QX = "320115", "320106", "320113"
NODES = [JN, GL, QX]
ROOT = Path(__file__).resolve().parents[2]


def _wait(what: str, condition: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout:g} s")


def _settlement_state(city_dir: Path, node_id: str) -> str:
    with read_only(city_dir / node_id / "node.sqlite3") as conn:
        row = conn.execute("SELECT state FROM settlements WHERE serial = 1 "
                           "ORDER BY revision DESC").fetchone()
    return "" if row is None else str(row[0])


def test_every_node_process_countersigns_and_posts_a_closed_period(tmp_path: Path) -> None:
    city = layout(tmp_path / "city")
    for n in city.nodes:  # each node's settler looks every second
        text = n.config_file.read_text(encoding="utf-8")
        assert "settlement_seconds = 30" in text
        n.config_file.write_text(text.replace("settlement_seconds = 30",
                                              "settlement_seconds = 1"), encoding="utf-8")
    with CityProcesses(city, dev_clock=True) as procs:
        procs.start_all(timeout=60)
        client = CityClient(city)
        try:
            desks = {n: setup_desk(client, n, volunteers=1) for n in NODES}
            jn_elder = enrol_elder(client, desks, JN, [GL], 600)
            gl_elder = enrol_elder(client, desks, GL, [QX], 600)
            assert sent_everything(client, NODES, 60)
            served = [redeem(client, desks[GL], jn_elder, desks[GL].volunteers[0], 60),
                      redeem(client, desks[QX], gl_elder, desks[QX].volunteers[0], 45)]
            assert all(o.verified for o in served), served
            devclock.advance(city.clock_file, timedelta(days=8))
            for n in NODES:
                record_due(client, n)
            assert wait_quiet(client, NODES, 60)
            stub = client.clearinghouse()
            size = stub.GetTreeHead(clearing_pb2.GetTreeHeadRequest(), timeout=5).head.size

            def cosigned() -> bool:
                try:
                    return bool(stub.GetTreeHead(clearing_pb2.GetTreeHeadRequest(
                        cosigned=True), timeout=5).head.size >= size)
                except grpc.RpcError as e:  # none cosigned by a quorum yet
                    if e.code() != grpc.StatusCode.NOT_FOUND:
                        raise
                    return False

            _wait("a quorum cosigns the log", cosigned)

            procs.stop(CLEARINGHOUSE)  # the bureau closes the period on its own machine
            config = load_ch_config(city.clearinghouse_config)
            app = open_app(config)
            try:
                key = signing_key(config, app)

                def signer(kind: str, body: bytes) -> Signed:
                    return sign(kind, body, CH_SIGNER, key)

                closed = app.execute(ch_settlement.close, signer, up_to=size,
                                     label="2026-11-p")
            finally:
                app.db.dispose()
            assert closed.statement.sheet.claims == 2
            procs.start(CLEARINGHOUSE)
            procs.wait_ready(CLEARINGHOUSE)

            _wait("every node posts the statement", lambda: all(
                _settlement_state(city.data_dir, n) == "posted" for n in NODES), 90)
            for n in NODES:
                report = client.call(n, "CheckLedger", node_pb2.CheckLedgerRequest())
                assert report.ok and report.clearing_minutes == 0, (n, report)
                with read_only(node_database(city, n)) as conn:
                    kinds = [r[0] for r in conn.execute(
                        "SELECT kind FROM entries WHERE kind = 'settlement'")]
                    assert kinds == ["settlement"], n  # each district's net is not zero
        finally:
            client.close()
    shown = subprocess.run([sys.executable, "-m", "city", "node", "settlement", "show",
                            "--config", str(city.node(JN).config_file), "--json"],
                           capture_output=True, text=True, encoding="utf-8", cwd=ROOT,
                           env=dict(os.environ), timeout=60)
    assert shown.returncode == 0, shown.stderr
    found = json.loads(shown.stdout)
    assert found["state"] == "posted" and found["line"]["net_minutes"] == -60
    assert found["countersigned_by"] == sorted(NODES)
    report = audit_data_dir(city.data_dir)
    districts = [c for c in report.checks if any(n in c.name for n in NODES)]
    assert len(districts) >= 5 * len(NODES)
    assert all(c.ok for c in districts), [c for c in districts if not c.ok]
