"""The service loop end to end through the use-case layer, on SQLite and PostgreSQL."""

from __future__ import annotations

from node.domain.clock import ManualClock
from node.domain.ledger import Origin
from node.usecases import ledger
from node.usecases.app import NodeApp
from tests.helpers import enrol, serve


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
