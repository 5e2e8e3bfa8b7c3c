"""Disputes during the publicity period (公示期, 社会监督) and how staff resolve them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from node.domain.clock import ManualClock
from node.domain.orders import PaymentSource
from node.domain.policy import Relation
from node.usecases import orders
from node.usecases.app import NodeApp
from node.usecases.views import Actor, OrderView
from runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from tests.helpers import (
    assert_ledger_ok,
    balance_of,
    earn,
    enrol,
    link,
    request,
    snapshot,
    staff,
    walk,
)


@pytest.fixture
def disputed(node_app: NodeApp, clock: ManualClock) -> tuple[NodeApp, dict[str, int]]:
    """A son's 80-minute service for his mother, verified, then disputed by a neighbour."""
    app = node_app
    sid = staff(app)
    priority = enrol(app, "赵大爷", 1935, priority=True)
    mother, son = enrol(app, "母亲", 1950), enrol(app, "儿子", 1985)
    volunteer, neighbour = enrol(app, "志愿者", 1990), enrol(app, "邻居", 1970)
    earn(app, clock, son.id, 120, priority.id)
    link(app, mother.id, son.id, Relation.CHILD, sid)
    o = request(app, mother.id, 90, PaymentSource.RELATIVE, payer=son.id)
    walk(app, clock, o.record.id, volunteer.id, 80, to="verified")
    clock.advance(timedelta(days=3))
    d = app.execute(orders.dispute_order, o.record.id, Actor(person_id=neighbour.id),
                    "只待了半小时")
    assert d.record.state == "disputed" and d.record.dispute_reason == "只待了半小时"
    return app, {"staff": sid, "order": o.record.id, "son": son.id, "volunteer": volunteer.id,
                 "mother": mother.id}


def _record_after_publicity(app: NodeApp, clock: ManualClock, order_id: int) -> OrderView:
    clock.advance(timedelta(days=7))
    return app.execute(orders.record_order, order_id)


def test_a_disputed_order_cannot_be_recorded(disputed: tuple[NodeApp, dict[str, int]],
                                             clock: ManualClock) -> None:
    app, d = disputed
    clock.advance(timedelta(days=30))
    before = snapshot(app)
    with pytest.raises(FailedPrecondition) as e:
        app.execute(orders.record_order, d["order"])
    assert e.value.reason == "ORDER_STATE"
    assert app.execute(orders.record_due_orders, 100) == []
    assert snapshot(app) == before
    assert balance_of(app, d["son"]).held == 90


def test_uphold_with_corrected_minutes(disputed: tuple[NodeApp, dict[str, int]],
                                       clock: ManualClock) -> None:
    app, d = disputed
    o = app.execute(orders.resolve_dispute, d["order"], d["staff"], True, 30, "核实: 30 分钟")
    assert (o.record.state, o.record.measured_minutes) == ("verified", 30)
    assert o.record.resolution == "核实: 30 分钟"
    done = _record_after_publicity(app, clock, d["order"])
    assert (done.record.recorded_minutes, done.record.charged_minutes) == (30, 30)
    assert balance_of(app, d["volunteer"]).total == 30
    son = balance_of(app, d["son"])
    assert (son.total, son.held) == (90, 0)  # charged 30 of the 90 held
    assert_ledger_ok(app)


def test_uphold_as_measured(disputed: tuple[NodeApp, dict[str, int]],
                            clock: ManualClock) -> None:
    app, d = disputed
    o = app.execute(orders.resolve_dispute, d["order"], d["staff"], True, 0, "服务属实")
    assert o.record.measured_minutes == 80
    done = _record_after_publicity(app, clock, d["order"])
    assert (done.record.recorded_minutes, done.record.charged_minutes) == (75, 75)
    assert_ledger_ok(app)


def test_void_cancels_and_releases(disputed: tuple[NodeApp, dict[str, int]],
                                   clock: ManualClock) -> None:
    app, d = disputed
    o = app.execute(orders.resolve_dispute, d["order"], d["staff"], False, 0, "未提供服务")
    assert o.record.state == "cancelled" and o.record.cancelled_at is not None
    son = balance_of(app, d["son"])
    assert (son.total, son.held) == (120, 0)
    clock.advance(timedelta(days=30))
    assert app.execute(orders.record_due_orders, 10) == []
    assert balance_of(app, d["volunteer"]).total == 0
    assert_ledger_ok(app)


@pytest.mark.parametrize(("uphold", "minutes", "resolution", "error"), [
    (False, 30, "x", InvalidArgument),  # corrected minutes only when upheld
    (True, -5, "x", InvalidArgument),
    (True, 24 * 60 + 1, "x", InvalidArgument),
    (True, 30, "", InvalidArgument),  # say how it was resolved
    (True, 30, "\x00", InvalidArgument),
])
def test_bad_resolutions_change_nothing(disputed: tuple[NodeApp, dict[str, int]], uphold: bool,
                                        minutes: int, resolution: str,
                                        error: type[Exception]) -> None:
    app, d = disputed
    before = snapshot(app)
    with pytest.raises(error):
        app.execute(orders.resolve_dispute, d["order"], d["staff"], uphold, minutes, resolution)
    with pytest.raises(NotFound):
        app.execute(orders.resolve_dispute, d["order"], 999, True, 0, "ok")
    assert snapshot(app) == before


def test_resolve_only_a_disputed_order(disputed: tuple[NodeApp, dict[str, int]]) -> None:
    app, d = disputed
    app.execute(orders.resolve_dispute, d["order"], d["staff"], True, 0, "ok")
    before = snapshot(app)
    with pytest.raises(FailedPrecondition) as e:
        app.execute(orders.resolve_dispute, d["order"], d["staff"], True, 0, "again")
    assert e.value.reason == "ORDER_STATE"
    assert snapshot(app) == before


def test_disputes_only_during_the_publicity_period(node_app: NodeApp,
                                                   clock: ManualClock) -> None:
    app = node_app
    sid = staff(app)
    elder, volunteer = enrol(app, "张桂兰", 1940, priority=True), enrol(app, "李秀英", 1962)
    o = request(app, elder.id, 60)
    walk(app, clock, o.record.id, volunteer.id, 60, to="checked_out")
    with pytest.raises(FailedPrecondition):  # not yet public
        app.execute(orders.dispute_order, o.record.id, Actor(staff_id=sid), "early")
    app.execute(orders.verify_order, o.record.id, Actor(person_id=elder.id), 5, "")
    with pytest.raises(InvalidArgument):  # a reason is needed
        app.execute(orders.dispute_order, o.record.id, Actor(staff_id=sid), "  ")
    with pytest.raises(NotFound):  # only someone known to the node
        app.execute(orders.dispute_order, o.record.id, Actor(person_id=999), "x")
    clock.advance(timedelta(days=7))
    before = snapshot(app)
    with pytest.raises(FailedPrecondition) as e:
        app.execute(orders.dispute_order, o.record.id, Actor(staff_id=sid), "too late")
    assert e.value.reason == "PUBLICITY_ENDED"
    assert snapshot(app) == before
    app.execute(orders.record_order, o.record.id)
    with pytest.raises(FailedPrecondition) as e:
        app.execute(orders.dispute_order, o.record.id, Actor(staff_id=sid), "recorded")
    assert e.value.reason == "ORDER_STATE"


def test_a_corrected_service_is_public_again_before_it_counts(
        disputed: tuple[NodeApp, dict[str, int]], clock: ManualClock) -> None:
    app, d = disputed
    clock.advance(timedelta(days=5))  # past the original publicity period
    o = app.execute(orders.resolve_dispute, d["order"], d["staff"], True, 30, "核实: 30 分钟")
    assert o.record.public_until == clock.now() + timedelta(days=app.policy.publicity_days)
    with pytest.raises(FailedPrecondition) as e:
        app.execute(orders.record_order, d["order"])
    assert e.value.reason == "PUBLICITY_NOT_OVER"
    assert _record_after_publicity(app, clock, d["order"]).record.recorded_minutes == 30
