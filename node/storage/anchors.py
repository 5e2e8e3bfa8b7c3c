"""Checkpoints of this node's ledger anchored in the city's transparency log (ADR 0007).

An anchor is written when a checkpoint is queued and completed, once, when the
clearinghouse's receipt brings its log leaf and inclusion proof. Kept for ever:
passbooks and auditors cite them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, insert, select, update

from node.storage.tables import ANCHORS, record
from runtime.errors import InvariantViolation


@dataclass(frozen=True, slots=True)
class AnchorRecord:
    entry_count: int
    chain_head: bytes
    ledger_root: bytes
    checkpoint: bytes  # the body as queued, then the signed envelope as sent
    log_index: int | None  # None until the log has recorded it
    log_entry: bytes | None
    log_proof: bytes | None  # the inclusion path's hashes, joined
    tree_head: str | None  # the signed tree head the proof is in
    created_at: datetime
    anchored_at: datetime | None


@dataclass(frozen=True, slots=True)
class LoggedAnchor:
    """An anchor the log has recorded: its leaf, proof and tree head are known."""

    entry_count: int
    chain_head: bytes
    ledger_root: bytes
    checkpoint: bytes  # the signed envelope as sent
    log_index: int
    log_entry: bytes
    log_proof: bytes  # the inclusion path's hashes, joined
    tree_head: str
    created_at: datetime
    anchored_at: datetime


class AnchorRepo:
    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, entry_count: int, chain_head: bytes, ledger_root: bytes,
            checkpoint: bytes, at: datetime) -> None:
        self.conn.execute(insert(ANCHORS).values(
            entry_count=entry_count, chain_head=chain_head, ledger_root=ledger_root,
            checkpoint=checkpoint, created_at=at))

    def get(self, entry_count: int) -> AnchorRecord | None:
        row = self.conn.execute(
            select(ANCHORS).where(ANCHORS.c.entry_count == entry_count)).one_or_none()
        return None if row is None else record(AnchorRecord, row)

    def latest(self) -> LoggedAnchor | None:
        """The anchor of the most entries that the log has recorded (None if none)."""
        row = self.conn.execute(
            select(ANCHORS).where(ANCHORS.c.log_index.is_not(None))
            .order_by(ANCHORS.c.entry_count.desc()).limit(1)).one_or_none()
        return None if row is None else record(LoggedAnchor, row)

    def set_anchored(self, entry_count: int, checkpoint: bytes, log_index: int,
                     log_entry: bytes, log_proof: bytes, tree_head: str,
                     at: datetime) -> None:
        """Record the log leaf of a queued checkpoint, once (a second time changes nothing)."""
        done = self.conn.execute(
            update(ANCHORS).where(ANCHORS.c.entry_count == entry_count,
                                  ANCHORS.c.log_index.is_(None))
            .values(checkpoint=checkpoint, log_index=log_index, log_entry=log_entry,
                    log_proof=log_proof, tree_head=tree_head, anchored_at=at))
        if done.rowcount not in (0, 1):
            raise InvariantViolation(f"anchor {entry_count} is not one row")
