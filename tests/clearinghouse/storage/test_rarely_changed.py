"""``repo.RarelyChanged``: what a write transaction reads of the city's key acts and
latest roster is kept for the next, and another replica's new act, roster or log leaf
is seen by the next transaction all the same (the stamp read under the write lock).
SQLite and PostgreSQL, two apps on one database as two replicas."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from nacl.signing import SigningKey
from sqlalchemy import event

from clearinghouse.storage.db import Database
from clearinghouse.usecases import log
from clearinghouse.usecases.app import ClearinghouseApp, Tx
from clearinghouse.usecases.clock import ManualClock
from timebank import checkpoint as notes
from timebank import transparency
from timebank.keys import public_key
from timebank.v1 import clearing_pb2

AT = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)


@pytest.fixture
def replicas(ch_db_url: str) -> Iterator[tuple[ClearinghouseApp, ClearinghouseApp]]:
    one, two = Database(ch_db_url), Database(ch_db_url)
    yield ClearinghouseApp(one, ManualClock(AT)), ClearinghouseApp(two, ManualClock(AT))
    one.dispose()
    two.dispose()


def _reads_of(app: ClearinghouseApp, table: str) -> list[str]:
    """Every statement ``app``'s writer runs from now on that reads ``table``'s rows
    (not the stamp's counts)."""
    seen: list[str] = []

    def listen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().startswith(f"SELECT {table}."):
            seen.append(statement)
    event.listen(app.db.writer, "before_cursor_execute", listen)
    return seen


def test_key_acts_and_the_roster_are_read_again_only_once_they_changed(
        replicas: tuple[ClearinghouseApp, ClearinghouseApp]) -> None:
    one, two = replicas
    assert one.execute(lambda tx: tx.repo.key_acts()) == []
    assert one.execute(lambda tx: tx.repo.latest_roster()) is None
    acts, rosters = _reads_of(one, "city_key_acts"), _reads_of(one, "rosters")
    assert one.execute(lambda tx: (tx.repo.key_acts(), tx.repo.latest_roster())) == ([], None)
    assert acts == rosters == []  # neither read again

    two.execute(lambda tx: tx.repo.insert_key_act("clearinghouse-key", 1, b"act 1", AT))
    two.execute(lambda tx: tx.repo.insert_roster(1, b"d" * 32, b"roster 1", AT))
    assert one.execute(lambda tx: tx.repo.key_acts()) == [("clearinghouse-key", 1, b"act 1")]
    assert one.execute(lambda tx: tx.repo.latest_roster()) == (1, b"d" * 32, b"roster 1")
    assert len(acts) == len(rosters) == 1
    one.execute(lambda tx: (tx.repo.key_acts(), tx.repo.latest_roster()))
    assert len(acts) == len(rosters) == 1  # and kept again

    def added_here(tx: Tx) -> tuple[object, object]:
        tx.repo.insert_key_act("clearinghouse-key", 2, b"act 2", AT)
        tx.repo.insert_roster(2, b"e" * 32, b"roster 2", AT)
        return len(tx.repo.key_acts()), tx.repo.latest_roster()
    assert one.execute(added_here) == (2, (2, b"e" * 32, b"roster 2"))
    assert two.execute(lambda tx: len(tx.repo.key_acts())) == 2


def test_the_log_size_is_the_one_found_under_the_lock(
        replicas: tuple[ClearinghouseApp, ClearinghouseApp]) -> None:
    one, two = replicas

    def append(tx: Tx) -> int:
        return log.append(tx, clearing_pb2.LogEntry(kind=log.REGISTRATION, envelope=b"x",
                                                    node_id="320115"))
    assert one.execute(append) == 0
    assert two.execute(append) == 1  # the other replica's leaf is seen
    assert one.execute(append) == 2
    assert one.execute(lambda tx: log.log_of(tx).size()) == 3


def test_a_head_read_back_is_not_read_again_until_the_log_grows(
        replicas: tuple[ClearinghouseApp, ClearinghouseApp]) -> None:
    one, two = replicas
    key = SigningKey(b"rarely changed: clearinghouse".ljust(32, b"."))
    origin = transparency.clearinghouse_origin(public_key(key))
    for app in replicas:
        app.after_write = lambda tx: log.publish_head(
            tx, lambda text: notes.sign_note(text, origin, key), origin)

    def append(tx: Tx) -> int:
        return log.append(tx, clearing_pb2.LogEntry(kind=log.REGISTRATION, envelope=b"x",
                                                    node_id="320115"))
    one.execute(append)  # signs the head of size 1
    heads = _reads_of(one, "tree_heads")
    signed = one.execute(lambda tx: log.publish_head(tx, lambda t: "", origin).note)
    assert len(heads) == 1  # read back once (committed) ...
    assert one.execute(lambda tx: log.publish_head(tx, lambda t: "", origin).note) == signed
    assert len(heads) == 1  # ... and not again
    two.execute(append)  # the other replica signs the head of size 2
    grown = one.execute(lambda tx: log.publish_head(tx, lambda t: "", origin))
    assert (grown.size, len(heads)) == (2, 2)
    assert grown.note != signed
