"""What a node's operator and its monitoring want to know at a glance, read in one
short transaction: the outbox, the claims by state, the last delivery, the log's heads.

Every figure comes from the database, never from a counter in memory, so it is right
after a restart and whichever process reads it (`timebank node status`, the metrics
endpoint at scrape time). Every query is bounded: counts answered by an index, one row
per claim state, three stored heads.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from node.usecases import tree_heads
from node.usecases.app import Tx
from timebank import transparency


@dataclass(frozen=True, slots=True)
class HeadFact:
    """A tree head as stored (read, not checked again: figures only)."""

    size: int
    at: int | None  # when the clearinghouse signed it (UNIX seconds), if the head says


@dataclass(frozen=True, slots=True)
class NodeStatus:
    now: datetime
    outbox_pending: int
    outbox_oldest_at: datetime | None
    claims: dict[str, int]  # state -> count
    last_delivery_seq: int
    verified: HeadFact | None  # the newest head this node verified
    final: HeadFact | None  # the newest head a quorum of districts cosigned

    @property
    def outbox_oldest_age_seconds(self) -> float:
        """How long the oldest unsent message has waited (0: none waits)."""
        if self.outbox_oldest_at is None:
            return 0.0
        return max(0.0, (self.now - self.outbox_oldest_at).total_seconds())

    def age_seconds(self, head: HeadFact | None) -> float | None:
        if head is None or head.at is None:
            return None
        return max(0.0, self.now.timestamp() - head.at)

    @property
    def finality_lag_seconds(self) -> float:
        """How long the newest head this node verified has waited for a quorum's
        cosignatures: 0 when it is final (or there is none)."""
        verified = self.verified
        if verified is None or (self.final is not None and self.final.size >= verified.size):
            return 0.0
        return self.age_seconds(verified) or 0.0


def _head(tx: Tx, key: str) -> HeadFact | None:
    note = tx.repo.meta.get(key)
    if not note:
        return None
    try:
        head = transparency.read_head(note)
    except transparency.LogError:
        return None  # `timebank node check` says what is wrong with it
    return HeadFact(head.size, head.at)


def node_status(tx: Tx) -> NodeStatus:
    return NodeStatus(
        now=tx.now,
        outbox_pending=tx.repo.outbox.pending(),
        outbox_oldest_at=tx.repo.outbox.oldest_pending_at(),
        claims=tx.repo.claims.count_by_state(),
        last_delivery_seq=tx.repo.inbox.last_seq(),
        verified=_head(tx, tree_heads.VERIFIED),
        final=_head(tx, tree_heads.FINAL),
    )


__all__ = ["HeadFact", "NodeStatus", "node_status"]
