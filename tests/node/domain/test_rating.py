"""The mutual rating's pure rules (满意度互评): stars, comments, and when the volunteer
may rate the person served, once."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.domain.orders import (
    MAX_TEXT_CHARS,
    RATABLE,
    OrderState,
    Rating,
    check_rating,
    check_stars,
    stored_rating,
    volunteer_rating_due,
)
from runtime.errors import FailedPrecondition, InvalidArgument, InvariantViolation

S = OrderState
#: Written out apart from the code: the service was done in these states.
DONE = {S.CHECKED_OUT, S.VERIFIED, S.DISPUTED, S.RECORDED}


def test_the_volunteer_rates_once_the_service_was_done() -> None:
    assert set(RATABLE) == DONE
    assert not RATABLE & {S.REQUESTED, S.ACCEPTED, S.CHECKED_IN, S.CANCELLED}


@pytest.mark.parametrize("state", list(OrderState))
def test_a_first_rating_is_due_exactly_when_the_service_was_done(state: OrderState) -> None:
    rating = Rating(4, "老人很热情")
    if state in DONE:
        assert volunteer_rating_due(7, state, None, rating) is True
        return
    with pytest.raises(FailedPrecondition) as e:
        volunteer_rating_due(7, state, None, rating)
    assert e.value.reason == "ORDER_STATE"
    assert e.value.message.startswith("服务完成后才能评价 (")
    assert f"order 7 is {state.label}" in e.value.message
    for done in DONE:
        assert done.label in e.value.message


@pytest.mark.parametrize("state", list(OrderState))
def test_the_same_rating_again_changes_nothing_in_any_state(state: OrderState) -> None:
    """A retry of a stored rating is answered, whatever became of the order since (it
    may have been recorded, or voided after a dispute)."""
    assert volunteer_rating_due(7, state, Rating(3, "准时"), Rating(3, "准时")) is False


@pytest.mark.parametrize("other", [Rating(2, "准时"), Rating(3, ""), Rating(3, "准时。")])
@pytest.mark.parametrize("state", sorted(DONE))
def test_a_different_rating_after_one_is_already_rated(state: OrderState,
                                                       other: Rating) -> None:
    with pytest.raises(FailedPrecondition) as e:
        volunteer_rating_due(7, state, Rating(3, "准时"), other)
    assert e.value.reason == "ALREADY_RATED"
    assert e.value.message.startswith("志愿者已评价过此订单 (order 7 was already rated 3")


@pytest.mark.parametrize("stars", [0, 6, -1, 2**31 - 1, -(2**31)])
def test_stars_outside_one_to_five_are_invalid(stars: int) -> None:
    with pytest.raises(InvalidArgument) as e:
        check_stars(stars)
    assert e.value.reason == "BAD_RATING"
    assert e.value.message.startswith("评分须为 1 到 5 星 (")
    assert f"not {stars})" in e.value.message
    with pytest.raises(InvalidArgument):
        check_rating(stars, "")


def test_check_rating_cleans_and_bounds_the_comment() -> None:
    assert check_rating(5, "  很好  \n") == Rating(5, "很好")
    assert check_rating(1, "x" * MAX_TEXT_CHARS) == Rating(1, "x" * MAX_TEXT_CHARS)
    with pytest.raises(InvalidArgument, match="too long"):
        check_rating(5, "x" * (MAX_TEXT_CHARS + 1))
    with pytest.raises(InvalidArgument, match="control characters"):
        check_rating(5, "a\x00b")


@given(st.integers(min_value=-(2**31), max_value=2**31 - 1), st.text(max_size=40))
def test_check_rating_either_refuses_or_makes_a_valid_rating(stars: int, comment: str) -> None:
    try:
        rating = check_rating(stars, comment)
    except InvalidArgument:
        return
    assert 1 <= rating.stars <= 5 and rating.comment == rating.comment.strip()


@pytest.mark.parametrize(("stars", "comment"), [(0, ""), (6, ""), (3, " padded"),
                                                (3, "x" * (MAX_TEXT_CHARS + 1))])
def test_a_malformed_rating_is_a_bug(stars: int, comment: str) -> None:
    with pytest.raises(InvariantViolation):
        Rating(stars, comment)


def test_an_order_with_zero_stars_holds_no_rating() -> None:
    assert stored_rating(0, "") is None
    assert stored_rating(2, "太远") == Rating(2, "太远")
