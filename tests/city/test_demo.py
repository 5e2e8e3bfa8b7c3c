"""`timebank demo` as a user runs it: a real subprocess, its exit code and its JSON summary."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from city.cli import app

ROOT = Path(__file__).resolve().parents[2]


def run_demo(*args: str, tmp: Path, env: dict[str, str] | None = None,
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "city", "demo", *args], capture_output=True, text=True,
        encoding="utf-8", timeout=120, cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp), **(env or {})})


def summary_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    last = result.stdout.rstrip("\n").splitlines()[-1]
    data: dict[str, Any] = json.loads(last)
    return data


def test_demo_tells_the_story_and_checks_the_ledger(tmp_path: Path) -> None:
    started = time.monotonic()
    # An ASCII stdout and an operator's database override must not disturb the demo.
    result = run_demo("--json", tmp=tmp_path, env={
        "PYTHONIOENCODING": "ascii",
        "TIMEBANK_NODE_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/nowhere"})
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert elapsed < 30, f"the demo took {elapsed:.1f} s"

    story = result.stdout
    for words in ("李秀英", "张桂兰", "王建国", "助洁", "助餐", "publicity",
                  "recorded as 75 min", "simulated", "All checks passed"):
        assert words in " ".join(story.split()), words

    summary = summary_of(result)
    assert summary["ok"] is True
    assert (summary["node_id"], summary["district"]) == ("320115", "江宁区")
    assert summary["data_dir"] is None
    assert summary["balances"] == {"李秀英": 30, "张桂兰": 0, "王建国": 525, "刘洋": 45}
    assert summary["balances_before_redemption"] == {"李秀英": 75, "张桂兰": 0,
                                                      "王建国": 525, "刘洋": 0}
    cleaning, meals = summary["orders"]
    assert (cleaning["category_name"], cleaning["state"], cleaning["measured_minutes"],
            cleaning["recorded_minutes"], cleaning["volunteer"], cleaning["recipient"]) == \
        ("助洁", "recorded", 80, 75, "李秀英", "王建国")
    assert cleaning["notices"] and "75 min" in cleaning["notices"][0]
    assert (meals["category_name"], meals["state"], meals["payment_source"], meals["payer"],
            meals["recipient"], meals["recorded_minutes"], meals["charged_minutes"]) == \
        ("助餐", "recorded", "relative", "李秀英", "张桂兰", 45, 45)
    ledger = summary["ledger"]
    assert ledger["ok"] is True and ledger["problems"] == []
    assert (ledger["issued_minutes"], ledger["granted_minutes"], ledger["consumed_minutes"],
            ledger["held_by_people_minutes"], ledger["donation_pool_minutes"]) == \
        (120, 600, 120, 600, 0)
    assert ledger["transactions"] == 3 and len(ledger["head_hash"]) == 64
    assert all(check["ok"] for check in summary["checks"])
    # The temporary data directory is gone.
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("timebank-demo-")]


def test_demo_keeps_its_files_with_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "jiangning"
    result = run_demo("--data-dir", str(data), "--json", tmp=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = summary_of(result)
    assert summary["ok"] is True and summary["data_dir"] == str(data.resolve())
    for name in ("node.toml", "policy.toml", "city-secret", "node.sqlite3"):
        assert (data / name).is_file(), name
    assert stat.S_IMODE((data / "city-secret").stat().st_mode) == 0o600

    runner = CliRunner()
    check = runner.invoke(app, ["node", "check", "--config", str(data / "node.toml"), "--json"])
    assert check.exit_code == 0, check.output
    report = json.loads(check.stdout)
    assert report["ok"] is True and report["head_hash"] == summary["ledger"]["head_hash"]

    again = runner.invoke(app, ["demo", "--data-dir", str(data)])
    assert again.exit_code == 1
    assert "not an empty directory" in again.stderr
    assert (data / "node.sqlite3").is_file()
