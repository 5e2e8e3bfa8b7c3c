"""Small builders for tests: real ID numbers, people, and orders walked through the loop."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, text

from node.domain.clock import ManualClock
from node.domain.consent import ConsentKind
from node.domain.identity import credit_code_with_check, id_card_with_check_digit
from node.domain.orders import PaymentSource, PersonKind
from node.domain.policy import Relation
from node.storage.schema import Base
from node.usecases import consent as consent_uc
from node.usecases import ledger as ledger_uc
from node.usecases import orders, people
from node.usecases.app import NodeApp
from node.usecases.consent import ConsentView
from node.usecases.views import Actor, BalanceView, LedgerReport, OrderView, PersonView

_serial = itertools.count(1)


def id_card(birth_year: int, district: str = "320115") -> str:
    """A valid ID card number born on 1 January of the year, unique per call."""
    return id_card_with_check_digit(f"{district}{birth_year:04d}0101{next(_serial) % 1000:03d}")


def credit_code() -> str:
    return credit_code_with_check(f"91320115MA{next(_serial):07d}")


def enrol(app: NodeApp, name: str, birth_year: int = 1960, *, priority: bool = False,
          group: bool = False, point: int = 0) -> PersonView:
    """Enrol a person (or a group) at service point ``point`` (0: none)."""
    if group:
        return app.execute(people.enrol_person, PersonKind.GROUP, name, credit_code(), "",
                           False, point)
    return app.execute(people.enrol_person, PersonKind.INDIVIDUAL, name, id_card(birth_year),
                       "13800000000", priority, point)


def serve(app: NodeApp, clock: ManualClock, recipient: int, volunteer: int, minutes: int = 60,
          *, source: PaymentSource = PaymentSource.CITY_GRANT, payer: int = 0,
          category: str = "cleaning", record: bool = True) -> OrderView:
    """Walk one order from request to recorded (or to verified with record=False)."""
    requester = Actor(person_id=payer or recipient)
    o = app.execute(orders.request_order, recipient, category, minutes, source, payer,
                    requester, "")
    app.execute(orders.accept_order, o.record.id, volunteer)
    app.execute(orders.check_in, o.record.id)
    clock.advance(timedelta(minutes=minutes))
    app.execute(orders.check_out, o.record.id)
    o = app.execute(orders.verify_order, o.record.id, Actor(person_id=recipient), 5, "")
    if record:
        clock.advance(timedelta(days=app.policy.publicity_days))
        o = app.execute(orders.record_order, o.record.id)
    return o


# ---------------------------------------------------------------- staff, links, orders

_points = itertools.count(1)


def staff(app: NodeApp, name: str = "王芳") -> int:
    """Register a service point and one staff member there; return the staff id."""
    point = app.execute(people.register_service_point, f"SP-{next(_points):04d}",
                        "东山街道服务站", "东山街道")
    return app.execute(people.register_staff, name, point.id).id


def link(app: NodeApp, person: int, other: int, relation: Relation, staff_id: int = 0) -> None:
    """Record that ``other`` stands to ``person`` as ``relation``."""
    app.execute(people.link_people, person, other, relation, staff_id)


def consent(app: NodeApp, payer: int, recipient: int, by: Actor | None = None, *,
            once: bool = False, max_minutes: int = 0, total_minutes: int = 0,
            until: datetime | None = None, order: int = 0) -> ConsentView:
    """The payer consents that their hours pay for ``recipient``'s services (standing,
    or ``once``); granted by the payer themself unless ``by`` says who."""
    kind = ConsentKind.ONCE if once else ConsentKind.STANDING
    return app.execute(consent_uc.grant_consent, payer, recipient, "", kind, max_minutes,
                       total_minutes, until, order, by or Actor(person_id=payer))


def request(app: NodeApp, recipient: int, minutes: int = 60,
            source: PaymentSource = PaymentSource.CITY_GRANT, payer: int = 0,
            requester: Actor | None = None, category: str = "cleaning") -> OrderView:
    requester = requester or Actor(person_id=payer or recipient)
    return app.execute(orders.request_order, recipient, category, minutes, source, payer,
                       requester, "")


def walk(app: NodeApp, clock: ManualClock, order_id: int, volunteer: int, minutes: int = 60,
         *, to: str = "verified", verifier: Actor | None = None) -> OrderView:
    """Walk a requested order forward to ``to`` (accepted … verified, recorded)."""
    steps = ["accepted", "checked_in", "checked_out", "verified", "recorded"]
    o = app.execute(orders.accept_order, order_id, volunteer)
    if to == "accepted":
        return o
    o = app.execute(orders.check_in, order_id)
    if to == "checked_in":
        return o
    clock.advance(timedelta(minutes=minutes))
    o = app.execute(orders.check_out, order_id)
    if to == "checked_out":
        return o
    verifier = verifier or Actor(person_id=o.record.recipient_id)
    o = app.execute(orders.verify_order, order_id, verifier, 5, "")
    if to == "verified":
        return o
    assert to in steps, to
    clock.advance(timedelta(days=app.policy.publicity_days))
    return app.execute(orders.record_order, order_id)


def earn(app: NodeApp, clock: ManualClock, volunteer: int, minutes: int, elder: int) -> OrderView:
    """Give ``volunteer`` ``minutes`` (a multiple of the rounding unit) by serving a priority
    elder paid by the city grant."""
    o = request(app, elder, minutes, PaymentSource.CITY_GRANT)
    return walk(app, clock, o.record.id, volunteer, minutes, to="recorded")


# ---------------------------------------------------------------- policies

def policy_toml(redeem: dict[str, object] | None = None, **settings: object) -> str:
    """A policy file: the given top-level settings (and [redeem] ones), defaults elsewhere."""
    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return str(v)

    lines = [f"{k} = {value(v)}" for k, v in settings.items()]
    if redeem:
        lines.append("[redeem]")
        lines += [f"{k} = {value(v)}" for k, v in redeem.items()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- checking the database

def run_all(conn: Connection, statements: Sequence[str]) -> list[list[tuple[Any, ...]]]:
    """Run plain SELECTs and return their rows; one round trip on PostgreSQL."""
    if conn.dialect.name != "postgresql":
        return [[tuple(r) for r in conn.exec_driver_sql(sql).all()] for sql in statements]
    results = []
    raw = conn.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cur:  # the same transaction
        cur.execute("; ".join(statements))
        for _ in statements:
            results.append([tuple(r) for r in cur.fetchall()])
            cur.nextset()
    return results


def snapshot(app: NodeApp) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table, in primary-key order: "the database exactly as it was"."""
    with app.db.read() as conn:
        rows = run_all(conn, [sql for _, sql in _DUMPS])
    return {name: r for (name, _), r in zip(_DUMPS, rows, strict=True)}


#: Raw SQL, so that the rows are compared exactly as stored (and quickly).
_DUMPS = [(t.name, f"SELECT * FROM {t.name} ORDER BY "
           + ", ".join(c.name for c in t.primary_key.columns))
          for t in Base.metadata.sorted_tables]

_CHECKS = [
    "SELECT seq, SUM(minutes) FROM postings GROUP BY seq HAVING SUM(minutes) <> 0",
    "SELECT e.seq, COUNT(p.id) FROM entries e LEFT JOIN postings p ON p.seq = e.seq "
    "GROUP BY e.seq HAVING COUNT(p.id) < 2",
    "SELECT a.code, a.kind, a.balance, a.held, "
    "(SELECT COALESCE(SUM(p.minutes), 0) FROM postings p WHERE p.account_id = a.id), "
    "(SELECT COALESCE(SUM(h.minutes), 0) FROM holds h WHERE h.account_id = a.id "
    " AND h.state = 'active') FROM accounts a",
    "SELECT person_id, SUM(balance) FROM accounts WHERE person_id IS NOT NULL "
    "GROUP BY person_id",
    "SELECT COALESCE(SUM(balance), 0) FROM accounts",
    "SELECT o.id, o.state, (SELECT COALESCE(SUM(h.minutes), 0) FROM holds h "
    "WHERE h.order_id = o.id AND h.state = 'active'), o.planned_minutes FROM orders o "
    "WHERE o.claim_id IS NULL",  # what a claim pays, another district holds
    "SELECT order_id, COUNT(*) FROM entries WHERE kind = 'service' GROUP BY order_id "
    "HAVING COUNT(*) > 1",
    "SELECT e.order_id FROM entries e JOIN orders o ON o.id = e.order_id "
    "WHERE e.kind = 'service' AND o.state <> 'recorded'",
]


def ledger_problems(app: NodeApp) -> list[str]:
    """``check_ledger`` plus independent SQL checks of the same invariants."""
    report = app.query(ledger_uc.check_ledger)
    problems = list(report.problems)
    policy = app.policy
    with app.db.read() as conn:
        sums, short, accounts, people, total, held_by_orders, twice, unrecorded = run_all(
            conn, _CHECKS)
    problems += [f"sql: entry {seq} sums to {t}" for seq, t in sums]
    problems += [f"sql: entry {seq} has {n} postings" for seq, n in short]
    for code, kind, bal, held, posted, holds in accounts:
        if bal != posted:
            problems.append(f"sql: {code} balance {bal} != postings {posted}")
        if held != holds:
            problems.append(f"sql: {code} held {held} != active holds {holds}")
        if kind in ("person", "donation_pool", "consumption") and (bal < 0 or bal - held < 0):
            problems.append(f"sql: {code} negative: balance {bal}, held {held}")
        if kind == "city_grant" and bal - held < -policy.grant_budget_minutes:
            problems.append(f"sql: the city fund is beyond its budget ({bal}, held {held})")
    problems += [f"sql: person {pid} holds {t} > cap {policy.cap_minutes}"
                 for pid, t in people if t > policy.cap_minutes]
    if total[0][0] != 0:
        problems.append(f"sql: balances sum to {total[0][0]}")
    for order_id, state, held, planned in held_by_orders:
        holding = state in ("accepted", "checked_in", "checked_out", "verified", "disputed")
        if held != (planned if holding else 0):
            problems.append(f"sql: order {order_id} ({state}) holds {held} of {planned}")
    problems += [f"sql: order {o} has {n} service entries" for o, n in twice]
    problems += [f"sql: order {o} has a service entry but is not recorded"
                 for (o,) in unrecorded]
    return problems


def assert_ledger_ok(app: NodeApp) -> LedgerReport:
    problems = ledger_problems(app)
    assert not problems, problems
    report = app.query(ledger_uc.check_ledger)
    assert report.ok
    return report


def balance_of(app: NodeApp, person_id: int) -> BalanceView:
    return app.query(ledger_uc.balance, person_id)


def by_origin(app: NodeApp, person_id: int) -> dict[str, tuple[int, int]]:
    """{origin: (total, held)} of a person's accounts, leaving out empty ones."""
    return {str(b.origin): (b.total, b.held) for b in balance_of(app, person_id).by_origin
            if b.total or b.held}


def account_balance(app: NodeApp, code: str) -> tuple[int, int]:
    """(balance, held) of an account by code; (0, 0) if it was never used."""
    with app.db.read() as conn:
        row = conn.execute(text("SELECT balance, held FROM accounts WHERE code = :c"),
                           {"c": code}).one_or_none()
    return (0, 0) if row is None else (int(row[0]), int(row[1]))
