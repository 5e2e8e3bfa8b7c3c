"""The node's storage: SQLAlchemy schema, engines for SQLite and PostgreSQL, and the
repositories, one module per aggregate, that ``repo.Repo`` gives each transaction."""
