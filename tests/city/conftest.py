"""The demo's city, made once per test process: `timebank demo --data-dir` as a user
runs it (a real subprocess starting a clearinghouse and three district nodes).

tests/city/test_demo.py checks what it printed and kept; tests/city/test_audit.py audits
copies of what it kept. One run serves both (a run takes 15 to 20 s on the CI machine)
when they run in one process: with -n 0, and mostly under xdist's ``--dist worksteal``
(pyproject.toml), which hands each worker a contiguous run of the collected tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class DemoCity:
    data_dir: Path
    run: subprocess.CompletedProcess[str]  # its exit code and output (--json)


@pytest.fixture(scope="session")
def demo_city(tmp_path_factory: pytest.TempPathFactory) -> DemoCity:
    """The city `timebank demo --data-dir DIR --json` kept. Tests only read it (or copy
    it first): the same files for every test."""
    data = tmp_path_factory.mktemp("demo-city") / "nanjing"
    run = subprocess.run(
        [sys.executable, "-m", "city", "demo", "--data-dir", str(data), "--json"],
        capture_output=True, text=True, encoding="utf-8", timeout=180, cwd=ROOT,
        env={**os.environ, "PYTHONIOENCODING": "utf-8", "COLUMNS": "200"})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return DemoCity(data, run)
