"""The node's storage: SQLAlchemy schema, engines for SQLite and PostgreSQL, the repository."""
