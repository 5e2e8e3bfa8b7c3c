"""Upgrading a clearinghouse that holds a city (issue 17): a database at the first
revision with admissions, claims and its log walks every migration, one at a time, to
head on SQLite and on PostgreSQL; `clearinghouse serve` refuses it until `timebank
clearinghouse migrate` has run; then it serves the same log."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import text

from clearinghouse.api.server import serve_forever
from clearinghouse.bootstrap import init_city, open_app
from clearinghouse.config import load_config
from clearinghouse.storage import migrate
from clearinghouse.storage.db import Database
from clearinghouse.usecases.clock import ManualClock
from runtime import keyfiles
from runtime.console import insecure_config
from runtime.errors import ConfigError
from runtime.server import Serving, channel_options
from runtime.tls import channel
from tests.clearinghouse.conftest import CITY_KEY
from tests.clearinghouse.settling import CH_KEY, complete, found_city, log_size
from tests.clearinghouse.usecases.test_claims import GL, JN
from tests.node.storage.test_migrations import empty_url  # noqa: F401 - the fixture
from timebank.v1 import clearing_pb2, clearing_pb2_grpc

ROOT = Path(__file__).resolve().parents[3]
TIMEOUT = 30.0


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMEBANK_")}
    return subprocess.run([sys.executable, "-m", "city", "clearinghouse", *args],
                          capture_output=True, text=True, encoding="utf-8", cwd=ROOT,
                          timeout=120, env=env)


def _served_head(config_path: Path) -> clearing_pb2.TreeHead:
    """Serve the clearinghouse in this process (plaintext, a free port); its latest head."""
    config = insecure_config(replace(load_config(config_path), listen="127.0.0.1:0",
                                     metrics_listen=""), True)
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
            health = health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest(),
                                                            timeout=TIMEOUT)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            head: clearing_pb2.TreeHead = clearing_pb2_grpc.ClearinghouseServiceStub(
                chan).GetTreeHead(clearing_pb2.GetTreeHeadRequest(), timeout=TIMEOUT).head
            return head
    finally:
        stop.set()
        thread.join(TIMEOUT)


def _rows(db: Database) -> dict[str, int]:
    with db.read() as conn:
        return {t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one())
                for t in ("claims", "admissions", "positions")}


def test_a_clearinghouse_with_a_city_walks_every_migration_and_serves(
        empty_url: str, tmp_path: Path) -> None:  # noqa: F811 - the fixture
    data = tmp_path / "ch"
    data.mkdir(mode=0o700)
    keyfiles.write_seed(data / "city-root.key", CITY_KEY)  # the keys the city below uses
    keyfiles.write_seed(data / "clearinghouse.key", CH_KEY)
    config_path = init_city(data, database_url=empty_url)
    config = load_config(config_path)
    app = open_app(config, ManualClock())
    try:
        found_city(app)
        complete(app, 1, GL, JN)
        complete(app, 2, JN, GL, minutes=30)
        assert log_size(app) > 0
        rows = _rows(app.db)
    finally:
        app.db.dispose()
    assert rows["claims"] == 2 and rows["admissions"] == 3

    revisions = migrate.revisions()
    assert revisions[0] == "0001" and revisions[-1] == migrate.head_revision()
    db = Database(empty_url)
    try:
        migrate.downgrade(db.writer, revisions[0])  # the rows of the first schema stay
        assert migrate.current_revision(db.writer) == revisions[0]
        with pytest.raises(ConfigError, match=r"timebank clearinghouse migrate"):
            open_app(config)
        refused = _cli("serve", "--config", str(config_path), "--insecure")
        assert refused.returncode == 1
        assert "timebank clearinghouse migrate" in refused.stderr
        for revision in revisions[1:-1]:  # every step, one at a time, with the data
            migrate.upgrade(db.writer, revision)
            assert migrate.current_revision(db.writer) == revision
    finally:
        db.dispose()
    done = _cli("migrate", "-c", str(config_path))
    assert done.returncode == 0, done.stderr
    assert f"{revisions[-2]} → {revisions[-1]} (migrated" in done.stdout
    db = Database(empty_url)
    try:
        migrate.check(db.writer)
        assert _rows(db) == rows  # every claim and admission came through
    finally:
        db.dispose()
    # the log began at 0003: the walk from 0001 starts it again, and the server signs it
    assert _served_head(config_path).note
