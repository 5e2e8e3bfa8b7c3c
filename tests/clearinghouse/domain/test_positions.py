"""Positions: they sum to zero, match a naive recount, and the net debit limit holds."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clearinghouse.domain.claims import (
    MAX_CLAIM_MINUTES,
    Claim,
    ClaimKind,
    RejectReason,
    accept,
    complete,
    expire,
    reject,
    void,
)
from clearinghouse.domain.positions import (
    MAX_NET_DEBIT_LIMIT,
    Flow,
    check_limit,
    near_limit,
    open_debits,
    positions,
)
from clearinghouse.domain.positions import flows_of as completed_flows
from runtime.errors import InvalidArgument, ResourceExhausted
from tests.clearinghouse.domain.test_claims import uuid7

NODES = ["320115", "320106", "320113", "320104", "320111"]
T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)

flow_lists = st.lists(
    st.tuples(st.sampled_from(NODES), st.sampled_from(NODES),
              st.integers(1, MAX_CLAIM_MINUTES)).filter(lambda t: t[0] != t[1])
    .map(lambda t: Flow(*t)),
    max_size=60)


def naive(flows: list[Flow]) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """Recount the slow way: for each district, add what it is owed and take what it owes."""
    net = {}
    for node in {f.creditor for f in flows} | {f.debtor for f in flows}:
        net[node] = (sum(f.minutes for f in flows if f.creditor == node)
                     - sum(f.minutes for f in flows if f.debtor == node))
    gross = {}
    for c in NODES:
        for d in NODES:
            total = sum(f.minutes for f in flows if (f.creditor, f.debtor) == (c, d))
            if total:
                gross[(c, d)] = total
    return net, gross


@given(flow_lists)
def test_positions_sum_to_zero_and_match_a_naive_recount(flows: list[Flow]) -> None:
    result = positions(flows)
    assert sum(result.net.values()) == 0
    assert (dict(result.net), dict(result.gross)) == naive(flows)
    assert all(isinstance(v, int) for v in result.net.values())
    assert result.of("999999") == 0


@given(flow_lists, st.randoms(use_true_random=False))
def test_order_does_not_matter(flows: list[Flow], rnd: random.Random) -> None:
    shuffled = list(flows)
    rnd.shuffle(shuffled)
    assert positions(shuffled) == positions(flows)


def test_a_small_city_by_hand() -> None:
    result = positions([Flow("320106", "320115", 90), Flow("320113", "320115", 30),
                        Flow("320115", "320106", 60)])
    assert result.net == {"320106": 30, "320115": -60, "320113": 30}
    assert result.gross == {("320106", "320115"): 90, ("320113", "320115"): 30,
                            ("320115", "320106"): 60}
    assert positions([]).net == {}


def make(minutes: int = 90, creditor: str = "320106", debtor: str = "320115") -> Claim:
    return Claim(claim_id=uuid7(), kind=ClaimKind.REDEMPTION, creditor=creditor, debtor=debtor,
                 person_ref="ab" * 32, minutes=minutes, created_at=T0,
                 expires_at=T0 + timedelta(days=1))


def test_only_completed_claims_move_positions_at_what_they_posted() -> None:
    t = T0 + timedelta(hours=1)
    proposed = make(100)
    accepted = accept(make(200), t)
    completed = complete(accept(make(300), t), t, posted=250)
    others = [reject(make(400), t, RejectReason.POLICY),
              void(accept(make(500), t), t, RejectReason.CANCELLED),
              expire(make(600), T0 + timedelta(days=1))]
    flows = completed_flows([proposed, accepted, completed, *others])
    assert flows == [Flow("320106", "320115", 250)]
    assert positions(flows).net == {"320106": 250, "320115": -250}
    assert open_debits([proposed, accepted, completed, *others], "320115") == 300
    assert open_debits([proposed, accepted], "320106") == 0


@pytest.mark.parametrize(("creditor", "debtor", "minutes"), [
    ("320115", "320115", 5), ("32011", "320115", 5), ("320106", "320115", 0),
    ("320106", "320115", -1), ("320106", "320115", MAX_CLAIM_MINUTES + 1),
    ("320106", "320115", True)])
def test_bad_flows(creditor: str, debtor: str, minutes: int) -> None:
    with pytest.raises(InvalidArgument):
        Flow(creditor, debtor, minutes)


# ------------------------------------------------------------------ the net debit limit


def test_check_limit_refuses_past_minus_limit_only() -> None:
    check_limit(0, 0)
    check_limit(100, 0)
    check_limit(-6000, 6000)
    with pytest.raises(ResourceExhausted) as info:
        check_limit(-6001, 6000, "320115")
    assert info.value.reason == RejectReason.LIMIT_REACHED == "LIMIT_REACHED"
    assert RejectReason(info.value.reason).temporary
    assert "320115" in info.value.message and "100.00 h" in info.value.message
    with pytest.raises(ResourceExhausted):
        check_limit(-1, 0)


@given(st.integers(-10**9, 10**9), st.integers(0, 10**9))
def test_check_limit_is_the_inequality(position: int, limit: int) -> None:
    try:
        check_limit(position, limit)
    except ResourceExhausted:
        assert position < -limit
    else:
        assert position >= -limit


@pytest.mark.parametrize("limit", [-1, MAX_NET_DEBIT_LIMIT + 1, True])
def test_bad_limits(limit: int) -> None:
    with pytest.raises(InvalidArgument) as info:
        check_limit(0, limit)
    assert info.value.reason == "BAD_LIMIT"
    with pytest.raises(InvalidArgument):
        near_limit(0, limit)


def test_near_limit() -> None:
    assert not near_limit(0, 1000)
    assert not near_limit(500, 1000)
    assert not near_limit(-799, 1000)
    assert near_limit(-800, 1000)
    assert near_limit(-1200, 1000)
    assert near_limit(-500, 1000, percent=50)
    assert not near_limit(-499, 1000, percent=50)
    assert not near_limit(0, 0)  # owing nothing is never near
    assert near_limit(-1, 0)
    for bad in (0, 101, -5):
        with pytest.raises(InvalidArgument):
            near_limit(-1, 1000, percent=bad)


@given(st.integers(-10**9, 10**9), st.integers(0, 10**9), st.integers(1, 100))
def test_near_limit_warns_before_the_limit_refuses(position: int, limit: int,
                                                   percent: int) -> None:
    try:
        check_limit(position, limit)
    except ResourceExhausted:
        assert near_limit(position, limit, percent)
