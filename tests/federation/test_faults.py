"""Redemptions when things go wrong: the home district has not answered yet, is offline
past the deadline, the order is cancelled, the home district's net debit limit is
reached. Each ends with the same money on both nodes and at the clearinghouse."""

from __future__ import annotations

from datetime import timedelta

import pytest

from clearinghouse.domain.claims import ClaimState as ChState
from clearinghouse.usecases import claims as ch_claims
from node.api import convert
from node.domain.claims import ClaimState, Reason
from node.domain.orders import OrderState
from node.usecases import claims, ledger, orders
from node.usecases.claims import REDEMPTION_WINDOW
from node.usecases.views import Actor
from runtime.errors import FailedPrecondition
from tests.federation.conftest import LIMIT, City
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
    order_state,
    pending_messages,
    restart_link,
    serve_and_record,
)


def _proposed_at_the_clearinghouse(city: City, claim_id: str) -> None:
    """Wait until the serving district's proposal is recorded and its receipt applied."""
    city.wait_for(lambda: ch_claim(city, claim_id) is ChState.PROPOSED
                  and not pending_messages(city[GL].app))


def test_check_in_waits_for_the_home_districts_answer(city: City) -> None:
    f = family(city)
    city[JN].link.stop()  # 江宁区 cannot answer
    order = order_for_mother(city, f)
    claim_id = order.record.claim_id
    assert claim_id
    _proposed_at_the_clearinghouse(city, claim_id)

    with pytest.raises(FailedPrecondition) as refused:
        city[GL].app.execute(orders.check_in, order.record.id)
    assert refused.value.reason == "PAYMENT_NOT_HELD"
    assert order_state(city, GL, order.record.id) is OrderState.ACCEPTED
    assert city[GL].app.query(orders.get_order, order.record.id).record.held_minutes == 0
    assert node_claim(city, GL, claim_id) is ClaimState.PROPOSED
    assert node_claim(city, JN, claim_id) is None
    assert city[JN].app.query(ledger.balance, f.daughter).held == 0

    restart_link(city, JN)
    city.settle()
    assert node_claim(city, GL, claim_id) is ClaimState.ACCEPTED
    assert node_claim(city, JN, claim_id) is ClaimState.ACCEPTED
    assert city[JN].app.query(ledger.balance, f.daughter).held == 60
    recorded = serve_and_record(city, GL, order.record.id, f.mother).record
    city.settle()

    assert recorded.state == OrderState.RECORDED
    assert city[GL].app.query(orders.get_order, order.record.id).record.charged_minutes == 60
    for node_id in (GL, JN):
        assert node_claim(city, node_id, claim_id) is ClaimState.COMPLETED
    assert ch_claim(city, claim_id) is ChState.COMPLETED
    balance = city[JN].app.query(ledger.balance, f.daughter)
    assert (balance.total, balance.held) == (60, 0)
    assert_nothing_held(city)
    assert assert_consistent(city) == {GL: 60, JN: -60, QX: 0}


def test_cancelling_an_order_voids_its_accepted_claim_and_releases_the_hold(
        city: City) -> None:
    f = family(city)
    order = order_for_mother(city, f)
    city.settle()
    claim_id = order.record.claim_id
    assert claim_id
    assert node_claim(city, JN, claim_id) is ClaimState.ACCEPTED
    assert city[JN].app.query(ledger.balance, f.daughter).held == 60

    cancelled = city[GL].app.execute(orders.cancel_order, order.record.id,
                                     Actor(staff_id=f.desk), "the mother is in hospital")
    assert cancelled.record.state == OrderState.CANCELLED
    city.settle()

    for node_id in (GL, JN):
        claim = city[node_id].app.query(claims.get_claim, claim_id)
        assert claim.state is ClaimState.VOIDED
        assert claim.reason == Reason.CANCELLED.value
        assert claim.posted_minutes == 0
    assert ch_claim(city, claim_id) is ChState.VOIDED
    balance = city[JN].app.query(ledger.balance, f.daughter)
    assert (balance.total, balance.held) == (120, 0)
    assert_nothing_held(city)
    assert assert_consistent(city) == {GL: 0, JN: 0, QX: 0}


def test_an_order_cancelled_before_the_answer_voids_the_claim_when_it_comes(
        city: City) -> None:
    f = family(city)
    city[JN].link.stop()
    order = order_for_mother(city, f)
    claim_id = order.record.claim_id
    assert claim_id
    _proposed_at_the_clearinghouse(city, claim_id)
    city[GL].app.execute(orders.cancel_order, order.record.id, Actor(staff_id=f.desk), "")
    assert node_claim(city, GL, claim_id) is ClaimState.PROPOSED  # nothing to withdraw yet

    restart_link(city, JN)  # 江宁区 accepts and holds; 鼓楼区 then withdraws
    city.settle()

    for node_id in (GL, JN):
        assert node_claim(city, node_id, claim_id) is ClaimState.VOIDED
    assert ch_claim(city, claim_id) is ChState.VOIDED
    assert order_state(city, GL, order.record.id) is OrderState.CANCELLED
    assert city[JN].app.query(ledger.balance, f.daughter).available == 120
    assert_nothing_held(city)
    assert assert_consistent(city) == {GL: 0, JN: 0, QX: 0}


def test_a_claim_the_offline_home_never_answered_expires_on_both_sides(city: City) -> None:
    f = family(city)
    city[JN].link.stop()
    order = order_for_mother(city, f)
    claim_id = order.record.claim_id
    assert claim_id
    _proposed_at_the_clearinghouse(city, claim_id)

    city.clock.advance(REDEMPTION_WINDOW + timedelta(seconds=1))
    city.wait_for(lambda: node_claim(city, GL, claim_id) is ClaimState.EXPIRED)
    assert ch_claim(city, claim_id) is ChState.EXPIRED
    creditor = city[GL].app.query(claims.get_claim, claim_id)
    assert creditor.reason == Reason.EXPIRED.value
    assert convert.claim_pb(creditor).temporary  # a fresh claim may succeed
    assert order_state(city, GL, order.record.id) is OrderState.CANCELLED
    with pytest.raises(FailedPrecondition):
        city[GL].app.execute(orders.check_in, order.record.id)

    restart_link(city, JN)  # back online: it learns the proposal, then its expiry
    city.settle()
    debtor = city[JN].app.query(claims.get_claim, claim_id)
    assert debtor.state is ClaimState.EXPIRED
    assert debtor.reason == Reason.EXPIRED.value
    assert ch_claim(city, claim_id) is ChState.EXPIRED  # its late answer changed nothing
    balance = city[JN].app.query(ledger.balance, f.daughter)
    assert (balance.total, balance.held) == (120, 0)
    assert_nothing_held(city)
    assert assert_consistent(city) == {GL: 0, JN: 0, QX: 0}
    for node_id in (GL, JN):
        assert city[node_id].app.query(claims.clearing_view).open_claims == 0


def test_an_accepted_claim_expires_and_the_home_releases_its_hold(city: City) -> None:
    f = family(city)
    order = order_for_mother(city, f)
    city.settle()
    claim_id = order.record.claim_id
    assert claim_id
    assert city[JN].app.query(ledger.balance, f.daughter).held == 60

    city.clock.advance(REDEMPTION_WINDOW + timedelta(seconds=1))
    city.wait_for(lambda: node_claim(city, JN, claim_id) is ClaimState.EXPIRED
                  and node_claim(city, GL, claim_id) is ClaimState.EXPIRED)
    city.settle()
    assert ch_claim(city, claim_id) is ChState.EXPIRED
    assert order_state(city, GL, order.record.id) is OrderState.CANCELLED
    assert city[JN].app.query(ledger.balance, f.daughter).available == 120
    assert_nothing_held(city)
    assert assert_consistent(city) == {GL: 0, JN: 0, QX: 0}


def test_a_claim_over_the_net_debit_limit_waits_until_the_limit_is_raised(
        city: City) -> None:
    f = family(city, earned=180)
    city.ch.execute(ch_claims.set_net_debit_limit, JN, 60)
    first = order_for_mother(city, f, minutes=60)  # exactly the limit: taken
    city.settle()
    first_id = first.record.claim_id
    assert first_id
    assert node_claim(city, JN, first_id) is ClaimState.ACCEPTED

    second = order_for_mother(city, f, minutes=30)  # the open claim counts: over the limit
    second_id = second.record.claim_id
    assert second_id

    def refused_for_now() -> bool:
        return any(kind == claims.PROPOSE and attempts >= 1 and "LIMIT_REACHED" in detail
                   for kind, attempts, detail in pending_messages(city[GL].app))

    city.wait_for(refused_for_now)
    assert ch_claim(city, second_id) is None  # nothing recorded: a temporary refusal
    assert node_claim(city, GL, second_id) is ClaimState.PROPOSED
    assert order_state(city, GL, second.record.id) is OrderState.ACCEPTED
    city.clock.advance(timedelta(minutes=5))  # past any backoff: still refused
    city.wait_for(lambda: any(a >= 2 for _, a, _ in pending_messages(city[GL].app)))
    assert ch_claim(city, second_id) is None

    city.ch.execute(ch_claims.set_net_debit_limit, JN, LIMIT)
    city.clock.advance(timedelta(minutes=5))
    city.settle()
    assert node_claim(city, GL, second_id) is ClaimState.ACCEPTED
    assert node_claim(city, JN, second_id) is ClaimState.ACCEPTED
    assert ch_claim(city, second_id) is ChState.ACCEPTED
    assert city[JN].app.query(ledger.balance, f.daughter).held == 90

    serve_and_record(city, GL, first.record.id, f.mother, 60)
    serve_and_record(city, GL, second.record.id, f.mother, 30)
    city.settle()
    for claim_id in (first_id, second_id):
        assert ch_claim(city, claim_id) is ChState.COMPLETED
        for node_id in (GL, JN):
            assert node_claim(city, node_id, claim_id) is ClaimState.COMPLETED
    assert city[JN].app.query(ledger.balance, f.daughter).total == 90
    assert_nothing_held(city)
    assert assert_consistent(city) == {GL: 90, JN: -90, QX: 0}
