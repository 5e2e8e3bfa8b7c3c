"""Mutating calls are idempotent through NodeApp.execute_once: a retry returns the first result."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest

from node.domain.clock import ManualClock
from node.domain.ledger import StoredEntry
from node.usecases import ledger, orders
from node.usecases.app import NodeApp, Tx
from node.usecases.views import OrderView
from runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from runtime.errors import InvariantViolation as Bug
from tests.helpers import assert_ledger_ok, balance_of, earn, enrol, serve, snapshot, staff


def fp(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def _entry_bytes(e: StoredEntry) -> bytes:
    return e.seq.to_bytes(8, "big") + e.hash


@pytest.fixture
def donor(node_app: NodeApp, clock: ManualClock) -> int:
    elder = enrol(node_app, "张桂兰", 1940, priority=True)
    donor = enrol(node_app, "捐赠人", 1980)
    earn(node_app, clock, donor.id, 120, elder.id)
    return donor.id


def test_a_retry_returns_the_first_bytes_and_does_not_redo_the_work(
        node_app: NodeApp, clock: ManualClock, donor: int) -> None:
    app = node_app
    calls: list[int] = []

    def donate(tx: Tx) -> StoredEntry:
        calls.append(1)
        return ledger.donate(tx, donor, 30)

    first = app.execute_once("key-1", "Donate", fp("donate 30"), donate, _entry_bytes)
    after_first = snapshot(app)
    clock.advance(timedelta(minutes=5))  # a retry comes later; the answer is still the first
    again = app.execute_once("key-1", "Donate", fp("donate 30"), donate, _entry_bytes)
    assert again == first and calls == [1]
    assert snapshot(app) == after_first
    assert balance_of(app, donor).total == 90
    # a new key is a new request
    app.execute_once("key-2", "Donate", fp("donate 30"), donate, _entry_bytes)
    assert balance_of(app, donor).total == 60 and calls == [1, 1]
    assert_ledger_ok(app)


def test_same_key_different_request_is_already_exists(node_app: NodeApp, donor: int) -> None:
    app = node_app
    app.execute_once("key-1", "Donate", fp("donate 30"),
                     lambda tx: ledger.donate(tx, donor, 30), _entry_bytes)
    before = snapshot(app)
    with pytest.raises(AlreadyExists) as e:
        app.execute_once("key-1", "Donate", fp("donate 45"),
                         lambda tx: ledger.donate(tx, donor, 45), _entry_bytes)
    assert e.value.reason == "IDEMPOTENCY_KEY_REUSED"
    with pytest.raises(AlreadyExists):  # the same content under another method is another call
        app.execute_once("key-1", "Grant", fp("donate 30"),
                         lambda tx: ledger.donate(tx, donor, 30), _entry_bytes)
    assert snapshot(app) == before


def test_a_refused_request_stores_nothing_and_the_key_can_be_used_again(
        node_app: NodeApp, donor: int) -> None:
    app = node_app
    before = snapshot(app)
    with pytest.raises(FailedPrecondition):
        app.execute_once("key-1", "Donate", fp("donate 600"),
                         lambda tx: ledger.donate(tx, donor, 600), _entry_bytes)
    assert snapshot(app) == before
    out = app.execute_once("key-1", "Donate", fp("donate 60"),
                           lambda tx: ledger.donate(tx, donor, 60), _entry_bytes)
    assert len(out) == 40 and balance_of(app, donor).total == 60


def test_an_order_request_retried(node_app: NodeApp, clock: ManualClock) -> None:
    app = node_app
    elder, volunteer = enrol(app, "张桂兰", 1940, priority=True), enrol(app, "李秀英", 1962)
    o = serve(app, clock, elder.id, volunteer.id, 60, record=False)
    clock.advance(timedelta(days=7))

    def encode(v: OrderView) -> bytes:
        r = v.record
        return f"{r.id}:{r.state}:{r.recorded_minutes}".encode()

    first = app.execute_once("rec-1", "RecordOrder", fp(f"record {o.record.id}"),
                             lambda tx: orders.record_order(tx, o.record.id), encode)
    assert first == f"{o.record.id}:recorded:60".encode()
    # a retry of a call whose work is done must not fail on the order's new state
    again = app.execute_once("rec-1", "RecordOrder", fp(f"record {o.record.id}"),
                             lambda tx: orders.record_order(tx, o.record.id), encode)
    assert again == first
    assert app.query(ledger.check_ledger).transactions == 1


@pytest.mark.parametrize("key", ["", "x" * 65, "键", "a b\n", "tab\there"])
def test_bad_keys_are_refused(node_app: NodeApp, key: str) -> None:
    sid = staff(node_app)
    before = snapshot(node_app)
    with pytest.raises(InvalidArgument) as e:
        node_app.execute_once(key, "Grant", fp("x"),
                              lambda tx: ledger.grant(tx, 1, 30, sid, ""), _entry_bytes)
    assert e.value.reason in ("MISSING_IDEMPOTENCY_KEY", "BAD_IDEMPOTENCY_KEY")
    assert snapshot(node_app) == before


def test_a_fingerprint_is_a_sha256_digest(node_app: NodeApp) -> None:
    with pytest.raises(Bug):
        node_app.execute_once("k", "Grant", b"short", lambda tx: 1, lambda v: b"")
    assert node_app.execute_once("k" * 64, "Noop", fp("x"), lambda tx: 1, lambda v: b"\x00") == (
        b"\x00")
