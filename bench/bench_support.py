"""What the benches share: a PostgreSQL database made for one run and dropped after.

Imported by the bench scripts, which run as ``python bench/NAME.py`` (their folder is
then first on the path).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def bench_database(server_url: str, prefix: str) -> Iterator[str]:
    """A new, empty database named ``prefix…`` on the PostgreSQL server of
    ``server_url`` (whose own database is used only to create it); its URL. Dropped
    after, even with connections still open."""
    from sqlalchemy import create_engine, make_url, text

    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
