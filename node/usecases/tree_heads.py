"""The clearinghouse tree heads this node has verified and cosigned (ADR 0007), and
the latest it knows a quorum of districts cosigned (issue 14).

The node keeps the last head it verified (every later one must extend it, by a
consistency proof the clearing link checks), the last it cosigned as a witness, and
the last final one its log watch checked (signed by the clearinghouse, cosigned by a
quorum, of the history the node verified). All are stored as the signed checkpoint
text and checked again when read, so a value edited in the database is refused rather
than trusted.
"""

from __future__ import annotations

from node.usecases.app import Tx
from timebank import transparency

VERIFIED = "log.verified_head"
COSIGNED = "log.cosigned_head"
FINAL = "log.final_head"


def _load(tx: Tx, key: str, clearinghouse_key: bytes | transparency.LogKeys,
          ) -> transparency.Head | None:
    note = tx.repo.meta.get(key)
    return None if note is None else transparency.check_head(note, clearinghouse_key)


def verified(tx: Tx, clearinghouse_key: bytes | transparency.LogKeys) -> transparency.Head | None:
    return _load(tx, VERIFIED, clearinghouse_key)


def cosigned(tx: Tx, clearinghouse_key: bytes | transparency.LogKeys) -> transparency.Head | None:
    return _load(tx, COSIGNED, clearinghouse_key)


def final(tx: Tx, clearinghouse_key: bytes | transparency.LogKeys) -> transparency.Head | None:
    return _load(tx, FINAL, clearinghouse_key)


def store_final(tx: Tx, head: transparency.Head) -> bool:
    """Store ``head`` as the latest final head, unless one as large is stored; whether
    it was. The caller checked its quorum and that it is of this node's history."""
    found = tx.repo.meta.get(FINAL)
    if found is not None and transparency.read_head(found).size >= head.size:
        return False
    tx.repo.meta.set(FINAL, head.note)
    return True


def store(tx: Tx, head: transparency.Head, *, cosigned: bool = False) -> None:
    """Store ``head`` as the last verified (and, if ``cosigned``, the last cosigned). The
    caller checked that it extends the last one stored."""
    tx.repo.meta.set(VERIFIED, head.note)
    if cosigned:
        tx.repo.meta.set(COSIGNED, head.note)
