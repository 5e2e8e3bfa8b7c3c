"""The stored-hours cap, the daily earning cap, and group volunteers' hours."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from node.domain.clock import ManualClock
from node.domain.orders import PaymentSource
from node.domain.policy import Relation
from node.usecases import ledger, orders
from node.usecases.app import NodeApp
from node.usecases.views import Actor
from runtime.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from tests.helpers import (
    account_balance,
    assert_ledger_ok,
    balance_of,
    by_origin,
    consent,
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

# ------------------------------------------------------------------ the stored-hours cap


def test_cap_excess_goes_to_the_pool_with_a_notice(policy_app: Callable[[str], NodeApp],
                                                   clock: ManualClock) -> None:
    app = policy_app(policy_toml(cap_hours=2))
    elder, volunteer = enrol(app, "张桂兰", 1940, priority=True), enrol(app, "李秀英", 1962)
    serve(app, clock, elder.id, volunteer.id, 90)
    o = serve(app, clock, elder.id, volunteer.id, 60)
    assert (o.record.banked_minutes, o.record.excess_to_pool_minutes) == (30, 30)
    assert "0.50 h over the stored-hours cap of 2.00 h went to the donation pool" in o.notices
    assert balance_of(app, volunteer.id).total == 120
    assert account_balance(app, "donation_pool") == (30, 0)
    o = serve(app, clock, elder.id, volunteer.id, 45)  # at the cap: all of it to the pool
    assert (o.record.banked_minutes, o.record.excess_to_pool_minutes) == (0, 45)
    report = assert_ledger_ok(app)
    assert report.issued == 195 and report.donation_pool == 75


def test_cap_counts_every_origin(policy_app: Callable[[str], NodeApp],
                                 clock: ManualClock) -> None:
    app = policy_app(policy_toml(cap_hours=2))
    sid = staff(app)
    other = enrol(app, "赵大爷", 1935, priority=True)
    elder = enrol(app, "钱奶奶", 1945, priority=True)
    app.execute(ledger.grant, elder.id, 90, sid, "grant")
    o = serve(app, clock, other.id, elder.id, 60)  # the elder volunteers too
    assert (o.record.banked_minutes, o.record.excess_to_pool_minutes) == (30, 30)
    assert by_origin(app, elder.id) == {"granted": (90, 0), "individual": (30, 0)}
    before = snapshot(app)
    with pytest.raises(FailedPrecondition) as e:  # a grant never breaks the cap
        app.execute(ledger.grant, elder.id, 15, sid, "grant")
    assert e.value.reason == "CAP_EXCEEDED"
    assert snapshot(app) == before
    assert_ledger_ok(app)


def test_daily_cap_records_but_does_not_store(policy_app: Callable[[str], NodeApp],
                                              clock: ManualClock) -> None:
    app = policy_app(policy_toml(daily_cap_minutes=60))
    elder, volunteer = enrol(app, "张桂兰", 1940, priority=True), enrol(app, "李秀英", 1962)
    serve(app, clock, elder.id, volunteer.id, 45, record=False)
    serve(app, clock, elder.id, volunteer.id, 45, record=False)
    clock.advance(timedelta(days=7))
    first, second = app.execute(orders.record_due_orders, 10)
    assert (first.record.banked_minutes, first.record.unbanked_minutes) == (45, 0)
    assert (second.record.banked_minutes, second.record.unbanked_minutes) == (15, 30)
    assert second.record.recorded_minutes == 45 and second.record.charged_minutes == 45
    assert "0.50 h over the daily earning cap were recorded as service but not stored" in (
        second.notices)
    assert balance_of(app, volunteer.id).total == 60
    # another day, another allowance
    o = serve(app, clock, elder.id, volunteer.id, 45)
    assert (o.record.banked_minutes, o.record.unbanked_minutes) == (45, 0)
    report = assert_ledger_ok(app)
    assert (report.issued, report.consumed) == (105, 135)


# ------------------------------------------------------------------ group volunteers


@pytest.fixture
def group_world(node_app: NodeApp, clock: ManualClock) -> dict[str, int]:
    app = node_app
    sid = staff(app)
    elder = enrol(app, "张桂兰", 1940, priority=True)
    group = enrol(app, "江宁区某公司党支部", group=True)
    o = serve(app, clock, elder.id, group.id, 120)
    assert o.record.banked_minutes == 120
    return {"staff": sid, "elder": elder.id, "group": group.id}


def test_group_hours_are_earned_as_group_origin(node_app: NodeApp,
                                                group_world: dict[str, int]) -> None:
    app, g = node_app, group_world
    assert by_origin(app, g["group"]) == {"group": (120, 0)}
    report = assert_ledger_ok(app)
    assert report.issued == 120
    assert account_balance(app, "issuance/group") == (-120, 0)


def test_group_hours_can_be_donated(node_app: NodeApp, group_world: dict[str, int]) -> None:
    app, g = node_app, group_world
    app.execute(ledger.donate, g["group"], 90)
    assert by_origin(app, g["group"]) == {"group": (30, 0)}
    assert account_balance(app, "donation_pool") == (90, 0)
    before = snapshot(app)
    with pytest.raises(FailedPrecondition) as e:
        app.execute(ledger.donate, g["group"], 45)
    assert e.value.reason == "INSUFFICIENT_BALANCE"
    for bad in (0, -15, 10**12 + 1):
        with pytest.raises(InvalidArgument):
            app.execute(ledger.donate, g["group"], bad)
    assert snapshot(app) == before
    assert_ledger_ok(app)


def test_group_hours_cannot_pay(node_app: NodeApp, group_world: dict[str, int]) -> None:
    app, g = node_app, group_world
    before = snapshot(app)
    with pytest.raises(PermissionDenied) as e:
        request(app, g["elder"], 30, PaymentSource.RELATIVE, payer=g["group"],
                requester=Actor(staff_id=g["staff"]))
    assert e.value.reason == "GROUP_HOURS_DONATE_ONLY"
    with pytest.raises(InvalidArgument) as ie:  # nor be served
        request(app, g["group"], 30, PaymentSource.OWN)
    assert ie.value.reason == "RECIPIENT_IS_GROUP"
    with pytest.raises(InvalidArgument):  # nor be anyone's family
        link(app, g["elder"], g["group"], Relation.CHILD, g["staff"])
    assert snapshot(app) == before


def test_a_city_may_let_groups_sponsor(policy_app: Callable[[str], NodeApp],
                                       clock: ManualClock) -> None:
    app = policy_app(policy_toml(group_hours_donate_only=False))
    elder, other = enrol(app, "张桂兰", 1940, priority=True), enrol(app, "钱阿姨", 1955)
    group, volunteer = enrol(app, "某公司", group=True), enrol(app, "李秀英", 1962)
    earn(app, clock, group.id, 60, elder.id)
    with pytest.raises(PermissionDenied):  # the group's hours are not the recipient's to spend
        request(app, other.id, 60, PaymentSource.RELATIVE, payer=group.id,
                requester=Actor(person_id=other.id))
    desk = staff(app)
    consent(app, group.id, other.id, Actor(staff_id=desk))  # recorded by staff for the group
    o = request(app, other.id, 60, PaymentSource.RELATIVE, payer=group.id,
                requester=Actor(staff_id=desk))
    o = walk(app, clock, o.record.id, volunteer.id, 60, to="recorded")
    assert o.record.charged_minutes == 60
    assert by_origin(app, group.id) == {}
    assert_ledger_ok(app)


def test_group_cannot_be_a_priority_elder(node_app: NodeApp) -> None:
    from node.domain.orders import PersonKind
    from node.usecases import people
    from tests.helpers import credit_code
    with pytest.raises(InvalidArgument):
        node_app.execute(people.enrol_person, PersonKind.GROUP, "某公司", credit_code(), "",
                         True, 0)
