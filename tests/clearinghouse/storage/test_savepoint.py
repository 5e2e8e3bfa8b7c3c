"""``Repo.savepoint``: what a batch relies on to undo one envelope's work and only it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event

from clearinghouse.storage.repo import Repo, SavepointNeeded
from clearinghouse.usecases.app import ClearinghouseApp, Tx


class Refused(Exception):
    pass


def test_a_savepoint_undoes_only_what_happened_inside_it(ch_app: ClearinghouseApp) -> None:
    def run(tx: Tx) -> None:
        tx.repo.set_meta("before", "kept")
        with pytest.raises(Refused), tx.repo.savepoint():
            tx.repo.set_meta("inside", "undone")
            tx.repo.set_meta("before", "changed and undone")
            raise Refused
        with tx.repo.savepoint():  # the same name again, after a rollback
            tx.repo.set_meta("after", "kept")

    ch_app.execute(run)
    found = ch_app.query(lambda tx: {k: tx.repo.meta(k) for k in ("before", "inside",
                                                                    "after")})
    assert found == {"before": "kept", "inside": None, "after": "kept"}


def _optimistic(ch_app: ClearinghouseApp, fn: Callable[[Tx], None]) -> None:
    """Run ``fn`` in a write transaction whose repository is optimistic, as a group's."""
    with ch_app.db.write() as conn:
        fn(Tx(Repo(conn, optimistic=True), datetime.now(UTC), ch_app.key_rings))


def test_an_optimistic_savepoint_sends_none_and_undoes_work_that_wrote_nothing(
        ch_app: ClearinghouseApp) -> None:
    sent: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)
    event.listen(ch_app.db.writer, "before_cursor_execute", seen)

    def run(tx: Tx) -> None:
        tx.repo.set_meta("before", "kept")
        with pytest.raises(Refused), tx.repo.savepoint():
            assert tx.repo.meta("before") == "kept"  # a read is no write
            raise Refused
        with tx.repo.savepoint():
            tx.repo.set_meta("after", "kept")
    try:
        _optimistic(ch_app, run)
    finally:
        event.remove(ch_app.db.writer, "before_cursor_execute", seen)
    assert not [s for s in sent if "SAVEPOINT" in s.upper()]
    found = ch_app.query(lambda tx: {k: tx.repo.meta(k) for k in ("before", "after")})
    assert found == {"before": "kept", "after": "kept"}


def test_an_optimistic_savepoint_asked_to_undo_a_write_says_so_and_nothing_is_kept(
        ch_app: ClearinghouseApp) -> None:
    def run(tx: Tx) -> None:
        tx.repo.set_meta("before", "rolled back with the transaction")
        with tx.repo.savepoint():
            tx.repo.set_meta("inside", "cannot be undone alone")
            raise Refused

    with pytest.raises(SavepointNeeded) as raised:
        _optimistic(ch_app, run)
    assert isinstance(raised.value.__cause__, Refused)
    found = ch_app.query(lambda tx: {k: tx.repo.meta(k) for k in ("before", "inside")})
    assert found == {"before": None, "inside": None}
