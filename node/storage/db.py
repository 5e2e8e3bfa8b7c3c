"""The node's database (``runtime.db``): on PostgreSQL every writer first locks the
single ``ledger_head`` row, the head of the hash chain it is about to extend."""

from __future__ import annotations

from sqlalchemy import select

from node.storage.schema import LedgerHead
from runtime import db
from runtime.statements import StatementMode

_LOCK_HEAD = select(LedgerHead.seq).where(LedgerHead.id == 1).with_for_update()


class Database(db.Database):
    """The node's database: one writer at a time, many readers."""

    def __init__(self, url: str, *, statements: StatementMode | None = None) -> None:
        super().__init__(url, service="node", write_lock=_LOCK_HEAD, statements=statements)
