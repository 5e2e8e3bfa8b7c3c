"""A node's ledger checkpoint, anchored in the transparency log (ADR 0007).

A node signs the head of its ledger's hash chain (entry count, hash) and the RFC 9162
root over its entries' hashes, and submits it like a claim message. The clearinghouse
checks the signature and that the node's ledger only grows (a checkpoint of fewer
entries than the last, or of as many with another head, is refused), and the Submit
logs it. From then on the node cannot rewrite any entry up to that count without the
auditor and every holder of a passbook noticing.

The same count with the same head and root again is taken and logged again: a node
whose key was rotated anchors its unchanged ledger under its new key, so that the
latest anchor verifies under its current certificate.
"""

from __future__ import annotations

from clearinghouse.usecases import wire
from clearinghouse.usecases.app import Tx
from clearinghouse.usecases.directory import verify_node
from runtime.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from timebank import anchors
from timebank.envelope import KeyRing, Signed
from timebank.v1 import clearing_pb2

CHECKPOINT = anchors.CHECKPOINT_KIND
HASH_BYTES = 32
MAX_ENTRY_COUNT = 2**62


def _meta_key(node_id: str) -> str:
    return f"checkpoint:{node_id}"


def anchor(tx: Tx, envelope: Signed, ring: KeyRing) -> clearing_pb2.NodeCheckpoint:
    """Check a ``node.checkpoint`` and remember it as the node's latest.

    PERMISSION_DENIED: not the node's own (NOT_YOUR_CHECKPOINT), or the envelope checks.
    INVALID_ARGUMENT: malformed hashes or count (MALFORMED_CHECKPOINT).
    FAILED_PRECONDITION: fewer entries than the node's last checkpoint, or as many with
    another head or root (LEDGER_REWRITTEN). As many with the same head and root is taken
    (the same ledger anchored again, under a rotated key).
    """
    body = verify_node(tx, envelope, CHECKPOINT, ring)
    msg = wire.parse(clearing_pb2.NodeCheckpoint, body, CHECKPOINT)
    if msg.node_id != envelope.signer:
        raise PermissionDenied(f"node {envelope.signer} may anchor only its own ledger",
                               "NOT_YOUR_CHECKPOINT")
    if (len(msg.chain_head) != HASH_BYTES or len(msg.ledger_root) != HASH_BYTES
            or msg.entry_count > MAX_ENTRY_COUNT):
        raise InvalidArgument("a checkpoint carries an entry count and two SHA-256 hashes",
                              "MALFORMED_CHECKPOINT")
    last = tx.repo.meta(_meta_key(msg.node_id))
    if last is not None:
        # "count:head" or, since the root is kept too, "count:head:root"
        count_text, head_hex, root_hex = [*last.split(":"), ""][:3]
        count = int(count_text)
        same = (msg.chain_head.hex() == head_hex
                and (not root_hex or msg.ledger_root.hex() == root_hex))
        if msg.entry_count < count or (msg.entry_count == count and not same):
            raise FailedPrecondition(
                f"district {msg.node_id} anchored {count} ledger entries before; a "
                f"checkpoint of {msg.entry_count} with this head and root would rewrite "
                "its history", "LEDGER_REWRITTEN")
    tx.repo.set_meta(_meta_key(msg.node_id),
                     f"{msg.entry_count}:{msg.chain_head.hex()}:{msg.ledger_root.hex()}")
    return msg
