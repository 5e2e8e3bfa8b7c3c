"""Operating the API: internal errors, per-call log context, metrics, the recording
loop, and `serve_forever` as a real process stopped by a signal."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY
from structlog.testing import LogCapture

from city.pki.store import Authority
from node.api.server import RecordingLoop
from node.bootstrap import init_data_dir
from node.cli.accounts import local_token
from node.cli.client import authorized
from node.domain.orders import OrderState
from node.usecases import orders
from runtime.errors import InvariantViolation, Unavailable
from runtime.metrics import start_metrics_server
from runtime.server import channel_options
from runtime.tls import NODE, TlsSettings
from runtime.tls import channel as tls_channel
from tests.node.api.conftest import World
from tests.node.api.support import TIMEOUT, Api, error_info, key, person, serving
from tests.pki import client_tls, issue
from timebank.v1 import node_pb2 as pb
from timebank.v1 import node_pb2_grpc


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    capture = LogCapture()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars,
                                    structlog.processors.add_log_level, capture])
    yield capture
    structlog.reset_defaults()


def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


# ---------------------------------------------------------------- errors that are bugs

def test_an_unexpected_error_is_internal_and_logged_not_leaked(
        world: World, monkeypatch: pytest.MonkeyPatch, logs: LogCapture) -> None:
    def broken(*_: Any) -> Any:
        raise RuntimeError("password=hunter2 at /var/lib/timebank")

    monkeypatch.setattr(orders, "get_order", broken)
    error = world.api.refused("GetOrder", pb.GetOrderRequest(order_id=1),
                              grpc.StatusCode.INTERNAL, reason="INTERNAL",
                              says=("internal error", "error id"))
    details = error.details()
    assert "hunter2" not in details and "RuntimeError" not in details
    info = error_info(error)
    assert info is not None
    logged = [e for e in logs.entries if e.get("error_id") == info.metadata["error_id"]]
    assert logged and logged[0]["log_level"] == "error"
    assert isinstance(logged[0]["exc_info"], RuntimeError)
    assert logged[0]["method"] == "GetOrder" and logged[0]["order_id"] == 1


def test_a_broken_invariant_is_internal_logged_loudly_and_rolled_back(
        world: World, monkeypatch: pytest.MonkeyPatch, logs: LogCapture) -> None:
    real = orders.accept_order

    def half_done(tx: Any, order_id: int, volunteer_id: int, **kw: Any) -> Any:
        real(tx, order_id, volunteer_id, **kw)  # writes the hold and the new state ...
        raise InvariantViolation("hold exceeds what is available")  # ... then a bug

    monkeypatch.setattr(orders, "accept_order", half_done)
    world.api.refused("AcceptOrder", pb.AcceptOrderRequest(
        idempotency_key=key(), order_id=world.orders[OrderState.REQUESTED],
        volunteer_id=world.volunteer2), grpc.StatusCode.INTERNAL,
        reason="INVARIANT_VIOLATION")
    assert [e["log_level"] for e in logs.entries if "exc_info" in e] == ["critical"]


def test_an_unavailable_store_is_unavailable(world: World,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def busy(*_: Any) -> Any:
        raise Unavailable("the node's database is busy or unreachable; try again shortly",
                          "STORE_UNAVAILABLE")

    monkeypatch.setattr(orders, "get_order", busy)
    world.api.refused("GetOrder", pb.GetOrderRequest(order_id=1),
                      grpc.StatusCode.UNAVAILABLE, reason="STORE_UNAVAILABLE",
                      says=("try again",))


# ---------------------------------------------------------------- per-call log context

def test_each_call_logs_with_its_own_context(world: World, logs: LogCapture) -> None:
    order_id = world.orders[OrderState.VERIFIED]
    with serving(world.api.app, world.api.clock, workers=1) as one_thread:
        one_thread.order(order_id)
        with pytest.raises(grpc.RpcError):
            one_thread.order(987_654)
        one_thread.stub.GetPolicy(pb.GetPolicyRequest(), timeout=TIMEOUT)
    calls = [e for e in logs.entries if e["event"] == "rpc" and e["method"] != "Login"]
    assert [(c["method"], c["code"]) for c in calls] == [
        ("GetOrder", "OK"), ("GetOrder", "NOT_FOUND"), ("GetPolicy", "OK")]
    assert calls[0]["order_id"] == order_id and "reason" not in calls[0]
    assert calls[1]["order_id"] == 987_654 and calls[1]["reason"] == "UNKNOWN_ORDER"
    assert "order_id" not in calls[2] and "reason" not in calls[2]  # cleared after each call
    assert all(c["ms"] >= 0 for c in calls)


def test_calls_are_counted_by_method_and_code(world: World) -> None:
    def count(code: str) -> float:
        value = REGISTRY.get_sample_value("timebank_node_rpcs_total",
                                          {"method": "GetPerson", "code": code})
        return value or 0.0

    ok, missing = count("OK"), count("NOT_FOUND")
    world.api.stub.GetPerson(pb.GetPersonRequest(person_id=world.elder), timeout=TIMEOUT)
    with pytest.raises(grpc.RpcError):
        world.api.stub.GetPerson(pb.GetPersonRequest(person_id=987_654), timeout=TIMEOUT)
    assert (count("OK"), count("NOT_FOUND")) == (ok + 1, missing + 1)
    assert (REGISTRY.get_sample_value("timebank_node_rpc_duration_seconds_count",
                                      {"method": "GetPerson", "code": "OK"}) or 0) >= 1
    assert (REGISTRY.get_sample_value("timebank_node_rpc_duration_seconds_count",
                                      {"method": "GetPerson", "code": "NOT_FOUND"}) or 0) >= 1


def test_the_metrics_endpoint_serves_prometheus_text() -> None:
    server, port = start_metrics_server("127.0.0.1:0")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert "timebank_node_rpc_duration_seconds" in text
    assert "timebank_node_rpcs_in_flight" in text


# ---------------------------------------------------------------- the recording loop

def _verified_order(api: Api) -> int:
    elder = api.enrol("张桂兰", 1940, priority=True)
    volunteer = api.enrol("李秀英", 1962)
    order = api.request(elder.id, by=person(elder.id))
    api.accept(order.id, volunteer.id)
    api.check_in(order.id)
    api.check_out(order.id)
    api.verify(order.id, person(elder.id))
    return order.id


def test_the_recording_loop_records_due_orders(api: Api) -> None:
    order_id = _verified_order(api)
    loop = RecordingLoop(api.app, interval=0.05)
    loop.start()
    try:
        time.sleep(0.2)
        assert api.order(order_id).state == pb.ORDER_STATE_VERIFIED  # still public
        api.clock.advance(timedelta(days=7))
        _wait_for(lambda: api.order(order_id).state == pb.ORDER_STATE_RECORDED)
    finally:
        loop.stop()
    assert not loop.running
    assert api.ledger().transactions == 1


def test_the_recording_loop_survives_errors(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    order_id = _verified_order(api)
    api.clock.advance(timedelta(days=7))
    real = orders.record_due_orders
    calls: list[int] = []

    def flaky(tx: Any, limit: int) -> Any:
        calls.append(limit)
        raise RuntimeError("the database went away")

    monkeypatch.setattr(orders, "record_due_orders", flaky)
    failures = REGISTRY.get_sample_value("timebank_node_recording_failures_total") or 0.0
    loop = RecordingLoop(api.app, interval=0.02)
    loop.start()
    try:  # the batch fails; the loop falls back to one order per transaction
        _wait_for(lambda: api.order(order_id).state == pb.ORDER_STATE_RECORDED)
        assert loop.running
    finally:
        loop.stop()
    monkeypatch.setattr(orders, "record_due_orders", real)
    assert calls
    assert (REGISTRY.get_sample_value("timebank_node_recording_failures_total") or 0) > failures
    assert api.ledger().ok and api.ledger().transactions == 1


def test_one_failing_order_does_not_hold_back_the_others(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad, good = _verified_order(api), _verified_order(api)
    api.clock.advance(timedelta(days=7))
    real = orders.record_order

    def fails_for_bad(tx: Any, order_id: int) -> Any:
        if order_id == bad:
            raise RuntimeError("a corrupt row")
        return real(tx, order_id)

    def batch_fails(tx: Any, limit: int) -> Any:
        raise RuntimeError("a corrupt row in the batch")

    monkeypatch.setattr(orders, "record_order", fails_for_bad)
    monkeypatch.setattr(orders, "record_due_orders", batch_fails)
    loop = RecordingLoop(api.app, interval=60)
    loop.round()
    assert api.order(good).state == pb.ORDER_STATE_RECORDED
    assert api.order(bad).state == pb.ORDER_STATE_VERIFIED
    assert api.ledger().ok


def test_the_recording_loop_drains_a_backlog_in_batches(api: Api) -> None:
    ids = [_verified_order(api) for _ in range(3)]
    api.clock.advance(timedelta(days=7))
    assert RecordingLoop(api.app, batch=2).run_once() == 3
    assert {api.order(i).state for i in ids} == {pb.ORDER_STATE_RECORDED}


# ---------------------------------------------------------------- `timebank node serve`

_SERVE = """
import sys
from pathlib import Path
from node.api.server import serve_forever
from node.config import load_config
serve_forever(load_config(Path(sys.argv[1])), grace_seconds=5)
"""


def _reader(stream: Any, lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)
    lines.put("")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_forever_serves_until_signalled(tmp_path: Path, signum: int,
                                              city_ca: Authority) -> None:
    leaf = issue(city_ca, NODE, "320115")
    config = init_data_dir(tmp_path / "node", "320115", "江宁区", listen="127.0.0.1:0",
                           tls=TlsSettings(city_ca.ca_cert, leaf.cert, leaf.key))
    token = local_token(config)  # the operator, made on the node's own database
    env = {**os.environ, "TIMEBANK_SERVER_METRICS_LISTEN": "127.0.0.1:0",
           "TIMEBANK_LOG_FORMAT": "json", "PYTHONIOENCODING": "ascii"}
    proc = subprocess.Popen([sys.executable, "-c", _SERVE, str(config)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            encoding="utf-8", errors="strict")
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
    seen: list[dict[str, Any]] = []

    def next_event(name: str) -> dict[str, Any]:
        while True:
            line = lines.get(timeout=30)
            assert line, f"the node exited early: {seen}"
            event: dict[str, Any] = json.loads(line)
            seen.append(event)
            if event["event"] == name:
                return event

    try:
        serving_event = next_event("node serving")
        assert serving_event["district"] == "江宁区" and serving_event["tls"] is True
        assert not [e for e in seen if e.get("level") == "warning"], seen
        port, metrics_port = serving_event["port"], serving_event["metrics_port"]
        with tls_channel(f"127.0.0.1:{port}", client_tls(city_ca),
                         options=channel_options()) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="timebank.v1.NodeService"),
                timeout=TIMEOUT).status
            assert status == health_pb2.HealthCheckResponse.SERVING
            stub = node_pb2_grpc.NodeServiceStub(authorized(channel, token))
            point = stub.RegisterServicePoint(pb.RegisterServicePointRequest(
                idempotency_key=key(), code="jn-01", name="东山街道服务站"),
                timeout=TIMEOUT).service_point
            stub.RegisterStaff(pb.RegisterStaffRequest(
                idempotency_key=key(), name="王主任", service_point_id=point.id),
                timeout=TIMEOUT)
            assert stub.GetPolicy(pb.GetPolicyRequest(), timeout=TIMEOUT).publicity_days == 7
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                    timeout=5) as reply:
            metrics_text = reply.read().decode()
        assert 'timebank_node_rpcs_total{code="OK",method="GetPolicy"} 1.0' in metrics_text
        proc.send_signal(signum)
        assert proc.wait(timeout=30) == 0
        next_event("node stopped")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = [e["event"] for e in seen]
    assert "stopping" in events
    calls = [e for e in seen if e["event"] == "rpc"]
    assert {c["method"] for c in calls} >= {"RegisterServicePoint", "GetPolicy"}
    assert all("timestamp" in e and "level" in e for e in seen)
