"""Builders and checks shared by the federation tests: people enrolled at home and as
visitors, the family whose redemption the tests walk, and the city-wide invariants
(every node's ledger, holds, its clearing view against the clearinghouse's positions)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import text

from clearinghouse.domain.claims import ClaimState as ChState
from node.domain.claims import ClaimState
from node.domain.consent import ConsentKind
from node.domain.orders import OrderState, PaymentSource, PersonKind
from node.domain.policy import Relation
from node.link.clearing_link import ClearingLink
from node.usecases import claims, consent, ledger, orders, people
from node.usecases.app import NodeApp
from node.usecases.views import Actor, OrderView
from tests.federation.conftest import CH_KEY, City
from tests.helpers import earn, enrol, id_card, staff
from timebank.keys import public_key

JN, GL, QX = "320115", "320106", "320113"  # 江宁区, 鼓楼区, 栖霞区


def enrol_at(city: City, node_id: str, name: str, number: str, *, home: str = "",
             priority: bool = False) -> int:
    view = city[node_id].app.execute(people.enrol_person, PersonKind.INDIVIDUAL, name, number,
                                     "13800000000", priority, 0, home)
    return view.id


def held_anywhere(app: NodeApp) -> int:
    """Minutes held on any account of the node (order holds and claim holds alike)."""
    with app.db.read() as conn:
        return int(conn.execute(text("SELECT COALESCE(SUM(held), 0) FROM accounts"))
                   .scalar_one())


def active_holds(app: NodeApp) -> int:
    with app.db.read() as conn:
        return int(conn.execute(text("SELECT COUNT(*) FROM holds WHERE state = 'active'"))
                   .scalar_one())


def node_claim(city: City, node_id: str, claim_id: str) -> ClaimState | None:
    found = city[node_id].app.query(lambda tx: tx.repo.claims.get(claim_id))
    return None if found is None else ClaimState(found.state)


def ch_claim(city: City, claim_id: str) -> ChState | None:
    found = city.ch.query(lambda tx: tx.repo.claim(claim_id))
    return None if found is None else found.claim.state


def nets(city: City) -> dict[str, int]:
    return {n.node_id: n.net_minutes for n in city.positions().nodes}


def assert_consistent(city: City) -> dict[str, int]:
    """Every node's ledger checks out, its clearing view equals the clearinghouse's net
    for it, and the nets sum to zero. Returns the nets."""
    positions = nets(city)
    assert set(positions) == set(city.nodes)
    assert sum(positions.values()) == 0
    for node_id, d in city.nodes.items():
        assert d.app.query(ledger.check_ledger).ok, node_id
        assert d.app.query(claims.clearing_view).net_minutes == positions[node_id], node_id
    # the clearinghouse's running open-claim totals equal a count of its claims
    for node_id, (kept_n, kept_m, counted_n, counted_m) in city.ch.query(
            lambda tx: tx.repo.open_totals_recounted()).items():
        assert (kept_n, kept_m) == (counted_n, counted_m), node_id
    return positions


def assert_nothing_held(city: City) -> None:
    for node_id, d in city.nodes.items():
        assert held_anywhere(d.app) == 0, node_id
        assert active_holds(d.app) == 0, node_id


def pending_messages(app: NodeApp) -> list[tuple[str, int, str]]:
    """(kind, attempts, detail) of every unsent outbox message, due or not."""
    far = app.clock.now() + timedelta(days=3650)
    return [(m.kind, m.attempts, m.detail)
            for m in app.query(lambda tx: tx.repo.outbox.due(far, 1000))]


def restart_link(city: City, node_id: str) -> ClearingLink:
    """A new clearing link for a node whose link was stopped, built as the harness
    builds it (a stopped link cannot start again)."""
    d = city[node_id]
    link = ClearingLink(d.app, city.address, public_key(CH_KEY), d.key)
    link.start()
    d.link = link
    return link


@dataclass(frozen=True)
class Family:
    """王芳's hours are kept in 江宁区; her mother 李秀英 lives in 鼓楼区, where a
    volunteer serves the mother paid with the daughter's hours."""

    daughter: int  # at home, 江宁区
    daughter_gl: int  # her visitor record in 鼓楼区
    mother: int  # at home, 鼓楼区
    mother_jn: int  # her visitor record in 江宁区 (0: not enrolled there)
    volunteer: int  # 鼓楼区
    desk: int  # staff at 鼓楼区


def family(city: City, *, earned: int = 120, linked: bool = True,
           mother_in_jn: bool = True, daughter_home: str = JN,
           daughter_at_home: bool = True, consented: bool = True) -> Family:
    jn, gl = city[JN], city[GL]
    daughter_no, mother_no = id_card(1965), id_card(1940, GL)
    daughter = 0
    if daughter_at_home:
        daughter = enrol_at(city, JN, "王芳", daughter_no)
        if earned:
            elder = enrol(jn.app, "赵大爷", 1938, priority=True).id
            earn(jn.app, city.clock, daughter, earned, elder)
    mother = enrol_at(city, GL, "李秀英", mother_no)
    mother_jn = 0
    if mother_in_jn:
        mother_jn = enrol_at(city, JN, "李秀英", mother_no, home=GL)
        if linked and daughter:
            jn.app.execute(people.link_people, daughter, mother_jn, Relation.PARENT, 0)
    if consented and daughter:  # she lets her hours pay for her mother's services
        ref = city[GL].app.query(people.get_person, mother).person_ref
        jn.app.execute(consent.grant_consent, daughter, 0, ref, ConsentKind.STANDING, 0, 0,
                       None, 0, Actor(person_id=daughter))
    daughter_gl = enrol_at(city, GL, "王芳", daughter_no, home=daughter_home)
    volunteer = enrol_at(city, GL, "张伟", id_card(1990, GL))
    desk = staff(gl.app)
    city.settle()
    return Family(daughter, daughter_gl, mother, mother_jn, volunteer, desk)


def order_for_mother(city: City, f: Family, minutes: int = 60) -> OrderView:
    """Request and accept, at 鼓楼区, a service for the mother paid with the daughter's
    hours: acceptance proposes the redemption to 江宁区."""
    gl = city[GL].app
    order = gl.execute(orders.request_order, f.mother, "meals", minutes,
                       PaymentSource.RELATIVE, f.daughter_gl, Actor(staff_id=f.desk), "")
    order = gl.execute(orders.accept_order, order.record.id, f.volunteer)
    assert order.record.claim_id
    return order


def serve_and_record(city: City, node_id: str, order_id: int, recipient: int,
                     minutes: int = 60) -> OrderView:
    """Check in, out, verify, pass the publicity period and record at ``node_id``."""
    app = city[node_id].app
    app.execute(orders.check_in, order_id)
    city.clock.advance(timedelta(minutes=minutes))
    app.execute(orders.check_out, order_id)
    app.execute(orders.verify_order, order_id, Actor(person_id=recipient), 5, "")
    city.clock.advance(timedelta(days=app.policy.publicity_days))
    return app.execute(orders.record_order, order_id)


def order_state(city: City, node_id: str, order_id: int) -> OrderState:
    return OrderState(city[node_id].app.query(orders.get_order, order_id).record.state)
