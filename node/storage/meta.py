"""Facts about this node kept as text under a key: its id, district, policy digest, and
the last tree heads it verified and cosigned. The rows are read and written the one way
both services do (``runtime.meta``)."""

from __future__ import annotations

from sqlalchemy import Connection

from runtime import meta


class MetaRepo:
    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def get(self, key: str) -> str | None:
        return meta.read(self.conn, key)

    def set(self, key: str, value: str) -> None:
        meta.write(self.conn, key, value)
