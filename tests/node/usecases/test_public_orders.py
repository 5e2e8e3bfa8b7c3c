"""The public supervision page (社会监督): the orders in their publicity period, as the
public may see them, on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import fields
from datetime import timedelta

import pytest

from node.domain.clock import ManualClock
from node.usecases import orders
from node.usecases.app import NodeApp
from node.usecases.views import Actor, PersonView, PublicOrderView
from runtime.errors import InvalidArgument
from tests.helpers import enrol, request, serve, staff, walk


def _point(app: NodeApp) -> int:
    """A service point (东山街道服务站) with one staff member."""
    sid = staff(app)
    found = app.query(lambda tx: tx.repo.staff.get(sid))
    assert found is not None
    return found.service_point_id


def _public(app: NodeApp, after_id: int = 0, limit: int = 200) -> list[PublicOrderView]:
    return app.query(orders.public_orders, after_id, limit)


def _secrets(app: NodeApp, people: list[PersonView]) -> list[str]:
    """Every full name, ID number and phone of ``people``, as stored."""
    found = app.query(lambda tx: tx.repo.people.by_ids([p.id for p in people]))
    assert len(found) == len(people)
    return [s for p in found.values() for s in (p.name, p.id_number, p.phone) if s]


def test_a_verified_order_is_public_with_masked_names(node_app: NodeApp,
                                                      clock: ManualClock) -> None:
    app = node_app
    point = _point(app)
    elder = enrol(app, "欧阳娜娜", 1940, priority=True, point=point)
    volunteer = enrol(app, "李秀英", 1962)
    recorded = serve(app, clock, elder.id, volunteer.id, 60)  # its publicity is over
    before = request(app, elder.id, 60)
    walk(app, clock, before.record.id, volunteer.id, 30, to="checked_out")
    shown = serve(app, clock, elder.id, volunteer.id, 52, category="meals", record=False)
    assert recorded.record.state == "recorded"
    assert shown.record.checked_out_at is not None and shown.record.public_until is not None
    assert _public(app) == [PublicOrderView(
        id=shown.record.id, category="meals", category_name="助餐",
        service_point="东山街道服务站", minutes=52, recipient="欧***", volunteer="李**",
        served_at=shown.record.checked_out_at, public_until=shown.record.public_until,
        disputed=False)]
    seen = repr(_public(app))
    for secret in _secrets(app, [elder, volunteer]):
        assert secret not in seen
    # a view holds no person id at all: only the order's own
    assert not [f.name for f in fields(PublicOrderView) if f.name.endswith("id")
                and f.name != "id"]


def test_a_disputed_order_stays_public_flagged_until_the_dispute_is_resolved(
        node_app: NodeApp, clock: ManualClock) -> None:
    app = node_app
    elder = enrol(app, "张三", 1940, priority=True)  # at no service point
    volunteer = enrol(app, "Alice Smith", 1990)
    neighbour = enrol(app, "王五", 1970)
    o = serve(app, clock, elder.id, volunteer.id, 45, record=False)
    app.execute(orders.dispute_order, o.record.id, Actor(person_id=neighbour.id), "没有来")
    [view] = _public(app)
    assert (view.disputed, view.service_point, view.recipient, view.volunteer) == (
        True, "", "张*", "A**** *****")
    assert o.record.public_until is not None
    clock.advance(o.record.public_until - clock.now() - timedelta(microseconds=1))
    assert [v.id for v in _public(app)] == [o.record.id]
    clock.advance(timedelta(days=30))  # the period is over, the complaint still open
    assert [v.id for v in _public(app)] == [o.record.id]
    staff_id = staff(app)
    app.execute(orders.resolve_dispute, o.record.id, staff_id, True, 0, "已核实 checked")
    assert _public(app) == []  # resolved after the period: public no longer


def test_public_orders_are_paged_in_id_order(node_app: NodeApp, clock: ManualClock) -> None:
    app = node_app
    elder = enrol(app, "王建国", 1940, priority=True)
    volunteer = enrol(app, "赵敏", 1980)
    ids = [serve(app, clock, elder.id, volunteer.id, 30, record=False).record.id
           for _ in range(3)]
    assert [v.id for v in _public(app, limit=2)] == ids[:2]
    assert [v.id for v in _public(app, after_id=ids[1])] == ids[2:]
    assert [v.id for v in _public(app, after_id=ids[2])] == []


@pytest.mark.parametrize("limit", [0, -1, 201, 2**31 - 1])
def test_a_page_size_out_of_range_is_refused(node_app: NodeApp, limit: int) -> None:
    with pytest.raises(InvalidArgument) as e:
        _public(node_app, limit=limit)
    assert e.value.reason == "LIMIT_OUT_OF_RANGE"
    assert e.value.message.startswith("每次最多列出 200 条公示订单 (")
    assert _public(node_app, limit=orders.MAX_PUBLIC_LIST) == []
