"""The Alembic migrations that own the node's schema (node/migrations), through
``runtime.migrate``."""

from __future__ import annotations

from pathlib import Path

from runtime.migrate import Migrations

#: The newest migration: name each new one here too (every migration run checks it).
HEAD = "0012"
_OURS = Migrations(Path(__file__).resolve().parents[1] / "migrations", HEAD)
upgrade, check, revision = _OURS.upgrade, _OURS.check, _OURS.revision
downgrade = _OURS.downgrade
head_revision, current_revision = _OURS.head_revision, _OURS.current_revision
revision_at, refuse_unless_current = _OURS.revision_at, _OURS.refuse_unless_current
revisions = _OURS.revisions
