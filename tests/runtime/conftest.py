"""Runtime fixtures: an empty database per test, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.postgres import REQUIRE_POSTGRES, admin_engine, database_url


@pytest.fixture
def empty_pg_url() -> Iterator[str]:
    """The URL of a PostgreSQL database with no tables, dropped after the test."""
    admin = admin_engine()
    name = f"tb_rt_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as e:  # any failure means no PostgreSQL here
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL is required but unreachable: {e}")
        pytest.skip("PostgreSQL is not reachable (set TIMEBANK_REQUIRE_POSTGRES=1 to fail)")
    yield database_url(name)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a database with no tables, once per storage engine."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'runtime.sqlite3'}"
    url: str = request.getfixturevalue("empty_pg_url")
    return url
