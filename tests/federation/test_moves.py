"""Moves between districts that do not simply complete: a new home where the person is
not enrolled voids the move, and a balance over the new home's cap fills it and gives
the rest to its donation pool; and a balance larger than the default cap, which a city
that raised its cap lets a person store, moves whole."""

from __future__ import annotations

import pytest

from clearinghouse.domain.claims import ClaimState as ChState
from node.domain.claims import ClaimState, Reason
from node.domain.ledger import DONATION_POOL
from node.domain.orders import OrderState, PaymentSource
from node.domain.policy import load_policy
from node.usecases import claims, ledger, orders, people
from node.usecases.app import NodeApp
from node.usecases.views import Actor
from tests.federation.conftest import City
from tests.federation.support import (
    JN,
    QX,
    assert_consistent,
    assert_nothing_held,
    ch_claim,
    enrol_at,
    node_claim,
    restart_link,
)
from tests.helpers import (
    account_balance,
    by_origin,
    earn,
    enrol,
    id_card,
    policy_toml,
    staff,
)
from timebank.minutes import hours
from timebank.v1 import clearing_pb2


def _with_hours(city: City, minutes: int) -> tuple[int, str]:
    number = id_card(1958)
    person = enrol_at(city, JN, "刘洋", number)
    elder = enrol(city[JN].app, "孙奶奶", 1936, priority=True).id
    earn(city[JN].app, city.clock, person, minutes, elder)
    return person, number


def _home_in_directory(city: City, node_id: str, person_id: int) -> str:
    ref = city[node_id].app.query(people.get_person, person_id).person_ref
    entry = city.ch.query(lambda tx: tx.repo.directory_entry(ref))
    assert entry is not None
    return entry.home_node_id


def test_a_move_to_a_district_that_does_not_know_the_person_is_voided(city: City) -> None:
    person, number = _with_hours(city, 90)
    city.settle()

    claim = city[JN].app.execute(claims.start_move, person, QX)
    assert city[JN].app.query(ledger.balance, person).held == 90
    city.settle()

    for node_id in (JN, QX):
        view = city[node_id].app.query(claims.get_claim, claim.claim_id)
        assert view.state is ClaimState.VOIDED
        assert view.posted_minutes == 0
    assert city[JN].app.query(claims.get_claim, claim.claim_id).reason == Reason.POLICY.value
    assert "enrol" in city[QX].app.query(claims.get_claim, claim.claim_id).detail
    assert ch_claim(city, claim.claim_id) is ChState.VOIDED
    balance = city[JN].app.query(ledger.balance, person)
    assert (balance.total, balance.held) == (90, 0)  # the person keeps their hours
    assert city[JN].app.query(people.get_person, person).home_node_id == ""
    assert _home_in_directory(city, JN, person) == JN
    assert_nothing_held(city)
    assert assert_consistent(city) == {JN: 0, QX: 0, "320106": 0}

    # once enrolled there, the same person can move after all
    arrived = enrol_at(city, QX, "刘洋", number, home=JN)
    city.settle()
    again = city[JN].app.execute(claims.start_move, person, QX)
    city.settle()
    assert node_claim(city, QX, again.claim_id) is ClaimState.COMPLETED
    assert node_claim(city, JN, again.claim_id) is ClaimState.COMPLETED
    assert city[QX].app.query(ledger.balance, arrived).total == 90
    assert city[JN].app.query(ledger.balance, person).total == 0
    assert _home_in_directory(city, JN, person) == QX
    assert_nothing_held(city)
    assert assert_consistent(city) == {JN: -90, QX: 90, "320106": 0}


def _cap(city: City, node_id: str, cap_hours: int) -> None:
    """Give one district a city policy with its own stored-hours cap (its own policy
    file), before anything happens there."""
    d = city[node_id]
    d.link.stop()
    policy = load_policy(policy_toml(cap_hours=cap_hours))
    d.app = NodeApp(d.app.db, policy, d.app.clock, d.app.node)
    restart_link(city, node_id)


def test_a_move_over_the_new_homes_cap_gives_the_rest_to_its_donation_pool(
        city: City) -> None:
    _cap(city, QX, 2)  # 栖霞区 stores at most 120 min a person
    person, number = _with_hours(city, 180)
    arrived = enrol_at(city, QX, "刘洋", number, home=JN)
    city.settle()

    claim = city[JN].app.execute(claims.start_move, person, QX)
    city.settle()

    taken = city[QX].app.query(claims.get_claim, claim.claim_id)
    assert taken.state is ClaimState.COMPLETED
    assert taken.posted_minutes == 180
    assert "donation pool" in taken.detail
    assert node_claim(city, JN, claim.claim_id) is ClaimState.COMPLETED
    assert ch_claim(city, claim.claim_id) is ChState.COMPLETED
    assert city[QX].app.query(ledger.balance, arrived).total == 120
    assert account_balance(city[QX].app, DONATION_POOL.code) == (60, 0)
    assert city[JN].app.query(ledger.balance, person).total == 0
    assert city[JN].app.query(people.get_person, person).home_node_id == QX
    assert city[QX].app.query(people.get_person, arrived).home_node_id == ""
    assert_nothing_held(city)
    # the whole balance moved: the pool's share is 栖霞区's to give, not 江宁区's to keep
    assert assert_consistent(city) == {JN: -180, QX: 180, "320106": 0}


def test_more_than_1500_hours_move_whole_where_the_city_caps_at_2000(city: City) -> None:
    for node_id in (JN, QX):
        _cap(city, node_id, 2000)
    number = id_card(1936)
    person = enrol_at(city, JN, "孙秀兰", number, priority=True)
    elder = enrol(city[JN].app, "孙奶奶", 1936, priority=True).id
    earn(city[JN].app, city.clock, person, 90, elder)  # earned, and granted: two origins
    city[JN].app.execute(ledger.grant, person, hours(1550), staff(city[JN].app), "高龄补贴")
    arrived = enrol_at(city, QX, "孙秀兰", number, home=JN, priority=True)
    city.settle()
    total = hours(1550) + 90
    assert city[JN].app.query(ledger.balance, person).total == total > hours(1500)

    claim = city[JN].app.execute(claims.start_move, person, QX)
    assert claim.minutes == total
    city.settle()

    assert ch_claim(city, claim.claim_id) is ChState.COMPLETED
    for node_id in (JN, QX):
        view = city[node_id].app.query(claims.get_claim, claim.claim_id)
        assert (view.state, view.posted_minutes) == (ClaimState.COMPLETED, total)
    # all of it banked under the new home's 2,000 h cap: nothing to its donation pool
    assert by_origin(city[QX].app, arrived) == {"granted": (hours(1550), 0),
                                                 "individual": (90, 0)}
    assert account_balance(city[QX].app, DONATION_POOL.code) == (0, 0)
    assert city[JN].app.query(ledger.balance, person).total == 0
    assert city[JN].app.query(people.get_person, person).home_node_id == QX
    assert _home_in_directory(city, JN, person) == QX
    assert_nothing_held(city)
    assert assert_consistent(city) == {JN: -total, QX: total, "320106": 0}


def test_a_person_moves_away_and_back_and_the_old_directory_entry_is_refused(
        city: City) -> None:
    person, number = _with_hours(city, 90)
    arrived = enrol_at(city, QX, "刘洋", number, home=JN)
    visitor_gl = enrol_at(city, "320106", "刘洋", number, home=JN)
    volunteer = enrol_at(city, "320106", "张伟", id_card(1990, "320106"))
    city.settle()
    out = city[JN].app.execute(claims.start_move, person, QX)
    city.settle()
    assert node_claim(city, QX, out.claim_id) is ClaimState.COMPLETED

    # 鼓楼区 still names 江宁区 as the home: the clearinghouse refuses that claim, and
    # 鼓楼区 asks the directory and then 栖霞区, where the hours are now
    gl = city["320106"].app
    order = gl.execute(orders.request_order, visitor_gl, "meals", 30, PaymentSource.OWN, 0,
                       Actor(person_id=visitor_gl), "")
    order = gl.execute(orders.accept_order, order.record.id, volunteer)
    city.settle()
    assert order.record.claim_id
    refused = gl.query(claims.get_claim, order.record.claim_id)
    assert (refused.state, refused.reason) == (ClaimState.REJECTED, "NOT_HOME_DISTRICT")
    assert ch_claim(city, order.record.claim_id) is None
    assert gl.query(people.get_person, visitor_gl).home_node_id == QX
    redirected = gl.query(orders.get_order, order.record.id).record
    assert redirected.state == OrderState.ACCEPTED and redirected.held_minutes == 30
    assert node_claim(city, QX, redirected.claim_id or "") is ClaimState.ACCEPTED
    assert city[QX].app.query(ledger.balance, arrived).held == 30
    # cancelled here, the order releases what 栖霞区 held: the person can move back whole
    gl.execute(orders.cancel_order, order.record.id, Actor(person_id=visitor_gl), "改期")
    city.settle()
    assert city[QX].app.query(ledger.balance, arrived).held == 0

    back = city[QX].app.execute(claims.start_move, arrived, JN)
    city.settle()
    for node_id in (JN, QX):
        assert node_claim(city, node_id, back.claim_id) is ClaimState.COMPLETED
    assert ch_claim(city, back.claim_id) is ChState.COMPLETED
    assert city[JN].app.query(ledger.balance, person).total == 90
    assert city[QX].app.query(ledger.balance, arrived).total == 0
    assert city[JN].app.query(people.get_person, person).home_node_id == ""
    assert city[QX].app.query(people.get_person, arrived).home_node_id == JN
    assert _home_in_directory(city, JN, person) == JN
    assert_nothing_held(city)
    assert assert_consistent(city) == {JN: 0, QX: 0, "320106": 0}


def test_a_redemption_while_the_person_is_moving_is_refused(city: City) -> None:
    person, number = _with_hours(city, 90)
    arrived = enrol_at(city, QX, "刘洋", number, home=JN)
    visitor_gl = enrol_at(city, "320106", "刘洋", number, home=JN)
    volunteer = enrol_at(city, "320106", "张伟", id_card(1990, "320106"))
    city.settle()
    city[QX].link.stop()  # the new home is away: the move stays open
    move = city[JN].app.execute(claims.start_move, person, QX)
    city.wait_for(lambda: ch_claim(city, move.claim_id) is ChState.ACCEPTED)

    gl = city["320106"].app
    order = gl.execute(orders.request_order, visitor_gl, "meals", 30, PaymentSource.OWN, 0,
                       Actor(person_id=visitor_gl), "")
    order = gl.execute(orders.accept_order, order.record.id, volunteer)
    claim_id = order.record.claim_id
    assert claim_id
    city.wait_for(lambda: node_claim(city, "320106", claim_id) is ClaimState.REJECTED)
    refused = gl.query(claims.get_claim, claim_id)
    assert refused.reason == "MOVE_IN_PROGRESS"  # the clearinghouse's reason, kept
    assert "moving" in refused.detail
    assert gl.query(orders.get_order, order.record.id).record.state == OrderState.CANCELLED
    assert ch_claim(city, claim_id) is None
    assert city[JN].app.query(ledger.balance, person).held == 90  # still in transit

    restart_link(city, QX)
    city.settle()
    assert node_claim(city, QX, move.claim_id) is ClaimState.COMPLETED
    assert city[QX].app.query(ledger.balance, arrived).total == 90
    assert node_claim(city, JN, claim_id) is None
    assert_nothing_held(city)
    assert assert_consistent(city) == {JN: -90, QX: 90, "320106": 0}


@pytest.mark.parametrize("priority", [True, False], ids=["priority-elder", "not-one"])
def test_a_move_carries_the_persons_priority_status(city: City, priority: bool) -> None:
    # 江宁区 assessed her (重点老人 or not); 栖霞区 enrolled her as a visitor the other way
    number = id_card(1936)
    person = enrol_at(city, JN, "孙秀兰", number, priority=priority)
    elder = enrol(city[JN].app, "孙奶奶", 1936, priority=True).id
    earn(city[JN].app, city.clock, person, 90, elder)
    arrived = enrol_at(city, QX, "孙秀兰", number, home=JN, priority=not priority)
    city.settle()

    claim = city[JN].app.execute(claims.start_move, person, QX)
    city.settle()

    assert node_claim(city, QX, claim.claim_id) is ClaimState.COMPLETED
    recorded = city.ch.query(lambda tx: tx.repo.claim(claim.claim_id))
    assert recorded is not None
    signed = clearing_pb2.ClaimProposal.FromString(
        clearing_pb2.Envelope.FromString(recorded.proposal).body)
    assert signed.recipient_priority is priority  # in the old home's signed proposal
    here = city[QX].app.query(people.get_person, arrived)
    assert here.priority is priority and here.home_node_id == ""
    said = {c.kind: c for c in here.changes}
    assert said["update"].actor == "clearinghouse"
    assert f"as district {JN} kept it (claim {claim.claim_id})" in said["update"].detail
    assert said["home"].detail.startswith(f"hours kept here (were kept in district {JN})")
    if priority:  # what the status is for in the new home: the city fund serves her
        city[QX].app.execute(ledger.grant, arrived, 60, staff(city[QX].app), "高龄补贴")
    assert_consistent(city)
