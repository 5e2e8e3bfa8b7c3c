"""Opening a district's or the clearinghouse's database read-only (SQLite or PostgreSQL)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from city.audit.report import AuditError


def readonly_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite"):
        path = Path(parsed.database or "").resolve()
        if not path.is_file():
            raise AuditError(f"no database at {path}")
        # With no write-ahead log beside it, the file is the whole database: open it
        # immutable, so SQLite makes no -wal/-shm files (a read-only WAL open would).
        wal = path.with_name(path.name + "-wal")
        live = wal.exists() and wal.stat().st_size > 0
        uri = f"file:{quote(str(path))}?mode=ro" + ("" if live else "&immutable=1")
        return create_engine("sqlite://", poolclass=NullPool,
                             creator=lambda: sqlite3.connect(uri, uri=True))
    return create_engine(url, poolclass=NullPool,
                         execution_options={"postgresql_readonly": True})


def label(url: str, root: Path) -> str:
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite"):
        path = Path(parsed.database or "").resolve()
        try:
            return str(path.relative_to(root.resolve()))
        except ValueError:
            return str(path)
    return parsed.render_as_string(hide_password=True)

