"""`timebank node backup|restore` and `timebank clearinghouse backup|restore`, on SQLite
and on real PostgreSQL: one-line refusals, exit codes, and a restore that brings back
the database as it was."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from typer.testing import CliRunner

from city.cli import app
from clearinghouse.bootstrap import init_city
from node.bootstrap import init_data_dir
from node.storage.db import Database
from tests.node.storage.test_migrations import empty_url  # noqa: F401 - the fixture

runner = CliRunner()


def _count(url: str, table: str) -> int:
    db = Database(url)
    try:
        with db.read() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        db.dispose()


def _run(*args: str) -> tuple[int, str]:
    done = runner.invoke(app, list(args))
    return done.exit_code, done.output


def test_node_backup_and_restore(empty_url: str, tmp_path: Path) -> None:  # noqa: F811
    config = str(init_data_dir(tmp_path / "node", "320115", "江宁区", database_url=empty_url))
    out = tmp_path / "node.backup"
    code, said = _run("node", "backup", "--config", config, "--out", str(out))
    assert code == 0, said
    assert "备份完成 / backed up" in said and out.exists()
    code, said = _run("node", "backup", "--config", config, "--out", str(out))
    assert code == 1 and "exists already" in said
    db = Database(empty_url)
    with db.write() as conn:  # something done after the backup
        conn.execute(text("INSERT INTO service_points (code, name, street, created_at) "
                          "VALUES ('jn-01', '东山街道服务站', '', CURRENT_TIMESTAMP)"))
    db.dispose()
    code, said = _run("node", "restore", "--config", config, "--from", str(out))
    assert code == 1 and "the database is not empty" in said and "--replace" in said
    assert _count(empty_url, "service_points") == 1  # nothing changed
    code, said = _run("node", "restore", "--config", config, "--from", str(out), "--replace")
    assert code == 0, said
    assert "已恢复 / restored" in said and "node serve" in said
    assert _count(empty_url, "service_points") == 0  # as it was at the backup


def test_clearinghouse_backup_and_restore(empty_url: str, tmp_path: Path) -> None:  # noqa: F811
    config = str(init_city(tmp_path / "ch", database_url=empty_url))
    out = tmp_path / "ch.backup"
    code, said = _run("clearinghouse", "backup", "-c", config, "--out", str(out))
    assert code == 0, said
    admitted = _count(empty_url, "admissions")
    code, said = _run("clearinghouse", "restore", "-c", config, "--from", str(out))
    assert code == 1 and "not empty" in said
    code, said = _run("clearinghouse", "restore", "-c", config, "--from", str(out),
                      "--replace")
    assert code == 0, said
    assert _count(empty_url, "admissions") == admitted
    code, said = _run("clearinghouse", "migrate", "-c", config)
    assert code == 0 and "already current" in said
