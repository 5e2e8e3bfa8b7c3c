"""The first response to each mutating call, under its idempotency key, so that a
retry gets it again instead of doing the work twice."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, insert, select

from node.storage.tables import IDEM
from runtime.statements import Prepared


@dataclass(frozen=True, slots=True)
class StoredResponse:
    method: str
    fingerprint: bytes  # SHA-256 of the request
    response: bytes


class IdempotencyRepo:
    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def get(self, key: str) -> StoredResponse | None:
        row = _GET(self.conn, {"key": key}).first()
        return None if row is None else StoredResponse(
            row.method, bytes(row.fingerprint), bytes(row.response))

    def save(self, key: str, method: str, fingerprint: bytes, response: bytes,
             at: datetime) -> None:
        _SAVE(self.conn, {"key": key, "method": method, "fingerprint": fingerprint,
                          "response": response, "created_at": at})


_GET = Prepared(select(IDEM.c.method, IDEM.c.fingerprint, IDEM.c.response)
                .where(IDEM.c.key == bindparam("key")))
_SAVE = Prepared(insert(IDEM))
