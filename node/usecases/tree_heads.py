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
    note = tx.repo.meta(key)
    return None if note is None else transparency.check_head(note, clearinghouse_key)


def verified(tx: Tx, clearinghouse_key: bytes) -> transparency.Head | None:
    return _load(tx, VERIFIED, clearinghouse_key)


def cosigned(tx: Tx, clearinghouse_key: bytes) -> transparency.Head | None:
    return _load(tx, COSIGNED, clearinghouse_key)


def remember(tx: Tx, head: transparency.Head, clearinghouse_key: bytes, *,
             cosigning: bool = False) -> None:
    """Store ``head`` as the last verified (and, if ``cosigning``, the last cosigned),
    unless a larger one is stored already. The caller checked it extends the last."""
    for key, wanted in ((VERIFIED, True), (COSIGNED, cosigning)):
        if not wanted:
            continue
        old = _load(tx, key, clearinghouse_key)
        if old is not None and old.size > head.size:
            continue
        if old is not None and old.size == head.size and old.root != head.root:
            raise transparency.LogError(
                f"two different heads of {head.size} leaves: the log was forked")
        tx.repo.set_meta(key, head.note)
