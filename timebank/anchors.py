"""A district's ledger anchored in the city's transparency log (ADR 0007), as the node,
the clearinghouse, the auditor and a passbook's reader all name it.

The node signs a ``timebank.v1.NodeCheckpoint`` (entry count, chain head, RFC 9162 root
over its entry hashes) as an envelope of kind ``CHECKPOINT_KIND``; the clearinghouse
records the envelope verbatim in a log leaf of kind ``LEAF_KIND``, and the node keeps
that leaf's inclusion proof. A proof is stored as its hashes joined into one byte string
(``stored_path``), which ``proof_path`` splits again: 32 bytes a hash, the leaf's sibling
first, as RFC 9162 orders an inclusion path.
"""

from __future__ import annotations

from collections.abc import Sequence

from timebank.merkle import HASH_SIZE

__all__ = ["CHECKPOINT_KIND", "LEAF_KIND", "MAX_PATH_HASHES", "proof_path", "stored_path"]

CHECKPOINT_KIND = "node.checkpoint"
"""The kind of the envelope in which a node signs a checkpoint of its ledger."""
LEAF_KIND = "checkpoint"
"""The kind of the log leaf recording such an envelope."""
MAX_PATH_HASHES = 64
"""An inclusion path in a log of fewer than 2^64 leaves has at most 64 hashes."""


def proof_path(stored: bytes | None) -> list[bytes]:
    """An anchor's stored inclusion path, as a list of hashes (none if nothing is stored)."""
    data = stored or b""
    if len(data) % HASH_SIZE:
        raise ValueError("a stored inclusion path is a whole number of SHA-256 hashes")
    if len(data) > MAX_PATH_HASHES * HASH_SIZE:
        raise ValueError(f"a stored inclusion path has at most {MAX_PATH_HASHES} hashes")
    return [data[i:i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def stored_path(path: Sequence[bytes]) -> bytes:
    """The stored form of an inclusion path: its hashes joined, in order."""
    if len(path) > MAX_PATH_HASHES or any(len(h) != HASH_SIZE for h in path):
        raise ValueError(f"an inclusion path is at most {MAX_PATH_HASHES} SHA-256 hashes")
    return b"".join(path)
