"""The staff's walkthrough, top to bottom, as a script runs it: the operator's and a
staff member's accounts, the service loop with the times entered afterwards (`--at`),
the publicity period (公示期), recording (twice), balance and history.

Every command is the real console script (`python -m city`) against a real `timebank
node serve` over TLS, logged in with `node login` as a person would be. The node runs on
a dev clock (``runtime.devclock``): the day starts at 08:00 in Asia/Shanghai, and the
three hours of the visit and the seven days of the publicity period pass at once.
Lists are read at 80 and 120 columns.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest

from runtime import devclock
from tests.node.test_cli import CLIENT_ENV, Served, init_node, start_serving, stop
from timebank.citytime import CITY_TZ

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]


@dataclass
class Walk:
    served: Served
    config: Path
    clock: Path
    state: Path  # XDG_STATE_HOME: where `node login` keeps the session
    day: date  # the day of the visit, in the city's time

    def run(self, *args: str, stdin: str | None = None, columns: int = 100,
            ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIMEBANK_")}
        env.update(CLIENT_ENV, TIMEBANK_NODE_ADDRESS=self.served.address,
                   XDG_STATE_HOME=str(self.state), COLUMNS=str(columns),
                   TIMEBANK_SERVER_METRICS_LISTEN="")
        return subprocess.run([sys.executable, "-m", "city", *args], capture_output=True,
                              text=True, encoding="utf-8", input=stdin, timeout=60,
                              cwd=ROOT, env=env)

    def ok(self, *args: str, stdin: str | None = None, columns: int = 100) -> str:
        result = self.run(*args, stdin=stdin, columns=columns)
        assert result.returncode == 0, f"timebank {' '.join(args)}:\n{result.stderr}"
        assert "Traceback" not in result.stderr
        return result.stdout

    def later(self, delta: timedelta) -> None:
        devclock.advance(self.clock, delta)

    def at(self, hhmm: str, day: date | None = None) -> str:
        """A time of the visit's day as `--at` takes it (Asia/Shanghai)."""
        return f"{(day or self.day).isoformat()}T{hhmm}"


@pytest.fixture
def walk(tmp_path: Path) -> Iterator[Walk]:
    """A node whose clock reads 08:00 tomorrow morning (Asia/Shanghai) at start."""
    clock = tmp_path / "clock"
    now = datetime.now(UTC)
    day = now.astimezone(CITY_TZ).date() + timedelta(days=1)
    morning = datetime.combine(day, time(8, 0), tzinfo=CITY_TZ)
    devclock.advance(clock, timedelta(seconds=int((morning - now).total_seconds())))
    config = init_node(tmp_path / "jiangning")
    served = start_serving(config, tmp_path / "serve.log", clock)
    try:
        yield Walk(served, config, clock, tmp_path / "state", day)
    finally:
        stop(served)


def test_the_staff_walkthrough_runs_top_to_bottom(walk: Walk) -> None:
    w, config = walk, str(walk.config)
    password = "东山-2026-wang\n" * 2
    w.ok("node", "account", "add", "--config", config, "--role", "operator", "--login",
         "wang", "--password", stdin=password)
    assert "logged in as operator:1" in w.ok("node", "login", "--login", "wang",
                                             stdin=password[: len(password) // 2])
    w.ok("node", "service-point", "add", "--code", "JN-DS-01", "--name", "东山街道服务点",
         "--street", "东山街道")
    w.ok("node", "staff", "add", "--name", "陈静", "--service-point", "1")
    # staff act as themselves: the staff member's own account, once the staff member exists
    w.ok("node", "account", "add", "--config", config, "--role", "staff", "--login",
         "chenjing", "--staff", "1", "--password", stdin="陈静-2026-pw\n" * 2)
    assert "logged in as staff:1" in w.ok("node", "login", "--login", "chenjing",
                                          stdin="陈静-2026-pw\n")
    w.ok("node", "enrol", "--name", "李秀英", "--id-number", "320115196306120243")
    w.ok("node", "enrol", "--name", "王建国", "--id-number", "320115194801200137",
         "--priority")
    w.ok("node", "person", "update", "1", "--staff", "1", "--phone", "13900001111",
         "--reason", "换号")
    w.ok("node", "grant", "2", "--minutes", "600", "--staff", "1")
    requested = w.ok("node", "order", "request", "--recipient", "2", "--category", "助洁",
                     "--minutes", "90", "--paid-by", "own", "--by-staff", "1")
    assert "order 1 requested" in requested
    w.ok("node", "order", "accept", "1", "--volunteer", "1")

    # Entered at once, the visit lasts no time: refused, saying what to do.
    w.ok("node", "order", "check-in", "1")
    at_once = w.run("node", "order", "check-out", "1")
    assert at_once.returncode == 1
    assert "服务不足一分钟" in at_once.stderr and "--at" in at_once.stderr
    w.ok("node", "order", "cancel", "1", "--reason", "录入有误", "--by-staff", "1")
    w.ok("node", "order", "request", "--recipient", "2", "--category", "助洁", "--minutes",
         "90", "--paid-by", "own", "--by-staff", "1")
    w.ok("node", "order", "accept", "2", "--volunteer", "1")

    # A check-in before the order was requested (yesterday) is refused.
    before = w.run("node", "order", "check-in", "2", "--at",
                   w.at("09:00", w.day - timedelta(days=1)))
    assert before.returncode == 1
    assert "签到时间早于下单时间" in before.stderr and "CHECK_IN_BEFORE_REQUEST" in before.stderr

    # Three hours later, staff enter the visit with its times, as the README shows.
    w.later(timedelta(hours=3))
    w.ok("node", "order", "check-in", "2", "--at", w.at("09:00"))
    out = w.ok("node", "order", "check-out", "2", "--at", w.at("10:30"))
    assert "1.50 h (90 min)" in out
    verified = w.ok("node", "order", "verify", "2", "--rating", "5", "--comment", "很干净",
                    "--by-person", "2")
    assert "★★★★★" in verified and "public until" in verified
    w.ok("node", "consent", "grant", "--payer", "1", "--to", "2", "--max-minutes", "120",
         "--by-person", "1")

    # Recording waits for the publicity period, and says until when and what to do.
    early = w.run("node", "order", "record", "2")
    assert early.returncode == 1
    line = " ".join(early.stderr.split())
    assert line.startswith("error: FAILED_PRECONDITION: 公示期未满 (order 2 is public until ")
    ends = (w.day + timedelta(days=7)).isoformat()
    assert re.search(ends + r" 1[01]:\d\d:\d\d \(Asia/Shanghai\)", line), line
    assert "timebank node order record 2" in line and "PUBLICITY_NOT_OVER" in line
    assert "timebank node order record-due" in line

    # A week later (the session lasted a day: log in again), it is recorded, once.
    w.later(timedelta(days=7))
    w.ok("node", "login", "--login", "chenjing", stdin="陈静-2026-pw\n")
    first = w.ok("node", "order", "record", "2")  # unless the node's own round came first
    assert "order 2 recorded" in first or "order 2 was already recorded" in first
    again = w.run("node", "order", "record", "2")
    assert again.returncode == 0, again.stderr
    assert "order 2 was already recorded" in again.stdout and "已记录" in again.stdout
    w.ok("node", "login", "--login", "wang", stdin=password[: len(password) // 2])
    assert "No order is due" in w.ok("node", "order", "record-due")  # an operator's
    balance = w.ok("node", "balance", "1")
    assert "1.50 h" in balance and "90" in balance
    assert "order 2" in w.ok("node", "history", "1")

    # Lists at 120 columns are tables; at 80, one block per order: nothing is cut.
    wide = w.ok("node", "order", "list", columns=120)
    assert re.search(r"^\s*id\s+state\s+service", wide, re.M), wide
    assert "王建国 (2)" in wide and "李秀英 (1)" in wide
    narrow = w.ok("node", "order", "list", columns=80)
    assert max(len(line) for line in narrow.splitlines()) <= 80
    flat = re.sub(r"[ \t]+", " ", narrow)  # the values are aligned
    for order_id in (1, 2):
        assert re.search(rf"^编号 id: {order_id} ?$", flat, re.M), narrow
    assert "受助人 recipient: 王建国 (2)" in flat and "志愿者 volunteer: 李秀英 (1)" in flat
    assert "…" not in narrow
    forced = w.ok("node", "order", "list", "--layout", "table", columns=80)
    assert re.search(r"^\s*id\b", forced, re.M) and "…" not in forced
    records = w.ok("node", "order", "list", "--layout", "records", columns=120)
    assert "状态 state: recorded" in re.sub(r"[ \t]+", " ", records)
    history = w.ok("node", "history", "1", columns=80)
    assert "…" not in history and max(len(line) for line in history.splitlines()) <= 80
