"""Who pays for a service: own hours, a relative's, the donation pool, the city grant.

Every payment is held when a volunteer accepts the order and posted when it is recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from node.domain.clock import ManualClock
from node.domain.orders import PaymentSource
from node.domain.policy import Relation
from node.usecases import ledger, orders
from node.usecases.app import NodeApp
from node.usecases.views import Actor, OrderView
from runtime.errors import FailedPrecondition, PermissionDenied, ResourceExhausted
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
    snapshot,
    staff,
    walk,
)

OWN, RELATIVE = PaymentSource.OWN, PaymentSource.RELATIVE
POOL, GRANT = PaymentSource.DONATION_POOL, PaymentSource.CITY_GRANT


# ------------------------------------------------------------------ own hours


def test_own_hours_draw_granted_minutes_first(node_app: NodeApp, clock: ManualClock) -> None:
    app = node_app
    sid = staff(app)
    other_elder = enrol(app, "赵大爷", 1935, priority=True)
    elder = enrol(app, "钱奶奶", 1950, priority=True)
    volunteer = enrol(app, "孙小姐", 1990)
    earn(app, clock, elder.id, 60, other_elder.id)  # the elder served someone: 60 individual
    app.execute(ledger.grant, elder.id, 30, sid, "低收入独居")
    assert by_origin(app, elder.id) == {"individual": (60, 0), "granted": (30, 0)}

    o = request(app, elder.id, 75, OWN)
    walk(app, clock, o.record.id, volunteer.id, 75, to="accepted")
    # the hold takes granted minutes first, and reduces what is available at once
    assert by_origin(app, elder.id) == {"individual": (60, 45), "granted": (30, 30)}
    b = balance_of(app, elder.id)
    assert (b.total, b.held, b.available) == (90, 75, 15)

    app.execute(orders.check_in, o.record.id)
    clock.advance(timedelta(minutes=75))
    app.execute(orders.check_out, o.record.id)
    app.execute(orders.verify_order, o.record.id, Actor(person_id=elder.id), 5, "很好")
    clock.advance(timedelta(days=7))
    done = app.execute(orders.record_order, o.record.id)
    assert done.record.charged_minutes == 75
    assert by_origin(app, elder.id) == {"individual": (15, 0)}
    assert balance_of(app, volunteer.id).total == 75
    assert_ledger_ok(app)


def test_a_short_service_charges_granted_first_and_releases_the_rest(
        node_app: NodeApp, clock: ManualClock) -> None:
    app = node_app
    sid = staff(app)
    other = enrol(app, "赵大爷", 1935, priority=True)
    elder = enrol(app, "钱奶奶", 1950, priority=True)
    volunteer = enrol(app, "孙小姐", 1990)
    earn(app, clock, elder.id, 60, other.id)
    app.execute(ledger.grant, elder.id, 30, sid, "grant")
    o = request(app, elder.id, 75, OWN)
    done = walk(app, clock, o.record.id, volunteer.id, 40, to="recorded")
    assert (done.record.measured_minutes, done.record.recorded_minutes) == (40, 45)
    assert done.record.charged_minutes == 45
    assert by_origin(app, elder.id) == {"individual": (45, 0)}  # 30 granted + 15 individual
    assert_ledger_ok(app)


def test_an_overrun_credits_the_volunteer_but_charges_only_what_was_agreed(
        node_app: NodeApp, clock: ManualClock) -> None:
    app = node_app
    elder = enrol(app, "钱奶奶", 1940, priority=True)
    volunteer = enrol(app, "孙小姐", 1990)
    o = request(app, elder.id, 60, GRANT)
    done = walk(app, clock, o.record.id, volunteer.id, 95, to="recorded")
    assert done.record.recorded_minutes == 90 and done.record.charged_minutes == 60
    assert balance_of(app, volunteer.id).total == 90
    report = assert_ledger_ok(app)
    assert (report.issued, report.consumed, report.granted) == (90, 60, 60)


def test_own_hours_only_from_the_city_age(node_app: NodeApp, clock: ManualClock) -> None:
    app = node_app
    elder = enrol(app, "赵大爷", 1935, priority=True)
    young = enrol(app, "周先生", 1980)
    earn(app, clock, young.id, 60, elder.id)
    before = snapshot(app)
    with pytest.raises(PermissionDenied) as e:
        request(app, young.id, 30, OWN)
    assert e.value.reason == "TOO_YOUNG_TO_REDEEM"
    assert snapshot(app) == before


def test_own_hours_must_be_available(node_app: NodeApp, clock: ManualClock) -> None:
    app = node_app
    elder = enrol(app, "赵大爷", 1935, priority=True)
    senior = enrol(app, "吴阿姨", 1958)
    volunteer = enrol(app, "郑先生", 1990)
    earn(app, clock, senior.id, 60, elder.id)
    with pytest.raises(FailedPrecondition) as e:
        request(app, senior.id, 75, OWN)
    assert e.value.reason == "INSUFFICIENT_BALANCE"
    first = request(app, senior.id, 45, OWN)
    second = request(app, senior.id, 45, OWN)  # both fit when requested ...
    walk(app, clock, first.record.id, volunteer.id, to="accepted")
    before = snapshot(app)
    with pytest.raises(FailedPrecondition) as e:  # ... but the hour can be held only once
        app.execute(orders.accept_order, second.record.id, volunteer.id)
    assert e.value.reason == "INSUFFICIENT_BALANCE"
    assert snapshot(app) == before
    app.execute(orders.cancel_order, first.record.id, Actor(person_id=senior.id), "改期")
    walk(app, clock, second.record.id, volunteer.id, 45, to="recorded")
    assert by_origin(app, senior.id) == {"individual": (15, 0)}
    assert_ledger_ok(app)


# ------------------------------------------------------------------ a relative's hours


@pytest.fixture
def family(node_app: NodeApp, clock: ManualClock) -> dict[str, int]:
    """A mother of 76, her son of 41 who has stored 120 minutes, a proxy, a volunteer."""
    app = node_app
    sid = staff(app)
    priority = enrol(app, "赵大爷", 1935, priority=True)
    mother = enrol(app, "王秀兰", 1950)
    son = enrol(app, "王建国", 1985)
    proxy = enrol(app, "李社工", 1988)
    volunteer = enrol(app, "陈志愿", 1995)
    stranger = enrol(app, "路人甲", 1960)
    earn(app, clock, son.id, 120, priority.id)
    earn(app, clock, stranger.id, 120, priority.id)
    link(app, mother.id, son.id, Relation.CHILD, sid)  # the son is her child (and she his parent)
    link(app, mother.id, proxy.id, Relation.PROXY, sid)
    return {"staff": sid, "priority": priority.id, "mother": mother.id, "son": son.id,
            "proxy": proxy.id, "volunteer": volunteer.id, "stranger": stranger.id}


def test_a_child_pays_for_a_parent(node_app: NodeApp, clock: ManualClock,
                                   family: dict[str, int]) -> None:
    app, f = node_app, family
    o = request(app, f["mother"], 60, RELATIVE, payer=f["son"])
    walk(app, clock, o.record.id, f["volunteer"], to="accepted")
    assert by_origin(app, f["son"]) == {"individual": (120, 60)}
    done = walk_rest(app, clock, o.record.id, 60)
    assert done.record.charged_minutes == 60
    assert by_origin(app, f["son"]) == {"individual": (60, 0)}
    assert balance_of(app, f["mother"]).total == 0
    assert balance_of(app, f["volunteer"]).total == 60
    assert_ledger_ok(app)


def test_the_parent_may_request_with_the_childs_hours(node_app: NodeApp, clock: ManualClock,
                                                      family: dict[str, int]) -> None:
    app, f = node_app, family
    with pytest.raises(FailedPrecondition) as e:  # not without the son's consent (ADR 0017)
        request(app, f["mother"], 30, RELATIVE, payer=f["son"],
                requester=Actor(person_id=f["mother"]))
    assert e.value.reason == "NO_CONSENT"
    consent(app, f["son"], f["mother"])
    o = request(app, f["mother"], 30, RELATIVE, payer=f["son"],
                requester=Actor(person_id=f["mother"]))
    assert o.record.payer_id == f["son"]


@pytest.mark.parametrize(("payer", "recipient", "status", "reason"), [
    ("proxy", "mother", PermissionDenied, "NOT_A_RELATIVE"),  # a proxy is not family
    ("stranger", "mother", PermissionDenied, "NOT_A_RELATIVE"),
    ("mother", "son", PermissionDenied, "RELATIVE_TOO_YOUNG"),  # the son is 41
])
def test_relative_payments_refused(node_app: NodeApp, family: dict[str, int], payer: str,
                                   recipient: str, status: type[Exception], reason: str) -> None:
    app, f = node_app, family
    before = snapshot(app)
    with pytest.raises(status) as e:
        request(app, f[recipient], 30, RELATIVE, payer=f[payer],
                requester=Actor(staff_id=f["staff"]))
    assert getattr(e.value, "reason", None) == reason
    assert snapshot(app) == before


def test_relations_allowed_are_a_city_setting(policy_app: Callable[[str], NodeApp],
                                              clock: ManualClock) -> None:
    app = policy_app(policy_toml(redeem={"relatives": ["spouse"]}))
    sid = staff(app)
    priority = enrol(app, "赵大爷", 1935, priority=True)
    mother, son, wife = enrol(app, "母亲", 1950), enrol(app, "儿子", 1985), enrol(app, "妻子", 1952)
    husband = enrol(app, "丈夫", 1950)
    earn(app, clock, son.id, 60, priority.id)
    earn(app, clock, husband.id, 60, priority.id)
    link(app, mother.id, son.id, Relation.CHILD, sid)
    link(app, wife.id, husband.id, Relation.SPOUSE, sid)
    with pytest.raises(PermissionDenied) as e:
        request(app, mother.id, 30, RELATIVE, payer=son.id)
    assert e.value.reason == "RELATION_NOT_ALLOWED"
    request(app, wife.id, 30, RELATIVE, payer=husband.id)


def test_a_relative_spends_only_individually_earned_minutes(
        node_app: NodeApp, clock: ManualClock) -> None:
    app = node_app
    sid = staff(app)
    other = enrol(app, "赵大爷", 1935, priority=True)
    husband = enrol(app, "丈夫", 1940, priority=True)
    wife = enrol(app, "妻子", 1942)
    link(app, wife.id, husband.id, Relation.SPOUSE, sid)
    app.execute(ledger.grant, husband.id, 60, sid, "grant")
    earn(app, clock, husband.id, 30, other.id)
    with pytest.raises(FailedPrecondition) as e:  # his granted hour is his alone
        request(app, wife.id, 45, RELATIVE, payer=husband.id)
    assert e.value.reason == "INSUFFICIENT_BALANCE"
    request(app, wife.id, 30, RELATIVE, payer=husband.id)


# ------------------------------------------------------------------ the donation pool


def _pool_app(policy_app: Callable[[str], NodeApp], clock: ManualClock,
              ) -> tuple[NodeApp, dict[str, int]]:
    app = policy_app(policy_toml(donation_priority_reserve_hours=1))
    priority = enrol(app, "赵大爷", 1935, priority=True)
    donor = enrol(app, "捐赠人", 1980)
    elder = enrol(app, "钱阿姨", 1955)  # 71, not a priority elder
    volunteer = enrol(app, "志愿者", 1990)
    earn(app, clock, donor.id, 120, priority.id)
    app.execute(ledger.donate, donor.id, 120)
    return app, {"priority": priority.id, "donor": donor.id, "elder": elder.id,
                 "volunteer": volunteer.id}


def test_donation_moves_minutes_to_the_pool(policy_app: Callable[[str], NodeApp],
                                            clock: ManualClock) -> None:
    app, p = _pool_app(policy_app, clock)
    assert balance_of(app, p["donor"]).total == 0
    assert account_balance(app, "donation_pool") == (120, 0)
    assert_ledger_ok(app)


def test_pool_serves_others_only_above_the_priority_reserve(
        policy_app: Callable[[str], NodeApp], clock: ManualClock) -> None:
    app, p = _pool_app(policy_app, clock)
    with pytest.raises(FailedPrecondition) as e:
        request(app, p["elder"], 75, POOL)  # only 60 above the 60-minute reserve
    assert e.value.reason == "INSUFFICIENT_BALANCE"
    o = request(app, p["elder"], 60, POOL)
    walk(app, clock, o.record.id, p["volunteer"], to="accepted")
    assert account_balance(app, "donation_pool") == (120, 60)
    before = snapshot(app)
    with pytest.raises(FailedPrecondition):
        request(app, p["elder"], 15, POOL)  # the reserve is for priority elders
    assert snapshot(app) == before
    # a priority elder may use the reserve itself
    first = request(app, p["priority"], 60, POOL)
    walk(app, clock, first.record.id, p["volunteer"], to="recorded")
    with pytest.raises(FailedPrecondition):
        request(app, p["priority"], 15, POOL)
    walk_rest(app, clock, o.record.id, 60)
    assert account_balance(app, "donation_pool") == (0, 0)
    assert_ledger_ok(app)


def test_default_reserve_keeps_a_small_pool_for_priority_elders(
        node_app: NodeApp, clock: ManualClock) -> None:
    app = node_app
    priority = enrol(app, "赵大爷", 1935, priority=True)
    donor, elder = enrol(app, "捐赠人", 1980), enrol(app, "钱阿姨", 1955)
    earn(app, clock, donor.id, 120, priority.id)
    app.execute(ledger.donate, donor.id, 120)
    with pytest.raises(FailedPrecondition):  # 2 h in the pool, 100 h reserved
        request(app, elder.id, 15, POOL)
    request(app, priority.id, 120, POOL)


def test_pool_is_not_for_the_young(node_app: NodeApp) -> None:
    young = enrol(node_app, "周先生", 1980)
    with pytest.raises(PermissionDenied) as e:
        request(node_app, young.id, 15, POOL)
    assert e.value.reason == "TOO_YOUNG_TO_REDEEM"


# ------------------------------------------------------------------ the city grant


def test_city_grant_serves_priority_elders_only(node_app: NodeApp) -> None:
    elder = enrol(node_app, "钱阿姨", 1955)
    sid = staff(node_app)
    with pytest.raises(PermissionDenied) as e:
        request(node_app, elder.id, 30, GRANT)
    assert e.value.reason == "NOT_A_PRIORITY_ELDER"
    with pytest.raises(PermissionDenied):
        node_app.execute(ledger.grant, elder.id, 30, sid, "x")


def test_city_fund_budget_exhaustion(policy_app: Callable[[str], NodeApp],
                                     clock: ManualClock) -> None:
    app = policy_app(policy_toml(grant_budget_hours=2))
    sid = staff(app)
    elder = enrol(app, "赵大爷", 1935, priority=True)
    volunteer = enrol(app, "志愿者", 1990)
    app.execute(ledger.grant, elder.id, 60, sid, "grant")
    o = request(app, elder.id, 45, GRANT)
    walk(app, clock, o.record.id, volunteer.id, to="accepted")
    assert account_balance(app, "city_grant") == (-60, 45)  # 15 minutes of budget left
    before = snapshot(app)
    with pytest.raises(ResourceExhausted) as e:
        app.execute(ledger.grant, elder.id, 30, sid, "grant")
    assert e.value.reason == "GRANT_BUDGET_EXHAUSTED"
    with pytest.raises(ResourceExhausted) as e:
        request(app, elder.id, 30, GRANT)
    assert e.value.reason == "GRANT_BUDGET_EXHAUSTED"
    assert snapshot(app) == before
    second = request(app, elder.id, 15, GRANT)  # the last 15 minutes ...
    walk(app, clock, second.record.id, volunteer.id, to="accepted")
    with pytest.raises(ResourceExhausted):  # ... are held, so not a minute is left
        app.execute(ledger.grant, elder.id, 1, sid, "grant")
    with pytest.raises(ResourceExhausted):
        request(app, elder.id, 1, GRANT)
    assert_ledger_ok(app)
    # cancelling gives the budget back
    app.execute(orders.cancel_order, o.record.id, Actor(staff_id=sid), "改期")
    app.execute(ledger.grant, elder.id, 45, sid, "grant")
    assert account_balance(app, "city_grant") == (-105, 15)
    assert_ledger_ok(app)


# ------------------------------------------------------------------ holds and their release


def test_cancel_releases_the_hold_at_every_cancellable_state(
        node_app: NodeApp, clock: ManualClock, family: dict[str, int]) -> None:
    app, f = node_app, family
    for to in ("requested", "accepted", "checked_in"):
        o = request(app, f["mother"], 60, RELATIVE, payer=f["son"])
        if to != "requested":
            walk(app, clock, o.record.id, f["volunteer"], to=to)
            assert balance_of(app, f["son"]).held == 60
        cancelled = app.execute(orders.cancel_order, o.record.id, Actor(person_id=f["son"]),
                                "不需要了")
        assert cancelled.record.state == "cancelled"
        assert balance_of(app, f["son"]).held == 0
        assert balance_of(app, f["son"]).available == 120
    assert_ledger_ok(app)


def test_a_voided_dispute_releases_the_hold(node_app: NodeApp, clock: ManualClock,
                                            family: dict[str, int]) -> None:
    app, f = node_app, family
    o = request(app, f["mother"], 60, RELATIVE, payer=f["son"])
    walk(app, clock, o.record.id, f["volunteer"], to="verified")
    assert balance_of(app, f["son"]).held == 60
    app.execute(orders.dispute_order, o.record.id, Actor(person_id=f["stranger"]), "没来")
    assert balance_of(app, f["son"]).held == 60  # still held while disputed
    app.execute(orders.resolve_dispute, o.record.id, f["staff"], False, 0, "核实未服务")
    assert balance_of(app, f["son"]).held == 0
    assert balance_of(app, f["son"]).total == 120
    assert_ledger_ok(app)


def walk_rest(app: NodeApp, clock: ManualClock, order_id: int, minutes: int) -> OrderView:
    """From accepted to recorded."""
    o = app.query(orders.get_order, order_id)
    app.execute(orders.check_in, order_id)
    clock.advance(timedelta(minutes=minutes))
    app.execute(orders.check_out, order_id)
    app.execute(orders.verify_order, order_id, Actor(person_id=o.record.recipient_id), 4, "")
    clock.advance(timedelta(days=app.policy.publicity_days))
    return app.execute(orders.record_order, order_id)


def test_only_the_payer_side_may_spend_a_relatives_hours(node_app: NodeApp,
                                                         clock: ManualClock) -> None:
    """The mother's proxy (a neighbour) may order for her, but not with the son's hours."""
    app = node_app
    sid = staff(app)
    elder = enrol(app, "赵大爷", 1935, priority=True)
    mother, son, neighbour = enrol(app, "母亲", 1950), enrol(app, "儿子", 1985), enrol(app, "邻居")
    earn(app, clock, son.id, 120, elder.id)
    link(app, mother.id, son.id, Relation.CHILD, sid)
    link(app, mother.id, neighbour.id, Relation.PROXY, sid)
    before = snapshot(app)
    with pytest.raises(PermissionDenied) as e:
        request(app, mother.id, 60, PaymentSource.RELATIVE, payer=son.id,
                requester=Actor(person_id=neighbour.id))
    assert e.value.reason == "NOT_AUTHORISED"
    assert snapshot(app) == before
    consent(app, son.id, mother.id)
    for requester in (Actor(person_id=son.id), Actor(person_id=mother.id), Actor(staff_id=sid)):
        o = request(app, mother.id, 15, PaymentSource.RELATIVE, payer=son.id,
                    requester=requester)
        assert o.record.payer_id == son.id
