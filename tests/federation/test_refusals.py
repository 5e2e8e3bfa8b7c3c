"""Redemptions the city refuses: by the home district's decision (balance, family) and
by the clearinghouse itself (nobody registered the person, the debtor is not their
home). Each refusal cancels the serving district's order and leaves nothing held."""

from __future__ import annotations

from clearinghouse.domain.claims import ClaimState as ChState
from node.api import convert
from node.domain.claims import ClaimState, Reason
from node.domain.orders import OrderState
from node.usecases import claims, ledger, orders, people
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
)


def _assert_refused_and_cancelled(city: City, claim_id: str, order_id: int,
                                  reason: Reason) -> None:
    claim = city[GL].app.query(claims.get_claim, claim_id)
    assert claim.state is ClaimState.REJECTED
    assert claim.reason == reason.value
    assert claim.posted_minutes == 0
    order = city[GL].app.query(lambda tx: tx.repo.orders.get(order_id))
    assert order.state == OrderState.CANCELLED
    assert order.held_minutes == 0 and order.charged_minutes == 0
    assert_nothing_held(city)
    assert assert_consistent(city) == {JN: 0, GL: 0, QX: 0}
    assert city[GL].app.query(claims.clearing_view).open_claims == 0
    assert city[JN].app.query(claims.clearing_view).open_claims == 0


def test_home_rejects_a_redemption_its_balance_does_not_cover(city: City) -> None:
    f = family(city, earned=60)
    order = order_for_mother(city, f, minutes=120)
    city.settle()

    claim_id = order.record.claim_id
    assert claim_id
    _assert_refused_and_cancelled(city, claim_id, order.record.id,
                                  Reason.INSUFFICIENT_BALANCE)
    at_home = city[JN].app.query(claims.get_claim, claim_id)
    assert at_home.state is ClaimState.REJECTED
    assert at_home.reason == Reason.INSUFFICIENT_BALANCE.value
    assert not convert.claim_pb(at_home).temporary  # final: waiting does not change a balance
    assert ch_claim(city, claim_id) is ChState.REJECTED
    balance = city[JN].app.query(ledger.balance, f.daughter)
    assert (balance.total, balance.held) == (60, 0)


def test_home_rejects_a_payer_not_linked_to_the_recipient(city: City) -> None:
    f = family(city, linked=False)
    order = order_for_mother(city, f)
    city.settle()

    claim_id = order.record.claim_id
    assert claim_id
    _assert_refused_and_cancelled(city, claim_id, order.record.id, Reason.NOT_A_RELATIVE)
    assert node_claim(city, JN, claim_id) is ClaimState.REJECTED
    assert city[JN].app.query(claims.get_claim, claim_id).reason == "NOT_A_RELATIVE"
    assert ch_claim(city, claim_id) is ChState.REJECTED
    assert city[JN].app.query(ledger.balance, f.daughter).available == 120


def test_home_rejects_a_recipient_it_does_not_know_at_all(city: City) -> None:
    # the mother was never enrolled in 江宁区, so no family link can name her there
    f = family(city, mother_in_jn=False)
    order = order_for_mother(city, f)
    city.settle()

    claim_id = order.record.claim_id
    assert claim_id
    _assert_refused_and_cancelled(city, claim_id, order.record.id, Reason.NOT_A_RELATIVE)
    assert ch_claim(city, claim_id) is ChState.REJECTED
    assert city[JN].app.query(ledger.balance, f.daughter).available == 120


def test_the_clearinghouse_refuses_a_person_nobody_registered(city: City) -> None:
    # 鼓楼区 believes 王芳's hours are in 江宁区, but she never enrolled there
    f = family(city, daughter_at_home=False, mother_in_jn=False)
    order = order_for_mother(city, f)
    city.settle()

    claim_id = order.record.claim_id
    assert claim_id
    _assert_refused_and_cancelled(city, claim_id, order.record.id, Reason.UNKNOWN_PERSON)
    assert ch_claim(city, claim_id) is None  # a refused proposal is not recorded there
    assert node_claim(city, JN, claim_id) is None  # and never reaches the named debtor
    assert "registered" in city[GL].app.query(claims.get_claim, claim_id).detail


def test_a_debtor_that_is_not_the_home_is_corrected_from_the_directory(city: City) -> None:
    # 鼓楼区 enrolled 王芳 naming 栖霞区 as her home; the directory says 江宁区. The
    # clearinghouse refuses the claim on 栖霞区; 鼓楼区 looks her up and asks 江宁区.
    f = family(city, daughter_home=QX)
    order = order_for_mother(city, f)
    city.settle()

    first = order.record.claim_id
    assert first
    refused = city[GL].app.query(claims.get_claim, first)
    assert (refused.counterparty, refused.state, refused.reason) == (
        QX, ClaimState.REJECTED, Reason.NOT_HOME_DISTRICT.value)
    assert ch_claim(city, first) is None
    for node_id in (JN, QX):
        assert node_claim(city, node_id, first) is None

    now = city[GL].app.query(orders.get_order, order.record.id).record
    assert now.state == OrderState.ACCEPTED and now.claim_id not in (None, first)
    assert now.held_minutes == 60 and not now.cancel_reason
    fresh = city[GL].app.query(claims.get_claim, now.claim_id or "")
    assert (fresh.counterparty, fresh.state) == (JN, ClaimState.ACCEPTED)
    assert ch_claim(city, fresh.claim_id) is ChState.ACCEPTED
    daughter_gl = city[GL].app.query(people.get_person, f.daughter_gl)
    assert daughter_gl.home_node_id == JN  # the cached home, corrected
    [change] = daughter_gl.changes
    assert change.actor == "directory" and f"district {JN}" in change.detail
    balance = city[JN].app.query(ledger.balance, f.daughter)
    assert (balance.total, balance.held) == (120, 60)
    assert city[GL].app.query(claims.clearing_view).awaiting_home == 0
