"""Backing up, restoring and recovering a node's database: ``timebank node backup``,
``restore`` and ``recover`` (``runtime.backup``; docs/operations.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from node.cli.common import ConfigFile, echo, guarded
from node.config import load_config
from runtime import backup as backups
from runtime.console import masked_url

Out = Annotated[Path, typer.Option(
    "--out", "-o", metavar="FILE",
    help="The backup file to write (a new file; SQLite: a database file, PostgreSQL: a "
         "pg_dump custom-format archive).")]
From = Annotated[Path, typer.Option(
    "--from", metavar="FILE", help="The backup file `timebank node backup` wrote.")]
Replace = Annotated[bool, typer.Option(
    "--replace", help="Replace everything in a database that is not empty.")]


@guarded
def backup_command(config_file: ConfigFile, out: Out) -> None:
    """Back up the node's database into a new file (备份), while the node runs."""
    config = load_config(config_file)
    info = backups.backup(config.effective_database_url, out)
    echo(f"备份完成 / backed up  {masked_url(config.effective_database_url)}")
    echo(f"→ {info.path} ({info.engine}, {info.size_bytes} bytes)")


@guarded
def restore_command(config_file: ConfigFile, source: From, replace: Replace = False) -> None:
    """Restore the node's database from a backup (恢复备份). Stop the node first.

    At its next start the node resends what its outbox holds, reads again every delivery
    after the last one the backup applied, and compares its ledger with the anchors the
    city's log holds: a backup older than the last anchor is refused with what is missing
    (see `timebank node recover`)."""
    from node.storage import migrate
    from node.storage.db import Database

    config = load_config(config_file)
    url = config.effective_database_url
    backups.restore(url, source, replace=replace)
    db = Database(url)
    try:
        revision = migrate.current_revision(db.writer)
    finally:
        db.dispose()
    head = migrate.head_revision()
    echo(f"已恢复 / restored  {source} → {masked_url(url)}")
    if revision != head:
        echo(f"schema {revision} → run `timebank node migrate --config {config_file}` "
             f"(this software needs {head})")
    echo(f"Next: [bold]timebank node serve --config {config_file}[/]")


def register(app: typer.Typer) -> None:
    """Add ``backup`` and ``restore`` to ``timebank node``."""
    app.command("backup")(backup_command)
    app.command("restore")(restore_command)
