"""GetSettlement and GetSettlementClaims on a real clearinghouse over mutual TLS, and a
district's countersign through Submit: a node reads the statement and its claims, checks
its line and countersigns for its own district only. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import grpc
import pytest

from city.pki.certs import SERVER
from city.pki.store import Authority
from clearinghouse.api.server import RunningServer, SettlementSchedule, start_server
from clearinghouse.bureau import issue_policy
from clearinghouse.usecases import policies, settlement, wire
from clearinghouse.usecases.app import ClearinghouseApp
from clearinghouse.usecases.clock import ManualClock
from runtime.tls import NODE, OBSERVER, channel
from tests.clearinghouse.api.test_mtls import refused_unchanged
from tests.clearinghouse.conftest import CITY_KEY, CITY_PUBLIC
from tests.clearinghouse.settling import (
    CH_KEY,
    GL,
    JN,
    QX,
    ch_sign,
    close,
    complete,
    cosign_latest,
    countersign_env,
    found_city,
    log_size,
)
from tests.pki import client_tls, issue, server_tls
from timebank import settlement as st
from timebank.envelope import Signed, decode
from timebank.v1 import clearing_pb2 as pb
from timebank.v1 import clearing_pb2_grpc

TIMEOUT = 10.0
Stub = clearing_pb2_grpc.ClearinghouseServiceStub


@pytest.fixture
def city(ch_app: ClearinghouseApp, city_ca: Authority,
         ) -> Iterator[tuple[RunningServer, Authority]]:
    app = found_city(ch_app)
    complete(app, 1, GL, JN)
    complete(app, 2, QX, JN, minutes=45)
    complete(app, 3, JN, GL, minutes=30)
    cosign_latest(app)
    close(app, up_to=log_size(app), label="first")
    running = start_server(app, CH_KEY, "127.0.0.1:0",
                           tls=server_tls(city_ca, issue(city_ca, SERVER, "clearinghouse")))
    yield running, city_ca
    running.stop(1.0)


def _connect(city: tuple[RunningServer, Authority], kind: str, name: str) -> grpc.Channel:
    running, ca = city
    return channel(f"127.0.0.1:{running.port}", client_tls(ca, issue(ca, kind, name)))


def test_a_node_reads_checks_and_countersigns_its_line(
        ch_app: ClearinghouseApp, city: tuple[RunningServer, Authority]) -> None:
    with _connect(city, NODE, JN) as ch:
        stub = Stub(ch)
        got = stub.GetSettlement(pb.GetSettlementRequest(period="first"), timeout=TIMEOUT)
        assert len(got.statements) == 1 and not got.final
        envelope = decode(got.statements[0])
        statement = st.parse_statement(envelope.body)
        line = statement.sheet.line(JN)
        assert line is not None and line.net_minutes == -120 - 45 + 30
        page = stub.GetSettlementClaims(pb.GetSettlementClaimsRequest(
            serial=1, node_id=JN), timeout=TIMEOUT)
        listed = [st.SettledClaim(c.claim_id, c.creditor_node_id, c.debtor_node_id,
                                  c.minutes, "redemption", c.completed_index)
                  for c in page.claims]
        assert len(listed) == 3 and not page.more
        assert st.line_totals_hold(JN, line, listed)
        receipt = pb.Receipt.FromString(stub.Submit(
            _wire(countersign_env(JN, statement, envelope)), timeout=TIMEOUT).body)
        assert receipt.log_index > 0
        again = stub.GetSettlement(pb.GetSettlementRequest(serial=1), timeout=TIMEOUT)
        assert len(again.countersigns) == 1
        # 江宁区's certificate with 鼓楼区's countersign: refused before anything changes
        code, reason, _ = refused_unchanged(ch_app, lambda: stub.Submit(
            _wire(countersign_env(GL, statement, envelope)), timeout=TIMEOUT))
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                  "CERTIFICATE_NOT_FOR_DISTRICT")
        # 江宁区's key naming 鼓楼区, on 江宁区's own certificate
        code, reason, message = refused_unchanged(ch_app, lambda: stub.Submit(
            _wire(countersign_env(JN, statement, envelope, named=GL)), timeout=TIMEOUT))
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_YOUR_SIGNATURE")
        assert message.startswith("区 320115 只能以自己的名义签署")


def test_reads_are_bounded_and_refused_clearly(
        ch_app: ClearinghouseApp, city: tuple[RunningServer, Authority]) -> None:
    with _connect(city, OBSERVER, "bureau-finance") as ch:
        stub = Stub(ch)
        assert stub.GetSettlement(pb.GetSettlementRequest(), timeout=TIMEOUT).statements
        everything = stub.GetSettlementClaims(pb.GetSettlementClaimsRequest(serial=1),
                                              timeout=TIMEOUT)
        assert len(everything.claims) == 3
        for request, code, reason in (
                (pb.GetSettlementRequest(serial=9), grpc.StatusCode.NOT_FOUND,
                 "UNKNOWN_STATEMENT"),
                (pb.GetSettlementRequest(period="2020-01"), grpc.StatusCode.NOT_FOUND,
                 "UNKNOWN_STATEMENT")):
            found = refused_unchanged(ch_app, lambda r=request: stub.GetSettlement(
                r, timeout=TIMEOUT))
            assert found[:2] == (code, reason)
            assert "没有" in found[2] or "未结算" in found[2]
        for claims_request, reason in (
                (pb.GetSettlementClaimsRequest(serial=1, node_id="x"), "BAD_NODE_ID"),
                (pb.GetSettlementClaimsRequest(serial=1, after_claim_id="zz"), "BAD_PAGE")):
            found = refused_unchanged(ch_app, lambda r=claims_request: stub.GetSettlementClaims(
                r, timeout=TIMEOUT))
            assert found[:2] == (grpc.StatusCode.INVALID_ARGUMENT, reason)


def _wire(envelope: Signed) -> pb.Envelope:
    return pb.Envelope.FromString(wire.to_bytes(envelope))


def test_the_serving_schedule_closes_the_last_month_once(ch_app: ClearinghouseApp,
                                                         ch_clock: ManualClock) -> None:
    """The serve loop's SettlementSchedule: nothing while the policy is manual or the
    month not due; then the month closed once, however many rounds (or replicas) run."""
    app = found_city(ch_app)
    complete(app, 1, GL, JN)
    schedule = SettlementSchedule(app, lambda: ch_sign)
    ch_clock.advance(datetime(2026, 4, 3, 1, 0, tzinfo=UTC) - ch_clock.now())
    app.execute(lambda tx: None)
    cosign_latest(app)
    assert schedule.run_once() is None  # the policy says nothing: manual
    now = app.clock.now()
    text = "[settlement]\nschedule = \"monthly\"\nclose_after_days = 2\n"
    app.execute(policies.issue, issue_policy(CITY_KEY, 1, text, now, now), CITY_PUBLIC)
    cosign_latest(app)
    closed = schedule.run_once()
    assert closed is not None and closed.statement.period == "2026-03"
    other_replica = SettlementSchedule(app, lambda: ch_sign)
    assert other_replica.run_once() is None and schedule.run_once() is None
    assert len(app.query(settlement.get, 0, "2026-03").statements) == 1
