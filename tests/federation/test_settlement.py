"""How an accepted redemption ends when the service is not exactly the one planned: a
shorter service posts less (the rest of the hold is released), one too short to record
voids the claim, a dispute not upheld voids it, and a claim that expires while the
service goes on leaves the service recorded unpaid."""

from __future__ import annotations

from datetime import timedelta

from clearinghouse.domain.claims import ClaimState as ChState
from node.domain.claims import ClaimState, Reason
from node.domain.orders import OrderState
from node.usecases import claims, ledger, orders
from node.usecases.claims import REDEMPTION_WINDOW
from node.usecases.views import Actor
from tests.federation.conftest import City
from tests.federation.support import (
    GL,
    JN,
    QX,
    Family,
    assert_consistent,
    assert_nothing_held,
    ch_claim,
    family,
    node_claim,
    order_for_mother,
    restart_link,
)


def _accepted(city: City) -> tuple[Family, int, str]:
    f = family(city)
    order = order_for_mother(city, f, 60)
    city.settle()
    claim_id = order.record.claim_id
    assert claim_id and node_claim(city, JN, claim_id) is ClaimState.ACCEPTED
    return f, order.record.id, claim_id


def _serve(city: City, f: Family, order_id: int, minutes: int) -> None:
    gl = city[GL].app
    gl.execute(orders.check_in, order_id)
    city.clock.advance(timedelta(minutes=minutes))
    gl.execute(orders.check_out, order_id)
    gl.execute(orders.verify_order, order_id, Actor(person_id=f.mother), 5, "")


def _record(city: City, order_id: int) -> None:
    city.clock.advance(timedelta(days=city[GL].app.policy.publicity_days))
    city[GL].app.execute(orders.record_order, order_id)
    city.settle()


def test_a_shorter_service_posts_less_and_releases_the_rest(city: City) -> None:
    f, order_id, claim_id = _accepted(city)
    _serve(city, f, order_id, 30)
    _record(city, order_id)

    for node_id in (GL, JN):
        view = city[node_id].app.query(claims.get_claim, claim_id)
        assert (view.state, view.minutes, view.posted_minutes) == (ClaimState.COMPLETED,
                                                                    60, 30)
    assert ch_claim(city, claim_id) is ChState.COMPLETED
    record = city[GL].app.query(orders.get_order, order_id).record
    assert (record.recorded_minutes, record.charged_minutes) == (30, 30)
    balance = city[JN].app.query(ledger.balance, f.daughter)
    assert (balance.total, balance.held) == (90, 0)
    assert city[GL].app.query(ledger.balance, f.volunteer).total == 30
    assert_nothing_held(city)
    assert assert_consistent(city) == {GL: 30, JN: -30, QX: 0}


def test_a_service_too_short_to_record_voids_the_claim(city: City) -> None:
    f, order_id, claim_id = _accepted(city)
    _serve(city, f, order_id, 5)  # rounds to 0 of the city's 15-minute unit
    _record(city, order_id)

    for node_id in (GL, JN):
        view = city[node_id].app.query(claims.get_claim, claim_id)
        assert view.state is ClaimState.VOIDED
        assert view.reason == Reason.CANCELLED.value
    assert ch_claim(city, claim_id) is ChState.VOIDED
    record = city[GL].app.query(orders.get_order, order_id).record
    assert record.state == OrderState.RECORDED
    assert (record.recorded_minutes, record.charged_minutes) == (0, 0)
    assert city[JN].app.query(ledger.balance, f.daughter).available == 120
    assert_nothing_held(city)
    assert assert_consistent(city) == {GL: 0, JN: 0, QX: 0}


def test_a_dispute_not_upheld_voids_the_claim(city: City) -> None:
    f, order_id, claim_id = _accepted(city)
    _serve(city, f, order_id, 60)
    gl = city[GL].app
    gl.execute(orders.dispute_order, order_id, Actor(staff_id=f.desk), "nobody came")
    gl.execute(orders.resolve_dispute, order_id, f.desk, False, 0, "no service took place")
    city.settle()

    assert gl.query(orders.get_order, order_id).record.state == OrderState.CANCELLED
    for node_id in (GL, JN):
        assert node_claim(city, node_id, claim_id) is ClaimState.VOIDED
    assert ch_claim(city, claim_id) is ChState.VOIDED
    assert city[JN].app.query(ledger.balance, f.daughter).available == 120
    assert gl.query(ledger.balance, f.volunteer).total == 0
    assert_nothing_held(city)
    assert assert_consistent(city) == {GL: 0, JN: 0, QX: 0}


def test_a_claim_expiring_during_the_service_leaves_it_recorded_unpaid(city: City) -> None:
    f, order_id, claim_id = _accepted(city)
    gl = city[GL].app
    gl.execute(orders.check_in, order_id)
    city.clock.advance(timedelta(minutes=60))
    gl.execute(orders.check_out, order_id)

    city.clock.advance(REDEMPTION_WINDOW)
    city.wait_for(lambda: node_claim(city, GL, claim_id) is ClaimState.EXPIRED
                  and node_claim(city, JN, claim_id) is ClaimState.EXPIRED)
    city.settle()
    record = gl.query(orders.get_order, order_id).record
    assert record.state == OrderState.CHECKED_OUT  # the service happened: kept
    assert record.held_minutes == 0
    assert city[JN].app.query(ledger.balance, f.daughter).available == 120

    gl.execute(orders.verify_order, order_id, Actor(person_id=f.mother), 5, "")
    _record(city, order_id)
    record = gl.query(orders.get_order, order_id).record
    assert record.state == OrderState.RECORDED
    assert (record.recorded_minutes, record.charged_minutes) == (60, 0)
    assert gl.query(ledger.balance, f.volunteer).total == 60  # the volunteer still earns
    assert ch_claim(city, claim_id) is ChState.EXPIRED
    assert city[JN].app.query(ledger.balance, f.daughter).total == 120
    assert_nothing_held(city)
    assert assert_consistent(city) == {GL: 0, JN: 0, QX: 0}


def test_a_completion_reaches_an_offline_home_when_it_returns(city: City) -> None:
    f, order_id, claim_id = _accepted(city)
    _serve(city, f, order_id, 60)
    city[JN].link.stop()
    city.clock.advance(timedelta(days=city[GL].app.policy.publicity_days))
    city[GL].app.execute(orders.record_order, order_id)
    city.wait_for(lambda: node_claim(city, GL, claim_id) is ClaimState.COMPLETED)

    # the clearinghouse and 鼓楼区 have settled; 江宁区 still holds, not yet posted
    assert ch_claim(city, claim_id) is ChState.COMPLETED
    assert node_claim(city, JN, claim_id) is ClaimState.ACCEPTED
    balance = city[JN].app.query(ledger.balance, f.daughter)
    assert (balance.total, balance.held) == (120, 60)
    assert city[GL].app.query(claims.clearing_view).net_minutes == 60
    assert city[JN].app.query(claims.clearing_view).net_minutes == 0

    restart_link(city, JN)
    city.settle()
    assert node_claim(city, JN, claim_id) is ClaimState.COMPLETED
    balance = city[JN].app.query(ledger.balance, f.daughter)
    assert (balance.total, balance.held) == (60, 0)
    assert_nothing_held(city)
    assert assert_consistent(city) == {GL: 60, JN: -60, QX: 0}


def test_a_finish_sent_after_the_deadline_is_refused_and_the_service_is_unpaid(
        city: City) -> None:
    f, order_id, claim_id = _accepted(city)
    _serve(city, f, order_id, 60)
    city[GL].link.stop()  # 鼓楼区 records while cut off, and stays away past the deadline
    city.clock.advance(timedelta(days=city[GL].app.policy.publicity_days))
    city[GL].app.execute(orders.record_order, order_id)
    assert node_claim(city, GL, claim_id) is ClaimState.FINISHING
    city.clock.advance(REDEMPTION_WINDOW)
    city.wait_for(lambda: ch_claim(city, claim_id) is ChState.EXPIRED
                  and node_claim(city, JN, claim_id) is ClaimState.EXPIRED)

    restart_link(city, GL)
    city.settle()
    assert node_claim(city, GL, claim_id) is ClaimState.EXPIRED
    assert ch_claim(city, claim_id) is ChState.EXPIRED
    record = city[GL].app.query(orders.get_order, order_id).record
    assert (record.state, record.charged_minutes) == (OrderState.RECORDED, 0)
    assert city[GL].app.query(ledger.balance, f.volunteer).total == 60
    assert city[JN].app.query(ledger.balance, f.daughter).available == 120
    assert_nothing_held(city)
    assert assert_consistent(city) == {GL: 0, JN: 0, QX: 0}
