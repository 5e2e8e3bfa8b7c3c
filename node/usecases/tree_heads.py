"""The clearinghouse tree heads this node has verified and cosigned (ADR 0007).

The node keeps the last head it verified (every later one must extend it, by a
consistency proof the clearing link checks) and the last it cosigned as a witness. Both
are stored as the signed checkpoint text and checked again when read, so a value edited
in the database is refused rather than trusted.
"""

from __future__ import annotations

from node.usecases.app import Tx
from timebank import transparency

VERIFIED = "log.verified_head"
COSIGNED = "log.cosigned_head"


def _load(tx: Tx, key: str, clearinghouse_key: bytes) -> transparency.Head | None:
    note = tx.repo.meta.get(key)
    return None if note is None else transparency.check_head(note, clearinghouse_key)


def verified(tx: Tx, clearinghouse_key: bytes) -> transparency.Head | None:
    return _load(tx, VERIFIED, clearinghouse_key)


def cosigned(tx: Tx, clearinghouse_key: bytes) -> transparency.Head | None:
    return _load(tx, COSIGNED, clearinghouse_key)


def store(tx: Tx, head: transparency.Head, *, cosigned: bool = False) -> None:
    """Store ``head`` as the last verified (and, if ``cosigned``, the last cosigned). The
    caller checked that it extends the last one stored."""
    tx.repo.meta.set(VERIFIED, head.note)
    if cosigned:
        tx.repo.meta.set(COSIGNED, head.note)
