"""`timebank demo` as a user runs it: a real subprocess that starts a whole city (the
clearinghouse and three district nodes, each its own process), its exit code and its JSON
summary."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from city.audit import audit_data_dir
from city.cli import app
from city.demo import DAUGHTER, HELPER, MOTHER, NEIGHBOUR, STAFF
from tests.city.conftest import DemoCity
from timebank.citytime import CITY_TZ

ROOT = Path(__file__).resolve().parents[2]


def run_demo(*args: str, tmp: Path, env: dict[str, str] | None = None,
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "city", "demo", *args], capture_output=True, text=True,
        encoding="utf-8", timeout=180, cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp), **(env or {})})


def summary_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    last = result.stdout.rstrip("\n").splitlines()[-1]
    data: dict[str, Any] = json.loads(last)
    return data


def test_demo_plays_the_city_and_checks_its_invariants(tmp_path: Path) -> None:
    started = time.monotonic()
    # An ASCII stdout and an operator's database override must not disturb the demo.
    result = run_demo("--json", tmp=tmp_path, env={
        "PYTHONIOENCODING": "ascii",
        "TIMEBANK_NODE_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/nowhere"})
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert elapsed < 90, f"the demo took {elapsed:.1f} s"

    story = " ".join(result.stdout.split())
    for words in ("李秀英", "张桂兰", "王建国", "刘洋", "江宁区", "鼓楼区", "栖霞区", "助洁",
                  "助餐", "simulated", "claim accepted", "All checks passed"):
        assert words in story, words

    summary = summary_of(result)
    assert summary["ok"] is True and summary["data_dir"] is None
    assert summary["districts"] == {"320115": "江宁区", "320106": "鼓楼区", "320113": "栖霞区"}
    assert summary["nets"] == {"320115": -75, "320106": 45, "320113": 30}
    assert sorted((g["creditor"], g["debtor"], g["minutes"]) for g in summary["gross"]) == [
        ("320106", "320115", 45), ("320113", "320115", 30)]
    assert summary["issued_minutes"] == summary["held_or_consumed_minutes"] == 720
    for node_id, ledger in summary["ledgers"].items():
        assert ledger["ok"] is True and ledger["problems"] == [], node_id
    meals = summary["orders"][0]
    assert (meals["category_name"], meals["state"], meals["recorded_minutes"],
            meals["charged_minutes"]) == ("助餐", "recorded", 45, 45)
    redemption, move = summary["claims"]
    assert (redemption["kind"], redemption["state"], redemption["posted_minutes"]) == \
        ("redemption", "completed", 45)
    assert (move["kind"], move["state"], move["minutes"]) == ("move", "completed", 30)
    assert len(summary["checks"]) >= 20 and all(c["ok"] for c in summary["checks"])
    # the month closes: one statement, countersigned by all three, final and posted
    settled = summary["settlement"]
    assert settled["final"] is True and settled["serial"] == 1
    assert settled["countersigned"] == ["320106", "320113", "320115"]
    assert settled["nets"] == {"320106": 45, "320113": 30, "320115": -75}
    assert settled["fen"] == {"320106": 75, "320113": 50, "320115": -125}
    assert sorted((t["from"], t["to"], t["minutes"]) for t in settled["transfers"]) == [
        ("320115", "320106", 45), ("320115", "320113", 30)]
    # The temporary data directory is gone, and no process is left behind.
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("timebank-demo-")]


def test_demo_keeps_the_city_with_data_dir(demo_city: DemoCity) -> None:
    """The city `demo --data-dir DIR --json` kept (run once for this and the audit's
    tests: tests/city/conftest.py)."""
    data, result = demo_city.data_dir, demo_city.run
    assert result.returncode == 0, result.stdout + result.stderr
    summary = summary_of(result)
    assert summary["ok"] is True and summary["data_dir"] == str(data.resolve())
    assert stat.S_IMODE((data / "city-secret").stat().st_mode) == 0o600
    for node_id in ("320115", "320106", "320113"):
        for name in ("node.toml", "policy.toml", "node.key", "node.sqlite3"):
            assert (data / node_id / name).is_file(), (node_id, name)
    assert (data / "clearinghouse" / "clearinghouse.toml").is_file()

    runner = CliRunner()
    check = runner.invoke(app, ["node", "check", "--config",
                                str(data / "320115" / "node.toml"), "--json"])
    assert check.exit_code == 0, check.output
    report = json.loads(check.stdout)
    assert report["ok"] is True
    assert report["head_hash"] == summary["ledgers"]["320115"]["head_hash"]

    nothing_personal_in_logs_or_metrics(data)

    again = runner.invoke(app, ["demo", "--data-dir", str(data)])
    assert again.exit_code == 1
    assert "not an empty directory" in again.stderr


def nothing_personal_in_logs_or_metrics(data: Path) -> None:
    """Every log line and every metric the demo city's four processes produced names no
    one: no name, ID number or phone of the people it enrolled or of its staff (the
    story enrols them, refuses a payment without consent, logs staff and an elder in)."""
    logs = data / "logs"
    produced = {p.name: p.read_text(encoding="utf-8") for p in sorted(logs.iterdir())}
    names = ("clearinghouse", "320115", "320106", "320113")
    assert {f"{n}.log" for n in names} | {f"{n}.metrics" for n in names} <= set(produced)
    for n in names:  # real output: the processes logged their calls and exported counters
        assert " rpc " in produced[f"{n}.log"] or '"rpc"' in produced[f"{n}.log"], n
        assert "_rpcs_total{" in produced[f"{n}.metrics"], n
    personal = [value for c in (DAUGHTER, MOTHER, NEIGHBOUR, HELPER)
                for value in (c.name, c.id_number, c.phone)]
    personal += list(STAFF.values())
    for file, text in produced.items():
        for value in personal:
            assert value not in text, f"{value!r} appears in {file}"


def test_a_kept_city_serves_again_on_its_own_clock(demo_city: DemoCity,
                                                   tmp_path: Path) -> None:
    """The demo's last line names the command that serves its city again; served so, the
    city's clock is where the story left it (weeks ahead of the real one), so nothing new
    is dated before what its ledgers hold, and SIGTERM stops all four processes."""
    said = " ".join(demo_city.run.stdout.split())
    assert f"timebank demo --data-dir {demo_city.data_dir.resolve()} --serve" in said
    data = Path(shutil.copytree(demo_city.data_dir, tmp_path / "city"))
    with sqlite3.connect(data / "320115" / "node.sqlite3") as conn:
        latest = dt.datetime.fromisoformat(conn.execute("SELECT max(at) FROM entries")
                                           .fetchone()[0]).replace(tzinfo=dt.UTC)
    conn.close()
    assert latest > dt.datetime.now(dt.UTC) + dt.timedelta(days=7)  # the story moved time

    serving = subprocess.Popen(
        [sys.executable, "-m", "city", "demo", "--data-dir", str(data), "--serve"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
        cwd=ROOT, env={**os.environ, "COLUMNS": "200"}, start_new_session=True)
    try:
        assert serving.stdout is not None
        lines: list[str] = []
        for line in serving.stdout:  # until it says it serves (or exits)
            lines.append(line)
            if "SIGTERM stops it" in line:
                break
        out = " ".join("".join(lines).split())
        assert "serving again, on its own clock" in out, out + (serving.stderr.read()
                                                                if serving.poll() else "")
        found = re.search(r"now (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) \(Asia/Shanghai", out)
        assert found is not None, out
        now = dt.datetime.fromisoformat(found.group(1)).replace(tzinfo=CITY_TZ)
        assert now >= latest  # its clock is where the story left it, not the real one
        for node_id in ("320115", "320106", "320113"):
            assert f"node {node_id}" in out
        # a web console for each district, its public page read through the node's API
        consoles = re.findall(r"(http://127\.0\.0\.1:\d+)/public", out)
        assert len(consoles) == 3, out
        for url in consoles:
            with urllib.request.urlopen(f"{url}/public", timeout=10) as page:
                html = page.read().decode("utf-8")
            assert "社会监督：公示中的服务" in html
            with urllib.request.urlopen(f"{url}/bureau", timeout=10) as page:
                city_page = page.read().decode("utf-8")
            assert "全市通存通兑概况" in city_page and "栖霞区" in city_page
    finally:
        serving.send_signal(signal.SIGTERM)
        code = serving.wait(timeout=60)
    rest = serving.stdout.read() if serving.stdout else ""
    assert code == 0 and "the demo city stopped" in rest, rest
    assert audit_data_dir(data).ok  # all four stopped cleanly; the city still audits

    usage = run_demo("--serve", tmp=tmp_path)
    assert usage.returncode == 2 and "--data-dir" in usage.stderr
