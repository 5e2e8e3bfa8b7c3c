"""The use-case runner: each use-case is one database transaction.

``ClearinghouseApp.execute`` runs a use-case in a write transaction (one writer at a
time, see ``clearinghouse.storage.db``); ``query`` runs a read-only one;
``execute_together`` runs a use-case in a write transaction it may share with the others
queued beside it (group commit: the nodes' SubmitBatch, Ack and AddCosignature calls).
A use-case is a function ``fn(tx, ...)``: it sees only its transaction's repository, the
time, and what the app keeps in memory for it: the key ring it last read
(``KeyRingCache``, one per app and so per database), the city policies it last read
(``PolicyTermsCache``) and what this transaction has computed once (``TxCache``). Nothing
is kept in module globals.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from clearinghouse.storage.db import Database
from clearinghouse.storage.merkle_log import MerkleLog
from clearinghouse.storage.repo import RarelyChanged, Repo, SavepointNeeded
from clearinghouse.usecases.clock import Clock
from runtime.db import STORE_UNAVAILABLE
from runtime.errors import InvariantViolation, Unavailable
from runtime.locks import FifoLock
from timebank.citypolicy import Term
from timebank.envelope import KeyRing, Signed
from timebank.transparency import Head

P = ParamSpec("P")
T = TypeVar("T")
W = TypeVar("W")

#: The most queued writes one transaction takes together (``execute_together``), and the
#: most that may wait at once: beyond it a caller is told UNAVAILABLE (its link retries).
MAX_TOGETHER = 16
MAX_WAITING = 512


class KeyRingCache:
    """The node keys as last read from the admissions (``admission.key_ring``), so that a
    Submit does not rebuild the ring from every admission. A cached ring may be stale;
    that is safe: ``directory.verify_node`` also checks the signer's stored admission in
    the transaction (a key revoked or retired since is still refused), and reads the
    ring again when it does not know a signer or key (a node admitted since is taken)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ring: KeyRing | None = None

    def last(self) -> KeyRing | None:
        """The ring last read (None before the first)."""
        with self._lock:
            return self._ring

    def remember(self, ring: KeyRing) -> None:
        with self._lock:
            self._ring = ring


class PolicyTermsCache:
    """The city policies that can be in force around a time, as last read
    (``policies.terms_around_now``), so that a claim message does not read them again.
    Taken only for a transaction whose time is within ``ttl`` after the read (another
    process, the bureau's `policy issue`, may have added one since). Stale is safe:
    a digest the cached policies do not accept is checked again against a fresh read
    before anything is refused, and within ``ttl`` a policy just issued is still
    inside the grace that accepts the one before it."""

    def __init__(self, ttl: timedelta = timedelta(seconds=1)) -> None:
        self._lock = threading.Lock()
        self._ttl = ttl
        self._read: tuple[datetime, list[Term]] | None = None

    def fresh(self, now: datetime) -> list[Term] | None:
        with self._lock:
            found = self._read
        if found is None or not found[0] <= now <= found[0] + self._ttl:
            return None
        return found[1]

    def remember(self, read_at: datetime, terms: list[Term]) -> None:
        with self._lock:
            self._read = (read_at, terms)

    def forget(self) -> None:
        with self._lock:
            self._read = None


@dataclass(slots=True)
class TxCache:
    """What one transaction computes once and keeps beside its repository: the log as it
    sees it (``log.log_of``: it keeps the size it read), the head it signed
    (``log.publish_head``), the envelopes whose signatures it already trusts
    (``directory.verify_node``), and the city policies that can be in force around now
    (``policies.check_current``: one read for a batch of claim messages)."""

    merkle_log: MerkleLog | None = None
    published_head: Head | None = None
    verified: dict[Signed, bytes] = field(default_factory=dict)
    policy_terms: list[Term] | None = None


@dataclass(frozen=True, slots=True)
class Tx:
    """What a use-case sees: its transaction's repository, the clearinghouse's time, the
    app's key ring cache, this transaction's own, and the app's city policies cache."""

    repo: Repo
    now: datetime
    key_rings: KeyRingCache
    cache: TxCache = field(default_factory=TxCache)
    policy_terms: PolicyTermsCache = field(default_factory=PolicyTermsCache)


@dataclass(slots=True, eq=False)
class _Queued(Generic[W, T]):
    """A write waiting for a transaction: its work, what it answers once the head is
    signed, and, when done, its answer or its error."""

    work: Callable[[Tx], W]
    then: Callable[[Tx, W], T]
    answer: Any = None
    error: BaseException | None = None
    done: bool = False


class ClearinghouseApp:
    """The clearinghouse's use-cases over one database and one clock."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        #: The key ring last read from this database's admissions.
        self.key_rings = KeyRingCache()
        #: The city policies around now, as last read from this database.
        self.policy_terms = PolicyTermsCache()
        #: The city's key acts and latest roster, as last read from this database.
        self.rarely_changed = RarelyChanged()
        #: Run at the end of every write transaction, inside it: the serving
        #: clearinghouse signs a tree head for whatever the transaction logged.
        self.after_write: Callable[[Tx], object] | None = None
        #: Told the size of every group ``execute_together`` commits (for metrics), and
        #: of every group that failed and was run again one by one (negative).
        self.on_group: Callable[[int], None] | None = None
        self._waiting: deque[_Queued[Any, Any]] = deque()
        self._waiting_lock = threading.Lock()
        self._leading = FifoLock()

    def execute(self, fn: Callable[Concatenate[Tx, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a use-case in one write transaction: all of it happens, or none."""
        return self._write(fn, False, *args, **kwargs)

    def _write(self, fn: Callable[Concatenate[Tx, P], T], optimistic: bool,
               *args: P.args, **kwargs: P.kwargs) -> T:
        with self.db.write() as conn:
            tx = Tx(Repo(conn, optimistic=optimistic, rarely_changed=self.rarely_changed),
                    self._now(), self.key_rings, policy_terms=self.policy_terms)
            result = fn(tx, *args, **kwargs)
            if self.after_write is not None:
                self.after_write(tx)
            tx.repo.check_positions_balance()  # once, whatever moved them (ledger rule)
            return result

    def execute_together(self, work: Callable[[Tx], W], then: Callable[[Tx, W], T]) -> T:
        """``work(tx)`` in a write transaction shared with the other writes queued while
        the writer was busy (at most ``MAX_TOGETHER``, in the order they came), then,
        once every one of them has worked and ``after_write`` has signed the head,
        ``then(tx, what_work_returned)``: the answer, in the same transaction.

        Group commit: the transaction's fixed costs (on PostgreSQL its round trips: the
        lock row, the head's reads and insert, the commit) are paid once for the group.
        All of it happens or none: if anything in a group raises, the group is rolled
        back and each write runs again in a transaction of its own, so one write's
        error is its own and the others are done once, as if they had come alone.

        A group runs first without savepoints (``Repo(optimistic=True)``): an envelope
        refused before it wrote anything needs none, and one refused after writing
        makes the group run again, each write alone and with savepoints."""
        queued: _Queued[W, T] = _Queued(work, then)
        with self._waiting_lock:
            if len(self._waiting) >= MAX_WAITING:
                raise Unavailable("the clearinghouse has too many writes waiting; "
                                  "try again shortly", "BUSY")
            self._waiting.append(queued)
        # Whoever holds ``_leading`` runs the writes at the head of the queue; a write
        # that an earlier holder ran is done by the time its own thread gets the lock.
        while not queued.done:
            with self._leading:
                if queued.done:
                    break
                with self._waiting_lock:
                    group = [self._waiting.popleft()
                             for _ in range(min(MAX_TOGETHER, len(self._waiting)))]
                self._run_group(group)
        if queued.error is not None:
            raise queued.error
        answer: T = queued.answer
        return answer

    def _run_group(self, group: list[_Queued[Any, Any]]) -> None:
        if not group:
            raise InvariantViolation("a group of writes has at least one")
        try:
            try:  # first without savepoints (``Repo``'s optimistic mode)
                answers = self._write(self._together, True, group)
            except Exception as e:
                unreachable = isinstance(e, Unavailable) and e.reason == STORE_UNAVAILABLE
                if unreachable or (len(group) == 1 and not isinstance(e, SavepointNeeded)):
                    # its own error, as alone; or the database's, which each write alone
                    # would meet again (every caller is told; its link retries)
                    for queued in group:
                        queued.error, queued.done = e, True
                    if len(group) > 1:
                        self._told(-len(group))
                    return
                self._told(-len(group))
            else:
                for queued, answer in zip(group, answers, strict=True):
                    queued.answer, queued.done = answer, True
                self._told(len(group))
                return
            for queued in group:  # a group that failed: each alone, with savepoints
                try:
                    queued.answer = self.execute(self._together, [queued])[0]
                    self._told(1)
                except Exception as e:
                    queued.error = e
                queued.done = True
        finally:  # whatever escaped (an interrupt) reaches every waiting caller
            for queued in group:
                if not queued.done:
                    queued.error = Unavailable("the clearinghouse stopped this write; "
                                               "try again shortly", "INTERRUPTED")
                    queued.done = True

    def _told(self, size: int) -> None:
        if self.on_group is not None:
            self.on_group(size)

    def _together(self, tx: Tx, group: list[_Queued[Any, Any]]) -> list[Any]:
        worked = [queued.work(tx) for queued in group]
        if self.after_write is not None:
            self.after_write(tx)  # the head the answers prove against (it signs once)
        return [queued.then(tx, w) for queued, w in zip(group, worked, strict=True)]

    def query(self, fn: Callable[Concatenate[Tx, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a read-only use-case; it never blocks writers."""
        with self.db.read() as conn:
            return fn(Tx(Repo(conn), self._now(), self.key_rings,
                         policy_terms=self.policy_terms), *args, **kwargs)

    def _now(self) -> datetime:
        now = self.clock.now()
        if now.tzinfo is None:
            raise InvariantViolation("the clock must give timezone-aware times")
        return now
