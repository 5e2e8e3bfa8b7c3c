"""Corrections: a mistake is undone by a reversing entry, never by editing history."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from node.domain.clock import ManualClock
from node.domain.ledger import EntryKind
from node.domain.orders import PaymentSource
from node.storage.repo import Repo
from node.usecases import ledger, orders
from node.usecases.app import NodeApp
from runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from tests.helpers import (
    account_balance,
    assert_ledger_ok,
    balance_of,
    earn,
    enrol,
    policy_toml,
    request,
    serve,
    snapshot,
    staff,
    walk,
)
from tests.node.usecases.test_payments import walk_rest


def test_reversing_a_grant(node_app: NodeApp, clock: ManualClock) -> None:
    app = node_app
    sid = staff(app)
    elder = enrol(app, "张桂兰", 1940, priority=True)
    g = app.execute(ledger.grant, elder.id, 60, sid, "误发")
    clock.advance(timedelta(hours=1))
    r = app.execute(ledger.reverse, g.seq, sid, "发给了错的人")
    assert r.entry.kind is EntryKind.REVERSAL and r.entry.reverses_seq == g.seq
    assert r.entry.memo == f"staff {sid}: 发给了错的人"
    assert [(p.account, p.minutes) for p in r.entry.postings] == [
        (p.account, -p.minutes) for p in g.entry.postings]
    assert r.prev_hash == g.hash
    assert balance_of(app, elder.id).total == 0
    assert account_balance(app, "city_grant") == (0, 0)
    report = assert_ledger_ok(app)
    assert report.transactions == 2 and report.head_hash == r.hash
    # the original is still there, unchanged: history is appended to, never edited
    with app.db.read() as conn:
        assert Repo(conn).ledger.entry(g.seq) == g
    history = app.query(ledger.history, elder.id, 0, 10)
    assert [(e.seq, net) for e, net in history.entries] == [(1, 60), (2, -60)]


def test_reversing_a_recorded_service(node_app: NodeApp, clock: ManualClock) -> None:
    app = node_app
    sid = staff(app)
    elder, volunteer = enrol(app, "张桂兰", 1940, priority=True), enrol(app, "李秀英", 1962)
    o = serve(app, clock, elder.id, volunteer.id, 60)
    seq = app.query(ledger.check_ledger).transactions
    app.execute(ledger.reverse, seq, sid, "重复录入")
    assert balance_of(app, volunteer.id).total == 0
    report = assert_ledger_ok(app)
    assert (report.issued, report.consumed, report.granted) == (0, 0, 0)
    assert app.query(orders.get_order,
                     o.record.id).record.state == "recorded"


def test_no_reversal_of_minutes_already_spent_or_held(node_app: NodeApp,
                                                      clock: ManualClock) -> None:
    app = node_app
    sid = staff(app)
    elder, volunteer = enrol(app, "张桂兰", 1940, priority=True), enrol(app, "李秀英", 1962)
    g = app.execute(ledger.grant, elder.id, 60, sid, "grant")
    o = request(app, elder.id, 45, PaymentSource.OWN)
    walk(app, clock, o.record.id, volunteer.id, 45, to="accepted")
    before = snapshot(app)
    with pytest.raises(FailedPrecondition) as e:  # 45 of the 60 are held
        app.execute(ledger.reverse, g.seq, sid, "误发")
    assert e.value.reason == "INSUFFICIENT_BALANCE"
    assert snapshot(app) == before
    walk_rest(app, clock, o.record.id, 45)
    with pytest.raises(FailedPrecondition):  # ... and now spent
        app.execute(ledger.reverse, g.seq, sid, "误发")
    # a volunteer's hours that were donated cannot be taken back either
    service_seq = app.query(ledger.check_ledger).transactions
    app.execute(ledger.donate, volunteer.id, 30)
    with pytest.raises(FailedPrecondition):
        app.execute(ledger.reverse, service_seq, sid, "重复录入")
    assert_ledger_ok(app)


def test_each_entry_is_reversed_at_most_once(node_app: NodeApp) -> None:
    app = node_app
    sid = staff(app)
    elder = enrol(app, "张桂兰", 1940, priority=True)
    g = app.execute(ledger.grant, elder.id, 60, sid, "grant")
    r = app.execute(ledger.reverse, g.seq, sid, "误发")
    before = snapshot(app)
    with pytest.raises(AlreadyExists) as e:
        app.execute(ledger.reverse, g.seq, sid, "again")
    assert e.value.reason == "ALREADY_REVERSED"
    with pytest.raises(FailedPrecondition) as fe:
        app.execute(ledger.reverse, r.seq, sid, "undo the undo")
    assert fe.value.reason == "REVERSAL_OF_REVERSAL"
    assert snapshot(app) == before


@pytest.mark.parametrize(("seq", "staff_id", "reason", "error"), [
    (99, 1, "x", NotFound),
    (0, 1, "x", NotFound),
    (1, 99, "x", NotFound),
    (1, 0, "x", NotFound),
    (1, 1, "", InvalidArgument),
    (1, 1, "   ", InvalidArgument),
    (1, 1, "x" * 501, InvalidArgument),
])
def test_bad_corrections_change_nothing(node_app: NodeApp, seq: int, staff_id: int,
                                        reason: str, error: type[Exception]) -> None:
    app = node_app
    sid = staff(app)
    assert sid == 1
    elder = enrol(app, "张桂兰", 1940, priority=True)
    app.execute(ledger.grant, elder.id, 60, sid, "grant")
    before = snapshot(app)
    with pytest.raises(error):
        app.execute(ledger.reverse, seq, staff_id, reason)
    assert snapshot(app) == before


def test_a_reversal_never_takes_a_person_over_the_cap(policy_app: Callable[[str], NodeApp],
                                                      clock: ManualClock) -> None:
    app = policy_app(policy_toml(cap_hours=2))
    sid = staff(app)
    elder = enrol(app, "张桂兰", 1940, priority=True)
    donor = enrol(app, "捐赠人", 1958)
    earn(app, clock, donor.id, 120, elder.id)
    donation = app.execute(ledger.donate, donor.id, 60)
    earn(app, clock, donor.id, 60, elder.id)  # back at the cap
    before = snapshot(app)
    with pytest.raises(FailedPrecondition) as e:
        app.execute(ledger.reverse, donation.seq, sid, "捐错了")
    assert e.value.reason == "CAP_EXCEEDED"
    assert snapshot(app) == before
    app.execute(ledger.donate, donor.id, 60)  # with room again, the correction goes through
    app.execute(ledger.reverse, donation.seq, sid, "捐错了")
    assert balance_of(app, donor.id).total == 120
    assert_ledger_ok(app)


def test_reversing_a_payment_respects_the_payers_cap(policy_app: Callable[[str], NodeApp],
                                                     clock: ManualClock) -> None:
    app = policy_app(policy_toml(cap_hours=2))
    sid = staff(app)
    priority = enrol(app, "赵大爷", 1935, priority=True)
    elder, volunteer = enrol(app, "张桂兰", 1950), enrol(app, "李秀英", 1990)
    earn(app, clock, elder.id, 60, priority.id)
    paid = request(app, elder.id, 60, PaymentSource.OWN)
    walk(app, clock, paid.record.id, volunteer.id, 60, to="recorded")
    payment_seq = app.query(ledger.check_ledger).transactions
    earn(app, clock, elder.id, 120, priority.id)
    with pytest.raises(FailedPrecondition) as e:
        app.execute(ledger.reverse, payment_seq, sid, "重复扣费")
    assert e.value.reason == "CAP_EXCEEDED"
    assert_ledger_ok(app)
