"""The requests waiting for a volunteer (志愿接单), as a volunteer choosing one to take
sees them, on SQLite and PostgreSQL: recipients named only by masked names, paging, the
service-point filter, staff kept to the people they serve, and bad page sizes refused."""

from __future__ import annotations

from dataclasses import fields
from datetime import timedelta

import pytest

from node.domain.access import Principal, Role, Scope
from node.domain.clock import ManualClock
from node.domain.orders import PaymentSource
from node.usecases import orders
from node.usecases.app import NodeApp
from node.usecases.views import Actor, OpenRequestView, OrderView, PersonView
from runtime.errors import InvalidArgument, NotFound, PermissionDenied
from tests.helpers import enrol, serve, snapshot, staff, walk

OPERATOR = Principal(Role.OPERATOR, 1)
AUDITOR = Principal(Role.AUDITOR, 2)
READER = Principal(Role.PROGRAM, 3, program="reader", scopes=frozenset({Scope.READ}))
KIOSK = Principal(Role.PROGRAM, 4, program="kiosk", scopes=frozenset({Scope.ORDERS}))


def _point_of(app: NodeApp, staff_id: int) -> int:
    found = app.query(lambda tx: tx.repo.staff.get(staff_id))
    assert found is not None
    return found.service_point_id


def _desk(app: NodeApp) -> Principal:
    """A staff member's principal, at a new service point (东山街道服务站) of their own."""
    sid = staff(app)
    return Principal(Role.STAFF, 10 + sid, staff_id=sid, service_point_id=_point_of(app, sid))


def _member(person: PersonView) -> Principal:
    return Principal(Role.MEMBER, 100 + person.id, person_id=person.id)


def _open(app: NodeApp, point: int = 0, *, who: Principal = OPERATOR, after_id: int = 0,
          limit: int = 100) -> list[OpenRequestView]:
    return app.query(orders.open_requests, who, point, after_id, limit)


def _ids(found: list[OpenRequestView]) -> list[int]:
    return [v.id for v in found]


def _ask(app: NodeApp, recipient: PersonView, minutes: int = 60, *,
         category: str = "cleaning", note: str = "") -> OrderView:
    """A request for ``recipient``, paid by the city fund, asked by the recipient."""
    return app.execute(orders.request_order, recipient.id, category, minutes,
                       PaymentSource.CITY_GRANT, 0, Actor(person_id=recipient.id), note)


def _secrets(app: NodeApp, people: list[PersonView]) -> list[str]:
    """Every full name, ID number and phone of ``people``, as stored."""
    found = app.query(lambda tx: tx.repo.people.by_ids([p.id for p in people]))
    assert len(found) == len(people)
    return [s for p in found.values() for s in (p.name, p.id_number, p.phone) if s]


def test_requests_are_listed_with_the_recipient_masked(node_app: NodeApp,
                                                       clock: ManualClock) -> None:
    app = node_app
    desk = _desk(app)
    elder = enrol(app, "欧阳娜娜", 1940, priority=True, point=desk.service_point_id)
    alice = enrol(app, "Alice Smith", 1938, priority=True)  # at no service point
    volunteer = enrol(app, "李秀英", 1962)
    meals = _ask(app, elder, 45, category="meals", note="午饭送到3楼，请敲门")
    clock.advance(timedelta(minutes=5))
    cleaning = _ask(app, alice, 90)
    assert _open(app) == [
        OpenRequestView(id=meals.record.id, category="meals", category_name="助餐",
                        planned_minutes=45, service_point_id=desk.service_point_id,
                        service_point="东山街道服务站", recipient="欧***",
                        requested_at=meals.record.requested_at, note="午饭送到3楼，请敲门"),
        OpenRequestView(id=cleaning.record.id, category="cleaning", category_name="助洁",
                        planned_minutes=90, service_point_id=0, service_point="",
                        recipient="A**** *****", requested_at=cleaning.record.requested_at,
                        note=""),
    ]
    seen = repr(_open(app))
    for secret in _secrets(app, [elder, alice, volunteer]):
        assert secret not in seen
    # a view holds no person id at all: only the order's own and the service point's
    assert not [f.name for f in fields(OpenRequestView) if f.name.endswith("id")
                and f.name not in ("id", "service_point_id")]


def test_only_requests_waiting_for_a_volunteer_are_listed(node_app: NodeApp,
                                                         clock: ManualClock) -> None:
    app = node_app
    elder = enrol(app, "王建国", 1940, priority=True)
    volunteer = enrol(app, "赵敏", 1980)
    neighbour = enrol(app, "孙强", 1970)
    waiting = _ask(app, elder).record.id
    serve(app, clock, elder.id, volunteer.id, 60)  # recorded
    verified = serve(app, clock, elder.id, volunteer.id, 30, record=False).record.id
    for to in ("accepted", "checked_in", "checked_out"):
        walk(app, clock, _ask(app, elder).record.id, volunteer.id, 30, to=to)
    disputed = serve(app, clock, elder.id, volunteer.id, 30, record=False).record.id
    app.execute(orders.dispute_order, disputed, Actor(person_id=neighbour.id), "没有来")
    cancelled = _ask(app, elder).record.id
    app.execute(orders.cancel_order, cancelled, Actor(person_id=elder.id), "住院了")
    assert verified and _ids(_open(app)) == [waiting]


def test_requests_are_listed_a_page_at_a_time_in_id_order(node_app: NodeApp) -> None:
    app = node_app
    elder = enrol(app, "刘桂英", 1940, priority=True)
    ids = [_ask(app, elder, 30 + n).record.id for n in range(5)]
    first = _ids(_open(app, limit=2))
    second = _ids(_open(app, after_id=first[-1], limit=2))
    third = _ids(_open(app, after_id=second[-1], limit=2))
    assert first + second + third == ids and len(third) == 1
    assert _open(app, after_id=ids[-1]) == []
    assert len(_open(app, limit=orders.MAX_OPEN_LIST)) == 5
    assert _ids(_open(app, limit=1)) == ids[:1]


def test_the_requests_of_one_service_point(node_app: NodeApp) -> None:
    app = node_app
    point, other = _desk(app).service_point_id, _desk(app).service_point_id
    here = _ask(app, enrol(app, "张桂兰", 1940, priority=True, point=point)).record.id
    there = _ask(app, enrol(app, "王桂兰", 1941, priority=True, point=other)).record.id
    nowhere = _ask(app, enrol(app, "赵桂兰", 1942, priority=True)).record.id
    assert _ids(_open(app)) == [here, there, nowhere]
    assert _ids(_open(app, point)) == [here]
    assert _ids(_open(app, other)) == [there]
    assert _ids(_open(app, point, after_id=here)) == []
    with pytest.raises(NotFound) as e:
        _open(app, 987_654)
    assert e.value.reason == "UNKNOWN_SERVICE_POINT"


def test_staff_see_their_service_point_and_people_at_none(node_app: NodeApp) -> None:
    app = node_app
    desk, other_desk = _desk(app), _desk(app)
    point, other = desk.service_point_id, other_desk.service_point_id
    ours = _ask(app, enrol(app, "张桂兰", 1940, priority=True, point=point)).record.id
    theirs = _ask(app, enrol(app, "王桂兰", 1941, priority=True, point=other)).record.id
    nobodys = _ask(app, enrol(app, "赵桂兰", 1942, priority=True)).record.id
    assert _ids(_open(app, who=desk)) == [ours, nobodys]
    assert _ids(_open(app, who=other_desk)) == [theirs, nobodys]
    assert _ids(_open(app, point, who=desk)) == [ours]
    assert _ids(_open(app, who=desk, after_id=ours, limit=1)) == [nobodys]
    before = snapshot(app)
    for asked in (other, 987_654):  # another point, or one that does not exist
        with pytest.raises(PermissionDenied) as e:
            _open(app, asked, who=desk)
        assert e.value.reason == "NOT_YOUR_SERVICE_POINT"
        assert f"staff:{desk.staff_id}" in e.value.message
        assert f"service point {asked}" in e.value.message
        assert "\u4e00" <= e.value.message[0] <= "\u9fff"  # Chinese first
    assert snapshot(app) == before


@pytest.mark.parametrize("who", [
    OPERATOR, AUDITOR, READER, KIOSK,
    Principal(Role.PROGRAM, 5, program="enrol", scopes=frozenset({Scope.ENROL})),
    Principal(Role.MEMBER, 6, person_id=987_654),
], ids=["operator", "auditor", "program-read", "program-orders", "program-enrol", "member"])
def test_everyone_else_sees_every_service_point(node_app: NodeApp, who: Principal) -> None:
    app = node_app
    point, other = _desk(app).service_point_id, _desk(app).service_point_id
    here = _ask(app, enrol(app, "张桂兰", 1940, priority=True, point=point)).record.id
    there = _ask(app, enrol(app, "王桂兰", 1941, priority=True, point=other)).record.id
    nowhere = _ask(app, enrol(app, "赵桂兰", 1942, priority=True)).record.id
    assert _ids(_open(app, who=who)) == [here, there, nowhere]
    assert _ids(_open(app, other, who=who)) == [there]


def test_a_member_takes_a_request_and_it_is_no_longer_open(node_app: NodeApp) -> None:
    app = node_app
    point = _desk(app).service_point_id
    elder = enrol(app, "周淑珍", 1938, priority=True, point=point)
    volunteer = enrol(app, "吴小明", 1990)
    first, second = _ask(app, elder).record.id, _ask(app, elder, 30).record.id
    member = _member(volunteer)
    [chosen, *_] = _open(app, point, who=member)
    assert chosen.id == first and chosen.recipient == "周**"
    taken = app.execute(orders.accept_order, chosen.id, volunteer.id,
                        actor=Actor(person_id=volunteer.id))
    assert (taken.record.state, taken.record.volunteer_id) == ("accepted", volunteer.id)
    assert _ids(_open(app, point, who=member)) == [second]
    assert _ids(_open(app)) == [second]


@pytest.mark.parametrize("limit", [0, -1, 101, 2**31 - 1])
def test_a_page_size_out_of_range_is_refused_and_changes_nothing(node_app: NodeApp,
                                                                 limit: int) -> None:
    app = node_app
    desk = _desk(app)
    _ask(app, enrol(app, "张桂兰", 1940, priority=True, point=desk.service_point_id))
    before = snapshot(app)
    for who in (OPERATOR, desk):
        with pytest.raises(InvalidArgument) as e:
            _open(app, who=who, limit=limit)
        assert e.value.reason == "LIMIT_OUT_OF_RANGE"
        assert e.value.message.startswith("每次最多列出 100 条")
        assert f"1 to 100 open requests at a time, not {limit}" in e.value.message
    assert snapshot(app) == before
