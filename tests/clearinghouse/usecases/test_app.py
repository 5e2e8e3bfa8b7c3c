"""Group commit (``ClearinghouseApp.execute_together``): writes queued while the writer is
busy share one transaction, each gets its own answer, and one write's error undoes only
itself. Real threads on SQLite and PostgreSQL; the writer is held busy by a write that
waits on an event."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from clearinghouse.usecases import app as app_module
from clearinghouse.usecases.app import ClearinghouseApp, Tx
from runtime.db import STORE_UNAVAILABLE
from runtime.errors import FailedPrecondition, Unavailable

WAIT = 30.0


def _bump(name: str) -> Callable[[Tx], int]:
    """A write that adds one to the counter ``name`` (in the meta table) and returns the
    new value; run twice, it shows twice."""
    def work(tx: Tx) -> int:
        value = int(tx.repo.meta(name) or "0") + 1
        tx.repo.set_meta(name, str(value))
        return value
    return work


def _counter(app: ClearinghouseApp, name: str) -> int:
    return app.query(lambda tx: int(tx.repo.meta(name) or "0"))


class _Calls:
    """Threads that each call ``execute_together`` and keep what it answered or raised."""

    def __init__(self, app: ClearinghouseApp) -> None:
        self.app = app
        self.outcomes: dict[str, object] = {}
        self.threads: list[threading.Thread] = []

    def start(self, name: str, work: Callable[[Tx], object],
              then: Callable[[Tx, object], object] = lambda tx, w: w) -> None:
        def call() -> None:
            try:
                self.outcomes[name] = self.app.execute_together(work, then)
            except Exception as e:  # kept for the test to look at
                self.outcomes[name] = e
        thread = threading.Thread(target=call, name=name)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(WAIT)
            assert not thread.is_alive(), f"{thread.name} never got an answer"


def _hold_the_writer(app: ClearinghouseApp, calls: _Calls) -> threading.Event:
    """Start a write that keeps the writer busy until the returned event is set."""
    entered, release = threading.Event(), threading.Event()

    def busy(tx: Tx) -> str:
        entered.set()
        assert release.wait(WAIT)
        return "busy"
    calls.start("busy", busy)
    assert entered.wait(WAIT)
    return release


def _queued(app: ClearinghouseApp, count: int) -> None:
    """Wait until ``count`` writes are queued behind the busy one."""
    deadline = time.monotonic() + WAIT
    while len(app._waiting) < count:
        assert time.monotonic() < deadline, "the writes never queued"
        time.sleep(0.01)


def test_writes_queued_behind_a_busy_writer_commit_together(ch_app: ClearinghouseApp) -> None:
    groups: list[int] = []
    ch_app.on_group = groups.append
    order: list[str] = []
    calls = _Calls(ch_app)
    release = _hold_the_writer(ch_app, calls)
    for name in ("a", "b", "c"):
        def work(tx: Tx, name: str = name) -> int:
            order.append(f"work {name}")
            return _bump(name)(tx)

        def then(tx: Tx, value: object, name: str = name) -> object:
            order.append(f"then {name}")
            return (name, value)
        calls.start(name, work, then)
        _queued(ch_app, ["a", "b", "c"].index(name) + 1)
    release.set()
    calls.join()

    assert calls.outcomes == {"busy": "busy", "a": ("a", 1), "b": ("b", 1), "c": ("c", 1)}
    assert groups == [1, 3]  # the busy write alone, then the three queued behind it at once
    # every write worked before any answered: the answers see the whole group's log
    assert order == ["work a", "work b", "work c", "then a", "then b", "then c"]
    assert [_counter(ch_app, n) for n in "abc"] == [1, 1, 1]


def test_one_writes_refusal_undoes_only_itself(ch_app: ClearinghouseApp) -> None:
    groups: list[int] = []
    ch_app.on_group = groups.append
    calls = _Calls(ch_app)
    release = _hold_the_writer(ch_app, calls)

    def refused(tx: Tx) -> int:
        _bump("refused")(tx)
        raise FailedPrecondition("not now", "NOT_NOW")
    calls.start("first", _bump("first"))
    _queued(ch_app, 1)
    calls.start("refused", refused)
    _queued(ch_app, 2)
    calls.start("last", _bump("last"))
    _queued(ch_app, 3)
    release.set()
    calls.join()

    assert calls.outcomes["first"] == 1 and calls.outcomes["last"] == 1
    error = calls.outcomes["refused"]
    assert isinstance(error, FailedPrecondition) and error.reason == "NOT_NOW"
    # the group was rolled back and each write ran again alone: the others once each
    assert groups == [1, -3, 1, 1]
    assert (_counter(ch_app, "first"), _counter(ch_app, "refused"),
            _counter(ch_app, "last")) == (1, 0, 1)


def test_the_queue_is_bounded(ch_app: ClearinghouseApp,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_module, "MAX_WAITING", 2)
    calls = _Calls(ch_app)
    release = _hold_the_writer(ch_app, calls)
    calls.start("one", _bump("one"))
    calls.start("two", _bump("two"))
    _queued(ch_app, 2)
    with pytest.raises(Unavailable) as refused:
        ch_app.execute_together(_bump("three"), lambda tx, w: w)
    assert refused.value.reason == "BUSY"
    release.set()
    calls.join()
    assert (calls.outcomes["one"], calls.outcomes["two"]) == (1, 1)
    assert _counter(ch_app, "three") == 0


def test_a_group_takes_at_most_max_together(ch_app: ClearinghouseApp,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_module, "MAX_TOGETHER", 2)
    groups: list[int] = []
    ch_app.on_group = groups.append
    calls = _Calls(ch_app)
    release = _hold_the_writer(ch_app, calls)
    for i, name in enumerate("abcde"):
        calls.start(name, _bump(name))
        _queued(ch_app, i + 1)
    release.set()
    calls.join()
    assert groups == [1, 2, 2, 1]
    assert all(calls.outcomes[n] == 1 for n in "abcde")


def test_a_group_whose_write_must_undo_what_it_wrote_runs_again_with_savepoints(
        ch_app: ClearinghouseApp) -> None:
    """A batch undoes a refused envelope's work and goes on (``submit_batch``): in a group,
    which runs without savepoints, work that wrote before it was refused sends the group
    round again, each write alone, with savepoints; every write is then done once."""
    groups: list[int] = []
    ch_app.on_group = groups.append
    calls = _Calls(ch_app)
    release = _hold_the_writer(ch_app, calls)

    def half_refused(tx: Tx) -> str:
        try:
            with tx.repo.savepoint():
                _bump("undone")(tx)
                raise FailedPrecondition("not now", "NOT_NOW")
        except FailedPrecondition:
            pass
        return f"kept {_bump('kept')(tx)}"
    calls.start("first", _bump("first"))
    _queued(ch_app, 1)
    calls.start("half", half_refused)
    _queued(ch_app, 2)
    release.set()
    calls.join()

    assert calls.outcomes == {"busy": "busy", "first": 1, "half": "kept 1"}
    assert groups == [1, -2, 1, 1]
    assert (_counter(ch_app, "first"), _counter(ch_app, "undone"),
            _counter(ch_app, "kept")) == (1, 0, 1)


def test_a_group_that_cannot_reach_the_database_is_not_run_again_call_by_call(
        ch_app: ClearinghouseApp) -> None:
    """Each write alone would meet the same unreachable database, holding the writer for
    a connection timeout each: every caller is told UNAVAILABLE at once instead."""
    groups: list[int] = []
    ch_app.on_group = groups.append
    calls = _Calls(ch_app)
    release = _hold_the_writer(ch_app, calls)

    def unreachable(tx: Tx) -> int:
        raise Unavailable("the clearinghouse's database is busy or unreachable",
                          STORE_UNAVAILABLE)
    for i, (name, work) in enumerate((("a", _bump("a")), ("down", unreachable),
                                      ("c", _bump("c")))):
        calls.start(name, work)
        _queued(ch_app, i + 1)
    release.set()
    calls.join()
    for name in ("a", "down", "c"):
        error = calls.outcomes[name]
        assert isinstance(error, Unavailable) and error.reason == STORE_UNAVAILABLE
    assert groups == [1, -3]  # no call ran again on its own
    assert (_counter(ch_app, "a"), _counter(ch_app, "c")) == (0, 0)
