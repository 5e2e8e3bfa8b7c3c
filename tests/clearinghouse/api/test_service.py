"""The clearinghouse's gRPC service, end to end on a real server on 127.0.0.1.

Nodes' envelopes go in over Submit, Subscribe and Ack; everything that comes back is
checked under the clearinghouse's public key. Runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from nacl.signing import SigningKey

from city.pki.certs import SERVER
from city.pki.store import Authority
from clearinghouse.api.server import ExpirySweep, RunningServer, serve_forever, start_server
from clearinghouse.api.servicer import SERVICE_NAME
from clearinghouse.bootstrap import init_city
from clearinghouse.config import load_config
from clearinghouse.usecases import admission, claims, directory
from clearinghouse.usecases.app import ClearinghouseApp
from clearinghouse.usecases.clock import ManualClock
from runtime.errors import ConfigError
from runtime.server import Serving
from runtime.tls import OBSERVER, TlsSettings
from runtime.tls import channel as tls_channel
from tests.clearinghouse.conftest import (
    CITY_PUBLIC,
    certificate,
    node_key,
    registration,
    snapshot,
    stamp,
)
from tests.pki import client_tls, issue
from timebank import transparency
from timebank.envelope import CLEARINGHOUSE, Signed, decode, identity, sign, verify
from timebank.keys import public_key
from timebank.v1 import clearing_pb2 as pb
from timebank.v1 import clearing_pb2_grpc

JN, GL = "320115", "320106"  # 江宁区 (Alice's home), 鼓楼区 (where she is served)
KEYS = {JN: node_key(JN), GL: node_key(GL)}
ALICE = hashlib.sha256(b"alice").hexdigest()
BOB = hashlib.sha256(b"bob").hexdigest()
CH_KEY = SigningKey(hashlib.sha256(b"clearinghouse key (tests)").digest())
CH_PUBLIC = public_key(CH_KEY)
LIMIT = 10_000
CLAIM = "019a0000-0000-7000-8000-000000000001"
TIMEOUT = 10.0


@pytest.fixture
def server(ch_app: ClearinghouseApp) -> Iterator[RunningServer]:
    for node, district in ((JN, "江宁区"), (GL, "鼓楼区")):
        ch_app.execute(admission.admit, certificate(node, district, KEYS[node]), CITY_PUBLIC)
        ch_app.execute(claims.set_net_debit_limit, node, LIMIT)
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


def wire(envelope: Signed) -> pb.Envelope:
    return pb.Envelope(kind=envelope.kind, body=envelope.body, signer=envelope.signer,
                       key_id=envelope.key_id, signature=envelope.signature)


def from_clearinghouse(message: pb.Envelope, kind: str) -> bytes:
    """The body of an envelope the clearinghouse signed (verified under its key)."""
    assert message.kind == kind and message.signer == CLEARINGHOUSE
    return verify(Signed(message.kind, message.body, message.signer, message.key_id,
                         message.signature), CH_PUBLIC)


def submit(stub: clearing_pb2_grpc.ClearinghouseServiceStub, envelope: Signed) -> pb.Receipt:
    request = wire(envelope)
    receipt = pb.Receipt.FromString(
        from_clearinghouse(stub.Submit(request, timeout=TIMEOUT), "receipt"))
    assert receipt.envelope_sha256 == identity(envelope)
    return receipt


def refusal(call: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    """The status code and the ErrorInfo reason of a refused call."""
    assert isinstance(call, grpc.Call)
    status = rpc_status.from_call(call)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info) and info.domain == "timebank.v1"
    return call.code(), info.reason


def proposal(app: ClearinghouseApp, minutes: int = 120, *, claim_id: str = CLAIM,
             window: timedelta = timedelta(days=7)) -> Signed:
    now = app.clock.now()
    body = pb.ClaimProposal(claim_id=claim_id, kind=pb.CLAIM_KIND_REDEMPTION,
                            creditor_node_id=GL, debtor_node_id=JN, payer_ref=ALICE,
                            recipient_ref=ALICE, recipient_age=40, minutes=minutes)
    body.created_at.CopyFrom(stamp(now))
    body.expires_at.CopyFrom(stamp(now + window))
    return sign("claim.propose", body.SerializeToString(), GL, KEYS[GL])


def decision(accept: bool = True) -> Signed:
    body = pb.ClaimDecision(claim_id=CLAIM, accept=accept)
    return sign("claim.decide", body.SerializeToString(), JN, KEYS[JN])


def finishing() -> Signed:
    body = pb.ClaimFinish(claim_id=CLAIM, complete=True)
    return sign("claim.finish", body.SerializeToString(), GL, KEYS[GL])


def subscription(node: str, after: int, at: datetime) -> pb.Envelope:
    body = pb.SubscribeBody(node_id=node, after_seq=after, at=stamp(at))
    return wire(sign("subscribe", body.SerializeToString(), node, KEYS[node]))


def acknowledgement(node: str, seq: int) -> pb.Envelope:
    return wire(sign("ack", pb.AckBody(node_id=node, seq=seq).SerializeToString(), node,
                     KEYS[node]))


def receive(stub: clearing_pb2_grpc.ClearinghouseServiceStub, node: str, after: int,
            count: int, at: datetime) -> list[pb.Delivery]:
    """The first ``count`` deliveries a Subscribe streams, each verified; then cancel."""
    stream = stub.Subscribe(subscription(node, after, at), timeout=TIMEOUT)
    found: list[pb.Delivery] = []
    for message in stream:
        found.extend(unpack(message))
        if len(found) >= count:
            break
    stream.cancel()
    return found[:count]


def unpack(message: pb.Envelope) -> list[pb.Delivery]:
    """The deliveries of one stream message, its signature checked."""
    batch = pb.DeliveryBatch.FromString(from_clearinghouse(message, "deliveries"))
    assert batch.deliveries
    return [pb.Delivery.FromString(d) for d in batch.deliveries]


def redeem(stub: clearing_pb2_grpc.ClearinghouseServiceStub, app: ClearinghouseApp,
           ) -> list[pb.Receipt]:
    """Register Alice at 江宁区, then 鼓楼区 redeems 2 h of hers: propose, accept, complete."""
    registered = submit(stub, registration(ALICE, JN, JN, KEYS[JN]))
    assert registered.claim_id == "" and registered.state == pb.CLAIM_STATE_UNSPECIFIED
    return [submit(stub, proposal(app)), submit(stub, decision()), submit(stub, finishing())]


def test_a_redemption_goes_through_submit_with_signed_receipts(
        stub: clearing_pb2_grpc.ClearinghouseServiceStub, ch_app: ClearinghouseApp) -> None:
    proposed, accepted, completed = redeem(stub, ch_app)
    assert [r.claim_id for r in (proposed, accepted, completed)] == [CLAIM] * 3
    assert [r.state for r in (proposed, accepted, completed)] == [
        pb.CLAIM_STATE_PROPOSED, pb.CLAIM_STATE_ACCEPTED, pb.CLAIM_STATE_COMPLETED]
    found = stub.LookupPerson(pb.LookupPersonRequest(person_ref=ALICE), timeout=TIMEOUT)
    assert found.home_node_id == JN

    positions = stub.GetPositions(pb.GetPositionsRequest(), timeout=TIMEOUT)
    net = {n.node_id: n.net_minutes for n in positions.nodes}
    assert net == {GL: 120, JN: -120} and sum(net.values()) == 0
    assert {n.node_id: (n.district, n.net_debit_limit_minutes) for n in positions.nodes} == {
        GL: ("鼓楼区", LIMIT), JN: ("江宁区", LIMIT)}
    assert [(g.creditor_node_id, g.debtor_node_id, g.minutes) for g in positions.gross] == [
        (GL, JN, 120)]


def test_subscribe_streams_signed_deliveries_and_ack_moves_the_cursor(
        stub: clearing_pb2_grpc.ClearinghouseServiceStub, ch_app: ClearinghouseApp) -> None:
    redeem(stub, ch_app)
    # the debtor: the proposal, then the finish
    first, second = receive(stub, JN, 0, 2, ch_app.clock.now())
    assert (first.seq, second.seq) == (1, 2)
    assert first.recipient_node_id == JN and first.state == pb.CLAIM_STATE_PROPOSED
    assert first.relayed.kind == "claim.propose" and first.relayed.signer == GL
    assert second.relayed.kind == "claim.finish" and second.state == pb.CLAIM_STATE_COMPLETED
    (to_creditor,) = receive(stub, GL, 0, 1, ch_app.clock.now())
    assert to_creditor.relayed.kind == "claim.decide"

    assert stub.Ack(acknowledgement(JN, 1), timeout=TIMEOUT).acknowledged_seq == 1
    assert ch_app.query(lambda tx: tx.repo.acked_seq(JN)) == 1
    assert stub.Ack(acknowledgement(JN, 1), timeout=TIMEOUT).acknowledged_seq == 1
    (resumed,) = receive(stub, JN, 1, 1, ch_app.clock.now())
    assert resumed.seq == 2


def test_a_stream_picks_up_deliveries_made_while_it_is_open(
        stub: clearing_pb2_grpc.ClearinghouseServiceStub, ch_app: ClearinghouseApp) -> None:
    submit(stub, registration(ALICE, JN, JN, KEYS[JN]))
    stream = stub.Subscribe(subscription(JN, 0, ch_app.clock.now()), timeout=TIMEOUT)
    later = threading.Timer(0.3, lambda: submit(stub, proposal(ch_app)))
    later.start()
    (delivery,) = unpack(next(stream))
    stream.cancel()
    later.join()  # its Submit may answer after the stream has the delivery
    assert delivery.seq == 1 and delivery.relayed.kind == "claim.propose"


def test_a_replayed_envelope_gets_the_same_state_and_delivers_nothing_new(
        stub: clearing_pb2_grpc.ClearinghouseServiceStub, ch_app: ClearinghouseApp) -> None:
    submit(stub, registration(ALICE, JN, JN, KEYS[JN]))
    envelope = proposal(ch_app)
    first = submit(stub, envelope)
    before = snapshot(ch_app)
    again = submit(stub, envelope)
    assert (again.claim_id, again.state, again.reason) == (
        first.claim_id, first.state, first.reason)
    assert snapshot(ch_app) == before
    assert submit(stub, registration(ALICE, JN, JN, KEYS[JN])).state == 0
    assert snapshot(ch_app) == before


def test_a_bad_signature_is_permission_denied_and_changes_nothing(
        stub: clearing_pb2_grpc.ClearinghouseServiceStub, ch_app: ClearinghouseApp) -> None:
    submit(stub, registration(ALICE, JN, JN, KEYS[JN]))
    good = wire(proposal(ch_app))
    forged = pb.Envelope()
    forged.CopyFrom(good)
    forged.signature = bytes(64)
    stranger = wire(sign("claim.propose", good.body, GL, SigningKey(bytes(32))))
    before = snapshot(ch_app)
    for request, reason in ((forged, "BAD_SIGNATURE"), (stranger, "UNKNOWN_KEY")):
        with pytest.raises(grpc.RpcError) as caught:
            stub.Submit(request, timeout=TIMEOUT)
        assert refusal(caught.value) == (grpc.StatusCode.PERMISSION_DENIED, reason)
    with pytest.raises(grpc.RpcError) as caught:  # a node may not read another's queue
        next(stub.Subscribe(wire(sign("subscribe", pb.SubscribeBody(
            node_id=JN).SerializeToString(), GL, KEYS[GL])), timeout=TIMEOUT))
    assert refusal(caught.value) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_YOUR_QUEUE")
    assert snapshot(ch_app) == before


def test_bad_requests_are_invalid_argument(
        stub: clearing_pb2_grpc.ClearinghouseServiceStub, channel: grpc.Channel,
        ch_app: ClearinghouseApp) -> None:
    before = snapshot(ch_app)
    unknown = wire(sign("claim.settle", b"", GL, KEYS[GL]))
    malformed = pb.Envelope(kind="claim.propose", signer=GL, key_id="x", signature=b"s")
    for request, reason in ((unknown, "WRONG_KIND"), (malformed, "MALFORMED")):
        with pytest.raises(grpc.RpcError) as caught:
            stub.Submit(request, timeout=TIMEOUT)
        assert refusal(caught.value) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    raw: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        f"/{SERVICE_NAME}/Submit")
    with pytest.raises(grpc.RpcError) as caught:
        raw(b"\xff\xff\xff", timeout=TIMEOUT)
    assert refusal(caught.value) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_ENVELOPE")
    with pytest.raises(grpc.RpcError) as caught:
        stub.Submit(pb.Envelope(kind="claim.propose", body=bytes(70_000)), timeout=TIMEOUT)
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as caught:
        stub.LookupPerson(pb.LookupPersonRequest(person_ref=BOB), timeout=TIMEOUT)
    assert refusal(caught.value) == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_PERSON")
    assert snapshot(ch_app) == before


def batch(stub: clearing_pb2_grpc.ClearinghouseServiceStub, *envelopes: Signed,
          ) -> list[pb.Receipt | tuple[str, str]]:
    """SubmitBatch: each result a verified receipt for exactly the bytes sent, or the
    refusal's (code, reason)."""
    raw = [wire(e).SerializeToString() for e in envelopes]
    answer = stub.SubmitBatch(pb.SubmitBatchRequest(envelopes=raw), timeout=TIMEOUT)
    assert len(answer.results) == len(raw)
    out: list[pb.Receipt | tuple[str, str]] = []
    for sent, result in zip(raw, answer.results, strict=True):
        if result.WhichOneof("outcome") == "refusal":
            assert result.refusal.message
            out.append((result.refusal.code, result.refusal.reason))
            continue
        receipt = pb.Receipt.FromString(from_clearinghouse(
            pb.Envelope.FromString(result.receipt), "receipt"))
        assert receipt.envelope_sha256 == identity(decode(sent))
        out.append(receipt)
    return out


def test_a_batch_acts_on_each_envelope_in_order_and_a_refusal_undoes_only_its_own(
        stub: clearing_pb2_grpc.ClearinghouseServiceStub, ch_app: ClearinghouseApp) -> None:
    forged = proposal(ch_app, claim_id="019a0000-0000-7000-8000-000000000002")
    forged = Signed(forged.kind, forged.body, forged.signer, forged.key_id, bytes(64))
    too_long = proposal(ch_app, 1441, claim_id="019a0000-0000-7000-8000-000000000003")
    registered, forged_result, proposed, out_of_range, accepted = batch(
        stub, registration(ALICE, JN, JN, KEYS[JN]), forged, proposal(ch_app), too_long,
        decision())
    # the registration is seen by the proposal after it in the same batch
    assert isinstance(registered, pb.Receipt) and registered.claim_id == ""
    assert forged_result == ("PERMISSION_DENIED", "BAD_SIGNATURE")
    assert isinstance(proposed, pb.Receipt) and proposed.state == pb.CLAIM_STATE_PROPOSED
    assert out_of_range == ("INVALID_ARGUMENT", "MINUTES_OUT_OF_RANGE")
    assert isinstance(accepted, pb.Receipt) and accepted.state == pb.CLAIM_STATE_ACCEPTED
    # nothing of the refused envelopes' claims exists
    for refused_id in ("019a0000-0000-7000-8000-000000000002",
                       "019a0000-0000-7000-8000-000000000003"):
        assert ch_app.query(lambda tx, c=refused_id: tx.repo.claim(c)) is None
    # the same envelope again, alone or in a batch, gets the same receipt back
    assert submit(stub, decision()) == accepted
    (again,) = batch(stub, proposal(ch_app))
    assert again == proposed


def test_a_batch_that_is_empty_too_large_or_malformed_is_refused_whole(
        stub: clearing_pb2_grpc.ClearinghouseServiceStub, channel: grpc.Channel,
        ch_app: ClearinghouseApp) -> None:
    before = snapshot(ch_app)
    many = [registration(hashlib.sha256(str(i).encode()).hexdigest(), JN, JN, KEYS[JN])
            for i in range(65)]
    for envelopes, reason in (([], "EMPTY_BATCH"), (many, "BATCH_TOO_LARGE")):
        with pytest.raises(grpc.RpcError) as caught:
            batch(stub, *envelopes)
        assert refusal(caught.value) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    raw: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        f"/{SERVICE_NAME}/SubmitBatch")
    with pytest.raises(grpc.RpcError) as caught:
        raw(b"\xff\xff\xff", timeout=TIMEOUT)
    assert refusal(caught.value) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST")
    (junk,) = stub.SubmitBatch(pb.SubmitBatchRequest(envelopes=[b"\xff\xff"]),
                               timeout=TIMEOUT).results
    assert (junk.refusal.code, junk.refusal.reason) == ("INVALID_ARGUMENT",
                                                        "MALFORMED_ENVELOPE")
    assert snapshot(ch_app) == before


def test_batches_sent_at_once_each_get_receipts_proven_in_a_head_extending_theirs(
        stub: clearing_pb2_grpc.ClearinghouseServiceStub, ch_app: ClearinghouseApp) -> None:
    # Twelve calls from two districts at once, some from an older head: each answer
    # must stand on its own for the node that sent it.
    batch(stub, registration(ALICE, JN, JN, KEYS[JN]))
    start = transparency.check_head(
        stub.GetTreeHead(pb.GetTreeHeadRequest(), timeout=TIMEOUT).head.note, CH_PUBLIC)
    sent: dict[int, tuple[list[bytes], transparency.Head | None]] = {}
    answers: dict[int, pb.SubmitBatchResponse] = {}
    for i in range(12):
        node = (JN, GL)[i % 2]
        sent[i] = ([wire(registration(hashlib.sha256(f"{i}/{j}".encode()).hexdigest(),
                                      node, node, KEYS[node])).SerializeToString()
                    for j in range(5)], start if i % 3 else None)
    go = threading.Barrier(12)

    def send(i: int) -> None:
        raw, known = sent[i]
        go.wait(10)
        answers[i] = stub.SubmitBatch(pb.SubmitBatchRequest(
            envelopes=raw, known_tree_size=known.size if known else 0), timeout=TIMEOUT)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(answers) == list(range(12))
    leaves: set[int] = set()
    for i, answer in answers.items():
        raw, known = sent[i]
        head = transparency.check_head(answer.head, CH_PUBLIC)
        transparency.check_extends(known, head, list(answer.consistency))
        for data, result in zip(raw, answer.results, strict=True):
            receipt = pb.Receipt.FromString(from_clearinghouse(
                pb.Envelope.FromString(result.receipt), "receipt"))
            assert receipt.envelope_sha256 == identity(decode(data))
            assert pb.LogEntry.FromString(result.logged.entry).envelope == data
            transparency.check_included(result.logged.entry, result.logged.index, head,
                                        list(result.logged.path))
            leaves.add(result.logged.index)
    # every envelope is logged once, right after what was there before
    assert leaves == set(range(start.size, start.size + 60))
    final = stub.GetTreeHead(pb.GetTreeHeadRequest(), timeout=TIMEOUT).head
    assert final.size == start.size + 60


def test_health_is_serving(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE_NAME):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_the_sweep_expires_overdue_claims_and_tells_both_parties(
        stub: clearing_pb2_grpc.ClearinghouseServiceStub, ch_app: ClearinghouseApp,
        ch_clock: ManualClock) -> None:
    submit(stub, registration(ALICE, JN, JN, KEYS[JN]))
    submit(stub, proposal(ch_app, window=timedelta(minutes=5)))
    sweep = ExpirySweep(ch_app)
    assert sweep.run_once() == 0
    ch_clock.advance(timedelta(minutes=6))
    assert sweep.run_once() == 1
    (told,) = receive(stub, GL, 0, 1, ch_app.clock.now())
    assert told.expired_claim_id == CLAIM and told.state == pb.CLAIM_STATE_EXPIRED
    assert ch_app.query(directory.lookup, ALICE) == JN


def test_serve_forever_serves_until_stopped(tmp_path: Path, city_ca: Authority) -> None:
    leaf = issue(city_ca, SERVER, "clearinghouse")
    config = load_config(init_city(tmp_path / "ch", tls=TlsSettings(
        city_ca.ca_cert, leaf.cert, leaf.key, city_ca.crl)))
    stop, ready = threading.Event(), threading.Event()
    ports: list[int] = []

    def on_ready(serving: Serving) -> None:
        ports.append(serving.port)
        ready.set()

    config = replace(config, listen="127.0.0.1:0")
    thread = threading.Thread(target=serve_forever, args=(config,),
                              kwargs={"stop": stop, "on_ready": on_ready, "grace_seconds": 1.0,
                                      "sweep_interval": 0.05})
    thread.start()
    try:
        assert ready.wait(TIMEOUT)
        observer = client_tls(city_ca, issue(city_ca, OBSERVER, "monitor"))
        with tls_channel(f"127.0.0.1:{ports[0]}", observer) as ch:
            answer = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(),
                                                          timeout=TIMEOUT)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
            positions = clearing_pb2_grpc.ClearinghouseServiceStub(ch).GetPositions(
                pb.GetPositionsRequest(), timeout=TIMEOUT)
            assert list(positions.nodes) == []
    finally:
        stop.set()
        thread.join(TIMEOUT)
    assert not thread.is_alive()


def test_serve_without_tls_is_refused_unless_insecure(tmp_path: Path) -> None:
    config = replace(load_config(init_city(tmp_path / "ch")), listen="127.0.0.1:0")
    with pytest.raises(ConfigError, match=r"^clearinghouse 未配置 TLS.*cert, key, ca"):
        serve_forever(config, stop=threading.Event())


def test_the_serve_command_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    """Served plaintext with --insecure: it warns, at start, that it runs without TLS."""
    config_path = init_city(tmp_path / "ch")
    with socket.socket() as probe:  # the configuration wants a real port: find a free one
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    env = {**os.environ, "TIMEBANK_SERVER_LISTEN": f"127.0.0.1:{free}"}
    process = subprocess.Popen(
        [sys.executable, "-c", "from city.cli import main; main()", "clearinghouse", "serve",
         "--config", str(config_path), "--insecure"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    said: list[str] = []
    try:
        assert process.stdout is not None
        port = 0
        for line in process.stdout:
            said.append(line)
            found = re.search(r"clearinghouse serving on 127\.0\.0\.1:(\d+)", line)
            if found:
                port = int(found.group(1))
                break
        assert port, "the server never said it was serving"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            answer = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(),
                                                          timeout=TIMEOUT)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, rest
    assert "clearinghouse stopped" in rest and "Traceback" not in rest
    assert any("WITHOUT TLS because of --insecure" in line for line in said), said
