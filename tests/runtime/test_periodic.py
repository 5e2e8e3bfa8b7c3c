"""Work on a timer: rounds every interval in a daemon thread, surviving failures, and
stopped on request."""

from __future__ import annotations

import threading

import pytest
import structlog

from runtime.periodic import Periodic


class Rounds(Periodic):
    thread_name = "test-rounds"
    what = "counting rounds"

    def __init__(self, interval: float, fail_first: int = 0) -> None:
        super().__init__(interval)
        self.done = 0
        self.fail_first = fail_first
        self.third = threading.Event()

    def round(self) -> None:
        self.done += 1
        if self.done >= 3:
            self.third.set()
        if self.done <= self.fail_first:
            raise RuntimeError(f"round {self.done} failed")


class AtOnce(Rounds):
    round_at_start = True


def test_failed_rounds_are_logged_and_the_next_ones_run() -> None:
    rounds = Rounds(0.01, fail_first=2)
    with structlog.testing.capture_logs() as logs:
        rounds.start()
        try:
            assert rounds.third.wait(5)
            assert rounds.running
        finally:
            rounds.stop(5)
    assert not rounds.running
    failed = [e for e in logs if e["event"] == "counting rounds failed; will try again"]
    assert len(failed) == 2 and failed[0]["log_level"] == "error"
    assert failed[0]["retry_in_seconds"] == 0.01


def test_the_first_round_waits_one_interval_unless_asked_to_run_at_once() -> None:
    for kind, expected in ((Rounds, 0), (AtOnce, 1)):
        rounds = kind(60)
        rounds.start()
        rounds.stop(5)  # within the first interval
        assert rounds.done == expected and rounds.stopping


def test_a_loop_starts_once_and_needs_a_positive_interval() -> None:
    rounds = Rounds(60)
    rounds.start()
    try:
        with pytest.raises(RuntimeError, match="counting rounds is already running"):
            rounds.start()
    finally:
        rounds.stop(5)
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="interval of counting rounds must be positive"):
            Rounds(bad)
