"""The clearinghouse on mutual TLS (``clearinghouse.api.callers``): real certificates from a
real city CA, a real server on 127.0.0.1, real nodes' signed envelopes.

A node's certificate acts only for its own district: an envelope another district
signed (a stolen envelope, another district's key used on this connection) is refused
PERMISSION_DENIED before anything is read or changed. An observer's certificate only
reads; a revoked certificate is UNAUTHENTICATED; a connection without a certificate of
the city CA never gets through the handshake. Runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from city.pki.certs import SERVER
from city.pki.store import Authority, Issued
from clearinghouse.api import callers
from clearinghouse.api.server import RunningServer, start_server
from clearinghouse.api.servicer import SERVICE_NAME
from clearinghouse.usecases import admission, claims, directory
from clearinghouse.usecases.app import ClearinghouseApp
from runtime.tls import NODE, OBSERVER, channel
from tests.clearinghouse.api.test_service import (
    CH_KEY,
    KEYS,
    LIMIT,
    acknowledgement,
    proposal,
    refusal,
    submit,
    subscription,
    wire,
)
from tests.clearinghouse.conftest import CITY_PUBLIC, certificate, registration, snapshot
from tests.pki import client_tls, issue, now, server_tls
from timebank.envelope import sign
from timebank.v1 import clearing_pb2 as pb
from timebank.v1 import clearing_pb2_grpc

JN, GL = "320115", "320106"
ALICE = hashlib.sha256(b"alice").hexdigest()
TIMEOUT = 10.0
Stub = clearing_pb2_grpc.ClearinghouseServiceStub


@pytest.fixture
def city(ch_app: ClearinghouseApp, city_ca: Authority) -> Iterator[tuple[RunningServer,
                                                                         Authority]]:
    for node, district in ((JN, "江宁区"), (GL, "鼓楼区")):
        ch_app.execute(admission.admit, certificate(node, district, KEYS[node]), CITY_PUBLIC)
        ch_app.execute(claims.set_net_debit_limit, node, LIMIT)
    running = start_server(ch_app, CH_KEY, "127.0.0.1:0",
                           tls=server_tls(city_ca, issue(city_ca, SERVER, "clearinghouse")))
    yield running, city_ca
    running.stop(1.0)


def connect(city: tuple[RunningServer, Authority], leaf: Issued | None) -> grpc.Channel:
    running, ca = city
    return channel(f"127.0.0.1:{running.port}", client_tls(ca, leaf))


def refused_unchanged(app: ClearinghouseApp, call: Callable[[], Any],
                      ) -> tuple[grpc.StatusCode, str, str]:
    """Make a call that must be refused: nothing in the clearinghouse changed."""
    before = snapshot(app)
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert snapshot(app) == before
    code, reason = (refusal(caught.value) if caught.value.code() not in (
        grpc.StatusCode.UNAVAILABLE,) else (caught.value.code(), ""))
    return code, reason, caught.value.details() or ""


def test_a_node_acts_for_its_own_district(ch_app: ClearinghouseApp,
                                          city: tuple[RunningServer, Authority]) -> None:
    with connect(city, issue(city[1], NODE, JN)) as ch:
        receipt = submit(Stub(ch), registration(ALICE, JN, JN, KEYS[JN]))
        assert receipt.claim_id == ""
        assert Stub(ch).GetPositions(pb.GetPositionsRequest(), timeout=TIMEOUT).nodes
    assert ch_app.query(directory.lookup, ALICE) == JN


def test_another_districts_envelope_is_refused_on_every_rpc_that_acts(
        ch_app: ClearinghouseApp, city: tuple[RunningServer, Authority]) -> None:
    """鼓楼区's certificate with envelopes 江宁区 signed (its key stolen, or envelopes
    copied off the wire): Submit, SubmitBatch, Subscribe, Ack and AddCosignature all
    refuse, naming both districts, and nothing changes."""
    cosign = sign("cosign", pb.CosignBody(node_id=JN, size=1).SerializeToString(), JN,
                  KEYS[JN])
    with connect(city, issue(city[1], NODE, GL)) as ch:
        stub = Stub(ch)
        attempts: dict[str, Callable[[], Any]] = {
            "Submit": lambda: stub.Submit(wire(registration(ALICE, JN, JN, KEYS[JN])),
                                          timeout=TIMEOUT),
            "SubmitBatch": lambda: stub.SubmitBatch(pb.SubmitBatchRequest(envelopes=[
                wire(proposal(ch_app)).SerializeToString(),  # 鼓楼区's own, and
                wire(registration(ALICE, JN, JN, KEYS[JN])).SerializeToString()]),
                timeout=TIMEOUT),  # one of 江宁区's: the whole batch is refused
            "Subscribe": lambda: list(stub.Subscribe(
                subscription(JN, 0, ch_app.clock.now()), timeout=TIMEOUT)),
            "Ack": lambda: stub.Ack(acknowledgement(JN, 0), timeout=TIMEOUT),
            "AddCosignature": lambda: stub.AddCosignature(wire(cosign), timeout=TIMEOUT).head,
        }
        assert set(attempts) == callers.ENVELOPES | callers.BATCHES
        for method, attempt in attempts.items():
            code, reason, message = refused_unchanged(ch_app, attempt)
            assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                      "CERTIFICATE_NOT_FOR_DISTRICT"), method
            assert message.startswith(f"证书属于 {GL} 区，此调用却代表 {JN} 区"), message
            assert f"names district {GL}" in message and f"acts for '{JN}'" in message
        # its own envelopes still go through on the same connection
        assert submit(stub, registration(ALICE, GL, GL, KEYS[GL])).claim_id == ""


def test_an_observer_only_reads(ch_app: ClearinghouseApp,
                                city: tuple[RunningServer, Authority]) -> None:
    with connect(city, issue(city[1], OBSERVER, "monitor")) as ch:
        stub = Stub(ch)
        assert {n.node_id for n in stub.GetPositions(pb.GetPositionsRequest(),
                                                     timeout=TIMEOUT).nodes} == {JN, GL}
        assert stub.GetTreeHead(pb.GetTreeHeadRequest(), timeout=TIMEOUT).head.note
        code, reason, message = refused_unchanged(ch_app, lambda: stub.Submit(
            wire(registration(ALICE, JN, JN, KEYS[JN])), timeout=TIMEOUT))
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "READ_ONLY_CERTIFICATE")
        assert message.startswith("观察者证书（monitor）只能读取") and "Submit" in message


def test_a_revoked_node_certificate_is_unauthenticated(
        ch_app: ClearinghouseApp, city: tuple[RunningServer, Authority]) -> None:
    leaf = issue(city[1], NODE, JN)
    assert city[1].revoke(leaf.serial, now())
    with connect(city, leaf) as ch:
        code, reason, _ = refused_unchanged(ch_app, lambda: Stub(ch).Submit(
            wire(registration(ALICE, JN, JN, KEYS[JN])), timeout=TIMEOUT))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "CERTIFICATE_REVOKED")
    with connect(city, city[1].renew(f"node-{JN}", now())) as ch:  # a renewed one works
        submit(Stub(ch), registration(ALICE, JN, JN, KEYS[JN]))


@pytest.mark.parametrize("who", ["no certificate", "another CA", "expired", "plaintext"])
def test_a_caller_without_a_good_certificate_never_gets_through(
        ch_app: ClearinghouseApp, city: tuple[RunningServer, Authority], tmp_path: Path,
        who: str) -> None:
    running, ca = city
    if who == "plaintext":
        ch = channel(f"127.0.0.1:{running.port}", None)
    elif who == "no certificate":
        ch = connect(city, None)
    elif who == "another CA":
        other = Authority.init(tmp_path / "other", "another city", now())
        ch = channel(f"127.0.0.1:{running.port}", client_tls(ca, issue(other, NODE, JN)))
    else:
        ch = connect(city, issue(ca, NODE, JN, at=now() - timedelta(days=40), days=30))
    with ch:
        code, _, _ = refused_unchanged(ch_app, lambda: Stub(ch).Submit(
            wire(registration(ALICE, JN, JN, KEYS[JN])), timeout=TIMEOUT))
    assert code is grpc.StatusCode.UNAVAILABLE


def test_every_rpc_is_classified_once() -> None:
    """A new rpc nobody classified would be refused to everyone: keep the table whole."""
    methods = set(pb.DESCRIPTOR.services_by_name["ClearinghouseService"].methods_by_name)
    tables = (callers.READS, callers.ENVELOPES, callers.BATCHES, callers.BUREAU)
    assert set().union(*tables) == methods
    assert sum(len(t) for t in tables) == len(methods)
    assert SERVICE_NAME == "timebank.v1.ClearinghouseService"



def test_a_server_certificate_is_no_caller(ch_app: ClearinghouseApp,
                                           city: tuple[RunningServer, Authority]) -> None:
    """A server's certificate (serverAuth only, naming no district) is not a client's:
    the handshake refuses it, and nothing changes."""
    with connect(city, issue(city[1], SERVER, "impostor")) as ch:
        code, _, _ = refused_unchanged(ch_app, lambda: Stub(ch).GetPositions(
            pb.GetPositionsRequest(), timeout=TIMEOUT))
    assert code is grpc.StatusCode.UNAVAILABLE
