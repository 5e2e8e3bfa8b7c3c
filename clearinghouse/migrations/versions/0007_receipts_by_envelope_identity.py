"""receipts keyed by the envelope's identity, not by the bytes it arrived as

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 08:00:00.000000

A receipt was keyed by the SHA-256 of the bytes received, so the same envelope
re-encoded (fields reordered, an unknown field added) was acted on and logged again.
From now on it is keyed by ``timebank.envelope.identity`` (kind, body, signer, key id).
This re-keys every stored receipt by the identity of the envelope its log leaf records,
keeping, where one envelope got several receipts, the first (the lowest leaf). The
sealed receipts themselves are kept as signed: those signed before this migration state
the SHA-256 of the bytes their leaf records (the audit knows both).
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

from timebank.envelope import decode, identity
from timebank.v1 import clearing_pb2

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _receipts() -> list[tuple[bytes, int, bytes]]:
    """(key, log index, the envelope its leaf records) of every stored receipt."""
    conn = op.get_bind()
    out = []
    for key, sealed in conn.execute(sa.text("SELECT envelope_sha256, receipt FROM receipts")):
        index = clearing_pb2.Receipt.FromString(decode(bytes(sealed)).body).log_index
        data = conn.execute(sa.text("SELECT data FROM log_leaves WHERE idx = :idx"),
                            {"idx": index}).scalar_one()
        out.append((bytes(key), index, clearing_pb2.LogEntry.FromString(bytes(data)).envelope))
    return out


def _rekey(new_key: dict[bytes, bytes]) -> None:
    conn = op.get_bind()
    for old, new in new_key.items():
        if old != new:
            conn.execute(sa.text("UPDATE receipts SET envelope_sha256 = :new "
                                 "WHERE envelope_sha256 = :old"), {"new": new, "old": old})


def upgrade() -> None:
    conn = op.get_bind()
    first: dict[bytes, tuple[int, bytes]] = {}  # identity -> (index, key) of its first
    keys: dict[bytes, bytes] = {}
    for key, index, envelope in sorted(_receipts(), key=lambda r: r[1]):
        ident = identity(decode(envelope))
        if ident in first:  # a re-encoded replay that was acted on again: drop its receipt
            conn.execute(sa.text("DELETE FROM receipts WHERE envelope_sha256 = :key"),
                         {"key": key})
            continue
        first[ident] = (index, key)
        keys[key] = ident
    _rekey(keys)


def downgrade() -> None:
    _rekey({key: hashlib.sha256(envelope).digest() for key, _, envelope in _receipts()})
