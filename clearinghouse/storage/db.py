"""The clearinghouse's database (``runtime.db``). On PostgreSQL every writer first locks
the one ``write_lock`` row, so that several clearinghouse replicas can share a database."""

from __future__ import annotations

from sqlalchemy import select

from clearinghouse.storage.schema import WriteLock
from runtime.db import Database as _RuntimeDatabase
from runtime.statements import StatementMode


class Database(_RuntimeDatabase):
    """The clearinghouse's database: one writer at a time, many readers."""

    def __init__(self, url: str, *, statements: StatementMode | None = None) -> None:
        lock = select(WriteLock.id).where(WriteLock.id == 1).with_for_update()
        # No pre-ping: a node's link retries a call that found a dropped connection
        # (UNAVAILABLE), and the round trip would be paid by every transaction.
        super().__init__(url, service="clearinghouse", write_lock=lock,
                         statements=statements, pre_ping=False, pipelined=True)
