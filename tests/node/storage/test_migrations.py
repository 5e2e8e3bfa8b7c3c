"""Alembic owns the schema: migrations reach head and match the models exactly."""

from __future__ import annotations

from node.storage import migrate
from node.storage.db import Database


def test_migrations_match_models(db_url: str) -> None:
    db = Database(db_url)
    try:
        assert migrate.current_revision(db.writer) == migrate.head_revision()
        migrate.check(db.writer)  # raises if the models and the migrations drift apart
        migrate.upgrade(db.writer)  # running again is harmless
        assert migrate.current_revision(db.writer) == migrate.head_revision()
    finally:
        db.dispose()
