"""A district's report data from its own database (SQLite and PostgreSQL): recorded
orders of the month by category and street; no statement before the node holds one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from city.audit.readonly import readonly_engine
from city.reports.gather.node import node_report, order_activity
from city.reports.tables import ReportData
from node.domain.orders import PersonKind
from node.usecases import people
from node.usecases.app import NodeApp
from runtime.clock import ManualClock
from tests.helpers import enrol, id_card, serve
from timebank.policy import DEFAULT_CATEGORIES

CATEGORIES = {c.code: c.name for c in DEFAULT_CATEGORIES}
NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def _person(app: NodeApp, name: str, point: int, *, priority: bool = True) -> int:
    return app.execute(people.enrol_person, PersonKind.INDIVIDUAL, name, id_card(1945),
                       "13800000000", priority, point).id


def populate(app: NodeApp, clock: ManualClock) -> None:
    """November 2026 (city time): two streets, two categories; one order in October
    and one left unrecorded, which the November report leaves out."""
    clock.advance(datetime(2026, 10, 20, 2, 0, tzinfo=UTC) - clock.now())
    ds = app.execute(people.register_service_point, "JN-DS-01", "东山街道佛城西路社区服务点",
                     "东山街道").id
    ml = app.execute(people.register_service_point, "JN-ML-01", "秣陵街道服务站",
                     "秣陵街道").id
    volunteer = enrol(app, "李秀英", 1970).id
    elder_ds, elder_ml = _person(app, "张桂兰", ds), _person(app, "王德明", ml)
    serve(app, clock, elder_ds, volunteer, 60, category="meals")  # October: left out
    clock.advance(datetime(2026, 11, 3, 2, 0, tzinfo=UTC) - clock.now())
    serve(app, clock, elder_ds, volunteer, 45, category="meals")
    serve(app, clock, elder_ds, volunteer, 30, category="meals")
    serve(app, clock, elder_ml, volunteer, 90, category="cleaning")
    serve(app, clock, elder_ml, volunteer, 60, category="cleaning", record=False)
    clock.advance(timedelta(days=30))


def test_orders_of_the_month_by_category_and_street(node_app: NodeApp, db_url: str,
                                                     clock: ManualClock) -> None:
    populate(node_app, clock)
    engine = readonly_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = order_activity(conn, "320115", "2026-11", CATEGORIES)
            data = node_report(conn, "320115", "江宁区", "2026-11", CATEGORIES, NOW)
    finally:
        engine.dispose()
    assert [(r.month, r.street, r.category, r.count, r.minutes) for r in rows] == [
        ("2026-11", "东山街道", "助餐 meals", 2, 75),
        ("2026-11", "秣陵街道", "助洁 cleaning", 1, 90)]
    assert data.activity == rows and data.activity_kind == "orders"
    assert data.name("320115") == "江宁区 320115"
    assert data.statement is None and data.signoffs == ()
    assert "2026-11" in data.note or "0010" in data.note  # says why there is no statement


def test_a_period_that_is_not_a_month_has_no_order_counts(node_app: NodeApp, db_url: str,
                                                           clock: ManualClock) -> None:
    engine = readonly_engine(db_url)
    try:
        with engine.connect() as conn:
            data = node_report(conn, "320115", "江宁区", "up-to-520", CATEGORIES, NOW)
    finally:
        engine.dispose()
    assert data.activity == () and "年-月" in data.note


def test_a_statement_the_node_holds_and_its_standing(node_app: NodeApp, db_url: str) -> None:
    """The node's statement for the period, its identity, its answer; once final, every
    district's standing from the evidence the node kept."""
    from node.usecases import settlement
    from tests.node import settlement_support as kit
    from timebank.envelope import decode
    from timebank.settlement import parse_statement

    claims = [kit.completed(node_app, kit.GL, 60, creditor=True),
              kit.completed(node_app, kit.QX, 45, creditor=False),
              kit.between(kit.GL, kit.QX, 20)]
    envelope = kit.statement(claims)
    node_app.execute(settlement.record_seen,
                     settlement.verify_statement(envelope, kit.LOG_KEYS, kit.rosters))
    node_app.execute(settlement.decide, 1, 1, kit.mine(claims))

    def report() -> ReportData:
        engine = readonly_engine(db_url)
        try:
            with engine.connect() as conn:
                return node_report(conn, kit.JN, "江宁区", "2026-11", CATEGORIES, NOW)
        finally:
            engine.dispose()

    answered = report()
    assert answered.statement == parse_statement(decode(envelope).body)
    assert answered.envelope_sha256 == kit.statement_id(envelope)
    assert [(s.node_id, s.status) for s in answered.signoffs] == [(kit.JN, "countersigned")]
    assert not answered.final and "只列本区" in answered.note

    evidence = kit.answer(envelope, [kit.countersign(n, envelope) for n in kit.DISTRICTS])
    node_app.execute(settlement.mark_final, 1, 1, evidence.SerializeToString())
    final = report()
    assert final.final and len(final.signoffs) == 3
    assert {s.status for s in final.signoffs} == {"countersigned"}
    assert [(p.period, p.node_id) for p in final.history] == [("2026-11", kit.JN)]
