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
from tests.clearinghouse.conftest import ch_pg_template, ch_pg_url  # noqa: F401

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
    assert "明细 counts" in book.sheetnames
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


# ---------------------------------------------------------------- the clearinghouse


@pytest.fixture(params=["sqlite", "postgres"])
def ch_config(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A clearinghouse made by `timebank clearinghouse init` (SQLite, or a fresh
    PostgreSQL database) with three districts, three completed claims, a cosigned head
    and the period "first" closed, 鼓楼区 having countersigned."""
    from clearinghouse.usecases import directory
    from tests.clearinghouse.conftest import registration
    from tests.clearinghouse.settling import (
        GL,
        HOMES,
        JN,
        KEYS,
        NAMES,
        QX,
        complete,
        cosign_latest,
        countersign_env,
        log_size,
        own_app,
        send,
    )
    from tests.clearinghouse.test_cli import cli
    from tests.clearinghouse.usecases.test_claims import ring
    from timebank import settlement as st
    from timebank.envelope import decode
    from timebank.keys import public_key

    extra = [] if request.param == "sqlite" else \
        ["--database-url", request.getfixturevalue("ch_pg_url")]
    path = tmp_path / "ch" / "clearinghouse.toml"
    done = cli("clearinghouse", "init", "--data-dir", str(tmp_path / "ch"), *extra)
    assert done.exit_code == 0, done.output
    for node, district in NAMES.items():
        assert cli("clearinghouse", "admit", "--config", str(path), "--node-id", node,
                   "--district", district, "--public-key",
                   public_key(KEYS[node]).hex()).exit_code == 0
        assert cli("clearinghouse", "limit", "--config", str(path), "--node-id", node,
                   "--minutes", "100000").exit_code == 0
    app = own_app(path)
    try:
        for node, person in HOMES.items():
            app.execute(directory.register, registration(person, node, node, KEYS[node]),
                        ring(app))
        complete(app, 1, GL, JN)
        complete(app, 2, QX, GL, minutes=60)
        complete(app, 3, GL, JN)
        cosign_latest(app)
        size = log_size(app)
    finally:
        app.db.dispose()
    closed = cli("clearinghouse", "settle", "close", "--config", str(path), "--up-to",
                 str(size), "--label", "first")
    assert closed.exit_code == 0, closed.output
    app = own_app(path)
    try:
        from clearinghouse.usecases import settlement

        envelope = decode(app.query(settlement.get, 1).statements[-1])
        send(app, countersign_env(GL, st.parse_statement(envelope.body), envelope))
    finally:
        app.db.dispose()
    yield path


def test_clearinghouse_report_writes_the_statement(ch_config: Path, tmp_path: Path) -> None:
    import json

    out = tmp_path / "report"
    result = timebank("clearinghouse", "report", "--config", str(ch_config), "--period",
                      "first", "--out", str(out))
    assert result.returncode == 0, result.stderr
    names = {p.name for p in out.iterdir()}
    assert {"settlement-first.pdf", "settlement-first.xlsx", "matrix.csv", "positions.csv",
            "transfers.csv", "money.csv", "activity.csv", "flows.png", "flows.svg",
            "positions.png", "history.svg"} <= names
    shown = timebank("clearinghouse", "settle", "show", "--config", str(ch_config),
                     "--serial", "1", "--json")
    assert shown.returncode == 0, shown.stderr
    identity = json.loads(shown.stdout)["revisions"][-1]["statement_sha256"]
    pdf = pdfium.PdfDocument(out / "settlement-first.pdf")
    try:
        text = "".join(pdf[i].get_textpage().get_text_range() for i in range(len(pdf)))
    finally:
        pdf.close()
    assert identity in text  # the hash the bureau's own command prints
    assert "江宁区" in text and "鼓楼区" in text and "栖霞区" in text
    assert "3 个区之间的 2 笔双边债务" in text
    assert "3 个区中 1 个已会签" in text and "尚未终局" in text
    positions = (out / "positions.csv").read_text(encoding="utf-8-sig")
    assert "320106,鼓楼区,0,240,60,180,180,3:00,3,已会签 countersigned" in positions
    assert "320115,江宁区,0,0,240,-240,-240,-4:00,2,待会签 pending" in positions
    activity = (out / "activity.csv").read_text(encoding="utf-8-sig")
    assert "跨区兑换 redemption,3,300" in activity


def test_clearinghouse_report_before_the_period_is_closed(ch_config: Path,
                                                          tmp_path: Path) -> None:
    result = timebank("clearinghouse", "report", "--config", str(ch_config), "--period",
                      "2031-01", "--out", str(tmp_path / "r"))
    assert result.returncode == 0, result.stderr
    assert "no statement for this period yet" in result.stdout
    assert (tmp_path / "r" / "settlement-2031-01.pdf").exists()
