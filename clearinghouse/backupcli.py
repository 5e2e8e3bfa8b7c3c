"""Backing up, restoring and migrating the clearinghouse's database: ``timebank
clearinghouse backup``, ``restore`` and ``migrate`` (``runtime.backup``;
docs/operations.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clearinghouse.config import load_config
from runtime import backupcli as backups
from runtime.console import echo, guarded, masked_url

ConfigFile = Annotated[Path, typer.Option(
    "--config", "-c", metavar="FILE", help="The clearinghouse's configuration "
    "(clearinghouse.toml, written by `timebank clearinghouse init`).")]
Out = Annotated[Path, typer.Option(
    "--out", "-o", metavar="FILE",
    help="The backup file to write (a new file; SQLite: a database file, PostgreSQL: a "
         "pg_dump custom-format archive).")]
From = Annotated[Path, typer.Option(
    "--from", metavar="FILE", help="The backup file `timebank clearinghouse backup` wrote.")]
Replace = Annotated[bool, typer.Option(
    "--replace", help="Replace everything in a database that is not empty.")]


@guarded
def backup_command(config_file: ConfigFile, out: Out) -> None:
    """Back up the clearinghouse's database into a new file (备份), while it serves."""
    backups.backup(load_config(config_file).effective_database_url, out)


@guarded
def restore_command(config_file: ConfigFile, source: From, replace: Replace = False) -> None:
    """Restore the clearinghouse's database from a backup (恢复备份). Stop every replica
    first. A log older than the districts' signed heads is caught by every node's
    witness: read docs/operations.md before serving it."""
    from clearinghouse.storage import migrate

    backups.restore(
        load_config(config_file).effective_database_url, source, replace=replace,
        revision_at=migrate.revision_at, head=migrate.head_revision(),
        migrate_command=f"timebank clearinghouse migrate -c {config_file}",
        serve_command=f"timebank clearinghouse serve -c {config_file}")


@guarded
def migrate_command(config_file: ConfigFile) -> None:
    """Bring the database schema up to this version (升级数据库; run after every upgrade,
    with every replica stopped), and check the keys recorded in it."""
    from clearinghouse.bootstrap import migrate_and_record
    from clearinghouse.storage import migrate

    config = load_config(config_file)
    url = config.effective_database_url
    before = migrate.revision_at(url)
    migrate_and_record(config)
    after = migrate.revision_at(url)
    echo(f"database  {masked_url(url)}")
    echo(f"schema    {before or 'empty'} → {after} "
         f"({'already current' if before == after else 'migrated'}; "
         f"this software needs {migrate.head_revision()})")


def register(app: typer.Typer) -> None:
    """Add ``backup``, ``restore`` and ``migrate`` to ``timebank clearinghouse``."""
    app.command("backup")(backup_command)
    app.command("restore")(restore_command)
    app.command("migrate")(migrate_command)
