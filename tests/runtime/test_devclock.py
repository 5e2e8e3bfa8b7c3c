"""The shared development clock: several processes see one advance, time never goes
backwards, bad files are refused up front and ignored later, concurrent advances lose
nothing, and simulated time is refused unless the environment allows it."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runtime import devclock
from runtime.devclock import ALLOW_ENV, DevClockError, FileClock, advance, read_offset

WEEK = timedelta(days=7)
SLACK = timedelta(seconds=30)  # generous: a loaded CI machine is slow, not wrong
TIMEOUT = 60
ALLOWED = {**os.environ, ALLOW_ENV: "1"}

READ_NOW = ("import sys; from runtime.devclock import FileClock; "
            "print(FileClock(sys.argv[1]).now().isoformat())")
ADVANCE_MANY = ("import sys; from datetime import timedelta; from runtime.devclock import "
                "advance\nfor _ in range(int(sys.argv[2])): advance(sys.argv[1], "
                "timedelta(seconds=1))")


@pytest.fixture(autouse=True)
def allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALLOW_ENV, "1")


@pytest.fixture
def clock_file(tmp_path: Path) -> Path:
    return tmp_path / "clock"


def replace(path: Path, text: str) -> None:
    """Rewrite the clock file as a controller would (temp file + rename)."""
    temp = path.with_name(path.name + ".new")
    temp.write_text(text, encoding="ascii")
    os.replace(temp, path)


def about(found: datetime, expected: datetime) -> bool:
    return expected - SLACK <= found <= expected + SLACK


# --- the guard --------------------------------------------------------------------------


def test_simulated_time_is_refused_unless_allowed(monkeypatch: pytest.MonkeyPatch,
                                                  clock_file: Path) -> None:
    for environ in ({}, {ALLOW_ENV: "0"}, {ALLOW_ENV: "yes"}, {ALLOW_ENV: ""}):
        with pytest.raises(ValueError, match=f"demos and tests only; set {ALLOW_ENV}=1"):
            devclock.check_allowed(environ)
        with pytest.raises(ValueError, match="--dev-clock"):
            FileClock(clock_file, environ=environ)
    devclock.check_allowed({ALLOW_ENV: "1"})
    monkeypatch.delenv(ALLOW_ENV)
    with pytest.raises(DevClockError, match="demos and tests only"):
        FileClock(clock_file)


# --- reading ----------------------------------------------------------------------------


def test_a_missing_file_is_real_time_in_utc(clock_file: Path) -> None:
    clock = FileClock(clock_file)
    now = clock.now()
    assert now.tzinfo is not None and now.utcoffset() == timedelta(0)
    assert about(now, datetime.now(UTC))
    assert clock.offset() == timedelta(0) == read_offset(clock_file)
    assert not clock_file.exists()  # reading creates nothing


def test_two_clocks_and_another_process_see_one_advance(clock_file: Path) -> None:
    first, second = FileClock(clock_file), FileClock(clock_file)
    assert about(first.now(), datetime.now(UTC))
    assert advance(clock_file, WEEK) == WEEK
    assert clock_file.read_text(encoding="ascii") == "604800\n"
    for clock in (first, second):
        assert clock.offset() == WEEK
        assert about(clock.now(), datetime.now(UTC) + WEEK)
    before = datetime.now(UTC)
    out = subprocess.run([sys.executable, "-c", READ_NOW, str(clock_file)], env=ALLOWED,
                         capture_output=True, text=True, timeout=TIMEOUT, check=True).stdout
    after = datetime.now(UTC)
    theirs = datetime.fromisoformat(out.strip())
    assert theirs.utcoffset() == timedelta(0)
    assert before + WEEK <= theirs <= after + WEEK


def test_the_offset_file_format(clock_file: Path) -> None:
    for text, seconds in (("0", 0), ("60\n", 60), ("  3600 \r\n", 3600), ("007", 7)):
        replace(clock_file, text)
        assert read_offset(clock_file) == timedelta(seconds=seconds)
        assert FileClock(clock_file).offset() == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "seven days", "-60", "+60", "1.5", "P7D", "60s",
                                  "1_000", "٣", "9" * 12, "1" * 70])
def test_a_malformed_file_is_refused_at_construction(clock_file: Path, text: str) -> None:
    clock_file.write_text(text, encoding="utf-8")
    with pytest.raises(DevClockError, match=re.escape(str(clock_file))):
        FileClock(clock_file)
    with pytest.raises(ValueError):  # a DevClockError is a ValueError
        read_offset(clock_file)


def test_a_directory_is_refused_at_construction(clock_file: Path) -> None:
    clock_file.mkdir()
    with pytest.raises(DevClockError, match="cannot read the dev clock file"):
        FileClock(clock_file)


def test_a_file_spoilt_later_keeps_the_last_good_offset(clock_file: Path) -> None:
    replace(clock_file, "3600")
    clock = FileClock(clock_file)
    replace(clock_file, "not a number")
    assert clock.offset() == timedelta(hours=1)
    assert about(clock.now(), datetime.now(UTC) + timedelta(hours=1))
    replace(clock_file, "7200")  # mended: read again
    assert clock.offset() == timedelta(hours=2)


def test_time_never_goes_backwards(clock_file: Path) -> None:
    replace(clock_file, "86400")
    clock = FileClock(clock_file)
    ahead = clock.now()
    replace(clock_file, "0")  # someone winds the clock back (advance would refuse)
    assert clock.offset() == timedelta(0)
    held = clock.now()
    assert held >= ahead and held - ahead < SLACK
    clock_file.unlink()  # a missing file is offset 0: the clock waits for real time
    assert clock.now() >= held


def test_now_is_monotonic_across_threads_while_the_file_moves(clock_file: Path) -> None:
    clock = FileClock(clock_file)
    seen: list[list[datetime]] = [[] for _ in range(4)]

    def read(into: list[datetime]) -> None:
        for _ in range(500):
            into.append(clock.now())

    threads = [threading.Thread(target=read, args=(s,)) for s in seen]
    for t in threads:
        t.start()
    for _ in range(20):
        advance(clock_file, timedelta(minutes=1))
    for t in threads:
        t.join(TIMEOUT)
    for times in seen:
        assert times == sorted(times)
    assert clock.offset() == timedelta(minutes=20)


# --- advancing --------------------------------------------------------------------------


def test_advance_refuses_going_back_or_parts_of_seconds(clock_file: Path) -> None:
    with pytest.raises(ValueError, match="only moves forward"):
        advance(clock_file, timedelta(seconds=-1))
    with pytest.raises(ValueError, match="whole seconds"):
        advance(clock_file, timedelta(milliseconds=1500))
    with pytest.raises(DevClockError, match="would pass"):
        advance(clock_file, devclock.MAX_OFFSET + timedelta(seconds=1))
    assert not clock_file.exists()
    assert advance(clock_file, timedelta(0)) == timedelta(0)
    assert clock_file.read_text(encoding="ascii") == "0\n"


def test_advance_refuses_a_malformed_file_and_leaves_it(clock_file: Path) -> None:
    replace(clock_file, "soon")
    with pytest.raises(DevClockError, match="whole, non-negative number of seconds"):
        advance(clock_file, WEEK)
    assert clock_file.read_text(encoding="ascii") == "soon"


def test_advance_from_threads_loses_no_update(clock_file: Path) -> None:
    def many() -> None:
        for _ in range(25):
            advance(clock_file, timedelta(seconds=1))

    threads = [threading.Thread(target=many) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert read_offset(clock_file) == timedelta(seconds=200)
    assert sorted(p.name for p in clock_file.parent.iterdir()) == ["clock", "clock.lock"]


def test_advance_from_processes_loses_no_update(clock_file: Path) -> None:
    processes = [subprocess.Popen([sys.executable, "-c", ADVANCE_MANY, str(clock_file), "25"],
                                  env=ALLOWED) for _ in range(4)]
    for p in processes:
        assert p.wait(TIMEOUT) == 0
    assert read_offset(clock_file) == timedelta(seconds=100)


# --- the clearinghouse's --dev-clock ----------------------------------------------------


def serve(config: Path | str, clock_file: Path,
          env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", "from city.cli import main; main()", "clearinghouse", "serve",
         "--config", str(config), "--dev-clock", str(clock_file), "--insecure"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def test_the_clearinghouse_refuses_a_dev_clock_unless_allowed(tmp_path: Path,
                                                              clock_file: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != ALLOW_ENV}
    process = serve(tmp_path / "nowhere.toml", clock_file, env)
    out, _ = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 1
    assert "a simulated clock is for demos and tests only" in out
    assert "Traceback" not in out


def test_the_clearinghouse_serves_on_the_dev_clock(tmp_path: Path, clock_file: Path) -> None:
    from clearinghouse.bootstrap import init_city

    config_path = init_city(tmp_path / "ch")
    advance(clock_file, WEEK)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    process = serve(config_path, clock_file,
                    {**ALLOWED, "TIMEBANK_SERVER_LISTEN": f"127.0.0.1:{free}"})
    watchdog = threading.Timer(TIMEOUT, process.kill)  # a silent server must not hang us
    watchdog.start()
    try:
        assert process.stdout is not None
        shown = None
        for line in process.stdout:
            found = re.search(r"simulated time \(--dev-clock\): now (\S+)", line)
            if found:
                shown = datetime.fromisoformat(found.group(1))
                break
        assert shown is not None, "the clearinghouse never said it runs on simulated time"
        assert about(shown, datetime.now(UTC) + WEEK)
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=TIMEOUT)
        assert process.returncode == 0, rest
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
