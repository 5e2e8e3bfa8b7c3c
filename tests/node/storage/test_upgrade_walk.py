"""Upgrading a node that holds data (issue 17): a database at the first revision with
rows in it walks every migration, one at a time, to head on SQLite and on PostgreSQL;
`node serve` refuses it until `timebank node migrate` has run; then the node serves,
its ledger whole."""

from __future__ import annotations

import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from node.api.server import serve_forever
from node.bootstrap import init_data_dir, open_app
from node.cli.accounts import local_token
from node.cli.client import authorized
from node.config import load_config
from node.domain.clock import ManualClock
from node.storage import migrate
from node.storage.db import Database
from node.usecases import checkpoints
from node.usecases.ledger import balance as balance_of
from node.usecases.ledger import check_ledger
from runtime.console import insecure_config
from runtime.errors import ConfigError
from runtime.server import Serving, channel_options
from runtime.tls import channel
from tests.helpers import earn, enrol
from tests.node.storage.test_migrations import empty_url  # noqa: F401 - the fixture
from timebank.v1 import node_pb2, node_pb2_grpc

ROOT = Path(__file__).resolve().parents[3]
TIMEOUT = 30.0


def _serve_and_check(config_path: Path) -> node_pb2.CheckLedgerResponse:
    """Serve the node in this process (plaintext, a free port) and ask it over gRPC."""
    config = insecure_config(replace(load_config(config_path), listen="127.0.0.1:0",
                                     metrics_listen=""), True)
    token = local_token(config_path)
    stop, ready, ports = threading.Event(), threading.Event(), []

    def on_ready(serving: Serving) -> None:
        ports.append(serving.port)
        ready.set()

    thread = threading.Thread(target=serve_forever, args=(config,),
                              kwargs={"stop": stop, "on_ready": on_ready,
                                      "grace_seconds": 1.0})
    thread.start()
    try:
        assert ready.wait(TIMEOUT)
        with channel(f"127.0.0.1:{ports[0]}", None, options=channel_options()) as chan:
            health = health_pb2_grpc.HealthStub(chan).Check(
                health_pb2.HealthCheckRequest(service="timebank.v1.NodeService"),
                timeout=TIMEOUT)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            stub = node_pb2_grpc.NodeServiceStub(authorized(chan, token))
            report: node_pb2.CheckLedgerResponse = stub.CheckLedger(node_pb2.CheckLedgerRequest(),
                                                             timeout=TIMEOUT)
            return report
    finally:
        stop.set()
        thread.join(TIMEOUT)


def test_a_node_with_data_walks_every_migration_and_serves(
        empty_url: str, tmp_path: Path) -> None:  # noqa: F811 - the fixture
    config_path = init_data_dir(tmp_path / "node", "320115", "江宁区", database_url=empty_url)
    config = load_config(config_path)
    clock = ManualClock()
    app = open_app(config, clock)
    try:
        elder = enrol(app, "张秀英", 1940, priority=True).id
        volunteer = enrol(app, "李明", 1990).id
        for minutes in (60, 30, 90):
            earn(app, clock, volunteer, minutes, elder)
        app.execute(checkpoints.request, "")
        before = app.query(check_ledger)
        balance = app.query(balance_of, volunteer)
    finally:
        app.db.dispose()
    assert before.ok and before.transactions == 3

    revisions = migrate.revisions()
    assert revisions[0] == "0001" and revisions[-1] == migrate.head_revision()
    db = Database(empty_url)
    try:
        migrate.downgrade(db.writer, revisions[0])  # the rows of the first schema stay
        assert migrate.current_revision(db.writer) == revisions[0]
        with pytest.raises(ConfigError, match=r"timebank node migrate"):
            open_app(config)
        refused = subprocess.run(
            [sys.executable, "-m", "city", "node", "serve", "--config", str(config_path),
             "--insecure"], capture_output=True, text=True, encoding="utf-8", cwd=ROOT,
            timeout=120)
        assert refused.returncode == 1
        assert "timebank node migrate" in refused.stderr and "数据库结构版本落后" in refused.stderr
        for revision in revisions[1:-1]:  # every step, one at a time, with the data
            migrate.upgrade(db.writer, revision)
            assert migrate.current_revision(db.writer) == revision
    finally:
        db.dispose()
    done = subprocess.run(
        [sys.executable, "-m", "city", "node", "migrate", "--config", str(config_path)],
        capture_output=True, text=True, encoding="utf-8", cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"{revisions[-2]} → {revisions[-1]} (migrated" in done.stdout
    db = Database(empty_url)
    try:
        migrate.check(db.writer)
    finally:
        db.dispose()

    app = open_app(config, clock)
    try:
        assert app.query(balance_of, volunteer) == balance
    finally:
        app.db.dispose()
    served = _serve_and_check(config_path)
    assert served.ok and served.transactions == before.transactions
    assert served.head_hash == before.head_hash
