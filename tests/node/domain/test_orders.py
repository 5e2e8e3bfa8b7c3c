"""The service loop's pure rules: states, rounding, the cap, and who may pay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from node.domain.ledger import Origin
from node.domain.orders import (
    ALLOWED_FROM,
    DONE_IN,
    Action,
    DepositSplit,
    OrderState,
    PaymentSource,
    PersonFacts,
    PersonKind,
    already_done,
    check_check_in,
    check_payment,
    check_text,
    measure_service,
    require_state,
    round_to_unit,
    spendable_origins,
    split_deposit,
)
from node.domain.policy import Policy, Relation
from runtime.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from timebank.minutes import hours

# ------------------------------------------------------------------ order states

EXPECTED_FROM = {
    Action.ACCEPT: {"requested"},
    Action.CHECK_IN: {"accepted"},
    Action.CHECK_OUT: {"checked_in"},
    Action.VERIFY: {"checked_out"},
    Action.DISPUTE: {"verified"},
    Action.RESOLVE: {"disputed"},
    Action.CANCEL: {"requested", "accepted", "checked_in"},
    Action.RECORD: {"verified"},
}


def test_allowed_from_is_the_documented_loop() -> None:
    assert {a: {s.value for s in states} for a, states in ALLOWED_FROM.items()} == EXPECTED_FROM
    assert set(ALLOWED_FROM) == set(Action)


@pytest.mark.parametrize("action", list(Action))
@pytest.mark.parametrize("state", list(OrderState))
def test_every_action_from_every_state(action: Action, state: OrderState) -> None:
    if state in ALLOWED_FROM[action]:
        require_state(7, action, state)
        assert not state.final
    else:
        with pytest.raises(FailedPrecondition) as e:
            require_state(7, action, state)
        assert e.value.reason == "ORDER_STATE"
        assert f"order 7 is {state.label}" in e.value.message
        for allowed in ALLOWED_FROM[action]:
            assert allowed.label in e.value.message


def test_only_recording_a_recorded_order_is_already_done() -> None:
    """Repeating `record` is no mistake (the node records due orders by itself); every
    other action from a state it is not allowed from stays a refusal."""
    assert DONE_IN == {Action.RECORD: OrderState.RECORDED}
    done = {(a, s) for a in Action for s in OrderState if already_done(a, s)}
    assert done == {(Action.RECORD, OrderState.RECORDED)}
    assert all(s not in ALLOWED_FROM[a] for a, s in done)


# ------------------------------------------------------------------ service times

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)  # 09:00 in Asia/Shanghai
instants = st.integers(-10**7, 10**7).map(lambda s: T0 + timedelta(seconds=s))


def test_a_check_in_before_the_request_is_refused_naming_both_times() -> None:
    check_check_in(7, T0, T0)  # at the very moment of the request: fine
    with pytest.raises(InvalidArgument) as e:
        check_check_in(7, T0, T0 - timedelta(seconds=1))
    assert e.value.reason == "CHECK_IN_BEFORE_REQUEST"
    message = e.value.message
    assert message.startswith("签到时间早于下单时间 (") and "order 7" in message
    assert "2026-03-02 09:00:00 (Asia/Shanghai)" in message  # the city's time
    assert "2026-03-02 08:59:59 (Asia/Shanghai)" in message


@given(requested=instants, at=instants)
def test_check_in_is_refused_exactly_when_before_the_request(requested: datetime,
                                                             at: datetime) -> None:
    if at < requested:
        with pytest.raises(InvalidArgument) as e:
            check_check_in(1, requested, at)
        assert e.value.reason == "CHECK_IN_BEFORE_REQUEST"
    else:
        check_check_in(1, requested, at)


def test_measure_service_examples() -> None:
    assert measure_service(7, T0, T0 + timedelta(minutes=90)) == 90
    assert measure_service(7, T0, T0 + timedelta(minutes=1, seconds=59)) == 1
    for at, reason in ((T0, "CHECK_OUT_BEFORE_CHECK_IN"),
                       (T0 - timedelta(hours=1), "CHECK_OUT_BEFORE_CHECK_IN"),
                       (T0 + timedelta(seconds=59), "MINUTES_OUT_OF_RANGE")):
        with pytest.raises(InvalidArgument) as e:
            measure_service(7, T0, at)
        assert e.value.reason == reason
        assert "order 7" in e.value.message and "(Asia/Shanghai)" in e.value.message
    with pytest.raises(InvalidArgument) as e:
        measure_service(7, T0, T0 + timedelta(seconds=5))
    assert e.value.message.startswith("服务不足一分钟 (") and "--at" in e.value.message


@given(checked_in=instants, at=instants)
def test_measure_service_is_whole_minutes_after_check_in_or_refused(checked_in: datetime,
                                                                    at: datetime) -> None:
    if at - checked_in < timedelta(minutes=1):
        with pytest.raises(InvalidArgument) as e:
            measure_service(1, checked_in, at)
        assert e.value.reason == ("CHECK_OUT_BEFORE_CHECK_IN" if at <= checked_in
                                  else "MINUTES_OUT_OF_RANGE")
    else:
        measured = measure_service(1, checked_in, at)
        assert measured >= 1
        assert checked_in + timedelta(minutes=measured) <= at
        assert at < checked_in + timedelta(minutes=measured + 1)


def test_final_states_allow_nothing() -> None:
    finals = {s for s in OrderState if s.final}
    assert finals == {OrderState.RECORDED, OrderState.CANCELLED}
    for states in ALLOWED_FROM.values():
        assert not states & finals


def test_state_labels_are_readable() -> None:
    assert OrderState.CHECKED_IN.label == "checked in"


# ------------------------------------------------------------------ rounding

@pytest.mark.parametrize(("minutes", "unit", "expected"), [
    (0, 15, 0), (7, 15, 0), (8, 15, 15), (22, 15, 15), (23, 15, 30), (80, 15, 75),
    (82, 15, 75), (83, 15, 90), (20, 30, 30), (14, 30, 0), (15, 30, 30), (44, 30, 30),
    (45, 30, 60), (61, 1, 61), (0, 1, 0), (1440, 15, 1440), (29, 60, 0), (30, 60, 60),
])
def test_round_to_unit_examples(minutes: int, unit: int, expected: int) -> None:
    assert round_to_unit(minutes, unit) == expected


@given(st.integers(0, 10**7), st.integers(1, 240))
def test_round_to_unit_is_the_nearest_multiple_halves_up(minutes: int, unit: int) -> None:
    r = round_to_unit(minutes, unit)
    assert r % unit == 0 and r >= 0
    # nearest: within half a unit; exact halves go up
    assert 2 * abs(r - minutes) <= unit
    if 2 * (r - minutes) == -unit:
        pytest.fail("a half was rounded down")
    assert round_to_unit(r, unit) == r  # idempotent: rounding happens once and sticks


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(1, 240))
def test_round_to_unit_is_monotonic(a: int, b: int, unit: int) -> None:
    lo, hi = sorted((a, b))
    assert round_to_unit(lo, unit) <= round_to_unit(hi, unit)


@pytest.mark.parametrize(("minutes", "unit"), [(-1, 15), (10, 0), (10, -15)])
def test_round_to_unit_refuses_negatives(minutes: int, unit: int) -> None:
    with pytest.raises(InvalidArgument):
        round_to_unit(minutes, unit)


# ------------------------------------------------------------------ deposits and the cap

CAP = hours(1500)


def test_split_everything_banked_below_the_cap() -> None:
    assert split_deposit(60, 0, CAP, 0, 0) == DepositSplit(60, 0, 0)


def test_split_the_cap_is_counted_on_the_whole_balance() -> None:
    assert split_deposit(60, CAP - 15, CAP, 0, 0) == DepositSplit(15, 45, 0)
    assert split_deposit(60, CAP, CAP, 0, 0) == DepositSplit(0, 60, 0)
    assert split_deposit(60, CAP + 100, CAP, 0, 0) == DepositSplit(0, 60, 0)


def test_split_daily_cap_leaves_the_rest_unbanked() -> None:
    assert split_deposit(180, 0, CAP, 120, 0) == DepositSplit(120, 0, 60)
    assert split_deposit(180, 0, CAP, 120, 90) == DepositSplit(30, 0, 150)
    assert split_deposit(180, 0, CAP, 120, 200) == DepositSplit(0, 0, 180)


def test_split_daily_cap_then_stored_cap() -> None:
    assert split_deposit(180, CAP - 30, CAP, 120, 0) == DepositSplit(30, 90, 60)


def test_split_refuses_negatives() -> None:
    for args in ((-1, 0, CAP, 0, 0), (1, -1, CAP, 0, 0), (1, 0, CAP, 0, -1)):
        with pytest.raises(InvalidArgument):
            split_deposit(*args)


@given(recorded=st.integers(0, 10**6), balance=st.integers(0, 10**7),
       cap=st.integers(1, 10**7), daily_cap=st.integers(0, 1440),
       banked_today=st.integers(0, 10**5))
def test_split_never_drops_minutes(recorded: int, balance: int, cap: int, daily_cap: int,
                                   banked_today: int) -> None:
    s = split_deposit(recorded, balance, cap, daily_cap, banked_today)
    assert s.banked + s.to_pool + s.unbanked == recorded == s.total
    assert min(s.banked, s.to_pool, s.unbanked) >= 0
    # the cap holds whenever it held before
    if balance <= cap:
        assert balance + s.banked <= cap
    # nothing goes to the pool while there is room
    if s.to_pool:
        assert balance + s.banked >= cap
    # the daily cap bounds what is stored or pooled today
    if daily_cap:
        assert s.banked + s.to_pool <= max(0, daily_cap - banked_today)
        if s.unbanked:
            assert banked_today + s.banked + s.to_pool >= daily_cap
    else:
        assert s.unbanked == 0


@given(st.integers(0, 10**6), st.integers(0, 10**7), st.integers(1, 10**7))
def test_split_banks_as_much_as_the_room_allows(recorded: int, balance: int, cap: int) -> None:
    s = split_deposit(recorded, balance, cap, 0, 0)
    assert s.banked == max(0, min(recorded, cap - balance))


# ------------------------------------------------------------------ who may pay

POLICY = Policy()
ELDER = PersonFacts(1, PersonKind.INDIVIDUAL, 72, False)
PRIORITY = PersonFacts(2, PersonKind.INDIVIDUAL, 83, True)
YOUNG_PRIORITY = PersonFacts(3, PersonKind.INDIVIDUAL, 58, True)
YOUNG = PersonFacts(4, PersonKind.INDIVIDUAL, 45, False)
CHILD = PersonFacts(5, PersonKind.INDIVIDUAL, 45, False)
GROUP = PersonFacts(6, PersonKind.GROUP, 0, False)


def _refused(exc: type[Exception], reason: str, *args: object) -> None:
    with pytest.raises(exc) as e:
        check_payment(POLICY, *args)  # type: ignore[arg-type]
    assert getattr(e.value, "reason", None) == reason


def test_own_hours_from_the_city_age_or_as_a_priority_elder() -> None:
    check_payment(POLICY, PaymentSource.OWN, ELDER, None, None)
    check_payment(POLICY, PaymentSource.OWN, PRIORITY, None, None)
    check_payment(POLICY, PaymentSource.OWN, YOUNG_PRIORITY, None, None)
    check_payment(POLICY, PaymentSource.OWN, PersonFacts(9, PersonKind.INDIVIDUAL, 60, False),
                  None, None)
    _refused(PermissionDenied, "TOO_YOUNG_TO_REDEEM", PaymentSource.OWN,
             PersonFacts(9, PersonKind.INDIVIDUAL, 59, False), None, None)


def test_own_age_is_a_city_setting() -> None:
    shanghai = Policy(own_min_age=65)
    with pytest.raises(PermissionDenied):
        check_payment(shanghai, PaymentSource.OWN,
                      PersonFacts(1, PersonKind.INDIVIDUAL, 64, False), None, None)
    check_payment(shanghai, PaymentSource.OWN, PersonFacts(1, PersonKind.INDIVIDUAL, 65, False),
                  None, None)


@pytest.mark.parametrize("relation", [Relation.PARENT, Relation.SPOUSE, Relation.GRANDPARENT,
                                      Relation.SIBLING, Relation.CHILD, Relation.GRANDCHILD])
def test_relatives_by_relation(relation: Relation) -> None:
    check_payment(POLICY, PaymentSource.RELATIVE, ELDER, CHILD, relation)


def test_relation_must_be_allowed_by_the_city() -> None:
    gulou = Policy(relative_kinds=frozenset({Relation.SPOUSE, Relation.PARENT}))
    check_payment(gulou, PaymentSource.RELATIVE, ELDER, CHILD, Relation.PARENT)
    with pytest.raises(PermissionDenied) as e:
        check_payment(gulou, PaymentSource.RELATIVE, ELDER, CHILD, Relation.SIBLING)
    assert e.value.reason == "RELATION_NOT_ALLOWED"


def test_relative_min_age() -> None:
    _refused(PermissionDenied, "RELATIVE_TOO_YOUNG", PaymentSource.RELATIVE,
             PersonFacts(9, PersonKind.INDIVIDUAL, 59, False), CHILD, Relation.PARENT)
    # a priority elder under the relative age is still under it
    _refused(PermissionDenied, "RELATIVE_TOO_YOUNG", PaymentSource.RELATIVE,
             YOUNG_PRIORITY, CHILD, Relation.PARENT)
    beijing = Policy(relative_min_age=0)
    check_payment(beijing, PaymentSource.RELATIVE, YOUNG, CHILD, Relation.SIBLING)


def test_a_proxy_is_not_family() -> None:
    _refused(PermissionDenied, "NOT_A_RELATIVE", PaymentSource.RELATIVE, ELDER, CHILD,
             Relation.PROXY)


def test_unlinked_people_cannot_pay_for_each_other() -> None:
    _refused(PermissionDenied, "NOT_A_RELATIVE", PaymentSource.RELATIVE, ELDER, CHILD, None)


def test_a_payer_is_named_exactly_for_relative_payments() -> None:
    _refused(InvalidArgument, "PAYER_MISMATCH", PaymentSource.RELATIVE, ELDER, None,
             Relation.PARENT)
    for source in (PaymentSource.OWN, PaymentSource.DONATION_POOL, PaymentSource.CITY_GRANT):
        _refused(InvalidArgument, "PAYER_MISMATCH", source, PRIORITY, CHILD, None)


def test_paying_for_oneself_as_a_relative_is_refused() -> None:
    _refused(InvalidArgument, "PAYER_IS_RECIPIENT", PaymentSource.RELATIVE, ELDER, ELDER,
             Relation.SPOUSE)


def test_groups_donate_only() -> None:
    _refused(PermissionDenied, "GROUP_HOURS_DONATE_ONLY", PaymentSource.RELATIVE, ELDER, GROUP,
             None)
    # a city that lets groups sponsor may do so without any family link
    check_payment(Policy(group_hours_donate_only=False), PaymentSource.RELATIVE, ELDER, GROUP,
                  None)


def test_a_group_is_never_a_recipient() -> None:
    for source in PaymentSource:
        payer = CHILD if source is PaymentSource.RELATIVE else None
        _refused(InvalidArgument, "RECIPIENT_IS_GROUP", source, GROUP, payer, Relation.PARENT)


def test_city_grant_is_for_priority_elders_only() -> None:
    check_payment(POLICY, PaymentSource.CITY_GRANT, PRIORITY, None, None)
    check_payment(POLICY, PaymentSource.CITY_GRANT, YOUNG_PRIORITY, None, None)
    _refused(PermissionDenied, "NOT_A_PRIORITY_ELDER", PaymentSource.CITY_GRANT, ELDER, None,
             None)


def test_donation_pool_serves_priority_elders_and_elders() -> None:
    check_payment(POLICY, PaymentSource.DONATION_POOL, PRIORITY, None, None)
    check_payment(POLICY, PaymentSource.DONATION_POOL, YOUNG_PRIORITY, None, None)
    check_payment(POLICY, PaymentSource.DONATION_POOL, ELDER, None, None)
    _refused(PermissionDenied, "TOO_YOUNG_TO_REDEEM", PaymentSource.DONATION_POOL, YOUNG, None,
             None)


def test_spendable_origins() -> None:
    ind = PersonKind.INDIVIDUAL
    assert spendable_origins(PaymentSource.OWN, ind) == (Origin.GRANTED, Origin.INDIVIDUAL)
    assert spendable_origins(PaymentSource.RELATIVE, ind) == (Origin.INDIVIDUAL,)
    assert spendable_origins(PaymentSource.RELATIVE, PersonKind.GROUP) == (Origin.GROUP,)
    assert spendable_origins(PaymentSource.DONATION_POOL, ind) == ()
    assert spendable_origins(PaymentSource.CITY_GRANT, ind) == ()


# ------------------------------------------------------------------ free text

def test_check_text() -> None:
    assert check_text("note", "  请下午来  ") == "请下午来"
    assert check_text("note", "line\nline\ttab") == "line\nline\ttab"
    with pytest.raises(InvalidArgument, match="too long"):
        check_text("note", "x" * 501)
    with pytest.raises(InvalidArgument, match="control"):
        check_text("note", "bell\x07")
    assert check_text("name", "x" * 64, 64) == "x" * 64


@given(st.text())
def test_check_text_either_refuses_or_returns_clean_text(raw: str) -> None:
    try:
        out = check_text("note", raw)
    except InvalidArgument:
        return
    assume(out)
    assert len(out) <= 500 and out == out.strip()
    assert all(ord(c) >= 32 or c in "\n\t" for c in out)
