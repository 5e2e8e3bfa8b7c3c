"""Facts about this node kept as text under a key: its id, district, policy digest, and
the last tree heads it verified and cosigned."""

from __future__ import annotations

from sqlalchemy import Connection, bindparam, insert, select, update

from node.storage.tables import META
from runtime.prepared import Prepared


class MetaRepo:
    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def get(self, key: str) -> str | None:
        value: str | None = _GET(self.conn, {"key": key}).scalar()
        return value

    def set(self, key: str, value: str) -> None:
        if _SET(self.conn, {"b_key": key, "value": value}).rowcount == 0:
            _INSERT(self.conn, {"key": key, "value": value})


_GET = Prepared(select(META.c.value).where(META.c.key == bindparam("key")))
_SET = Prepared(update(META).where(META.c.key == bindparam("b_key"))
                .values(value=bindparam("value")))
_INSERT = Prepared(insert(META))
