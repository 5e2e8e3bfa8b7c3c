"""A settlement period end to end, with a real clearinghouse gRPC server and three
district nodes with their real links: hours cross districts, the witnesses cosign, the
clearinghouse closes the period, every node checks its line against its own ledger and
countersigns through its outbox, the statement becomes final, and every node posts it:
its clearing account returns to what is carried forward (a claim completed after the
period's end, which the node proves from the log rather than disputing it)."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from nacl.signing import SigningKey
from prometheus_client import REGISTRY
from sqlalchemy import update

from city.audit.clearinghouse import open_clearinghouse
from city.audit.district import Node, node_checks
from city.audit.readonly import readonly_engine
from city.audit.report import Check
from clearinghouse.usecases import settlement as ch_settlement
from node.domain.ledger import CLEARING
from node.domain.settlement import SettlementState
from node.link.connection import Connection
from node.link.settlement import Settler
from node.storage.tables import CLAIMS
from node.usecases import claims, settlement
from node.usecases.app import Tx
from runtime.errors import NotFound
from runtime.tls import channel
from tests.federation.conftest import CH_KEY, CITY_ROOT, City
from tests.federation.support import GL, JN, QX, family, order_for_mother, serve_and_record
from tests.helpers import assert_ledger_ok
from timebank.envelope import CITY, CLEARINGHOUSE, Signed, decode, identity, sign
from timebank.keys import public_key
from timebank.settlement import DECISION_KIND
from timebank.v1 import clearing_pb2, clearing_pb2_grpc


def _sign(kind: str, body: bytes) -> Signed:
    return sign(kind, body, CLEARINGHOUSE, CH_KEY)


def _redeem(city: City, f: object, minutes: int) -> str:
    order = order_for_mother(city, f, minutes)  # type: ignore[arg-type]
    city.settle()
    serve_and_record(city, GL, order.record.id, f.mother, minutes)  # type: ignore[attr-defined]
    city.settle()
    assert order.record.claim_id
    return order.record.claim_id


def _clearing(city: City, node_id: str) -> int:
    def read(tx: Tx) -> int:
        found = tx.repo.ledger.account(CLEARING.code)
        return 0 if found is None else found.balance
    return city[node_id].app.query(read)


def _cosigned_size(city: City) -> int:
    """Every district cosigns the latest head (again, should the log grow between two
    districts' cosignatures); the size of the latest head a quorum cosigned."""
    with channel(city.address, city.observer) as ch:
        stub = clearing_pb2_grpc.ClearinghouseServiceStub(ch)
        for _ in range(5):
            for d in city.nodes.values():
                d.link.witness_once()
            try:
                head = stub.GetTreeHead(clearing_pb2.GetTreeHeadRequest(cosigned=True),
                                        timeout=5).head
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                continue
            return int(head.size)
    raise AssertionError("no head was cosigned by a quorum")


def _district_audit(city: City, tmp_path: Path) -> list[Check]:
    """The offline audit's checks of every district (its ledger's chain against the
    checkpoints the clearinghouse's log holds), from the databases alone."""
    found: list[Check] = []
    ch_engine = readonly_engine(f"sqlite:///{tmp_path / 'ch.sqlite3'}")
    try:
        with ch_engine.connect() as conn:
            ch = open_clearinghouse("ch.sqlite3", conn, public_key(CH_KEY),
                                    public_key(CITY_ROOT))
            for node_id, d in city.nodes.items():
                engine = readonly_engine(f"sqlite:///{tmp_path / f'{node_id}.sqlite3'}")
                try:
                    with engine.connect() as nconn:
                        found += node_checks(Node(node_id, d.name, nconn, node_id), ch)
                finally:
                    engine.dispose()
    finally:
        ch_engine.dispose()
    return found


def test_a_period_closes_every_node_countersigns_and_posts(city: City, tmp_path: Path) -> None:
    f = family(city, earned=300)
    _redeem(city, f, 60)
    _redeem(city, f, 30)
    end = _cosigned_size(city)
    closed = city.ch.execute(ch_settlement.close, _sign, up_to=end, label="2026-11-a")
    assert closed.statement.serial == 1 and not closed.final
    city.clock.advance(timedelta(minutes=1))
    later = _redeem(city, f, 30)  # completed after the period's end: carried forward
    also = _redeem(city, f, 15)
    assert _clearing(city, JN) == 60 + 30 + 45 and _clearing(city, GL) == -135
    city[JN].link.settler.proof_batch = 1  # two batches of proofs in one round

    answers = {n: d.link.settle_once() for n, d in city.nodes.items()}
    assert {n: r.state for n, r in answers.items()} == {
        n: SettlementState.COUNTERSIGNED for n in city.nodes}
    assert answers[JN].omitted == [] and answers[JN].unproven == 0  # proven after the end
    city.settle()  # the countersignatures go out through each node's outbox

    posted = {n: d.link.settle_once() for n, d in city.nodes.items()}

    assert all(r.state == SettlementState.POSTED and r.posted is not None
               for r in posted.values()), posted
    assert posted[JN].posted and posted[JN].posted.net_minutes == -90
    assert posted[GL].posted and posted[GL].posted.net_minutes == 90
    assert posted[QX].posted and posted[QX].posted.ledger_seq is None  # nothing to move
    assert _clearing(city, JN) == 45 and _clearing(city, GL) == -45  # carried forward
    assert _clearing(city, QX) == 0
    for d in city.nodes.values():
        assert_ledger_ok(d.app)
        assert d.app.query(settlement.next_serial) == 2
        shown = d.app.query(settlement.show, 1)
        assert shown.evidence is not None and shown.evidence.final
    carried = city[JN].app.query(lambda tx: tx.repo.settlements.ledger_claims(JN, [later,
                                                                                   also]))
    assert carried[later].settled_serial == carried[also].settled_serial == 0
    again = city[JN].link.settle_once()  # nothing more: serial 2 is not closed
    assert again.serial == 2 and again.state == ""

    for d in city.nodes.values():  # anchor the ledgers with their settlement entries
        assert d.link.checkpoint_now().queued
    city.settle()
    checks = _district_audit(city, tmp_path)
    assert checks and all(c.ok for c in checks), [c for c in checks if not c.ok]


def test_a_dispute_goes_to_the_bureau_and_its_decision_makes_the_statement_final(
        city: City) -> None:
    """江宁区's record of one claim says 10 minutes less than the clearinghouse's (its row
    edited, as a broken node might keep it): it disputes exactly that claim through the
    clearinghouse, nothing is final, the bureau upholds the statement by a city-signed
    decision, and every node posts it, 江宁区 as the city decided."""
    f = family(city, earned=300)
    claim_id = _redeem(city, f, 60)
    end = _cosigned_size(city)
    city.ch.execute(ch_settlement.close, _sign, up_to=end, label="2026-11-b")
    with city[JN].app.db.write() as conn:
        conn.execute(update(CLAIMS).where(CLAIMS.c.claim_id == claim_id)
                     .values(posted_minutes=50))

    answers = {n: d.link.settle_once() for n, d in city.nodes.items()}
    assert answers[JN].state == SettlementState.DISPUTED
    assert answers[GL].state == answers[QX].state == SettlementState.COUNTERSIGNED
    city.settle()
    found = city.ch.query(ch_settlement.get, 1)
    [raw] = found.disputes
    dispute = clearing_pb2.SettlementDispute.FromString(decode(raw).body)
    assert [(c.claim_id, c.reason, c.statement_minutes, c.ledger_minutes)
            for c in dispute.claims] == [(claim_id, "MINUTES_DIFFER", 60, 50)]
    assert not found.final
    assert all(d.link.settle_once().state != SettlementState.POSTED
               for d in city.nodes.values())

    body = clearing_pb2.SettlementDecision(
        serial=1, revision=1, statement_sha256=identity(decode(found.statements[0])),
        overruled_node_ids=[JN],
        reason="经核实，清算中心记录无误 / the clearinghouse's record holds")
    body.at.FromDatetime(city.clock.now())
    decided = city.ch.execute(ch_settlement.decide,
                              sign(DECISION_KIND, body.SerializeToString(), CITY, CITY_ROOT),
                              public_key(CITY_ROOT))
    assert decided.final

    posted = {n: d.link.settle_once() for n, d in city.nodes.items()}
    assert all(r.state == SettlementState.POSTED for r in posted.values()), posted
    assert posted[JN].posted and posted[JN].posted.net_minutes == -60
    assert "city decided" in city[JN].app.query(settlement.show, 1).record.detail
    assert _clearing(city, GL) == 0 and _clearing(city, JN) == 0


def test_a_statement_the_node_cannot_verify_changes_nothing(city: City) -> None:
    """The real clearinghouse's statement, read by a settler that trusts another
    clearinghouse key: refused (STATEMENT_NOT_SIGNED), counted, and nothing recorded or
    sent; the node's own settler, trusting the city's key, then answers it."""
    f = family(city, earned=300)
    _redeem(city, f, 60)
    city.ch.execute(ch_settlement.close, _sign, up_to=_cosigned_size(city), label="2026-11-c")
    jn = city[JN]
    refused = REGISTRY.get_sample_value("timebank_node_settlement_refused_total",
                                        {"reason": "STATEMENT_NOT_SIGNED"}) or 0.0
    with channel(city.address, None) as ch:
        other = Connection(clearing_pb2_grpc.ClearinghouseServiceStub(ch), city.address, JN,
                           jn.key, public_key(SigningKey(b"another clearinghouse".ljust(32))))
        found = Settler(jn.app, other, threading.Event(), jn.link.city).settle_once()
    assert found.refused.startswith("STATEMENT_NOT_SIGNED") and found.state == ""
    assert REGISTRY.get_sample_value("timebank_node_settlement_refused_total",
                                     {"reason": "STATEMENT_NOT_SIGNED"}) == refused + 1
    with pytest.raises(NotFound):
        jn.app.query(settlement.show, 0)
    assert jn.app.query(claims.clearing_view).unsent_messages == 0
    assert jn.link.settle_once().state == SettlementState.COUNTERSIGNED
