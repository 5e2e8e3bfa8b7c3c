"""`timebank node report` (and `timebank clearinghouse report`) end to end: a real
database made by `timebank node init`, orders walked through the service loop, and the
command run as a real process writing every format."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pypdfium2 as pdfium
import pytest
from openpyxl import load_workbook

from node.bootstrap import NodeIdentity, read_policy
from node.config import load_config
from node.storage.db import Database
from node.usecases.app import NodeApp
from runtime.clock import ManualClock
from tests.city.reports.gather.test_node import populate

ROOT = Path(__file__).resolve().parents[3]


def timebank(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "city", *args], capture_output=True,
                          text=True, encoding="utf-8", timeout=120, cwd=ROOT,
                          env={**os.environ, "COLUMNS": "200"})


@pytest.fixture(params=["sqlite", "postgres"])
def node_config(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A node made by `timebank node init` (SQLite in its data directory, or a fresh
    PostgreSQL database), with November's orders in it."""
    extra = [] if request.param == "sqlite" else \
        ["--database-url", request.getfixturevalue("pg_url")]
    init = timebank("node", "init", "--data-dir", str(tmp_path / "node"), "--node-id", "320115",
                    "--district", "江宁区", *extra)
    assert init.returncode == 0, init.stderr
    config_file = tmp_path / "node" / "node.toml"
    config = load_config(config_file)
    clock = ManualClock()
    db = Database(config.effective_database_url)
    try:
        app = NodeApp(db, read_policy(config.policy_file), clock,
                      NodeIdentity(config.node_id, config.district, b"s" * 32))
        populate(app, clock)
    finally:
        db.dispose()
    yield config_file


def test_node_report_writes_every_format(node_config: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = timebank("node", "report", "--config", str(node_config), "--period", "2026-11",
                      "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "已写出" in result.stdout and "wrote" in result.stdout
    names = sorted(p.name for p in out.iterdir())
    assert "node-320115-2026-11.pdf" in names and "node-320115-2026-11.xlsx" in names
    assert "activity.csv" in names
    activity = (out / "activity.csv").read_text(encoding="utf-8-sig")
    assert "助餐 meals,2,75" in activity and "东山街道,2,75" in activity
    assert "秣陵街道,1,90" in activity
    book = load_workbook(out / "node-320115-2026-11.xlsx")
    assert "明细" in book.sheetnames
    pdf = pdfium.PdfDocument(out / "node-320115-2026-11.pdf")
    try:
        text = "".join(pdf[i].get_textpage().get_text_range() for i in range(len(pdf)))
    finally:
        pdf.close()
    assert "江宁区 320115 结算报告 2026-11" in text and "东山街道" in text


@pytest.mark.parametrize(("args", "message"), [
    (["--period", "2026/11"], "期间写作"),
    (["--period", "2026-11", "--config", "/nonexistent/node.toml"], "node.toml"),
])
def test_node_report_bad_input_is_one_clear_line(tmp_path: Path, args: list[str],
                                                 message: str) -> None:
    if "--config" not in args:
        args = [*args, "--config", str(tmp_path / "node.toml")]
    result = timebank("node", "report", *args, "--out", str(tmp_path / "out"))
    assert result.returncode == 1, result.stderr
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
