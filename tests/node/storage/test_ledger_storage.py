"""The stored ledger: the chain as written, tampering found by the audit, serial writers."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import text

from node.domain.clock import ManualClock
from node.domain.ledger import (
    DONATION_POOL,
    Account,
    Entry,
    EntryKind,
    Origin,
    Posting,
    chain_hash,
    genesis_hash,
)
from node.domain.orders import OrderState, PaymentSource
from node.storage.repo import Repo
from node.usecases import ledger, orders
from node.usecases.app import NodeApp
from node.usecases.views import Actor
from runtime.errors import InvariantViolation
from tests.helpers import (
    assert_ledger_ok,
    earn,
    enrol,
    ledger_problems,
    request,
    serve,
    snapshot,
    staff,
    walk,
)


@pytest.fixture
def busy(node_app: NodeApp, clock: ManualClock) -> NodeApp:
    """A node with a few entries of every kind and an order holding minutes."""
    app = node_app
    sid = staff(app)
    elder = enrol(app, "张桂兰", 1940, priority=True)
    volunteer = enrol(app, "李秀英", 1958)
    serve(app, clock, elder.id, volunteer.id, 90)
    g = app.execute(ledger.grant, elder.id, 60, sid, "低保")
    app.execute(ledger.donate, volunteer.id, 30)
    app.execute(ledger.reverse, g.seq, sid, "误发")
    o = request(app, volunteer.id, 45, PaymentSource.OWN)
    walk(app, clock, o.record.id, enrol(app, "王志愿", 1990).id, to="accepted")
    assert_ledger_ok(app)
    return app


def test_the_chain_as_stored(busy: NodeApp) -> None:
    with busy.db.read() as conn:
        repo = Repo(conn)
        stored = list(repo.ledger.iter_entries(batch=2))  # several batches
        head = repo.ledger.head()
    assert [s.seq for s in stored] == [1, 2, 3, 4]
    assert [s.entry.kind for s in stored] == [EntryKind.SERVICE, EntryKind.GRANT,
                                              EntryKind.DONATION, EntryKind.REVERSAL]
    prev = genesis_hash("320115")
    for s in stored:
        assert s.prev_hash == prev
        assert s.hash == chain_hash(prev, s.seq, s.entry)
        assert s.entry.at.tzinfo is not None
        prev = s.hash
    assert head == (4, prev)
    assert stored[3].entry.reverses_seq == 2


TAMPERING = {
    "a memo edited": ("UPDATE entries SET memo = 'edited' WHERE seq = 1",
                      "contents do not match its hash"),
    "a time edited": ("UPDATE entries SET at = at + INTERVAL '1' SECOND WHERE seq = 2",
                      "contents do not match its hash"),
    "a balance edited": ("UPDATE accounts SET balance = balance + 15 WHERE kind = 'person' "
                         "AND origin = 'individual'", "postings sum to"),
    "a hold dropped": ("UPDATE holds SET state = 'released' WHERE state = 'active'",
                       "active holds sum to"),
    "the last entry removed": ("DELETE FROM postings WHERE seq = 4; "
                               "DELETE FROM entries WHERE seq = 4", "the chain ends at 3"),
    "a posting changed": ("UPDATE postings SET minutes = minutes + 1 WHERE seq = 3 "
                          "AND position = 1", "entry 3"),
    "the head rolled back": ("UPDATE ledger_head SET seq = 3", "the ledger head says entry 3"),
}


@pytest.mark.parametrize("what", sorted(TAMPERING))
def test_the_audit_finds_tampering(busy: NodeApp, what: str) -> None:
    sql, expected = TAMPERING[what]
    if busy.db.is_sqlite:
        sql = sql.replace("at + INTERVAL '1' SECOND", "datetime(at, '+1 second')")
    with busy.db.writer.begin() as conn:
        for statement in sql.split("; "):
            conn.execute(text(statement))
    report = busy.query(ledger.check_ledger)  # reports; never raises
    assert not report.ok
    assert any(expected in p for p in report.problems), report.problems
    assert ledger_problems(busy)


def test_append_refuses_to_take_an_account_below_zero(busy: NodeApp) -> None:
    before = snapshot(busy)
    with busy.db.read() as conn:
        ref = conn.execute(text("SELECT person_ref, id FROM people ORDER BY id")).all()[1]
    taking = Entry(EntryKind.DONATION, (Posting(Account.of_person(ref[0], Origin.INDIVIDUAL),
                                                -10_000), Posting(DONATION_POOL, 10_000)),
                   busy.clock.now())
    with pytest.raises(InvariantViolation), busy.db.write() as conn:
        Repo(conn).ledger.append(taking, {ref[0]: ref[1]})
    assert snapshot(busy) == before


def test_a_hold_cannot_exceed_what_is_available(busy: NodeApp) -> None:
    before = snapshot(busy)
    with busy.db.read() as conn:
        account_id, available = conn.execute(text(
            "SELECT id, balance - held FROM accounts WHERE code = 'donation_pool'")).one()
    with pytest.raises(InvariantViolation), busy.db.write() as conn:
        Repo(conn).holds.hold_for_order(1, account_id, available + 1, 0, busy.clock.now())
    assert snapshot(busy) == before


def test_writers_are_serialised(node_app: NodeApp, clock: ManualClock) -> None:
    """Four threads record, grant and donate at once: the chain stays one straight line."""
    app = node_app
    sid = staff(app)
    elders = [enrol(app, f"老人{i}", 1935 + i, priority=True) for i in range(4)]
    volunteers = [enrol(app, f"志愿者{i}", 1980 + i) for i in range(4)]
    for v in volunteers:
        earn(app, clock, v.id, 120, elders[0].id)
    for i in range(4):
        for _ in range(5):
            serve(app, clock, elders[i].id, volunteers[(i + 1) % 4].id, 30, record=False)
    clock.advance(timedelta(days=8))
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(5):
                app.execute(ledger.grant, elders[i].id, 15, sid, "grant")
                app.execute(ledger.donate, volunteers[i].id, 15)
                app.execute(orders.record_due_orders, 2)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    report = assert_ledger_ok(app)
    assert report.transactions == 4 + 20 + 20 + 20  # earned, grants, donations, services
    assert app.query(orders.list_orders, 0, OrderState.VERIFIED, 0, 100) == []
    assert report.donation_pool == 4 * 5 * 15
    assert Actor(staff_id=sid).label == f"staff:{sid}"
