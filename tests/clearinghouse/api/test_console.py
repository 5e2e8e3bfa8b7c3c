"""What the bureau's console asks of the clearinghouse, on a real server over mutual TLS
with real certificates from a real city CA, on SQLite and on PostgreSQL:

* ``ListClaims``: a city's claims in every state, newest first, filtered by state and by
  district, a page at a time, the page bounded; bad filters refused clearly; anyone with
  a certificate of the city reads it;
* ``CloseSettlement``: a bureau operator's certificate closes a period that is due, as
  `settle close` would, and the statement is then what GetSettlement returns; refused to
  a node's and an observer's certificate, to a plaintext caller, and for bad input, each
  refusal changing nothing; a bureau certificate never acts for a district.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import grpc
import pytest
import structlog
from sqlalchemy import Table, insert

from city.pki.certs import SERVER
from city.pki.store import Authority
from clearinghouse.api import callers
from clearinghouse.api.server import RunningServer, start_server
from clearinghouse.storage import schema
from clearinghouse.usecases import claims, settlement
from clearinghouse.usecases.app import ClearinghouseApp
from clearinghouse.usecases.clock import ManualClock
from runtime.tls import BUREAU, NODE, OBSERVER, channel
from tests.clearinghouse.api.test_mtls import refused_unchanged
from tests.clearinghouse.settling import (
    CH_KEY,
    GL,
    HOMES,
    JN,
    QX,
    complete,
    cosign_latest,
    countersign_env,
    found_city,
    log_size,
    send,
)
from tests.clearinghouse.usecases.test_claims import KEYS, cid, decision, finishing, proposal
from tests.pki import client_tls, issue, server_tls
from timebank import settlement as st
from timebank.envelope import CLEARINGHOUSE, decode, encode, verify
from timebank.keys import public_key
from timebank.v1 import clearing_pb2 as pb
from timebank.v1 import clearing_pb2_grpc

TIMEOUT = 10.0
Stub = clearing_pb2_grpc.ClearinghouseServiceStub
ListRequest = pb.ClearinghouseServiceListClaimsRequest
CLAIMS = cast(Table, schema.ClaimRow.__table__)
REASON = "月末结算 / the month's settlement"
City = tuple[RunningServer, Authority]

#: The city's claims: n → (creditor, debtor, the state it is left in).
CLAIM_STATES = {
    1: (GL, JN, pb.CLAIM_STATE_COMPLETED),
    2: (QX, JN, pb.CLAIM_STATE_COMPLETED),
    3: (JN, GL, pb.CLAIM_STATE_COMPLETED),
    4: (QX, GL, pb.CLAIM_STATE_PROPOSED),
    5: (JN, QX, pb.CLAIM_STATE_ACCEPTED),
    6: (GL, QX, pb.CLAIM_STATE_REJECTED),
    7: (QX, JN, pb.CLAIM_STATE_VOIDED),
    8: (JN, GL, pb.CLAIM_STATE_EXPIRED),
}


def _claims_in_every_state(app: ClearinghouseApp, clock: ManualClock) -> None:
    """CLAIM_STATES, made through Submit (claim 8 expired by the clock), each a minute
    after the one before."""
    for n, (creditor, debtor, state) in CLAIM_STATES.items():
        clock.advance(timedelta(minutes=1))
        if state == pb.CLAIM_STATE_COMPLETED:
            complete(app, n, creditor, debtor, minutes=30 + n)
            continue
        window = timedelta(hours=1) if state == pb.CLAIM_STATE_EXPIRED else timedelta(days=7)
        send(app, proposal(n, app, creditor=creditor, debtor=debtor, payer=HOMES[debtor],
                           minutes=30 + n, window=window))
        if state == pb.CLAIM_STATE_REJECTED:
            send(app, decision(n, accept=False, reason=pb.CLAIM_REASON_INSUFFICIENT_BALANCE,
                               signer=debtor))
        elif state in (pb.CLAIM_STATE_ACCEPTED, pb.CLAIM_STATE_VOIDED):
            send(app, decision(n, signer=debtor))
        if state == pb.CLAIM_STATE_VOIDED:
            send(app, finishing(n, complete=False, reason=pb.CLAIM_REASON_CANCELLED,
                                signer=creditor))
    clock.advance(timedelta(hours=2))
    assert [c.claim_id for c in app.execute(claims.expire_due)] == [cid(8)]


def _serve(app: ClearinghouseApp, ca: Authority) -> RunningServer:
    return start_server(app, CH_KEY, "127.0.0.1:0",
                        tls=server_tls(ca, issue(ca, SERVER, "clearinghouse")))


@pytest.fixture
def city(ch_app: ClearinghouseApp, ch_clock: ManualClock, city_ca: Authority,
         ) -> Iterator[City]:
    """Three districts and a claim in every state, served over mutual TLS."""
    app = found_city(ch_app)
    _claims_in_every_state(app, ch_clock)
    running = _serve(app, city_ca)
    yield running, city_ca
    running.stop(1.0)


def _connect(city: City, kind: str, name: str) -> grpc.Channel:
    running, ca = city
    return channel(f"127.0.0.1:{running.port}", client_tls(ca, issue(ca, kind, name)))


def _ids(answer: pb.ClearinghouseServiceListClaimsResponse) -> list[int]:
    """The claims of a page as their numbers (``cid(n)``)."""
    return [int(c.claim_id.rsplit("-", 1)[1], 16) for c in answer.claims]


def _listed(stub: Stub, **fields: Any) -> pb.ClearinghouseServiceListClaimsResponse:
    answer: pb.ClearinghouseServiceListClaimsResponse = stub.ListClaims(
        ListRequest(**fields), timeout=TIMEOUT)
    return answer


def _pages(stub: Stub, **fields: Any) -> list[list[int]]:
    """Every page from the newest, following the cursor."""
    pages, cursor = [], ""
    while True:
        answer = _listed(stub, before_claim_id=cursor, **fields)
        pages.append(_ids(answer))
        cursor = answer.next_before_claim_id
        if not cursor:
            return pages
        assert cursor == answer.claims[-1].claim_id
        assert len(pages) < 100


# ------------------------------------------------------------------ ListClaims


def test_every_claim_newest_first_with_what_the_clearinghouse_keeps(
        ch_app: ClearinghouseApp, city: City) -> None:
    with _connect(city, OBSERVER, "console") as ch:
        stub = Stub(ch)
        everything = _listed(stub)
        entries = stub.GetEntries(pb.GetEntriesRequest(start=0, end=log_size(ch_app)),
                                  timeout=TIMEOUT).entries
    assert _ids(everything) == [8, 7, 6, 5, 4, 3, 2, 1]
    assert everything.next_before_claim_id == ""
    rows = {int(c.claim_id[-12:], 16): c for c in everything.claims}
    for n, (creditor, debtor, state) in CLAIM_STATES.items():
        row = rows[n]
        assert (row.creditor_node_id, row.debtor_node_id, row.state, row.minutes) == (
            creditor, debtor, state, 30 + n), n
        assert row.kind == pb.CLAIM_KIND_REDEMPTION
        assert row.proposed_at.ToDatetime(UTC) <= row.state_at.ToDatetime(UTC)
        assert row.expires_at.ToDatetime(UTC) > row.proposed_at.ToDatetime(UTC)
        assert row.HasField("completed_index") == (state == pb.CLAIM_STATE_COMPLETED)
        assert not row.HasField("settled_serial")
        if state == pb.CLAIM_STATE_COMPLETED:
            assert row.posted_minutes == 30 + n
            # the leaf that completed it is the log's claim leaf saying so
            leaf = pb.LogEntry.FromString(entries[row.completed_index])
            assert (leaf.kind, leaf.claim_id, leaf.state) == ("claim", cid(n), state)
        else:
            assert row.posted_minutes == 0
    assert rows[4].state_at == rows[4].proposed_at  # still as proposed
    assert rows[6].reason == pb.CLAIM_REASON_INSUFFICIENT_BALANCE
    assert rows[7].reason == pb.CLAIM_REASON_CANCELLED
    assert rows[8].reason == pb.CLAIM_REASON_EXPIRED
    assert rows[8].state_at.ToDatetime(UTC) == ch_app.clock.now()  # when the sweep ran
    assert rows[1].reason == pb.CLAIM_REASON_UNSPECIFIED
    # no PersonRef leaves: the listing names districts and minutes only
    assert not any(ref.encode() in everything.SerializeToString() for ref in HOMES.values())


@pytest.mark.parametrize(("fields", "expected"), [
    ({"state": pb.CLAIM_STATE_COMPLETED}, [3, 2, 1]),
    ({"state": pb.CLAIM_STATE_PROPOSED}, [4]),
    ({"state": pb.CLAIM_STATE_ACCEPTED}, [5]),
    ({"state": pb.CLAIM_STATE_REJECTED}, [6]),
    ({"state": pb.CLAIM_STATE_VOIDED}, [7]),
    ({"state": pb.CLAIM_STATE_EXPIRED}, [8]),
    ({"node_id": JN}, [8, 7, 5, 3, 2, 1]),  # creditor or debtor
    ({"node_id": QX}, [7, 6, 5, 4, 2]),
    ({"node_id": JN, "state": pb.CLAIM_STATE_COMPLETED}, [3, 2, 1]),
    ({"node_id": GL, "state": pb.CLAIM_STATE_EXPIRED}, [8]),
    ({"node_id": QX, "state": pb.CLAIM_STATE_EXPIRED}, []),
    ({"node_id": "110101"}, []),  # well formed, never admitted: nothing to list
])
def test_filters_by_state_and_district(city: City, fields: dict[str, Any],
                                       expected: list[int]) -> None:
    with _connect(city, NODE, JN) as ch:  # any certificate of the city reads
        answer = _listed(Stub(ch), **fields)
    assert _ids(answer) == expected and answer.next_before_claim_id == ""


def test_pages_follow_the_cursor_without_gaps_or_repeats(
        ch_app: ClearinghouseApp, ch_clock: ManualClock, city: City) -> None:
    with _connect(city, BUREAU, "zhang-wei") as ch:
        stub = Stub(ch)
        assert _pages(stub, page_size=3) == [[8, 7, 6], [5, 4, 3], [2, 1]]
        assert _pages(stub, page_size=3, node_id=JN) == [[8, 7, 5], [3, 2, 1]]
        assert _pages(stub, page_size=2, node_id=QX, state=pb.CLAIM_STATE_COMPLETED) == [[2]]
        assert _pages(stub, page_size=1, state=pb.CLAIM_STATE_COMPLETED) == [[3], [2], [1]]
        # a cursor is a bound, not a row: claims made since sort above it, and the next
        # page goes on where the last one stopped
        first = _listed(stub, page_size=4)
        ch_clock.advance(timedelta(minutes=1))
        complete(ch_app, 9, GL, QX)
        rest = _listed(stub, page_size=4, before_claim_id=first.next_before_claim_id)
        assert _ids(first) == [8, 7, 6, 5] and _ids(rest) == [4, 3, 2, 1]
        assert _ids(_listed(stub, page_size=1)) == [9]


def _many(app: ClearinghouseApp, count: int) -> list[str]:
    """``count`` completed claims between JN and GL written straight into the table (a
    large city's set-up, not what is looked at), with UUIDv7 ids a millisecond apart."""
    now = app.clock.now()
    start = int(now.timestamp() * 1000)
    ids = []
    rows = []
    for i in range(count):
        ms = start + i
        raw = (ms << 80) | (0x7 << 76) | (0x2 << 62) | i
        claim_id = str(uuid.UUID(int=raw))
        ids.append(claim_id)
        creditor, debtor = (JN, GL) if i % 2 else (GL, JN)
        rows.append(dict(claim_id=claim_id, kind="redemption", creditor=creditor,
                         debtor=debtor, payer_ref=f"{i:064x}", minutes=60, posted_minutes=60,
                         state="completed", reason=None, created_at=now,
                         expires_at=now + timedelta(days=1), updated_at=now, proposal=b"p",
                         completed_index=i))
    with app.db.write() as conn:
        conn.execute(insert(CLAIMS), rows)
    return ids


def test_a_page_is_bounded(ch_app: ClearinghouseApp, city_ca: Authority) -> None:
    ids = _many(found_city(ch_app), 260)
    newest = sorted(ids, reverse=True)
    running = _serve(ch_app, city_ca)
    try:
        with _connect((running, city_ca), OBSERVER, "console") as ch:
            stub = Stub(ch)
            default = _listed(stub)
            assert [c.claim_id for c in default.claims] == newest[:50]
            assert default.next_before_claim_id == newest[49]
            most = _listed(stub, page_size=5000)  # more than 200 is read as 200
            assert [c.claim_id for c in most.claims] == newest[:200]
            rest = _listed(stub, page_size=200, before_claim_id=most.next_before_claim_id)
            assert [c.claim_id for c in rest.claims] == newest[200:]
            assert rest.next_before_claim_id == ""
            mine = _listed(stub, page_size=200, node_id=JN, state=pb.CLAIM_STATE_COMPLETED)
            assert [c.claim_id for c in mine.claims] == newest[:200]  # JN is in every one
            odd = _pages(stub, page_size=200, node_id=QX)
            assert odd == [[]]
    finally:
        running.stop(1.0)


@pytest.mark.parametrize(("fields", "reason", "starts"), [
    ({"state": 99}, "BAD_STATE", "未知的账目状态 99 / unknown claim state 99"),
    ({"node_id": "32011x"}, "BAD_NODE_ID", "区编号是六位数字"),
    ({"node_id": "3201150"}, "BAD_NODE_ID", "区编号是六位数字"),
    ({"before_claim_id": "yesterday"}, "BAD_CURSOR", "before_claim_id 不是账目编号"),
    ({"before_claim_id": cid(3).upper()}, "BAD_CURSOR", "before_claim_id 不是账目编号"),
])
def test_bad_filters_are_refused_clearly(ch_app: ClearinghouseApp, city: City,
                                         fields: dict[str, Any], reason: str,
                                         starts: str) -> None:
    with _connect(city, OBSERVER, "console") as ch:
        code, got, message = refused_unchanged(ch_app, lambda: _listed(Stub(ch), **fields))
    assert (code, got) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert message.startswith(starts) and "/ " in message, message


# ------------------------------------------------------------------ CloseSettlement


@pytest.fixture
def march(ch_app: ClearinghouseApp, ch_clock: ManualClock, city_ca: Authority,
          ) -> Iterator[City]:
    """Claims made in March; now 2 April, the districts have witnessed the log: March
    is due to close. Served over mutual TLS."""
    app = found_city(ch_app)
    _claims_in_every_state(app, ch_clock)
    ch_clock.advance(datetime(2026, 4, 2, 9, 0, tzinfo=UTC) - ch_clock.now())
    app.execute(lambda tx: None)  # a head of the log as March left it
    cosign_latest(app)
    running = _serve(app, city_ca)
    yield running, city_ca
    running.stop(1.0)


def _close(stub: Stub, **fields: Any) -> pb.CloseSettlementResponse:
    answer: pb.CloseSettlementResponse = stub.CloseSettlement(
        pb.CloseSettlementRequest(**fields), timeout=TIMEOUT)
    return answer


def test_a_bureau_operator_closes_a_due_month(ch_app: ClearinghouseApp,
                                              march: City) -> None:
    with _connect(march, BUREAU, "zhang-wei") as ch:
        stub = Stub(ch)
        with structlog.testing.capture_logs() as logs:
            closed = _close(stub, period="2026-03", reason=REASON)
        read = stub.GetSettlement(pb.GetSettlementRequest(period="2026-03"), timeout=TIMEOUT)
        head = stub.GetTreeHead(pb.GetTreeHeadRequest(), timeout=TIMEOUT).head
        leaf = pb.LogEntry.FromString(stub.GetEntries(pb.GetEntriesRequest(
            start=closed.log_index, end=closed.log_index + 1), timeout=TIMEOUT).entries[0])
        settled = _listed(stub, state=pb.CLAIM_STATE_COMPLETED)
    assert (closed.serial, closed.period, closed.revision, closed.final) == (
        1, "2026-03", 1, False)
    # what GetSettlement returns, signed with the clearinghouse key, logged at its leaf
    assert list(read.statements) == [closed.statement]
    assert list(read.log_indexes) == [closed.log_index] and head.size > closed.log_index
    envelope = decode(closed.statement)
    assert (envelope.kind, envelope.signer) == (st.STATEMENT_KIND, CLEARINGHOUSE)
    statement = st.parse_statement(verify(envelope, public_key(CH_KEY)))
    assert (leaf.kind, leaf.envelope) == (st.STATEMENT_KIND, encode(envelope))
    assert statement.sheet.claims == 3
    line = statement.sheet.line(JN)
    assert line is not None and line.net_minutes == -31 - 32 + 33
    # the same as `settle close` makes: the claims are settled by statement 1
    assert [c.settled_serial for c in settled.claims] == [1, 1, 1]
    # logged with the operator's name and why
    done = [e for e in logs if e["event"].startswith("结算期已由民政局操作员关闭")]
    assert len(done) == 1
    assert (done[0]["operator"], done[0]["period"], done[0]["serial"], done[0]["reason"],
            done[0]["log_index"]) == ("zhang-wei", "2026-03", 1, REASON, closed.log_index)
    rpc = [e for e in logs if e["event"] == "rpc" and e["method"] == "CloseSettlement"]
    assert rpc[0]["operator"] == "zhang-wei" and rpc[0]["code"] == "OK"
    # and the districts countersign it as any statement
    receipt = send(ch_app, countersign_env(JN, statement, envelope))
    assert receipt.receipt
    assert len(ch_app.query(settlement.get, 1).countersigns) == 1


def test_a_log_size_closes_with_a_label(ch_app: ClearinghouseApp, march: City) -> None:
    with _connect(march, BUREAU, "li-na") as ch:
        closed = _close(Stub(ch), up_to=log_size(ch_app), label="spring",
                        reason="试运行 / a trial period")
    statement = st.parse_statement(decode(closed.statement).body)
    assert (closed.period, statement.end, statement.sheet.claims) == (
        "spring", log_size(ch_app) - 1, 3)  # its own leaf came after the end


@pytest.mark.parametrize(("fields", "code", "reason", "starts"), [
    ({"period": "2026-04", "reason": REASON}, grpc.StatusCode.FAILED_PRECONDITION,
     "PERIOD_NOT_ENDED", "期间 2026-04 尚未结束"),
    ({"up_to": 10**6, "reason": REASON}, grpc.StatusCode.FAILED_PRECONDITION,
     "PERIOD_NOT_ENDED", "日志只有"),
    ({"period": "2026-13", "reason": REASON}, grpc.StatusCode.INVALID_ARGUMENT,
     "BAD_PERIOD", "期间无效"),
    ({"period": "March", "reason": REASON}, grpc.StatusCode.INVALID_ARGUMENT,
     "BAD_PERIOD", "期间无效"),
    ({"reason": REASON}, grpc.StatusCode.INVALID_ARGUMENT, "BAD_PERIOD",
     "给出 period（YYYY-MM）或 up_to（日志条数）之一"),
    ({"period": "2026-03", "label": "march", "reason": REASON},
     grpc.StatusCode.INVALID_ARGUMENT, "BAD_PERIOD", "label 只与 up_to 一起用"),
    ({"period": "2026-03", "reason": "  "}, grpc.StatusCode.INVALID_ARGUMENT, "BAD_REASON",
     "写明结算理由"),
    ({"period": "2026-03", "reason": "x" * 1001}, grpc.StatusCode.INVALID_ARGUMENT,
     "BAD_REASON", "写明结算理由"),
])
def test_what_cannot_close_is_refused_and_changes_nothing(
        ch_app: ClearinghouseApp, march: City, fields: dict[str, Any],
        code: grpc.StatusCode, reason: str, starts: str) -> None:
    with _connect(march, BUREAU, "zhang-wei") as ch:
        got = refused_unchanged(ch_app, lambda: _close(Stub(ch), **fields))
    assert got[:2] == (code, reason)
    assert got[2].startswith(starts) and "/ " in got[2], got[2]


def test_a_closed_period_is_not_closed_again(ch_app: ClearinghouseApp,
                                            march: City) -> None:
    with _connect(march, BUREAU, "zhang-wei") as ch:
        stub = Stub(ch)
        _close(stub, period="2026-03", reason=REASON)
        code, reason, message = refused_unchanged(
            ch_app, lambda: _close(stub, period="2026-03", reason=REASON))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ALREADY_CLOSED")
    assert message.startswith("期间 2026-03 已结算 / the period 2026-03 is closed already")


@pytest.mark.parametrize(("kind", "name"), [(NODE, JN), (OBSERVER, "console")])
def test_only_a_bureau_certificate_closes(ch_app: ClearinghouseApp, march: City,
                                          kind: str, name: str) -> None:
    with _connect(march, kind, name) as ch:
        code, reason, message = refused_unchanged(
            ch_app, lambda: _close(Stub(ch), period="2026-03", reason=REASON))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_A_BUREAU_CERTIFICATE")
    assert message.startswith("只有民政局操作员证书能调用 CloseSettlement")
    assert f"this certificate names {kind} {name}" in message


def test_a_plaintext_caller_cannot_close(ch_app: ClearinghouseApp,
                                         ch_clock: ManualClock) -> None:
    """Without TLS nobody is bound to a certificate; closing needs one all the same."""
    app = found_city(ch_app)
    complete(app, 1, GL, JN)
    ch_clock.advance(datetime(2026, 4, 2, 9, 0, tzinfo=UTC) - ch_clock.now())
    app.execute(lambda tx: None)
    cosign_latest(app)
    running = start_server(app, CH_KEY, "127.0.0.1:0")
    try:
        with channel(f"127.0.0.1:{running.port}", None) as ch:
            code, reason, message = refused_unchanged(
                ch_app, lambda: _close(Stub(ch), period="2026-03", reason=REASON))
    finally:
        running.stop(1.0)
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_A_BUREAU_CERTIFICATE")
    assert message.startswith("只有民政局操作员证书能调用此方法")


def test_a_bureau_certificate_reads_and_never_acts_for_a_district(
        ch_app: ClearinghouseApp, march: City) -> None:
    from tests.clearinghouse.api.test_service import acknowledgement, subscription, wire
    from timebank.envelope import sign

    cosign = sign("cosign", pb.CosignBody(node_id=JN, size=1).SerializeToString(), JN,
                  KEYS[JN])
    with _connect(march, BUREAU, "zhang-wei") as ch:
        stub = Stub(ch)
        assert {n.node_id for n in stub.GetPositions(pb.GetPositionsRequest(),
                                                     timeout=TIMEOUT).nodes} == {JN, GL, QX}
        assert stub.GetTreeHead(pb.GetTreeHeadRequest(), timeout=TIMEOUT).head.note
        assert _ids(_listed(stub, page_size=2)) == [8, 7]
        own = proposal(20, ch_app, creditor=GL, debtor=JN, payer=HOMES[JN])
        attempts: dict[str, Any] = {
            "Submit": lambda: stub.Submit(wire(own), timeout=TIMEOUT),
            "SubmitBatch": lambda: stub.SubmitBatch(pb.SubmitBatchRequest(
                envelopes=[wire(own).SerializeToString()]), timeout=TIMEOUT),
            "Subscribe": lambda: list(stub.Subscribe(
                subscription(JN, 0, ch_app.clock.now()), timeout=TIMEOUT)),
            "Ack": lambda: stub.Ack(acknowledgement(JN, 0), timeout=TIMEOUT),
            "AddCosignature": lambda: stub.AddCosignature(wire(cosign), timeout=TIMEOUT),
        }
        assert set(attempts) == callers.ENVELOPES | callers.BATCHES
        for method, attempt in attempts.items():
            code, reason, message = refused_unchanged(ch_app, attempt)
            assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                      "NOT_A_NODE_CERTIFICATE"), method
            assert message.startswith("民政局操作员证书（zhang-wei）不代表任何区"), message


def test_a_revoked_bureau_certificate_closes_nothing(ch_app: ClearinghouseApp,
                                                     march: City) -> None:
    running, ca = march
    leaf = issue(ca, BUREAU, "zhang-wei")
    assert ca.revoke(leaf.serial, datetime.now(UTC))
    with channel(f"127.0.0.1:{running.port}", client_tls(ca, leaf)) as ch:
        code, reason, _ = refused_unchanged(
            ch_app, lambda: _close(Stub(ch), period="2026-03", reason=REASON))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "CERTIFICATE_REVOKED")

