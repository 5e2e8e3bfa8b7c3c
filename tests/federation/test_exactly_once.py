"""Exactly-once effects over at-least-once delivery: a delivery or a receipt applied
again changes nothing, a gap is refused, and links restarted mid-run post every claim
once."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import text

from clearinghouse.domain.claims import ClaimState as ChState
from clearinghouse.usecases import claims as ch_claims
from node.domain.claims import ClaimState
from node.domain.ledger import CONSUMPTION
from node.domain.orders import OrderState
from node.link.subscriber import ACK_EVERY_SECONDS
from node.usecases import claims, ledger, orders
from node.usecases.app import NodeApp
from node.usecases.views import Actor
from runtime.errors import InvariantViolation
from tests.federation.conftest import City
from tests.federation.support import (
    GL,
    JN,
    QX,
    assert_consistent,
    assert_nothing_held,
    ch_claim,
    family,
    node_claim,
    order_for_mother,
    restart_link,
    serve_and_record,
)
from tests.helpers import account_balance, snapshot
from timebank.v1 import clearing_pb2 as pb


def _deliveries(city: City, node_id: str) -> list[pb.Delivery]:
    rows = city.ch.query(ch_claims.deliveries_after, node_id, 0, 1000)
    return [pb.Delivery.FromString(body) for _, body in rows]


def _scalar(app: NodeApp, sql: str) -> int:
    with app.db.read() as conn:
        return int(conn.execute(text(sql)).scalar_one())


def test_replayed_deliveries_and_receipts_change_nothing(city: City) -> None:
    f = family(city)
    order = order_for_mother(city, f)
    city.settle()
    serve_and_record(city, GL, order.record.id, f.mother)
    city.settle()
    claim_id = order.record.claim_id
    assert claim_id and ch_claim(city, claim_id) is ChState.COMPLETED
    for d in city.nodes.values():
        d.link.stop()  # nothing else touches the databases now
    before = {n: snapshot(d.app) for n, d in city.nodes.items()}

    for node_id, d in city.nodes.items():
        delivered = _deliveries(city, node_id)
        assert [x.seq for x in delivered] == list(range(1, len(delivered) + 1))
        assert d.app.query(claims.last_applied_seq) == len(delivered)
        city_view = d.link.city.current()
        for delivery in delivered:
            again = d.app.execute(claims.apply_delivery, delivery, city_view)
            assert not again.new and again.refused is None
        if delivered:  # a delivery past a gap is a bug: refused, nothing applied
            gap = pb.Delivery()
            gap.CopyFrom(delivered[-1])
            gap.seq = len(delivered) + 2
            with pytest.raises(InvariantViolation):
                d.app.execute(claims.apply_delivery, gap, city_view)
        with d.app.db.read() as conn:
            sent = [int(r[0]) for r in conn.execute(text("SELECT id FROM outbox"))]
        for message_id in sent:  # every receipt again, even one saying something else
            d.app.execute(claims.apply_receipt, message_id, pb.CLAIM_STATE_COMPLETED, 0)
            d.app.execute(claims.apply_refusal, message_id, "FAILED_PRECONDITION",
                          "CLAIM_STATE", "replayed")
            d.app.execute(claims.retry_later, message_id, "replayed")
    assert {n: snapshot(d.app) for n, d in city.nodes.items()} == before

    assert city[JN].app.query(ledger.balance, f.daughter).total == 60
    assert city[GL].app.query(orders.get_order, order.record.id).record.charged_minutes == 60
    # the daughter's consent paid this claim once, however often its proposal arrived
    (used,) = city[JN].app.query(lambda tx: tx.repo.consents.of_payer(f.daughter))
    assert used.used_minutes == 60
    assert _scalar(city[JN].app, "SELECT count(*) FROM consent_uses") == 1
    assert_nothing_held(city)
    assert assert_consistent(city) == {GL: 60, JN: -60, QX: 0}


def test_restarting_links_mid_run_posts_every_claim_once(city: City) -> None:
    f = family(city, earned=600)
    gl = city[GL].app
    first = [order_for_mother(city, f, 30) for _ in range(3)]
    city[GL].link.stop()  # proposals of the next orders wait in 鼓楼区's outbox
    later = [order_for_mother(city, f, 30) for _ in range(3)]
    city[JN].link.stop()  # and 江宁区 may be mid-stream when it goes
    restart_link(city, GL)
    restart_link(city, JN)
    city.settle()
    every = first + later
    for order in every:
        claim_id = order.record.claim_id
        assert claim_id
        assert node_claim(city, GL, claim_id) is ClaimState.ACCEPTED
        assert node_claim(city, JN, claim_id) is ClaimState.ACCEPTED
    assert city[JN].app.query(ledger.balance, f.daughter).held == 180

    for order in every:
        gl.execute(orders.check_in, order.record.id)
    city.clock.advance(timedelta(minutes=30))
    for order in every:
        gl.execute(orders.check_out, order.record.id)
        gl.execute(orders.verify_order, order.record.id, Actor(person_id=f.mother), 5, "")
    city.clock.advance(timedelta(days=gl.policy.publicity_days))
    gl.execute(orders.record_order, every[0].record.id)
    gl.execute(orders.record_order, every[1].record.id)
    city[GL].link.stop()  # the finishes of the rest are written while it is down
    city[JN].link.stop()
    for order in every[2:]:
        gl.execute(orders.record_order, order.record.id)
    restart_link(city, JN)
    restart_link(city, GL)
    city.settle()
    city[JN].link.stop()  # once more, after everything: resubscribing replays nothing
    restart_link(city, JN)
    city.settle()

    for order in every:
        claim_id = order.record.claim_id
        assert claim_id
        assert ch_claim(city, claim_id) is ChState.COMPLETED
        for node_id in (GL, JN):
            assert node_claim(city, node_id, claim_id) is ClaimState.COMPLETED
        record = gl.query(orders.get_order, order.record.id).record
        assert record.state == OrderState.RECORDED and record.charged_minutes == 30
    # each node posted its leg of each claim exactly once
    for node_id in (GL, JN):
        app = city[node_id].app
        assert _scalar(app, "SELECT COUNT(*) FROM entries WHERE kind = 'claim'") == 6
        last = city.ch.query(lambda tx, n=node_id: tx.repo.last_delivery_seq(n))
        assert _scalar(app, "SELECT COUNT(*) FROM inbox") == last
    assert city[JN].app.query(ledger.balance, f.daughter).total == 600 - 180
    assert account_balance(gl, CONSUMPTION.code) == (180, 0)
    assert city[GL].app.query(ledger.balance, f.volunteer).total == 180
    assert_nothing_held(city)
    assert assert_consistent(city) == {GL: 180, JN: -180, QX: 0}


def test_the_clearinghouse_learns_what_a_node_applied_from_its_acknowledgements(
        city: City) -> None:
    # Acknowledgements go out beside the deliveries, not in their way: the
    # clearinghouse's cursor still follows what the node applied.
    f = family(city, earned=600)

    def acked() -> int:
        return int(city.ch.query(lambda tx: tx.repo.acked_seq(JN)))

    def applied() -> int:
        return int(city[JN].app.query(claims.last_applied_seq))

    order_for_mother(city, f, 30)
    city.settle()
    time.sleep(ACK_EVERY_SECONDS + 0.1)  # the next delivery is acknowledged at once
    order_for_mother(city, f, 30)
    city.settle()
    assert applied() > 0
    city.wait_for(lambda: acked() == applied())
    assert acked() == city.ch.query(lambda tx: tx.repo.last_delivery_seq(JN))
