"""The database probe behind gRPC health ``""``: on a real SQLite file (PostgreSQL made
unreachable: tests/clearinghouse/test_health.py, with a serving process)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from runtime.health import DatabaseProbe


def test_a_sqlite_file_is_probed_never_created(tmp_path: Path) -> None:
    path = tmp_path / "节点.sqlite3"
    reports: list[bool] = []
    probe = DatabaseProbe(f"sqlite:///{path}", reports.append, interval=60)
    try:
        assert probe.probe_once() is False and not path.exists()  # not made by probing
        sqlite3.connect(path).close()
        assert probe.probe_once() is True
        path.unlink()
        assert probe.probe_once() is False and not path.exists()
    finally:
        probe.stop()
    assert reports == [False, True, False]
