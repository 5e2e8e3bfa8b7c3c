"""Backing up and restoring a service's database: one copy of the procedure for the node
and the clearinghouse, on SQLite and on PostgreSQL.

SQLite: SQLite's online backup API (``sqlite3.Connection.backup``) copies the database
while the service runs and writes: the copy is one consistent snapshot (a single step
under one read transaction, so a writer in WAL mode never waits and never tears it).
PostgreSQL: ``pg_dump --format=custom`` (one consistent snapshot of a running database,
MVCC), restored by ``pg_restore``. A base backup with WAL archiving (point-in-time
recovery) is the bureau's DBA's tool and works as well: the database is all there is.

A backup is never written over an existing file, and is written beside its final name
and renamed, so that a half-written backup never bears the name of a good one. A restore
refuses a database that holds tables unless ``replace`` is given: restoring over a live
district's history by mistake would be the worst thing this command could do.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from runtime.errors import ConfigError

__all__ = ["BackupError", "BackupInfo", "backup", "backup_engine", "restore"]

SQLITE_MAGIC = b"SQLite format 3\x00"
PG_CUSTOM_MAGIC = b"PGDMP"
#: How long pg_dump or pg_restore may take, at most (a city's log of 10^7 leaves is a few
#: GB; a stuck tool must not hang the operator's shell for ever).
TOOL_TIMEOUT_SECONDS = 6 * 3600


class BackupError(ConfigError):
    """A backup or restore that cannot be made: one line for the operator."""


@dataclass(frozen=True, slots=True)
class BackupInfo:
    path: Path
    engine: str  # "sqlite" or "postgresql"
    size_bytes: int


def _sqlite_path(url: URL) -> Path:
    if not url.database or url.database == ":memory:":
        raise BackupError("只能备份文件中的 SQLite 数据库 / only a SQLite database in a file "
                          "can be backed up")
    return Path(url.database)


def _libpq(url: URL) -> tuple[str, dict[str, str]]:
    """The URL as libpq reads it (no driver name), with its password in the environment
    rather than on a command line anyone can read in ``ps``."""
    env = dict(os.environ)
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    plain = url.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"找不到 {name} / {name} is not installed: install the PostgreSQL "
                          "client tools of the server's major version (Debian: "
                          "postgresql-client)")
    return found


def _run(args: list[str], env: dict[str, str], what: str) -> None:
    done = subprocess.run(args, env=env, capture_output=True, text=True,
                          timeout=TOOL_TIMEOUT_SECONDS, check=False)
    if done.returncode != 0:
        detail = " ".join((done.stderr or done.stdout).split())[:400]
        raise BackupError(f"{what}失败 / {what} failed: {detail}")


def backup_engine(path: Path) -> str:
    """Which engine made the backup file ``path``: "sqlite" or "postgresql"."""
    try:
        with path.open("rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        raise BackupError(f"备份文件不存在 / no backup file {path}") from None
    if head == SQLITE_MAGIC:
        return "sqlite"
    if head.startswith(PG_CUSTOM_MAGIC):
        return "postgresql"
    raise BackupError(f"{path} 不是本系统的备份 / {path} is neither a SQLite database nor a "
                      "pg_dump custom-format archive")


def backup(database_url: str, out: Path) -> BackupInfo:
    """Copy the database at ``database_url`` into the new file ``out`` (mode 0600), while
    the service may be running."""
    if out.exists() or out.is_symlink():
        raise BackupError(f"{out} 已存在，不会覆盖 / {out} exists already; a backup never "
                          "replaces a file: give a new name")
    if not out.parent.is_dir():
        raise BackupError(f"目录不存在 / no directory {out.parent}")
    url = make_url(database_url)
    partial = out.with_name(f".{out.name}.partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    try:
        if url.get_backend_name() == "sqlite":
            engine = "sqlite"
            source = _sqlite_path(url)
            if not source.exists():
                raise BackupError(f"数据库文件不存在 / no database file {source}")
            src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
            dst = sqlite3.connect(partial)
            try:
                src.backup(dst)  # one step: one consistent snapshot
                dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
                if dst.execute("PRAGMA quick_check").fetchone() != ("ok",):
                    raise BackupError("备份副本校验失败 / the copy failed SQLite's check")
            finally:
                dst.close()
                src.close()
        elif url.get_backend_name() == "postgresql":
            engine = "postgresql"
            target, env = _libpq(url)
            _run([_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges",
                  f"--file={partial}", f"--dbname={target}"], env, "pg_dump")
        else:
            raise BackupError(f"不支持的数据库 / cannot back up a {url.get_backend_name()} "
                              "database")
        with partial.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return BackupInfo(out, engine, out.stat().st_size)


def _sqlite_has_tables(path: Path) -> bool:
    if not path.exists() or path.stat().st_size == 0:
        return False
    conn = sqlite3.connect(path)
    try:
        found = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'"
                             ).fetchone()
        return int(found[0]) > 0
    finally:
        conn.close()


def _pg_has_tables(target: str, env: dict[str, str]) -> bool:
    done = subprocess.run(
        [_tool("psql"), "--no-psqlrc", "--tuples-only", "--no-align", f"--dbname={target}",
         "--command=SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"],
        env=env, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        detail = " ".join(done.stderr.split())[:400]
        raise BackupError(f"无法连接数据库 / the database cannot be reached: {detail}")
    return int(done.stdout.strip() or "0") > 0


def restore(database_url: str, source: Path, *, replace: bool = False) -> BackupInfo:
    """Put the backup ``source`` into the database at ``database_url``. The service must
    be stopped. Refused if the database holds tables, unless ``replace``."""
    engine = backup_engine(source)
    url = make_url(database_url)
    if url.get_backend_name() != engine:
        raise BackupError(f"备份来自 {engine}，配置的数据库是 {url.get_backend_name()} / "
                          f"{source} is a {engine} backup; the configuration names a "
                          f"{url.get_backend_name()} database")
    refuse = ("目标数据库不是空的 / the database is not empty: restoring would replace "
              "everything in it; stop the service, and if you mean it, add --replace")
    if engine == "sqlite":
        target_path = _sqlite_path(url)
        if _sqlite_has_tables(target_path) and not replace:
            raise BackupError(refuse)
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        try:
            if src.execute("PRAGMA quick_check").fetchone() != ("ok",):
                raise BackupError(f"{source} 已损坏 / {source} fails SQLite's check")
            target_path.parent.mkdir(parents=True, exist_ok=True)
            dst = sqlite3.connect(target_path)
            try:
                src.backup(dst)  # page by page under SQLite's locks, WAL and all
                dst.execute("PRAGMA journal_mode=WAL")
            finally:
                dst.close()
        finally:
            src.close()
        os.chmod(target_path, 0o600)
    else:
        target, env = _libpq(url)
        if _pg_has_tables(target, env):
            if not replace:
                raise BackupError(refuse)
            _run([_tool("psql"), "--no-psqlrc", "--set=ON_ERROR_STOP=1", f"--dbname={target}",
                  "--command=DROP SCHEMA public CASCADE; CREATE SCHEMA public;"],
                 env, "清空数据库 / emptying the database")
        _run([_tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error",
              "--single-transaction", f"--dbname={target}", str(source)], env, "pg_restore")
    return BackupInfo(source, engine, source.stat().st_size)
