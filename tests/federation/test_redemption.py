"""通存通兑 in one process: hours stored in 江宁区 spent in 鼓楼区, and a move to 栖霞区,
through a real clearinghouse server and each node's real clearing link."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from node.domain.claims import ClaimState
from node.domain.consent import ConsentKind
from node.domain.orders import OrderState, PaymentSource, PersonKind
from node.domain.policy import Relation
from node.usecases import claims, consent, ledger, orders, people
from node.usecases.views import Actor
from tests.federation.conftest import City, make_city
from tests.helpers import earn, enrol, id_card, staff


@pytest.fixture(params=["sqlite", "postgres"])
def city(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[City]:
    """The city, its clearinghouse on each storage engine (the nodes stay on SQLite)."""
    url = (f"sqlite:///{tmp_path / 'ch.sqlite3'}" if request.param == "sqlite"
           else request.getfixturevalue("ch_pg_url"))
    yield from make_city(tmp_path, url)


def _enrol(city: City, node_id: str, name: str, number: str, *, home: str = "",
           priority: bool = False) -> int:
    view = city[node_id].app.execute(people.enrol_person, PersonKind.INDIVIDUAL, name, number,
                                     "13800000000", priority, 0, home)
    return view.id


def _available(city: City, node_id: str, person_id: int) -> int:
    return city[node_id].app.query(ledger.balance, person_id).available


def test_a_daughters_hours_pay_for_her_mothers_service_in_another_district(city: City) -> None:
    jn, gl = city["320115"], city["320106"]
    daughter_no, mother_no = id_card(1965), id_card(1940, "320106")
    # 王芳's hours are kept in 江宁区, earned there by serving a priority elder
    daughter = _enrol(city, "320115", "王芳", daughter_no)
    elder = enrol(jn.app, "赵大爷", 1938, priority=True).id
    earn(jn.app, city.clock, daughter, 120, elder)
    # her mother 李秀英 lives in 鼓楼区; 江宁区 knows her as a visitor, linked as parent
    mother_home = _enrol(city, "320106", "李秀英", mother_no)
    mother_jn = _enrol(city, "320115", "李秀英", mother_no, home="320106")
    jn.app.execute(people.link_people, daughter, mother_jn, Relation.PARENT, 0)
    # at home, she consents that her hours pay for her mother's services (ADR 0017)
    jn.app.execute(consent.grant_consent, daughter, mother_jn, "", ConsentKind.STANDING, 0, 0,
                   None, 0, Actor(person_id=daughter))
    daughter_gl = _enrol(city, "320106", "王芳", daughter_no, home="320115")
    volunteer = _enrol(city, "320106", "张伟", id_card(1990, "320106"))
    city.settle()

    desk = staff(gl.app)  # the daughter asks at 鼓楼区's service point
    order = gl.app.execute(orders.request_order, mother_home, "meals", 60,
                           PaymentSource.RELATIVE, daughter_gl, Actor(staff_id=desk), "")
    order = gl.app.execute(orders.accept_order, order.record.id, volunteer)
    assert order.record.claim_id
    city.settle()
    claim = gl.app.query(claims.get_claim, order.record.claim_id)
    assert claim.state is ClaimState.ACCEPTED
    assert _available(city, "320115", daughter) == 60  # 60 of 120 held at home
    assert gl.app.query(orders.get_order, order.record.id).record.held_minutes == 60

    walk_from_accepted(city, order.record.id, mother_home)
    city.clock.advance(timedelta(days=8))
    gl.app.execute(orders.record_order, order.record.id)
    city.settle()

    recorded = gl.app.query(orders.get_order, order.record.id).record
    assert recorded.state == OrderState.RECORDED and recorded.charged_minutes == 60
    assert gl.app.query(claims.get_claim, claim.claim_id).state is ClaimState.COMPLETED
    assert jn.app.query(claims.get_claim, claim.claim_id).state is ClaimState.COMPLETED
    assert jn.app.query(ledger.balance, daughter).total == 60
    assert gl.app.query(ledger.balance, volunteer).total == 60
    assert gl.app.query(claims.clearing_view).net_minutes == 60
    assert jn.app.query(claims.clearing_view).net_minutes == -60
    nets = {n.node_id: n.net_minutes for n in city.positions().nodes}
    assert nets == {"320106": 60, "320115": -60, "320113": 0}
    for d in city.nodes.values():
        assert d.app.query(ledger.check_ledger).ok


def walk_from_accepted(city: City, order_id: int, recipient: int) -> None:
    app = city["320106"].app
    app.execute(orders.check_in, order_id)
    city.clock.advance(timedelta(minutes=60))
    app.execute(orders.check_out, order_id)
    app.execute(orders.verify_order, order_id, Actor(person_id=recipient), 5, "")


def test_a_move_carries_the_balance_with_its_origins(city: City) -> None:
    jn, qx = city["320115"], city["320113"]
    number = id_card(1962)
    person = _enrol(city, "320115", "刘洋", number)
    elder = enrol(jn.app, "孙奶奶", 1936, priority=True).id
    earn(jn.app, city.clock, person, 90, elder)
    arrived = _enrol(city, "320113", "刘洋", number, home="320115")
    city.settle()

    claim = jn.app.execute(claims.start_move, person, "320113")
    city.settle()
    assert jn.app.query(claims.get_claim, claim.claim_id).state is ClaimState.COMPLETED
    assert qx.app.query(claims.get_claim, claim.claim_id).state is ClaimState.COMPLETED
    assert jn.app.query(ledger.balance, person).total == 0
    assert qx.app.query(ledger.balance, arrived).total == 90
    assert jn.app.query(people.get_person, person).home_node_id == "320113"
    assert qx.app.query(people.get_person, arrived).home_node_id == ""
    nets = {n.node_id: n.net_minutes for n in city.positions().nodes}
    assert nets == {"320113": 90, "320115": -90, "320106": 0}
    for d in city.nodes.values():
        assert d.app.query(ledger.check_ledger).ok
