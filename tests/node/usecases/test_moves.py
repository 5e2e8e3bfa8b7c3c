"""A move as the old home starts it: the person's whole balance is held and claimed in
one transaction, however large the city's stored-hours cap let it grow."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from node.domain.claims import ClaimKind, ClaimState, Role
from node.usecases import claims, ledger
from node.usecases.app import NodeApp
from tests.helpers import assert_ledger_ok, balance_of, by_origin, enrol, policy_toml, staff
from timebank.minutes import hours

NEW_HOME = "320113"


def test_a_balance_over_1500_hours_moves_under_a_2000_hour_cap(
        policy_app: Callable[[str], NodeApp]) -> None:
    app = policy_app(policy_toml(cap_hours=2000))
    elder = enrol(app, "孙秀兰", 1936, priority=True).id
    app.execute(ledger.grant, elder, hours(1600), staff(app), "高龄补贴")
    assert balance_of(app, elder).total == hours(1600) > hours(1500)

    view = app.execute(claims.start_move, elder, NEW_HOME)

    assert (view.kind, view.role, view.state) == (ClaimKind.MOVE, Role.DEBTOR,
                                                  ClaimState.ACCEPTED)
    assert view.minutes == hours(1600)
    assert by_origin(app, elder) == {"granted": (hours(1600), hours(1600))}  # all held
    stored = app.query(claims.get_claim, view.claim_id)
    assert (stored.minutes, stored.state) == (hours(1600), ClaimState.ACCEPTED)
    assert [m.kind for m in app.query(claims.outbox_due, 10)][-1] == claims.PROPOSE
    assert_ledger_ok(app)


def test_a_balance_over_a_lowered_cap_still_moves_whole(
        policy_app: Callable[[str], NodeApp]) -> None:
    # stored under an earlier, higher cap: the new home applies its own cap on arrival
    app = policy_app(policy_toml(cap_hours=2000))
    elder = enrol(app, "孙秀兰", 1936, priority=True).id
    app.execute(ledger.grant, elder, hours(1800), staff(app), "")
    lowered = NodeApp(app.db, replace(app.policy, cap_minutes=hours(1500)), app.clock,
                      app.node)
    view = lowered.execute(claims.start_move, elder, NEW_HOME)
    assert view.minutes == hours(1800)
