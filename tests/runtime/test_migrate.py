"""``runtime.migrate``: a service names its newest migration, and the schema check at
start reads the database's revision without Alembic."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import pytest
from sqlalchemy import create_engine

from clearinghouse.storage import migrate as clearinghouse_migrate
from node.storage import migrate as node_migrate
from runtime.errors import ConfigError
from runtime.migrate import Migrations

COMMAND = "timebank node migrate"


@pytest.mark.parametrize("service", [node_migrate, clearinghouse_migrate])
def test_each_service_names_its_newest_migration(service: ModuleType) -> None:
    assert service.HEAD == service.revisions()[-1] == service.head_revision()


def test_a_head_named_wrong_stops_the_migrations_before_they_run(tmp_path: Path) -> None:
    directory, head = node_migrate._OURS.directory, node_migrate.HEAD
    older = node_migrate.revisions()[-2]
    engine = create_engine(f"sqlite:///{tmp_path / 'node.sqlite3'}")
    try:
        with pytest.raises(RuntimeError, match=re.escape(
                f"is {head}, but the service names {older} as its head")):
            Migrations(directory, older).upgrade(engine)
        assert Migrations.current_revision(engine) is None  # nothing ran
        with pytest.raises(ConfigError, match=re.escape(
                f"schema is at nothing, the software needs {head}")):
            node_migrate.refuse_unless_current(engine, COMMAND)
        node_migrate.upgrade(engine)
        assert Migrations.current_revision(engine) == head
        node_migrate.refuse_unless_current(engine, COMMAND)
        with pytest.raises(ConfigError, match=re.escape(
                f"schema is at {head}, the software needs 9999: run `{COMMAND}` first")):
            Migrations(directory, "9999").refuse_unless_current(engine, COMMAND)
    finally:
        engine.dispose()
