"""What an order shows held is what is reserved for it now, on SQLite and PostgreSQL: the
planned minutes while it is under way, nothing once it is cancelled (released) or
recorded (posted); and the ledger check finds an order that says otherwise."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import text

from node.domain.claims import payment_lost_reason
from node.domain.orders import OrderState, PaymentSource, held_problem
from node.usecases import ledger, orders
from node.usecases.app import NodeApp, Tx
from node.usecases.views import Actor
from runtime.errors import InvariantViolation
from tests.helpers import assert_ledger_ok, balance_of, enrol, request, serve, staff, walk


def _held_order(node_app: NodeApp) -> tuple[int, int, int]:
    elder = enrol(node_app, "张桂兰", 1940, priority=True).id
    volunteer = enrol(node_app, "李秀英", 1962).id
    desk = staff(node_app)
    node_app.execute(ledger.grant, elder, 120, desk, "")
    order = request(node_app, elder, 90, PaymentSource.OWN)
    accepted = node_app.execute(orders.accept_order, order.record.id, volunteer)
    assert accepted.record.held_minutes == 90 == balance_of(node_app, elder).held
    return order.record.id, elder, desk


def test_a_cancelled_order_shows_nothing_held(node_app: NodeApp) -> None:
    order_id, elder, _ = _held_order(node_app)
    cancelled = node_app.execute(orders.cancel_order, order_id, Actor(person_id=elder),
                                 "身体不适，改期")
    assert cancelled.record.state == OrderState.CANCELLED
    assert cancelled.record.held_minutes == 0 == balance_of(node_app, elder).held
    assert node_app.query(orders.get_order, order_id).record.held_minutes == 0
    assert_ledger_ok(node_app)


def test_a_service_voided_in_a_dispute_shows_nothing_held(node_app: NodeApp) -> None:
    order_id, elder, desk = _held_order(node_app)
    volunteer = node_app.query(orders.get_order, order_id).record.volunteer_id or 0
    node_app.execute(orders.check_in, order_id)
    node_app.clock.advance(timedelta(minutes=60))
    node_app.execute(orders.check_out, order_id)
    node_app.execute(orders.verify_order, order_id, Actor(person_id=elder), 2, "")
    node_app.execute(orders.dispute_order, order_id, Actor(person_id=volunteer), "没来")
    voided = node_app.execute(orders.resolve_dispute, order_id, desk, False, 0, "核实未服务")
    assert (voided.record.state, voided.record.held_minutes) == (OrderState.CANCELLED, 0)
    assert balance_of(node_app, elder).held == 0
    assert_ledger_ok(node_app)


def test_a_recorded_order_shows_what_was_charged_and_nothing_held(node_app: NodeApp) -> None:
    elder = enrol(node_app, "张桂兰", 1940, priority=True).id
    volunteer = enrol(node_app, "李秀英", 1962).id
    recorded = serve(node_app, node_app.clock, elder, volunteer, 60)
    assert recorded.record.state == OrderState.RECORDED
    assert (recorded.record.held_minutes, recorded.record.charged_minutes) == (0, 60)
    assert_ledger_ok(node_app)


def test_the_ledger_check_finds_an_order_showing_minutes_it_does_not_hold(
        node_app: NodeApp) -> None:
    order_id, elder, _ = _held_order(node_app)
    node_app.execute(orders.cancel_order, order_id, Actor(person_id=elder), "")
    other = request(node_app, elder, 30, PaymentSource.OWN).record.id
    walk(node_app, node_app.clock, other, enrol(node_app, "赵伟", 1985).id, 30, to="accepted")
    with node_app.db.write() as conn:  # what the code before this check left behind
        conn.execute(text("UPDATE orders SET held_minutes = 90 WHERE id = :o"), {"o": order_id})
        conn.execute(text("UPDATE orders SET held_minutes = 45 WHERE id = :o"), {"o": other})
    report = node_app.query(ledger.check_ledger)
    assert not report.ok
    assert f"order {order_id} is cancelled but shows 90 min held" in report.problems
    assert (f"order {other} shows 45 min held but its active holds are 30 min"
            in report.problems)


def test_storing_a_final_order_that_shows_minutes_held_is_a_bug(node_app: NodeApp) -> None:
    order_id, _, _ = _held_order(node_app)

    def cancel_keeping_held(tx: Tx) -> None:
        order = tx.repo.orders.get(order_id)
        orders.check_held(replace(order, state=OrderState.CANCELLED.value))

    with pytest.raises(InvariantViolation, match="cancelled but shows 90 min held"):
        node_app.execute(cancel_keeping_held)


@pytest.mark.parametrize(("state", "shown", "active", "problem"), [
    (OrderState.ACCEPTED, 90, 90, None),
    (OrderState.ACCEPTED, 90, None, None),  # paid by another district: it holds them
    (OrderState.RECORDED, 0, 0, None),
    (OrderState.CANCELLED, 0, None, None),
    (OrderState.CANCELLED, 90, 0, "is cancelled but shows 90 min held"),
    (OrderState.RECORDED, 60, None, "is recorded but shows 60 min held"),
    (OrderState.CHECKED_IN, 60, 90, "shows 60 min held but its active holds are 90 min"),
    (OrderState.ACCEPTED, -1, None, "shows -1 min held"),
])
def test_what_an_order_may_show_held(state: OrderState, shown: int, active: int | None,
                                     problem: str | None) -> None:
    assert held_problem(state, shown, active) == problem


def test_a_lost_payment_is_said_in_chinese_then_english_with_its_code() -> None:
    said = payment_lost_reason("INSUFFICIENT_BALANCE", "320115", "rejected",
                               "60 min available, 120 min claimed")
    assert said == ("付款人的可用时间不足 (the payer's hours available in district 320115 do "
                    "not cover it; payment rejected: 60 min available, 120 min claimed) "
                    "[INSUFFICIENT_BALANCE]")
    assert payment_lost_reason("", "320115", "expired") == (
        "付款被拒绝 (district 320115 refused the payment; payment expired) [EXPIRED]")
