"""The service loop end to end through the use-case layer, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta

import pytest

from node.domain.clock import ManualClock
from node.domain.ledger import Origin
from node.domain.orders import OrderState, PaymentSource
from node.domain.policy import Relation
from node.storage.repo import Repo
from node.usecases import ledger, orders
from node.usecases.app import NodeApp, city_time
from node.usecases.views import Actor
from runtime.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from tests.helpers import (
    account_balance,
    assert_ledger_ok,
    balance_of,
    earn,
    enrol,
    link,
    policy_toml,
    request,
    serve,
    snapshot,
    staff,
    walk,
)


def test_recorded_service_deposits_rounded_minutes(node_app: NodeApp,
                                                   clock: ManualClock) -> None:
    elder = enrol(node_app, "张桂兰", 1940, priority=True)
    volunteer = enrol(node_app, "李秀英", 1962)
    order = serve(node_app, clock, elder.id, volunteer.id, minutes=80)
    assert order.record.state == "recorded"
    assert order.record.recorded_minutes == 75
    balance = node_app.query(ledger.balance, volunteer.id)
    assert balance.total == 75
    assert [(b.origin, b.total) for b in balance.by_origin] == [(Origin.INDIVIDUAL, 75)]
    report = node_app.query(ledger.check_ledger)
    assert report.ok, report.problems
    assert report.issued == 75 and report.consumed == 75 and report.granted == 75


# ------------------------------------------------------------------ the loop step by step


def test_every_state_of_the_loop_is_recorded_as_an_event(node_app: NodeApp,
                                                         clock: ManualClock) -> None:
    app = node_app
    elder = enrol(app, "张桂兰", 1940, priority=True)
    volunteer = enrol(app, "李秀英", 1962)
    o = request(app, elder.id, 60, category="助餐")
    assert (o.record.state, o.record.category, o.category_name) == ("requested", "meals", "助餐")
    assert o.record.held_minutes == 0
    o = app.execute(orders.accept_order, o.record.id, volunteer.id)
    assert (o.record.state, o.record.volunteer_id, o.record.held_minutes) == (
        "accepted", volunteer.id, 60)
    o = app.execute(orders.check_in, o.record.id)
    assert o.record.state == "checked_in" and o.record.checked_in_at == clock.now()
    assert o.record.service_day == date(2026, 3, 2)  # 09:00 in Nanjing
    clock.advance(timedelta(minutes=52))
    o = app.execute(orders.check_out, o.record.id)
    assert (o.record.state, o.record.measured_minutes) == ("checked_out", 52)
    o = app.execute(orders.verify_order, o.record.id, Actor(person_id=elder.id), 4, "准时")
    assert (o.record.state, o.record.rating, o.record.comment) == ("verified", 4, "准时")
    assert o.record.verified_by == f"person:{elder.id}"
    assert o.record.public_until == clock.now() + timedelta(days=7)
    clock.advance(timedelta(days=7))
    o = app.execute(orders.record_order, o.record.id)
    assert (o.record.state, o.record.recorded_minutes, o.record.banked_minutes) == (
        "recorded", 45, 45)
    assert o.notices == ("service of 52 min was recorded as 45 min (rounded to the city's "
                         "15-minute unit)",)
    with app.db.read() as conn:
        events = Repo(conn).orders.events(o.record.id)
    assert [(e.from_state, e.to_state) for e in events] == [
        ("", "requested"), ("requested", "accepted"), ("accepted", "checked_in"),
        ("checked_in", "checked_out"), ("checked_out", "verified"), ("verified", "recorded")]
    assert_ledger_ok(app)


def test_hours_are_deposited_only_when_recorded(node_app: NodeApp, clock: ManualClock) -> None:
    app = node_app
    elder = enrol(app, "张桂兰", 1940, priority=True)
    volunteer = enrol(app, "李秀英", 1962)
    o = serve(app, clock, elder.id, volunteer.id, 60, record=False)
    assert o.record.state == "verified"
    assert balance_of(app, volunteer.id).total == 0
    assert app.query(ledger.check_ledger).transactions == 0
    clock.advance(timedelta(days=7) - timedelta(microseconds=1))
    before = snapshot(app)
    with pytest.raises(FailedPrecondition) as e:
        app.execute(orders.record_order, o.record.id)
    assert e.value.reason == "PUBLICITY_NOT_OVER"
    assert e.value.message.startswith("公示期未满 (")
    assert o.record.public_until is not None
    assert city_time(o.record.public_until) in e.value.message  # when, in the city's time
    assert "(Asia/Shanghai)" in e.value.message and "order record-due" in e.value.message
    assert snapshot(app) == before
    clock.advance(timedelta(microseconds=1))  # exactly at the end of the period
    app.execute(orders.record_order, o.record.id)
    assert balance_of(app, volunteer.id).total == 60
    before = snapshot(app)
    again = app.execute(orders.record_order, o.record.id)  # recorded once only
    assert snapshot(app) == before
    assert again.record.state == "recorded" and again.record.recorded_minutes == 60
    assert "[ALREADY_RECORDED]" in again.notices[0] and "已记录" in again.notices[0]
    assert balance_of(app, volunteer.id).total == 60


def test_record_due_orders_records_only_what_is_due(node_app: NodeApp,
                                                    clock: ManualClock) -> None:
    app = node_app
    elder = enrol(app, "张桂兰", 1940, priority=True)
    volunteers = [enrol(app, f"志愿者{i}", 1970 + i) for i in range(3)]
    first = serve(app, clock, elder.id, volunteers[0].id, 30, record=False)
    clock.advance(timedelta(days=2))
    second = serve(app, clock, elder.id, volunteers[1].id, 45, record=False)
    clock.advance(timedelta(days=2))
    third = serve(app, clock, elder.id, volunteers[2].id, 60, record=False)
    assert app.execute(orders.record_due_orders, 100) == []
    clock.advance(timedelta(days=3, hours=12))  # the first is due, the others not yet
    done = app.execute(orders.record_due_orders, 100)
    assert [o.record.id for o in done] == [first.record.id]
    clock.advance(timedelta(days=5))
    done = app.execute(orders.record_due_orders, 1)  # a limit is a limit
    assert [o.record.id for o in done] == [second.record.id]
    done = app.execute(orders.record_due_orders, 10)
    assert [o.record.id for o in done] == [third.record.id]
    assert [balance_of(app, v.id).total for v in volunteers] == [30, 45, 60]
    for bad in (0, -1, orders.MAX_RECORD_BATCH + 1):
        with pytest.raises(InvalidArgument):
            app.execute(orders.record_due_orders, bad)
    report = assert_ledger_ok(app)
    assert report.transactions == 3 and report.issued == 135


def test_a_batch_gives_the_same_result_as_one_by_one(policy_app: Callable[[str], NodeApp],
                                                     clock: ManualClock) -> None:
    app = policy_app(policy_toml(cap_hours=2, daily_cap_minutes=90))
    elder = enrol(app, "张桂兰", 1940, priority=True)
    volunteer = enrol(app, "李秀英", 1962)
    for minutes in (45, 30, 30):  # same day: the third crosses the daily cap
        serve(app, clock, elder.id, volunteer.id, minutes, record=False)
    clock.advance(timedelta(days=1))
    serve(app, clock, elder.id, volunteer.id, 60, record=False)  # next day: crosses the cap
    clock.advance(timedelta(days=7))
    done = app.execute(orders.record_due_orders, 10)
    splits = [(o.record.banked_minutes, o.record.excess_to_pool_minutes,
               o.record.unbanked_minutes) for o in done]
    assert splits == [(45, 0, 0), (30, 0, 0), (15, 0, 15), (30, 30, 0)]
    assert balance_of(app, volunteer.id).total == 120
    assert account_balance(app, "donation_pool") == (30, 0)
    assert_ledger_ok(app)


def test_a_service_rounded_to_nothing_records_no_entry(node_app: NodeApp,
                                                      clock: ManualClock) -> None:
    app = node_app
    elder = enrol(app, "张桂兰", 1940, priority=True)
    volunteer = enrol(app, "李秀英", 1962)
    o = serve(app, clock, elder.id, volunteer.id, 7)
    assert (o.record.state, o.record.recorded_minutes, o.record.charged_minutes) == (
        "recorded", 0, 0)
    report = assert_ledger_ok(app)
    assert report.transactions == 0
    assert account_balance(app, "city_grant") == (0, 0)  # the hold was released


def test_check_in_and_out_times(node_app: NodeApp, clock: ManualClock) -> None:
    app = node_app
    elder = enrol(app, "张桂兰", 1940, priority=True)
    volunteer = enrol(app, "李秀英", 1962)
    o = request(app, elder.id, 60)
    app.execute(orders.accept_order, o.record.id, volunteer.id)
    now = clock.now()
    for at, reason in ((now + timedelta(minutes=6), "TIME_IN_FUTURE"),
                       (now - timedelta(days=31), "TIME_TOO_OLD")):
        with pytest.raises(InvalidArgument) as e:
            app.execute(orders.check_in, o.record.id, at)
        assert e.value.reason == reason
    with pytest.raises(InvalidArgument):
        app.execute(orders.check_in, o.record.id, datetime(2026, 3, 2, 8, 0))  # naive
    before = snapshot(app)
    with pytest.raises(InvalidArgument) as e:  # before the order was requested
        app.execute(orders.check_in, o.record.id, o.record.requested_at - timedelta(seconds=1))
    assert e.value.reason == "CHECK_IN_BEFORE_REQUEST"
    assert snapshot(app) == before
    clock.advance(timedelta(hours=4))  # the visit is entered four hours after the request
    now = clock.now()
    # staff enter a visit after the fact
    app.execute(orders.check_in, o.record.id, now - timedelta(hours=3))
    before = snapshot(app)
    for at in (now - timedelta(hours=3), now - timedelta(hours=4)):
        with pytest.raises(InvalidArgument) as e:
            app.execute(orders.check_out, o.record.id, at)
        assert e.value.reason == "CHECK_OUT_BEFORE_CHECK_IN"
    with pytest.raises(InvalidArgument) as e:  # under a minute
        app.execute(orders.check_out, o.record.id, now - timedelta(hours=3) + timedelta(
            seconds=59))
    assert e.value.reason == "MINUTES_OUT_OF_RANGE"
    assert snapshot(app) == before
    o = app.execute(orders.check_out, o.record.id, now - timedelta(hours=2, minutes=10))
    assert o.record.measured_minutes == 50


def test_a_visit_longer_than_a_day_is_refused(node_app: NodeApp, clock: ManualClock) -> None:
    app = node_app
    elder = enrol(app, "张桂兰", 1940, priority=True)
    volunteer = enrol(app, "李秀英", 1962)
    o = request(app, elder.id, 60)
    app.execute(orders.accept_order, o.record.id, volunteer.id)
    app.execute(orders.check_in, o.record.id)
    clock.advance(timedelta(hours=24, minutes=1))
    with pytest.raises(InvalidArgument) as e:
        app.execute(orders.check_out, o.record.id)
    assert e.value.reason == "MINUTES_OUT_OF_RANGE"


def test_who_may_verify(node_app: NodeApp, clock: ManualClock) -> None:
    app = node_app
    sid = staff(app)
    elder = enrol(app, "张桂兰", 1940, priority=True)
    proxy, stranger = enrol(app, "社工", 1985), enrol(app, "路人", 1985)
    volunteer = enrol(app, "李秀英", 1962)
    link(app, elder.id, proxy.id, Relation.PROXY, sid)
    link(app, elder.id, volunteer.id, Relation.CHILD, sid)  # even family cannot verify itself
    orders_ = [request(app, elder.id, 30) for _ in range(3)]
    for o in orders_:
        walk(app, clock, o.record.id, volunteer.id, 30, to="checked_out")
    for actor, reason in ((Actor(person_id=volunteer.id), "NOT_AUTHORISED"),
                          (Actor(person_id=stranger.id), "NOT_AUTHORISED")):
        before = snapshot(app)
        with pytest.raises(PermissionDenied) as e:
            app.execute(orders.verify_order, orders_[0].record.id, actor, 5, "")
        assert e.value.reason == reason
        assert snapshot(app) == before
    for rating in (0, 6, -1):
        with pytest.raises(InvalidArgument) as ie:
            app.execute(orders.verify_order, orders_[0].record.id, Actor(staff_id=sid), rating, "")
        assert ie.value.reason == "BAD_RATING"
    with pytest.raises(InvalidArgument):  # exactly one actor
        app.execute(orders.verify_order, orders_[0].record.id,
                    Actor(person_id=elder.id, staff_id=sid), 5, "")
    with pytest.raises(NotFound):
        app.execute(orders.verify_order, orders_[0].record.id, Actor(staff_id=999), 5, "")
    assert app.execute(orders.verify_order, orders_[0].record.id, Actor(person_id=proxy.id),
                       3, "").record.verified_by == f"person:{proxy.id}"
    assert app.execute(orders.verify_order, orders_[1].record.id, Actor(staff_id=sid),
                       5, "电话回访").record.verified_by == f"staff:{sid}"
    assert app.execute(orders.verify_order, orders_[2].record.id, Actor(person_id=elder.id),
                       1, "").record.rating == 1


def test_who_may_cancel(node_app: NodeApp, clock: ManualClock) -> None:
    app = node_app
    elder = enrol(app, "张桂兰", 1940, priority=True)
    volunteer, stranger = enrol(app, "李秀英", 1962), enrol(app, "路人", 1985)
    o = request(app, elder.id, 30)
    walk(app, clock, o.record.id, volunteer.id, to="accepted")
    with pytest.raises(PermissionDenied):
        app.execute(orders.cancel_order, o.record.id, Actor(person_id=stranger.id), "")
    # the volunteer who took it may give it back
    o = app.execute(orders.cancel_order, o.record.id, Actor(person_id=volunteer.id), "生病")
    assert o.record.state == "cancelled" and o.record.cancelled_at == clock.now()
    assert account_balance(app, "city_grant") == (0, 0)


def test_an_order_cannot_be_cancelled_once_the_service_is_done(
        node_app: NodeApp, clock: ManualClock) -> None:
    app = node_app
    elder = enrol(app, "张桂兰", 1940, priority=True)
    volunteer = enrol(app, "李秀英", 1962)
    for to in ("checked_out", "verified", "recorded"):
        o = request(app, elder.id, 30)
        walk(app, clock, o.record.id, volunteer.id, 30, to=to)
        before = snapshot(app)
        with pytest.raises(FailedPrecondition) as e:
            app.execute(orders.cancel_order, o.record.id, Actor(person_id=elder.id), "")
        assert e.value.reason == "ORDER_STATE"
        assert snapshot(app) == before


def test_self_service_is_refused(node_app: NodeApp, clock: ManualClock) -> None:
    app = node_app
    sid = staff(app)
    priority = enrol(app, "赵大爷", 1935, priority=True)
    mother, son = enrol(app, "母亲", 1950), enrol(app, "儿子", 1985)
    earn(app, clock, son.id, 60, priority.id)
    link(app, mother.id, son.id, Relation.CHILD, sid)
    o = request(app, priority.id, 30)
    with pytest.raises(PermissionDenied) as e:
        app.execute(orders.accept_order, o.record.id, priority.id)
    assert e.value.reason == "SELF_SERVICE"
    paid = request(app, mother.id, 30, PaymentSource.RELATIVE, payer=son.id)
    with pytest.raises(PermissionDenied) as e:
        app.execute(orders.accept_order, paid.record.id, son.id)
    assert e.value.reason == "SELF_SERVICE"


def test_unknown_category_lists_the_citys(node_app: NodeApp) -> None:
    elder = enrol(node_app, "张桂兰", 1940, priority=True)
    with pytest.raises(InvalidArgument) as e:
        request(node_app, elder.id, 30, category="massage")
    assert e.value.reason == "UNKNOWN_CATEGORY" and "助洁" in e.value.message
    assert request(node_app, elder.id, 30, category=" 助浴 ").record.category == "bathing"


def test_listing_and_getting_orders(node_app: NodeApp, clock: ManualClock) -> None:
    app = node_app
    elder = enrol(app, "张桂兰", 1940, priority=True)
    volunteer = enrol(app, "李秀英", 1962)
    a = serve(app, clock, elder.id, volunteer.id, 30)
    b = request(app, elder.id, 30)
    listed = app.query(orders.list_orders, volunteer.id, None, 0, 10)
    assert [o.record.id for o in listed] == [a.record.id]
    listed = app.query(orders.list_orders, elder.id, OrderState.REQUESTED, 0, 10)
    assert [o.record.id for o in listed] == [b.record.id]
    assert len(app.query(orders.list_orders, 0, None, 0, 10)) == 2
    assert app.query(orders.get_order, a.record.id).record.state == "recorded"
    with pytest.raises(NotFound):
        app.query(orders.get_order, 999)
    with pytest.raises(NotFound):
        app.query(orders.list_orders, 999, None, 0, 10)
    with pytest.raises(InvalidArgument):
        app.query(orders.list_orders, 0, None, 0, 1001)
