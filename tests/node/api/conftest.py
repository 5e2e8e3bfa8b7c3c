"""Fixtures for the gRPC tests: a real server on 127.0.0.1 over a real channel.

``api``: a fresh node (``node_app``: SQLite and PostgreSQL) served for one test.

``world``: one node per storage engine for a whole test module, already holding
people, links, hours and an order in every state. The bad-input tests only send
requests that must be refused and check that nothing changed, so they can share
it; building it once keeps the (large) matrix of refusals fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest

from node.domain.clock import ManualClock
from node.domain.orders import OrderState
from node.usecases.app import NodeApp
from tests.conftest import make_node_app
from tests.helpers import id_card
from tests.node.api.support import Api, key, person, serving, staff
from tests.postgres import fresh_database
from tests.sqlite import migrated_sqlite
from timebank.v1 import node_pb2 as pb


@pytest.fixture
def api(node_app: NodeApp, clock: ManualClock) -> Iterator[Api]:
    with serving(node_app, clock) as client:
        yield client


@dataclass
class World:
    api: Api
    point: int
    staff: int
    elder: int  # 张桂兰, 1940, priority elder
    volunteer: int  # 李秀英, 1962, has earned hours
    volunteer2: int  # 赵伟, 1985, serves the open orders
    parent: int  # 李秀英's mother, 1938
    stranger: int  # linked to nobody
    proxy: int  # 周丽, the elder's proxy (not family)
    young: int  # 26 years old
    group: int  # a group volunteer
    elder_id_number: str
    orders: dict[OrderState, int]
    long_order: int  # checked in more than 24 hours ago


def _build_world(api: Api) -> World:
    s = pb
    point = api.stub.RegisterServicePoint(s.RegisterServicePointRequest(
        idempotency_key=key(), code="jn-dongshan", name="东山街道为老服务站",
        street="东山街道")).service_point
    staff_member = api.stub.RegisterStaff(s.RegisterStaffRequest(
        idempotency_key=key(), name="王主任", service_point_id=point.id)).staff
    elder_number = id_card(1940)
    elder = api.stub.EnrolPerson(s.EnrolPersonRequest(
        idempotency_key=key(), kind=s.PERSON_KIND_INDIVIDUAL, name="张桂兰",
        id_number=elder_number, phone="13800000001", priority=True,
        service_point_id=point.id)).person
    volunteer = api.enrol("李秀英", 1962)
    volunteer2 = api.enrol("赵伟", 1985)
    parent = api.enrol("李老太", 1938)
    stranger = api.enrol("孙强", 1970)
    proxy = api.enrol("周丽", 1980)
    young = api.enrol("吴小明", 2000)
    group = api.enrol("江宁区志愿者协会", group=True)
    api.link(volunteer.id, parent.id, s.LINK_KIND_PARENT, staff_member.id)
    api.link(elder.id, proxy.id, s.LINK_KIND_PROXY, staff_member.id)
    by_staff = staff(staff_member.id)

    # Recorded: the volunteer earns 60 minutes.
    recorded = api.request(elder.id, by=by_staff).id
    api.accept(recorded, volunteer.id)
    api.check_in(recorded)
    api.check_out(recorded)
    api.verify(recorded, person(elder.id))
    api.clock.advance(timedelta(days=7))
    api.record(recorded)

    # Checked in more than a day ago.
    long_order = api.request(elder.id, by=by_staff).id
    api.accept(long_order, volunteer2.id)
    api.check_in(long_order)
    api.clock.advance(timedelta(hours=25))

    orders: dict[OrderState, int] = {OrderState.RECORDED: recorded}
    for state in (OrderState.REQUESTED, OrderState.ACCEPTED, OrderState.CHECKED_IN,
                  OrderState.CHECKED_OUT, OrderState.VERIFIED, OrderState.DISPUTED,
                  OrderState.CANCELLED):
        order_id = api.request(elder.id, by=by_staff).id
        orders[state] = order_id
        if state is OrderState.CANCELLED:
            api.stub.CancelOrder(s.CancelOrderRequest(
                idempotency_key=key(), order_id=order_id, cancelled_by=by_staff,
                reason="老人住院"))
            continue
        if state is OrderState.REQUESTED:
            continue
        api.accept(order_id, volunteer2.id)
        if state is OrderState.ACCEPTED:
            continue
        api.check_in(order_id)
        if state is OrderState.CHECKED_IN:
            continue
        api.check_out(order_id)
        if state is OrderState.CHECKED_OUT:
            continue
        api.verify(order_id, person(elder.id))
        if state is OrderState.DISPUTED:
            api.stub.DisputeOrder(s.DisputeOrderRequest(
                idempotency_key=key(), order_id=order_id, raised_by=person(stranger.id),
                reason="志愿者没有来"))
    for state, order_id in orders.items():
        assert api.order(order_id).state == pb.OrderState.Value(f"ORDER_STATE_{state.name}")
    return World(api=api, point=point.id, staff=staff_member.id, elder=elder.id,
                 volunteer=volunteer.id, volunteer2=volunteer2.id, parent=parent.id,
                 stranger=stranger.id, proxy=proxy.id, young=young.id, group=group.id,
                 elder_id_number=elder_number, orders=orders, long_order=long_order)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world_db_url(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        yield migrated_sqlite(tmp_path_factory.mktemp("world") / "node.sqlite3")
        return
    template: str | None = request.getfixturevalue("pg_template")
    yield from fresh_database(template, "tb_world")


@pytest.fixture(scope="module")
def world(world_db_url: str) -> Iterator[World]:
    clock = ManualClock()
    for app in make_node_app(world_db_url, clock):
        with serving(app, clock) as client:
            yield _build_world(client)
