"""Anchoring this node's ledger in the city's transparency log (ADR 0007).

A checkpoint names the head of the ledger's hash chain (entry count and hash), the
RFC 9162 root over the entries' hashes in sequence order, and the digest of the city
policy the node runs as it makes the checkpoint (so the log shows which policy each
district ran). It goes to the clearinghouse
through the outbox like a claim message, signed with the node key; the clearinghouse
logs it, and the receipt comes back with the log leaf and its inclusion proof, which
the clearing link has checked before ``anchored`` records them. From then on any
rewrite of those entries shows: the chain no longer reaches the anchored head, the
auditor says so, and passbooks citing the anchor still verify against the log.

A checkpoint is signed with the key the node runs with. After the bureau rotates that
key, the last anchor no longer verifies under the district's current certificate, so
the node anchors its ledger again, unchanged or not, under the new key (``request``);
the clearinghouse takes the same count and head again (ADR 0007's rule is only that a
ledger never shrinks or changes).

The root is computed over every entry hash (one indexed read of 32 bytes per entry);
checkpoints are taken on a schedule, so that is paid once per interval, not per entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from timebank import anchors, merkle
from timebank.v1 import clearing_pb2 as pb

if TYPE_CHECKING:  # the storage layer loads only where a checkpoint is made
    from node.usecases.app import Tx

CHECKPOINT = anchors.CHECKPOINT_KIND


@dataclass(frozen=True, slots=True)
class Requested:
    entry_count: int
    chain_head: bytes
    ledger_root: bytes
    queued: bool  # False: this count was checkpointed before


def request(tx: Tx, key_id: str) -> Requested:
    """Queue a checkpoint of the ledger as it stands, to be signed with the node key
    ``key_id``; nothing new if one of this entry count waits to be sent, or was
    anchored under this key already."""
    count, chain_head = tx.repo.ledger.head()
    found = tx.repo.anchors.at(count)
    for anchor in found:
        if not anchor.key_id or anchor.key_id == key_id:
            return Requested(count, bytes(anchor.chain_head), bytes(anchor.ledger_root), False)
    root = merkle.root(tx.repo.ledger.entry_hashes(count))
    body = pb.NodeCheckpoint(node_id=tx.node.node_id, entry_count=count,
                             chain_head=chain_head, ledger_root=root,
                             policy_sha256=tx.policy.sha256)
    body.at.FromDatetime(tx.now)
    raw = body.SerializeToString(deterministic=True)
    tx.repo.outbox.enqueue(CHECKPOINT, None, raw, tx.now)
    tx.repo.anchors.add(count, chain_head, root, raw, tx.now)
    return Requested(count, chain_head, root, True)


def anchored(tx: Tx, body: bytes, sent: bytes, logged: pb.LogInclusion,
             tree_head: str) -> None:
    """The clearinghouse logged the checkpoint whose unsigned ``body`` was sent as the
    signed envelope ``sent``; ``logged`` (already checked against ``tree_head``) is its
    leaf and inclusion proof. Recorded once, under the key that signed it."""
    msg = pb.NodeCheckpoint.FromString(body)
    signed_by = pb.Envelope.FromString(sent).key_id
    tx.repo.anchors.set_anchored(msg.entry_count, signed_by, sent, logged.index, logged.entry,
                                 anchors.stored_path(logged.path), tree_head, tx.now)


def refused(tx: Tx, body: bytes) -> None:
    """The clearinghouse refused the checkpoint ``body`` for good (signed with a key it no
    longer takes, say): it will never be logged, so it no longer stands in the way of
    the next request."""
    tx.repo.anchors.drop_waiting(pb.NodeCheckpoint.FromString(body).entry_count)
