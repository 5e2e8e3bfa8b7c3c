"""Checkpoints of this node's ledger anchored in the city's transparency log (ADR 0007).

An anchor is written when a checkpoint is queued and completed, once, when the
clearinghouse's receipt brings its log leaf and inclusion proof. Kept for ever:
passbooks and auditors cite them. An anchor is keyed by its entry count and the id of the
node key that signed it (empty while it waits to be sent: the link signs it with the key
it runs with), so that after a key rotation the same ledger is anchored again under the
new key, beside the old anchor.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, insert, select, update

from node.storage.tables import ANCHORS, record
from runtime.errors import InvariantViolation


@dataclass(frozen=True, slots=True)
class AnchorRecord:
    entry_count: int
    key_id: str  # the node key that signed it; "" until it is sent
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
    key_id: str  # the node key that signed it
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
        """A checkpoint queued to be sent (signed by whichever key sends it)."""
        self.conn.execute(insert(ANCHORS).values(
            entry_count=entry_count, key_id="", chain_head=chain_head,
            ledger_root=ledger_root, checkpoint=checkpoint, created_at=at))

    def at(self, entry_count: int) -> list[AnchorRecord]:
        """Every anchor of this many entries: one logged for each key that signed one, in
        log order, then the one waiting to be sent, if any."""
        rows = self.conn.execute(
            select(ANCHORS).where(ANCHORS.c.entry_count == entry_count)
            .order_by(ANCHORS.c.log_index.is_(None), ANCHORS.c.log_index))
        return [record(AnchorRecord, row) for row in rows]

    def latest(self) -> LoggedAnchor | None:
        """The anchor of the most entries that the log has recorded, the latest recorded of
        those (None if none)."""
        row = self.conn.execute(
            select(ANCHORS).where(ANCHORS.c.log_index.is_not(None))
            .order_by(ANCHORS.c.entry_count.desc(), ANCHORS.c.anchored_at.desc(),
                      ANCHORS.c.log_index.desc()).limit(1)).one_or_none()
        return None if row is None else record(LoggedAnchor, row)

    def set_anchored(self, entry_count: int, key_id: str, checkpoint: bytes, log_index: int,
                     log_entry: bytes, log_proof: bytes, tree_head: str,
                     at: datetime) -> None:
        """Record the log leaf of the queued checkpoint of ``entry_count``, sent signed by
        ``key_id``, once (a second time changes nothing). Should this key have anchored
        this count already, the queued one is dropped: the first anchor stands."""
        if not key_id:
            raise InvariantViolation("an anchored checkpoint names the key that signed it")
        if self.conn.execute(select(ANCHORS.c.entry_count).where(
                ANCHORS.c.entry_count == entry_count, ANCHORS.c.key_id == key_id)).first():
            self.drop_waiting(entry_count)
            return
        done = self.conn.execute(
            update(ANCHORS).where(ANCHORS.c.entry_count == entry_count,
                                  ANCHORS.c.key_id == "", ANCHORS.c.log_index.is_(None))
            .values(key_id=key_id, checkpoint=checkpoint, log_index=log_index,
                    log_entry=log_entry, log_proof=log_proof, tree_head=tree_head,
                    anchored_at=at))
        if done.rowcount not in (0, 1):
            raise InvariantViolation(f"anchor {entry_count} is not one row")

    def drop_waiting(self, entry_count: int) -> None:
        """Forget the checkpoint of ``entry_count`` waiting to be sent (the clearinghouse
        refused it for good: it will never be logged, and must not stop another)."""
        self.conn.execute(delete(ANCHORS).where(
            ANCHORS.c.entry_count == entry_count, ANCHORS.c.key_id == "",
            ANCHORS.c.log_index.is_(None)))
