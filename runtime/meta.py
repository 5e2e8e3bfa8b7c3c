"""Reading and writing a service's ``meta`` rows (``runtime.schema.MetaColumns``): one
text value per key, set in the caller's transaction.

A write updates the row and inserts it only if there was none: one statement in the
usual case, the same on SQLite and PostgreSQL. Writers are serialised
(``runtime.db.Database.write``), so no other writer can insert the key in between.
"""

from __future__ import annotations

from sqlalchemy import Connection, bindparam, column, insert, select, table, update

from runtime.schema import MetaColumns
from runtime.statements import Prepared

_META = table(MetaColumns.__tablename__, column("key"), column("value"))
_READ = Prepared(select(_META.c.value).where(_META.c.key == bindparam("key")))
_UPDATE = Prepared(update(_META).where(_META.c.key == bindparam("b_key"))
                   .values(value=bindparam("value")))
_INSERT = Prepared(insert(_META))


def read(conn: Connection, key: str) -> str | None:
    """The value stored under ``key``, or None."""
    value: str | None = _READ(conn, {"key": key}).scalar()
    return value


def write(conn: Connection, key: str, value: str) -> None:
    """Store ``value`` under ``key``, replacing any value there."""
    if _UPDATE(conn, {"b_key": key, "value": value}).rowcount == 0:
        _INSERT(conn, {"key": key, "value": value})
