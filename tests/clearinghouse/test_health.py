"""A clearinghouse process on a real PostgreSQL reports its database in gRPC health.

The test's own database is made unreachable (connections refused: ALLOW_CONNECTIONS
false, its sessions ended), never the server other tests use: health service "" goes
NOT_SERVING, ``timebank_clearinghouse_database_up`` 0, and the metrics endpoint still
answers; once connections are allowed again, SERVING and 1, without a restart.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from clearinghouse.bootstrap import init_city
from runtime.tls import TlsSettings
from tests.jsonlog import json_lines
from tests.postgres import admin_engine

pytestmark = [pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _eventually(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.2)


def _health(address: str) -> str:
    with grpc.insecure_channel(address) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=5)
        except grpc.RpcError as e:
            return e.code().name
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


def _database_up(metrics: str) -> float | None:
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=30) as answer:
        scraped = answer.read().decode("utf-8")
    for family in text_string_to_metric_families(scraped):
        for s in family.samples:
            if s.name == "timebank_clearinghouse_database_up":
                return float(s.value)
    return None


def _allow_connections(database: str, allowed: bool) -> None:
    admin = admin_engine()
    try:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS '
                              f'{"true" if allowed else "false"}'))
            if not allowed:
                conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE datname = :name AND pid <> pg_backend_pid()"),
                             {"name": database})
    finally:
        admin.dispose()


def test_health_follows_the_database(ch_pg_url: str, tmp_path: Path) -> None:
    config = init_city(tmp_path / "ch", database_url=ch_pg_url,
                       tls=TlsSettings(insecure=True))
    address, metrics = f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"
    log = tmp_path / "ch.log"
    env = {**os.environ, "TIMEBANK_SERVER_LISTEN": address,
           "TIMEBANK_SERVER_METRICS_LISTEN": metrics}
    database = ch_pg_url.rsplit("/", 1)[1]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "city", "clearinghouse", "serve", "--config", str(config)],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    try:
        _eventually(lambda: _health(address) == "SERVING", "the clearinghouse serves")
        assert _database_up(metrics) == 1
        _allow_connections(database, False)
        try:
            _eventually(lambda: _health(address) == "NOT_SERVING",
                        "health reports the database unreachable")
            assert _database_up(metrics) == 0  # the endpoint still answers
        finally:
            _allow_connections(database, True)
        _eventually(lambda: _health(address) == "SERVING", "health reports it back")
        assert _database_up(metrics) == 1
        assert process.poll() is None  # it recovered by itself
    finally:
        process.terminate()
        process.wait(30)
    events = [e["event"] for e in json_lines(log.read_text(encoding="utf-8"))]
    down = next(i for i, e in enumerate(events) if "database unreachable" in e)
    assert any("database reachable" in e for e in events[down:])
