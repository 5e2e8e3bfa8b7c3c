"""The hash chain of a district's ledger (ADR 0002), as anyone can recompute it.

Each entry is hashed with the hash of the entry before it: SHA-256(previous hash ‖ the
entry's canonical bytes), the first entry's "previous hash" being ``genesis_hash`` of
the node, so a chain belongs to one district. The canonical bytes are the entry's seq,
kind, time, memo, order id, the seq it reverses (0 if none) and its postings as
[account code, signed minutes] pairs, as sorted-key compact JSON in UTF-8
(``canonical_json``; Chinese text stays as it is, numbers are integers). A rewritten
entry, or one removed or inserted, no longer chains to a head anyone has kept.

The node writes the chain, a passbook carries the person's entries with their hashes, and
the auditor recomputes it from a district's database: all three use these functions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

__all__ = ["GENESIS_PREFIX", "HASH_SIZE", "canonical_json", "entry_bytes", "format_time",
           "genesis_hash", "link_hash"]

HASH_SIZE = 32
GENESIS_PREFIX = b"timebank.v1/ledger-genesis\x00"


def canonical_json(value: Any) -> bytes:
    """Sorted-key compact JSON, UTF-8: the one encoding of anything hashed or signed as
    JSON (ledger entries, passbooks)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def format_time(at: datetime) -> str:
    """The one textual form of a time inside hashed data: UTC, microseconds, 'Z'."""
    if at.tzinfo is None:
        raise ValueError("a time inside hashed data is timezone-aware")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_bytes(*, seq: int, kind: str, at: str, memo: str, order_id: int,
                reverses_seq: int, postings: Sequence[Sequence[str | int]]) -> bytes:
    """The canonical bytes of a ledger entry; ``at`` as ``format_time`` writes it and
    ``postings`` as (account code, minutes) pairs, in the entry's order."""
    return canonical_json({"seq": seq, "kind": kind, "at": at, "memo": memo,
                           "order_id": order_id, "reverses_seq": reverses_seq,
                           "postings": [list(p) for p in postings]})


def genesis_hash(node_id: str) -> bytes:
    """The 'previous hash' of a node's first entry: binds the chain to the node."""
    return hashlib.sha256(GENESIS_PREFIX + node_id.encode()).digest()


def link_hash(prev_hash: bytes, canonical: bytes) -> bytes:
    """The hash of an entry whose canonical bytes are ``canonical``, after ``prev_hash``."""
    if len(prev_hash) != HASH_SIZE:
        raise ValueError(f"a previous hash is {HASH_SIZE} bytes, not {len(prev_hash)}")
    return hashlib.sha256(prev_hash + canonical).digest()
