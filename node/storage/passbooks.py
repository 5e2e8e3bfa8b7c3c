"""The passbooks the node's API issued (电子存折), each kept as the signed file it sent.

A paper passbook prints the digest of its statement; every new statement has another
digest (it says when it was made, and cites the latest cosigned head), so the file that
matches the paper is only the one issued with it. ``add`` keeps a file once per digest
(the same digest again is the same statement: nothing changes); ``get`` gives it back.
Rows are never changed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, insert, select

from node.storage.tables import PASSBOOKS
from runtime.errors import InvariantViolation
from runtime.statements import Prepared

#: The largest file kept (the schema's bound too): what the API sends, at most.
MAX_FILE_BYTES = 3 * 1024 * 1024
DIGEST_BYTES = hashlib.sha256().digest_size


@dataclass(frozen=True, slots=True)
class IssuedPassbook:
    digest: bytes  # the SHA-256 the node signed: the code on paper
    person_id: int
    made_at: datetime
    warning: str  # what its reader was told it lacks ("": nothing)
    statement_file: bytes  # the signed file, byte for byte as sent


class PassbookRepo:
    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, digest: bytes, person_id: int, made_at: datetime, warning: str,
            statement_file: bytes) -> None:
        """Keep the passbook file ``statement_file`` signed as ``digest``, unless one of
        that digest is kept already (then it is the same statement: one digest, one
        statement, so nothing changes)."""
        if len(digest) != DIGEST_BYTES:
            raise InvariantViolation("a passbook is kept by the SHA-256 its node signed")
        if not 0 < len(statement_file) <= MAX_FILE_BYTES:
            raise InvariantViolation(f"a kept passbook is 1 to {MAX_FILE_BYTES} bytes")
        found = self.get(digest)
        if found is None:
            _ADD(self.conn, {"digest": digest, "person_id": person_id, "made_at": made_at,
                             "warning": warning, "statement_file": statement_file})
        elif found.person_id != person_id:
            raise InvariantViolation("one statement digest names two people's passbooks")

    def get(self, digest: bytes) -> IssuedPassbook | None:
        row = _GET(self.conn, {"digest": digest}).first()
        if row is None:
            return None
        return IssuedPassbook(bytes(row.digest), int(row.person_id), row.made_at,
                              str(row.warning), bytes(row.statement_file))


_GET = Prepared(select(PASSBOOKS).where(PASSBOOKS.c.digest == bindparam("digest")))
_ADD = Prepared(insert(PASSBOOKS))
