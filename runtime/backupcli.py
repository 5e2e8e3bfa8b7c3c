"""What ``timebank node backup|restore`` and ``timebank clearinghouse backup|restore``
do and say (``runtime.backup`` does the copying): one wording for both services."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from runtime import backup as backups
from runtime.console import echo, masked_url


def backup(database_url: str, out: Path) -> None:
    """Back up ``database_url`` into the new file ``out`` and say where it went."""
    info = backups.backup(database_url, out)
    echo(f"备份完成 / backed up  {masked_url(database_url)}")
    echo(f"→ {info.path} ({info.engine}, {info.size_bytes} bytes)")


def restore(database_url: str, source: Path, *, replace: bool,
            revision_at: Callable[[str], str | None], head: str | None,
            migrate_command: str, serve_command: str) -> None:
    """Restore ``source`` into ``database_url`` and say what to run next: the migration
    when the restored schema (``revision_at(url)``) is not this software's (``head``),
    then serving."""
    backups.restore(database_url, source, replace=replace)
    revision = revision_at(database_url)
    echo(f"已恢复 / restored  {source} → {masked_url(database_url)}")
    if revision != head:
        echo(f"schema {revision} → run `{migrate_command}` (this software needs {head})")
    echo(f"Next: [bold]{serve_command}[/]")
