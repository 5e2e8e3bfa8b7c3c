"""The node's one view of the clearinghouse's log, shared by the sender and the witness.

The view is a ``timebank.trusted_log.TrustedLog``: every head the clearinghouse shows
must extend the one it holds. It is stored in the database (``tree_heads``), in the
transaction that acts on it, and kept here too so that a batch does not read and
re-verify it. A worker reads the view it sends a request from, checks the reply against
that view without the lock, then takes the lock, reconciles with whatever the other
worker verified meanwhile, and stores and holds the result before letting go.
"""

from __future__ import annotations

import threading

import structlog

from node.link.connection import LogKeyRing
from node.usecases import tree_heads
from node.usecases.app import NodeApp
from timebank.transparency import LogError
from timebank.trusted_log import TrustedLog

log = structlog.get_logger("node.clearing")


class ReceiptError(Exception):
    """What the clearinghouse showed does not check out (a receipt, a delivery or a tree
    head it did not sign, or a log that does not hold together): nothing is applied."""


def refused(problem: LogError) -> ReceiptError:
    """A refused tree head, logged loudly: it means a dishonest or broken clearinghouse."""
    log.error("the clearinghouse's log does not check out; nothing was applied",
              problem=str(problem))
    return ReceiptError(str(problem))


def accepted(view: TrustedLog, note: str, consistency: list[bytes]) -> TrustedLog:
    """``view.accept``, a refusal raised as ``ReceiptError``."""
    try:
        return view.accept(note, consistency)
    except LogError as e:
        raise refused(e) from None


def reconciled(view: TrustedLog, other: TrustedLog, consistency: list[bytes]) -> TrustedLog:
    """``view.reconcile``, a refusal raised as ``ReceiptError``."""
    try:
        return view.reconcile(other, consistency)
    except LogError as e:
        raise refused(e) from None


class VerifiedLog:
    """The view and its lock. Hold ``lock`` around ``current`` and ``hold`` whenever the
    view read is the one replaced."""

    def __init__(self, app: NodeApp, clearinghouse_key: bytes,
                 ring: LogKeyRing | None = None) -> None:
        self._app = app
        self._key = clearinghouse_key
        self._ring = ring if ring is not None else LogKeyRing(clearinghouse_key)
        self._view: TrustedLog | None = None
        self.lock = threading.Lock()

    def current(self) -> TrustedLog:
        """The view held (read from the database the first time; the caller holds the
        lock)."""
        keys = self._ring.current
        if self._view is None:
            try:
                stored = self._app.query(tree_heads.verified, keys)
                self._view = TrustedLog(keys, None if stored is None else stored.note)
            except LogError as e:  # edited in the database, or another clearinghouse's
                raise refused(e) from None
        elif self._view.keys != keys:  # the city rotated the clearinghouse's key
            self._view = self._view.with_keys(keys)
        return self._view

    def snapshot(self) -> TrustedLog:
        """The view held now, to send a request from."""
        with self.lock:
            return self.current()

    def hold(self, view: TrustedLog) -> None:
        """Hold ``view`` from now on (the caller holds the lock and has stored its head)."""
        assert view.key == self._key and view.size >= self.current().size
        self._view = view
