"""Migrated SQLite databases for tests: each schema migrated once per test process, then
copied.

Running the node's Alembic migrations on a new SQLite file costs ~0.2 s of CPU and many
fsyncs (~0.7 s on the shared CI machine); a copy of the migrated file costs a millisecond
and is the same database, byte for byte, as a fresh migration would make. Every test
still gets a file of its own. Tests of the migrations themselves (tests/*/storage/
test_migrations.py) migrate for real and do not use this.
"""

from __future__ import annotations

import atexit
import importlib
import shutil
import tempfile
from pathlib import Path
from typing import Literal

Schema = Literal["node", "clearinghouse"]

_templates: dict[Schema, Path] = {}
_folder: list[Path] = []


def _template(schema: Schema) -> Path:
    if schema in _templates:
        return _templates[schema]
    if not _folder:
        _folder.append(Path(tempfile.mkdtemp(prefix="timebank-sqlite-templates-")))
        atexit.register(shutil.rmtree, _folder[0], True)
    path = _folder[0] / f"{schema}.sqlite3"
    storage = f"{schema}.storage"  # node.storage or clearinghouse.storage
    db = importlib.import_module(f"{storage}.db").Database(f"sqlite:///{path}")
    importlib.import_module(f"{storage}.migrate").upgrade(db.writer)
    db.dispose()
    # the last connection closed checkpoints the WAL: the one file is the whole database
    assert not Path(f"{path}-wal").exists(), "the template's WAL was not checkpointed"
    _templates[schema] = path
    return path


def migrated_sqlite(path: Path, schema: Schema = "node") -> str:
    """Make ``path`` a migrated ``schema`` database (a copy of this process's template)
    and return its URL."""
    assert not path.exists(), f"{path} exists: a test database is always new"
    shutil.copyfile(_template(schema), path)
    return f"sqlite:///{path}"
