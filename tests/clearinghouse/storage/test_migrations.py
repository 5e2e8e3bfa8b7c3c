"""The migrations own the clearinghouse's schema, and the models match them on both engines."""

from __future__ import annotations

from sqlalchemy import text

from clearinghouse.storage import migrate
from clearinghouse.storage.db import Database


def test_migrations_match_models_and_reach_head(ch_db_url: str) -> None:
    db = Database(ch_db_url)
    try:
        migrate.check(db.writer)  # raises if alembic autogenerate finds a difference
        assert migrate.current_revision(db.writer) == migrate.head_revision() == "0006"
        migrate.upgrade(db.writer)  # again: nothing to do
        with db.write() as conn:  # takes the write lock on PostgreSQL
            assert conn.execute(text("SELECT id FROM write_lock")).scalars().all() == [1]
    finally:
        db.dispose()
