"""A claim with a district the city has not admitted is refused at once, on the city's own
signatures as this node verified them (issue 14): a move there, or a service paid with
hours a visitor keeps there, holds nothing and waits for no clearinghouse to say no."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import pytest
from nacl.signing import SigningKey
from sqlalchemy import text

from clearinghouse.bureau import issue_admission, issue_revocation
from clearinghouse.usecases import admission
from node.api.server import start_server
from node.domain.orders import OrderState, PaymentSource
from node.usecases import claims, ledger, orders
from node.usecases.app import NodeApp
from node.usecases.views import Actor
from runtime.errors import FailedPrecondition
from runtime.rpcerrors import error_reason
from tests.federation.conftest import CITY_ROOT, City
from tests.federation.support import GL, JN, QX, enrol_at
from tests.helpers import earn, enrol, id_card, staff
from tests.node.api.support import authenticated
from timebank.keys import key_id, public_key
from timebank.v1 import node_pb2, node_pb2_grpc

NOWHERE = "320199"  # a division code the city never admitted


def saver(city: City) -> int:
    """王芳, at home in 江宁区 with 2 h to move."""
    jn = city[JN].app
    person = enrol_at(city, JN, "王芳", id_card(1965))
    elder = enrol(jn, "赵大爷", 1938, priority=True).id
    earn(jn, city.clock, person, 120, elder)
    city.settle()
    return person


def counts(app: NodeApp) -> tuple[int, int, int]:
    with app.db.read() as conn:
        return tuple(int(conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one())  # type: ignore[return-value]
                     for t in ("claims", "holds", "outbox"))


def refused_move(app: NodeApp, person: int, to: str) -> FailedPrecondition:
    before = counts(app)
    with pytest.raises(FailedPrecondition) as e:
        app.execute(claims.start_move, person, to)
    assert counts(app) == before
    assert app.query(ledger.balance, person).held == 0
    return e.value


def test_a_move_to_a_district_the_city_never_admitted_is_refused(city: City) -> None:
    person = saver(city)
    e = refused_move(city[JN].app, person, NOWHERE)
    assert e.reason == "DISTRICT_NOT_ADMITTED"
    assert f"district {NOWHERE} is not admitted" in e.message
    assert "no admission certificate signed by the city" in e.message
    # an admitted district is fine
    view = city[JN].app.execute(claims.start_move, person, QX)
    assert view.counterparty == QX


def test_a_move_to_a_district_whose_key_the_city_revoked_is_refused(city: City) -> None:
    person = saver(city)
    act = issue_revocation(CITY_ROOT, QX, key_id(public_key(city[QX].key)), "compromised",
                           city.clock.now())
    city.ch.execute(admission.revoke, act, public_key(CITY_ROOT))
    city[JN].link.refresh_admissions()
    e = refused_move(city[JN].app, person, QX)
    assert e.reason == "DISTRICT_NOT_ADMITTED" and "revoked" in e.message and QX in e.message


def test_a_visitor_from_an_unadmitted_district_is_not_served_on_its_hours(
        city: City) -> None:
    gl = city[GL].app
    visitor = enrol_at(city, GL, "王芳", id_card(1965), home=NOWHERE)
    volunteer = enrol_at(city, GL, "张伟", id_card(1990, GL))
    desk = staff(gl)
    order = gl.execute(orders.request_order, visitor, "meals", 60, PaymentSource.OWN, 0,
                       Actor(staff_id=desk), "")
    before = counts(gl)
    with pytest.raises(FailedPrecondition) as e:
        gl.execute(orders.accept_order, order.record.id, volunteer)
    assert e.value.reason == "DISTRICT_NOT_ADMITTED" and NOWHERE in e.value.message
    assert counts(gl) == before
    found = gl.query(orders.get_order, order.record.id).record
    assert found.state == OrderState.REQUESTED and found.claim_id is None


@pytest.fixture
def jn_api(city: City) -> Iterator[node_pb2_grpc.NodeServiceStub]:
    """江宁区's own gRPC API, served with its link, as `timebank node serve` does."""
    running = start_server(city[JN].app, "127.0.0.1:0", link=city[JN].link)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield authenticated(city[JN].app, channel)
    finally:
        channel.close()
        running.stop(1)


def move(api: node_pb2_grpc.NodeServiceStub, person: int, to: str) -> node_pb2.Claim:
    return api.MovePerson(node_pb2.MovePersonRequest(
        idempotency_key=str(uuid.uuid4()), person_id=person, to_node_id=to), timeout=10).claim


def test_a_district_admitted_since_the_node_last_asked_is_looked_up(
        city: City, jn_api: node_pb2_grpc.NodeServiceStub) -> None:
    person = saver(city)
    with pytest.raises(grpc.RpcError) as e:
        move(jn_api, person, NOWHERE)
    assert e.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(e.value) == "DISTRICT_NOT_ADMITTED"
    assert f"district {NOWHERE} is not admitted" in (e.value.details() or "")
    assert city[JN].app.query(ledger.balance, person).held == 0
    # the bureau admits 雨花台区; 江宁区 has not asked since, and asks once when it must
    newcomer = SigningKey(b"yuhuatai".ljust(32, b"."))
    city.ch.execute(admission.admit, issue_admission(
        CITY_ROOT, "320114", "雨花台区", public_key(newcomer), 1, city.clock.now()),
        public_key(CITY_ROOT))
    asked = city[JN].link.city.refreshes
    claim = move(jn_api, person, "320114")
    assert claim.counterparty_node_id == "320114"
    assert city[JN].link.city.refreshes == asked + 1
    assert city[JN].app.query(ledger.balance, person).held == 120
