"""What a clearinghouse says of its log at start: its size, and whether its latest head
is old enough to suspect a restored backup (it can ask nobody)."""

from __future__ import annotations

from datetime import timedelta

from clearinghouse.usecases import restored
from clearinghouse.usecases.app import ClearinghouseApp
from clearinghouse.usecases.clock import ManualClock
from tests.clearinghouse.settling import found_city, log_size


def test_a_log_whose_latest_head_is_old_is_stale_at_start(ch_app: ClearinghouseApp,
                                                         ch_clock: ManualClock) -> None:
    assert ch_app.query(restored.at_start) == restored.LogAtStart(0, None)
    found_city(ch_app)
    standing = ch_app.query(restored.at_start)
    assert standing.size == log_size(ch_app) > 0
    assert standing.latest_at is not None and not standing.stale(ch_clock.now())
    ch_clock.advance(restored.STALE_HEAD + timedelta(seconds=1))
    assert standing.stale(ch_clock.now())
