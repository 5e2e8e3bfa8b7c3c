"""A service's Alembic migrations: applied, checked and written against a connection
handed over here, so no ``alembic.ini`` and no URL in a file are needed.

Each service keeps its migrations directory (``script.py.mako``, ``versions/`` and an
``env.py`` that calls :func:`run_environment` with its models' metadata) and a
:class:`Migrations` naming that directory.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, MetaData, create_engine, inspect, text

from runtime.errors import ConfigError

if TYPE_CHECKING:
    from alembic.config import Config

#: The table where Alembic keeps a database's schema revision.
_VERSION_TABLE = "alembic_version"


class Migrations:
    """The migrations in ``directory``, which own one service's schema, whose newest
    revision is ``head``.

    The service names its head itself so that checking a database's schema at start, or
    in a command that opens it, needs neither Alembic nor a walk of the migration files
    (about 0.17 s of CPU a process); every run of the migrations checks that the name is
    still the newest (``upgrade``)."""

    def __init__(self, directory: Path, head: str) -> None:
        self.directory = directory
        self.head = head

    def _run(self, engine: Engine, apply: Callable[[Config], Any]) -> None:
        """Run ``apply`` in one transaction. On SQLite, foreign keys are off while it runs
        (Alembic's batch mode copies a table to change it, and dropping the old copy of a
        table that rows elsewhere refer to fails with them on: a database with data could
        not be migrated) and every reference is checked before it commits."""
        from alembic.config import Config

        # the stream now: Alembic's default is sys.stdout as it was when Alembic was first
        # imported (a test's captured stream, closed since, if a test imported it)
        cfg = Config(stdout=sys.stdout)
        cfg.set_main_option("script_location", str(self.directory))
        with engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            driver: Any = conn.connection.driver_connection
            if sqlite:  # takes effect only outside a transaction: on the driver, first
                driver.execute("PRAGMA foreign_keys=OFF")
            try:
                with conn.begin():
                    cfg.attributes["connection"] = conn
                    apply(cfg)
                    if sqlite:
                        broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                        if broken:
                            raise RuntimeError(f"the migration broke references: {broken[:5]}")
            finally:
                if sqlite:
                    driver.execute("PRAGMA foreign_keys=ON")

    def upgrade(self, engine: Engine, revision: str = "head") -> None:
        """Bring the schema to ``revision`` (default: the newest). Safe to run again."""
        from alembic import command

        self._check_head()
        self._run(engine, lambda cfg: command.upgrade(cfg, revision))

    def downgrade(self, engine: Engine, revision: str) -> None:
        """Take the schema back to ``revision`` (for tests of a migration's data step)."""
        from alembic import command

        self._run(engine, lambda cfg: command.downgrade(cfg, revision))

    def check(self, engine: Engine) -> None:
        """Raise if the models and the migrations disagree (``alembic check``)."""
        from alembic import command

        self._run(engine, command.check)

    def revision(self, engine: Engine, message: str) -> None:
        """Autogenerate a new migration from the models (for developers)."""
        from alembic import command

        self._run(engine, lambda cfg: command.revision(cfg, message=message,
                                                       autogenerate=True))

    def revisions(self) -> list[str]:
        """Every revision, oldest first (one line of history: no branches)."""
        from alembic.script import ScriptDirectory

        script = ScriptDirectory(str(self.directory))
        if len(script.get_heads()) > 1:
            raise RuntimeError(f"{self.directory} has more than one head")
        return [r.revision for r in reversed(list(script.walk_revisions()))]

    def _check_head(self) -> None:
        newest = self.revisions()[-1]
        if newest != self.head:
            raise RuntimeError(f"the newest migration in {self.directory} is {newest}, but "
                               f"the service names {self.head} as its head: name the new one")

    def head_revision(self) -> str:
        """The revision this software's schema is (the service's ``head``)."""
        return self.head

    @staticmethod
    def current_revision(engine: Engine) -> str | None:
        """The database's schema revision (None: never migrated), read without Alembic."""
        with engine.connect() as conn:
            if not inspect(conn).has_table(_VERSION_TABLE):
                return None
            found = list(conn.execute(text(f"SELECT version_num FROM {_VERSION_TABLE}"))
                         .scalars())
        if len(found) > 1:
            raise RuntimeError(f"the database records {len(found)} schema heads: {found}")
        return str(found[0]) if found else None

    def refuse_unless_current(self, engine: Engine, migrate_command: str) -> None:
        """Raise ``ConfigError`` unless the schema is the newest: a service serves only
        the schema it was written for (``migrate_command`` brings it there)."""
        current, head = self.current_revision(engine), self.head_revision()
        if current != head:
            raise ConfigError(
                f"数据库结构版本落后，请先升级 / the database schema is at "
                f"{current or 'nothing'}, the software needs {head}: run "
                f"`{migrate_command}` first")

    @classmethod
    def revision_at(cls, url: str) -> str | None:
        """The schema revision of the database at ``url`` (None: never migrated), read
        on a connection of its own (a CLI's question, not a serving service's)."""
        engine = create_engine(url)
        try:
            return cls.current_revision(engine)
        finally:
            engine.dispose()


def run_environment(metadata: MetaData) -> None:
    """The whole of a service's ``migrations/env.py``: run the migrations on the
    connection :class:`Migrations` handed over, against the service's models."""
    from alembic import context

    connection: Connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
