"""The use-case runner: each use-case is one database transaction.

``ClearinghouseApp.execute`` runs a use-case in a write transaction (one writer at a
time, see ``clearinghouse.storage.db``); ``query`` runs a read-only one. A use-case is a
function ``fn(tx, ...)``: it sees only its transaction's repository and the time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Concatenate, ParamSpec, TypeVar

from clearinghouse.storage.db import Database
from clearinghouse.storage.repo import Repo, database_key
from clearinghouse.usecases.clock import Clock
from runtime.errors import InvariantViolation

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Tx:
    """What a use-case sees: its transaction's repository and the clearinghouse's time."""

    repo: Repo
    now: datetime


class ClearinghouseApp:
    """The clearinghouse's use-cases over one database and one clock."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        #: Which database this is, as ``Repo.database_key`` names it (for caches).
        self.database_key = database_key(db.writer)
        #: Run at the end of every write transaction, inside it: the serving
        #: clearinghouse signs a tree head for whatever the transaction logged.
        self.after_write: Callable[[Tx], object] | None = None

    def execute(self, fn: Callable[Concatenate[Tx, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a use-case in one write transaction: all of it happens, or none."""
        with self.db.write() as conn:
            tx = Tx(Repo(conn), self._now())
            result = fn(tx, *args, **kwargs)
            if self.after_write is not None:
                self.after_write(tx)
            return result

    def query(self, fn: Callable[Concatenate[Tx, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a read-only use-case; it never blocks writers."""
        with self.db.read() as conn:
            return fn(Tx(Repo(conn), self._now()), *args, **kwargs)

    def _now(self) -> datetime:
        now = self.clock.now()
        if now.tzinfo is None:
            raise InvariantViolation("the clock must give timezone-aware times")
        return now
