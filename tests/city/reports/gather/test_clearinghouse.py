"""The bureau's report data through the clearinghouse's use-cases (SQLite and
PostgreSQL): the statement as it stands, each district's standing, the claims it
settles by district, kind and month, and the nets over the statements so far."""

from __future__ import annotations

from datetime import UTC, datetime

from city.reports.gather.clearinghouse import clearinghouse_report
from city.reports.tables import COUNTERSIGNED, DISPUTED, PENDING
from clearinghouse.usecases import settlement
from clearinghouse.usecases.app import ClearinghouseApp
from tests.clearinghouse.conftest import ch_app as ch_app  # the fixture
from tests.clearinghouse.conftest import (  # noqa: F401 - fixtures
    ch_clock,
    ch_db_url,
    ch_pg_template,
    ch_pg_url,
)
from tests.clearinghouse.settling import (
    GL,
    JN,
    QX,
    close,
    complete,
    cosign_latest,
    countersign_env,
    dispute_env,
    found_city,
    log_size,
    send,
    statement_of,
)
from tests.clearinghouse.usecases.test_claims import cid
from timebank.envelope import identity

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def test_the_statement_its_standing_and_its_claims(ch_app: ClearinghouseApp) -> None:
    app = found_city(ch_app)
    complete(app, 1, GL, JN)  # 江宁区's person had 120 min of 鼓楼区's service
    complete(app, 2, QX, GL, minutes=60)
    complete(app, 3, GL, JN, minutes=30)
    cosign_latest(app)
    first = close(app, up_to=log_size(app), label="first")
    send(app, countersign_env(GL, statement_of(first), first.envelope))
    send(app, dispute_env(JN, statement_of(first), first.envelope, [cid(1)]))
    complete(app, 4, JN, QX, minutes=45)  # after the close: the next period's

    before = clearinghouse_report(app, "2026-03", NOW)  # the month, not closed as such
    assert before.statement is None
    assert [(r.month, r.district, r.category, r.count, r.minutes) for r in before.activity] \
        == [("2026-03", JN, "跨区兑换 redemption", 1, 45)]

    data = clearinghouse_report(app, "first", NOW)
    assert data.statement == statement_of(first)
    stored = app.query(settlement.get, 1)
    assert data.envelope_sha256 == identity(first.envelope)
    assert not data.final and not stored.final
    assert {s.node_id: s.status for s in data.signoffs} == \
        {GL: COUNTERSIGNED, JN: DISPUTED, QX: PENDING}
    assert data.name(JN) == "江宁区 " + JN
    assert [(r.month, r.district, r.category, r.count, r.minutes) for r in data.activity] == [
        ("2026-03", GL, "跨区兑换 redemption", 2, 150),
        ("2026-03", QX, "跨区兑换 redemption", 1, 60)]
    assert [(p.period, p.node_id, p.net_minutes) for p in data.history] == \
        [("first", GL, 90), ("first", QX, 60), ("first", JN, -150)]  # by node id
