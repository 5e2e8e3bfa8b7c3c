"""A settlement period end to end, with a real clearinghouse gRPC server and three
district nodes with their real links: hours cross districts, the witnesses cosign, the
clearinghouse closes the period, every node checks its line against its own ledger and
countersigns through its outbox, the statement becomes final, and every node posts it:
its clearing account returns to what is carried forward (a claim completed after the
period's end, which the node proves from the log rather than disputing it)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from city.audit.clearinghouse import open_clearinghouse
from city.audit.district import Node, node_checks
from city.audit.readonly import readonly_engine
from city.audit.report import Check
from clearinghouse.usecases import settlement as ch_settlement
from node.domain.ledger import CLEARING
from node.domain.settlement import SettlementState
from node.usecases import settlement
from node.usecases.app import Tx
from runtime.tls import channel
from tests.federation.conftest import CH_KEY, CITY_ROOT, City
from tests.federation.support import GL, JN, QX, family, order_for_mother, serve_and_record
from tests.helpers import assert_ledger_ok
from timebank.envelope import CLEARINGHOUSE, Signed, sign
from timebank.keys import public_key
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
    """Every district cosigns the latest head; its size."""
    sizes = [d.link.witness_once() for d in city.nodes.values()]
    with channel(city.address, city.observer) as ch:
        head = clearing_pb2_grpc.ClearinghouseServiceStub(ch).GetTreeHead(
            clearing_pb2.GetTreeHeadRequest(cosigned=True), timeout=5)
    assert head.size and max(sizes) >= head.size
    return int(head.size)


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
    later = _redeem(city, f, 45)  # completed after the period's end: carried forward
    assert _clearing(city, JN) == 60 + 30 + 45 and _clearing(city, GL) == -135

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
    carried = city[JN].app.query(lambda tx: tx.repo.settlements.ledger_claims(JN, [later]))
    assert carried[later].settled_serial == 0
    again = city[JN].link.settle_once()  # nothing more: serial 2 is not closed
    assert again.serial == 2 and again.state == ""

    for d in city.nodes.values():  # anchor the ledgers with their settlement entries
        assert d.link.checkpoint_now().queued
    city.settle()
    checks = _district_audit(city, tmp_path)
    assert checks and all(c.ok for c in checks), [c for c in checks if not c.ok]
