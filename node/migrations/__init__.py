"""Alembic migrations for the node's database (they own the schema)."""
