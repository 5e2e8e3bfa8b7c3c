"""Every Timestamp of a message, at any depth, holds a time (``timebank.bounds``)."""

from __future__ import annotations

from datetime import UTC

import pytest

from timebank import bounds
from timebank.v1 import clearing_pb2 as pb
from timebank.v1 import node_pb2


@pytest.mark.parametrize(("seconds", "nanos"), [
    (bounds.MIN_SECONDS, 0), (bounds.MAX_SECONDS, bounds.MAX_NANOS), (0, 0),
    (1_772_413_200, 123)])
def test_the_edges_of_the_range_are_times(seconds: int, nanos: int) -> None:
    msg = pb.ClaimProposal()
    msg.expires_at.seconds, msg.expires_at.nanos = seconds, nanos
    bounds.check_times(msg)
    msg.expires_at.ToDatetime(tzinfo=UTC)  # and Python agrees


@pytest.mark.parametrize(("seconds", "nanos"), [
    (bounds.MIN_SECONDS - 1, 0), (bounds.MAX_SECONDS + 1, 0), (2**63 - 1, 0),
    (-(2**63), 0), (0, -1), (0, bounds.MAX_NANOS + 1), (0, -(2**31))])
def test_anything_else_is_refused_naming_the_field(seconds: int, nanos: int) -> None:
    msg = pb.ClaimProposal()
    msg.created_at.seconds, msg.created_at.nanos = seconds, nanos
    with pytest.raises(bounds.BadTimestamp, match=r"ClaimProposal\.created_at is not a "
                                                   r"valid time") as caught:
        bounds.check_times(msg)
    assert caught.value.field == "ClaimProposal.created_at"
    assert not bounds.is_valid_time(seconds, nanos)


def test_timestamps_are_found_at_any_depth_and_in_repeated_fields() -> None:
    history = node_pb2.GetHistoryResponse()
    history.entries.add().transaction.at.seconds = 10
    history.entries.add().transaction.at.nanos = -5
    with pytest.raises(bounds.BadTimestamp) as caught:
        bounds.check_times(history)
    assert caught.value.field == "GetHistoryResponse.entries[1].transaction.at"
    delivery = pb.Delivery()
    delivery.at.seconds = 1
    delivery.relayed.kind = "x"
    bounds.check_times(delivery)


def test_an_unset_timestamp_is_not_checked_and_a_timestamp_alone_is() -> None:
    bounds.check_times(pb.ClaimProposal())
    ts = pb.ClaimProposal().expires_at
    ts.seconds = bounds.MAX_SECONDS + 1
    with pytest.raises(bounds.BadTimestamp):
        bounds.check_times(ts)
