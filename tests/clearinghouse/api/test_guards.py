"""The clearinghouse's guards on a real server on 127.0.0.1, on SQLite and PostgreSQL:
the per-node Submit rate limit, byte-identical receipts, fresh Subscribe requests, one
open move per person; and what it tells the operator (log lines, Prometheus metrics)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
import structlog
from prometheus_client import REGISTRY

from city.pki.certs import SERVER
from city.pki.store import Authority
from clearinghouse.api import observe
from clearinghouse.api.ratelimit import NANO, RateLimiter
from clearinghouse.api.server import RunningServer, serve_forever, start_server
from clearinghouse.api.servicer import SERVICE_NAME
from clearinghouse.bootstrap import init_city
from clearinghouse.config import load_config
from clearinghouse.usecases import admission, claims
from clearinghouse.usecases.app import ClearinghouseApp
from clearinghouse.usecases.clock import ManualClock
from runtime.errors import ResourceExhausted
from runtime.metrics import scrape_registry
from runtime.server import Serving
from runtime.tls import OBSERVER, TlsSettings
from runtime.tls import channel as tls_channel
from tests.clearinghouse.api.test_service import (
    ALICE,
    CH_KEY,
    CLAIM,
    GL,
    JN,
    KEYS,
    LIMIT,
    TIMEOUT,
    decision,
    finishing,
    proposal,
    receive,
    redeem,
    refusal,
    submit,
    subscription,
    wire,
)
from tests.clearinghouse.conftest import CITY_PUBLIC, certificate, registration, snapshot, stamp
from tests.pki import client_tls, issue
from timebank.envelope import sign
from timebank.v1 import clearing_pb2 as pb
from timebank.v1 import clearing_pb2_grpc, node_pb2

QX = "320113"


def admitted(app: ClearinghouseApp) -> None:
    for node, district in ((JN, "江宁区"), (GL, "鼓楼区")):
        app.execute(admission.admit, certificate(node, district, KEYS[node]), CITY_PUBLIC)
        app.execute(claims.set_net_debit_limit, node, LIMIT)


@pytest.fixture
def slow_server(ch_app: ClearinghouseApp) -> Iterator[RunningServer]:
    """A server allowing each node 1 Submit a second, 3 at once."""
    admitted(ch_app)
    running = start_server(ch_app, CH_KEY, "127.0.0.1:0", submits_per_second=1,
                           submit_burst=3)
    yield running
    running.stop(1.0)


@pytest.fixture
def server(ch_app: ClearinghouseApp) -> Iterator[RunningServer]:
    admitted(ch_app)
    running = start_server(ch_app, CH_KEY, "127.0.0.1:0")
    yield running
    running.stop(1.0)


@pytest.fixture
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.Channel) -> clearing_pb2_grpc.ClearinghouseServiceStub:
    return clearing_pb2_grpc.ClearinghouseServiceStub(channel)


# ------------------------------------------------------------------ rate limit


def test_the_token_bucket_refills_exactly_and_stays_bounded() -> None:
    now = [0]
    limiter = RateLimiter(2, 3, max_nodes=2, clock_ns=lambda: now[0])
    for _ in range(3):
        limiter.take(JN)
    with pytest.raises(ResourceExhausted) as caught:
        limiter.take(JN)
    assert caught.value.reason == "BUSY"
    assert caught.value.message.startswith(
        "district 320115 sent more than 2 messages per second")
    assert "slow down" in caught.value.message
    limiter.take(GL)  # another node has its own bucket
    now[0] += NANO // 2  # half a second: one token back
    limiter.take(JN)
    with pytest.raises(ResourceExhausted):
        limiter.take(JN)
    limiter.take(QX)  # a third node: the least recently used bucket (GL's) is dropped
    assert len(limiter) == 2
    for bad in (0, -1, True):
        with pytest.raises(ValueError):
            RateLimiter(bad, 1)


def test_the_token_bucket_is_thread_safe() -> None:
    limiter = RateLimiter(1, 500, clock_ns=lambda: 0)  # the clock stands still
    allowed = []
    lock = threading.Lock()

    def hammer() -> None:
        for _ in range(100):
            try:
                limiter.take(JN)
            except ResourceExhausted:
                continue
            with lock:
                allowed.append(1)

    threads = [threading.Thread(target=hammer) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(allowed) == 500


def test_a_node_over_its_rate_is_busy_and_nothing_changes(
        slow_server: RunningServer, ch_app: ClearinghouseApp) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{slow_server.port}") as ch:
        stub = clearing_pb2_grpc.ClearinghouseServiceStub(ch)
        # forgeries naming 320115 do not use up its allowance
        forged = wire(sign("directory.register", b"", JN, KEYS[GL]))
        for _ in range(5):
            with pytest.raises(grpc.RpcError) as caught:
                stub.Submit(forged, timeout=TIMEOUT)
            assert refusal(caught.value)[0] is grpc.StatusCode.PERMISSION_DENIED
        people = [hashlib.sha256(f"person {i}".encode()).hexdigest() for i in range(4)]
        for ref in people[:3]:
            submit(stub, registration(ref, JN, JN, KEYS[JN]))
        before = snapshot(ch_app)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Submit(wire(registration(people[3], JN, JN, KEYS[JN])), timeout=TIMEOUT)
        assert refusal(caught.value) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "BUSY")
        assert "district 320115 sent more than 1 messages per second" in (
            caught.value.details() or "")
        assert snapshot(ch_app) == before
        # 鼓楼区 has its own allowance
        submit(stub, registration(hashlib.sha256(b"gl").hexdigest(), GL, GL, KEYS[GL]))


# ------------------------------------------------------------------ receipts


def test_a_resubmission_gets_the_first_receipt_byte_for_byte(
        stub: clearing_pb2_grpc.ClearinghouseServiceStub, channel: grpc.Channel,
        ch_app: ClearinghouseApp, ch_clock: ManualClock) -> None:
    raw: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        f"/{SERVICE_NAME}/Submit")
    submit(stub, registration(ALICE, JN, JN, KEYS[JN]))
    request = wire(proposal(ch_app)).SerializeToString()
    first = raw(request, timeout=TIMEOUT)
    ch_clock.advance(timedelta(minutes=1))
    submit(stub, decision())
    submit(stub, finishing())
    before = snapshot(ch_app)
    ch_clock.advance(timedelta(minutes=1))
    again = raw(request, timeout=TIMEOUT)
    assert again == first  # the same signed bytes, though the claim is completed now
    receipt = pb.Receipt.FromString(pb.Envelope.FromString(again).body)
    assert receipt.state == pb.CLAIM_STATE_PROPOSED and receipt.claim_id == CLAIM
    assert snapshot(ch_app) == before


# ------------------------------------------------------------------ subscribe freshness


def test_a_stale_or_undated_subscribe_is_refused(
        stub: clearing_pb2_grpc.ClearinghouseServiceStub, ch_app: ClearinghouseApp,
        ch_clock: ManualClock) -> None:
    redeem(stub, ch_app)
    now = ch_clock.now()
    undated = wire(sign("subscribe", pb.SubscribeBody(node_id=JN).SerializeToString(), JN,
                        KEYS[JN]))
    late, early = subscription(JN, 0, now - timedelta(minutes=6)), subscription(
        JN, 0, now + timedelta(minutes=6))
    before = snapshot(ch_app)
    for request in (undated, late, early):
        with pytest.raises(grpc.RpcError) as caught:
            next(stub.Subscribe(request, timeout=TIMEOUT))
        assert refusal(caught.value) == (grpc.StatusCode.PERMISSION_DENIED,
                                         "STALE_SUBSCRIBE")
    assert snapshot(ch_app) == before
    captured = subscription(JN, 0, now - timedelta(minutes=4))  # within 5 minutes: fine
    assert len(receive(stub, JN, 0, 2, now - timedelta(minutes=4))) == 2
    ch_clock.advance(timedelta(minutes=2))  # ... until the window has passed
    with pytest.raises(grpc.RpcError) as caught:
        next(stub.Subscribe(captured, timeout=TIMEOUT))
    assert refusal(caught.value)[1] == "STALE_SUBSCRIBE"


# ------------------------------------------------------------------ one open move


def test_a_person_with_an_open_move_cannot_be_redeemed_for(
        stub: clearing_pb2_grpc.ClearinghouseServiceStub, ch_app: ClearinghouseApp) -> None:
    submit(stub, registration(ALICE, JN, JN, KEYS[JN]))
    now = ch_app.clock.now()
    move = pb.ClaimProposal(claim_id="019a0000-0000-7000-8000-0000000000ff",
                            kind=pb.CLAIM_KIND_MOVE, creditor_node_id=GL, debtor_node_id=JN,
                            payer_ref=ALICE, minutes=600, created_at=stamp(now),
                            expires_at=stamp(now + timedelta(days=1)))
    move.origins.add(origin=node_pb2.ORIGIN_GRANTED, minutes=600)
    assert submit(stub, sign("claim.propose", move.SerializeToString(), JN,
                             KEYS[JN])).state == pb.CLAIM_STATE_ACCEPTED
    before = snapshot(ch_app)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Submit(wire(proposal(ch_app)), timeout=TIMEOUT)
    assert refusal(caught.value) == (grpc.StatusCode.FAILED_PRECONDITION, "MOVE_IN_PROGRESS")
    assert ALICE not in (caught.value.details() or "")
    assert snapshot(ch_app) == before


# ------------------------------------------------------------------ logs and metrics


def _sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _calls_timed(method: str) -> float:
    """Calls of ``method`` the latency histogram counted, whatever their status code."""
    return sum(s.value for m in REGISTRY.collect() for s in m.samples
               if s.name == "timebank_clearinghouse_rpc_duration_seconds_count"
               and s.labels.get("method") == method)


def test_every_call_is_logged_and_counted_without_person_refs(
        stub: clearing_pb2_grpc.ClearinghouseServiceStub, ch_app: ClearinghouseApp) -> None:
    completed = {"kind": "redemption", "state": "completed"}
    ok = {"method": "Submit", "code": "OK"}
    before = (_sample("timebank_clearinghouse_claim_transitions_total", completed),
              _sample("timebank_clearinghouse_rpcs_total", ok),
              _calls_timed("Submit"),
              _sample("timebank_clearinghouse_refusals_total",
                      {"method": "LookupPerson", "reason": "UNKNOWN_PERSON"}))
    with structlog.testing.capture_logs() as logs:
        redeem(stub, ch_app)
        submit(stub, finishing())  # a resubmission: no second transition
        stub.LookupPerson(pb.LookupPersonRequest(person_ref=ALICE), timeout=TIMEOUT)
        with pytest.raises(grpc.RpcError):
            stub.LookupPerson(pb.LookupPersonRequest(person_ref="ab" * 32), timeout=TIMEOUT)
        with pytest.raises(grpc.RpcError):  # a refusal whose message could carry a ref
            stub.Submit(wire(registration(ALICE, GL, GL, KEYS[GL])), timeout=TIMEOUT)
    after = (_sample("timebank_clearinghouse_claim_transitions_total", completed),
             _sample("timebank_clearinghouse_rpcs_total", ok),
             _calls_timed("Submit"),
             _sample("timebank_clearinghouse_refusals_total",
                     {"method": "LookupPerson", "reason": "UNKNOWN_PERSON"}))
    assert after[0] - before[0] == 1
    assert after[1] - before[1] == 5  # registration, propose, decide, finish, finish again
    assert after[2] - before[2] == 6  # and the refused registration
    assert after[3] - before[3] == 1
    rpcs = [e for e in logs if e["event"] == "rpc"]
    assert [(e["method"], e["code"]) for e in rpcs] == [
        ("Submit", "OK")] * 5 + [("LookupPerson", "OK"), ("LookupPerson", "NOT_FOUND"),
                                 ("Submit", "FAILED_PRECONDITION")]
    assert rpcs[1]["claim_id"] == CLAIM and rpcs[1]["state"] == "proposed"
    assert rpcs[5]["person"] == ALICE[:8]
    assert rpcs[-1]["reason"] == "HOMED_ELSEWHERE" and rpcs[-1]["signer"] == GL
    assert all(isinstance(e["ms"], float) for e in rpcs)
    text = repr(logs)
    assert not re.search(r"[0-9a-f]{64}", text), "a whole PersonRef reached the logs"
    assert "exc_info" not in text and "Traceback" not in text


def test_serve_forever_serves_metrics_and_applies_the_limits(tmp_path: Path,
                                                             city_ca: Authority) -> None:
    leaf = issue(city_ca, SERVER, "clearinghouse")
    config_path = init_city(tmp_path / "ch", tls=TlsSettings(city_ca.ca_cert, leaf.cert,
                                                             leaf.key, city_ca.crl))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    text = config_path.read_text(encoding="utf-8")
    assert "submits_per_second = 2000" in text  # init writes the [limits] table
    config_path.write_text(
        text.replace('metrics_listen = "127.0.0.1:9400"', f'metrics_listen = "127.0.0.1:{free}"'),
        encoding="utf-8")
    # the file alone (tests/conftest.py gives every other server a free metrics port)
    config = dataclasses.replace(load_config(config_path, {}), listen="127.0.0.1:0")
    assert (config.metrics_listen, config.submits_per_second, config.submit_burst) == (
        f"127.0.0.1:{free}", 2000, 4000)
    stop, ready = threading.Event(), threading.Event()
    ports: list[int] = []

    def on_ready(serving: Serving) -> None:
        ports.append(serving.port)
        ready.set()

    thread = threading.Thread(target=serve_forever, args=(config,),
                              kwargs={"stop": stop, "on_ready": on_ready, "grace_seconds": 1.0})
    thread.start()
    try:
        assert ready.wait(TIMEOUT)
        observer = client_tls(city_ca, issue(city_ca, OBSERVER, "monitor"))
        with tls_channel(f"127.0.0.1:{ports[0]}", observer) as ch:
            clearing_pb2_grpc.ClearinghouseServiceStub(ch).GetPositions(
                pb.GetPositionsRequest(), timeout=TIMEOUT)
        with urllib.request.urlopen(f"http://127.0.0.1:{free}/metrics", timeout=TIMEOUT) as r:
            body = r.read().decode()
        assert 'timebank_clearinghouse_rpcs_total{code="OK",method="GetPositions"}' in body
        assert "timebank_clearinghouse_rpc_duration_seconds_bucket" in body
    finally:
        stop.set()
        thread.join(TIMEOUT)
    assert not thread.is_alive()
    with pytest.raises(OSError):  # the metrics endpoint stopped with the server
        urllib.request.urlopen(f"http://127.0.0.1:{free}/metrics", timeout=TIMEOUT)


def test_a_serving_clearinghouse_logs_bugs_without_person_refs_or_locals() -> None:
    script = (
        "import structlog\n"
        "from clearinghouse.api import observe\n"
        "assert observe.configure_logging()\n"
        "assert not observe.configure_logging()  # once per process\n"
        "def fail(ref):\n"
        "    secret_local = ref\n"
        "    raise RuntimeError('bad ' + secret_local)\n"
        "try:\n"
        f"    fail({ALICE!r})\n"
        "except RuntimeError:\n"
        f"    structlog.get_logger('x').exception('oops', person={ALICE!r})\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)
    line = json.loads(done.stdout.strip().splitlines()[-1])  # JSON lines by default
    assert line["event"] == "oops" and line["service"] == "clearinghouse"
    assert line["exception"][0]["exc_value"] == "bad " + ALICE[:8] + "…"
    assert ALICE not in done.stdout + done.stderr and "secret_local =" not in done.stdout


def test_a_district_near_its_limit_is_warned_about_and_its_position_is_a_metric(
        stub: clearing_pb2_grpc.ClearinghouseServiceStub, ch_app: ClearinghouseApp) -> None:
    ch_app.execute(claims.set_net_debit_limit, JN, 140)  # 120 of 140 owed after: 85%
    with structlog.testing.capture_logs() as logs:
        redeem(stub, ch_app)
    warned = [e for e in logs if e["event"] == "district near its net debit limit"]
    assert len(warned) == 1 and warned[0]["log_level"] == "warning"
    assert (warned[0]["node"], warned[0]["owes_minutes"], warned[0]["used_percent"]) == \
        (JN, 120, 85)
    # read from the database at scrape time, as each replica's endpoint does
    scraped = scrape_registry([observe.StatusCollector(ch_app)])
    assert scraped.get_sample_value("timebank_clearinghouse_net_position_minutes",
                                    {"node": JN}) == -120
    assert scraped.get_sample_value("timebank_clearinghouse_net_position_minutes",
                                    {"node": GL}) == 120
    assert scraped.get_sample_value("timebank_clearinghouse_net_debit_limit_minutes",
                                    {"node": JN}) == 140
    assert scraped.get_sample_value("timebank_clearinghouse_claims",
                                    {"state": "completed"}) == 1
    assert (scraped.get_sample_value("timebank_clearinghouse_log_size") or 0) > 0
    queued = [scraped.get_sample_value("timebank_clearinghouse_last_delivery_seq", {"node": n})
              or 0 for n in (JN, GL)]
    unacked = [scraped.get_sample_value("timebank_clearinghouse_deliveries_unacked",
                                        {"node": n}) for n in (JN, GL)]
    assert sum(queued) >= 2 and unacked == queued  # nobody acknowledged here


def test_a_district_far_from_its_limit_is_not_warned_about(
        stub: clearing_pb2_grpc.ClearinghouseServiceStub, ch_app: ClearinghouseApp) -> None:
    with structlog.testing.capture_logs() as logs:
        redeem(stub, ch_app)  # 120 of 10,000
    assert not [e for e in logs if e["event"] == "district near its net debit limit"]
