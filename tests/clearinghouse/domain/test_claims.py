"""The claim rules: states, deadlines, who may act, reasons and every field's validation."""

from __future__ import annotations

import os
import re
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from clearinghouse.domain.claims import (
    CLEARINGHOUSE,
    MAX_CLAIM_MINUTES,
    MAX_CLAIM_WINDOW,
    MAX_MOVE_MINUTES,
    MAX_REDEMPTION_MINUTES,
    MIN_CLAIM_WINDOW,
    REJECT_REASONS,
    TRANSITIONS,
    VOID_REASONS,
    Action,
    Claim,
    ClaimKind,
    ClaimState,
    RejectReason,
    accept,
    actor_may,
    allowed_from,
    check_actor,
    check_resubmission,
    complete,
    expire,
    reject,
    void,
)
from runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    InvariantViolation,
    PermissionDenied,
    Refusal,
)
from timebank.minutes import MAX_CAP_MINUTES, MINUTES_PER_DAY, hours

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
CREDITOR, DEBTOR, OTHER = "320106", "320115", "320113"
REF = "ab" * 32


def uuid7(unix_ms: int | None = None) -> str:
    """A UUIDv7 (RFC 9562) in canonical form, as a node makes one."""
    ms = int(time.time() * 1000) if unix_ms is None else unix_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & (2**48 - 1)) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64
    value |= 0b10 << 62 | rand & (2**62 - 1)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def make(**changes: Any) -> Claim:
    fields: dict[str, Any] = {
        "claim_id": uuid7(), "kind": ClaimKind.REDEMPTION, "creditor": CREDITOR,
        "debtor": DEBTOR, "person_ref": REF, "minutes": 90, "created_at": T0,
        "expires_at": T0 + timedelta(days=1)}
    fields.update(changes)
    return Claim(**fields)


def in_state(state: ClaimState, **changes: Any) -> Claim:
    """A claim brought to ``state`` by the legal path."""
    claim = make(**changes)
    t = T0 + timedelta(minutes=1)
    if state is ClaimState.PROPOSED:
        return claim
    if state is ClaimState.REJECTED:
        return reject(claim, t, RejectReason.POLICY)
    if state is ClaimState.EXPIRED:
        return expire(claim, claim.expires_at)
    claim = accept(claim, t)
    if state is ClaimState.ACCEPTED:
        return claim
    if state is ClaimState.COMPLETED:
        return complete(claim, t)
    assert state is ClaimState.VOIDED
    return void(claim, t, RejectReason.CANCELLED)


def act(claim: Claim, action: Action, now: datetime) -> Claim:
    if action is Action.ACCEPT:
        return accept(claim, now)
    if action is Action.REJECT:
        return reject(claim, now, RejectReason.INSUFFICIENT_BALANCE)
    if action is Action.COMPLETE:
        return complete(claim, now)
    if action is Action.VOID:
        return void(claim, now, RejectReason.CANCELLED)
    assert action is Action.EXPIRE
    return expire(claim, now)


TRANSITION_ACTIONS = [a for a in Action if a is not Action.PROPOSE]
TARGET = {Action.ACCEPT: "accepted", Action.REJECT: "rejected", Action.COMPLETE: "completed",
          Action.VOID: "voided", Action.EXPIRE: "expired"}
EXPECTED_NEXT = {
    "proposed": {"accepted", "rejected", "expired"},
    "accepted": {"completed", "voided", "expired"},
    "completed": set(), "voided": set(), "rejected": set(), "expired": set(),
}

# ------------------------------------------------------------------ the state table


def test_transition_table_is_the_documented_one() -> None:
    assert {s.value: {t.value for t in nxt} for s, nxt in TRANSITIONS.items()} == EXPECTED_NEXT
    assert {s for s in ClaimState if s.final} == {
        ClaimState.COMPLETED, ClaimState.VOIDED, ClaimState.REJECTED, ClaimState.EXPIRED}
    assert allowed_from(Action.PROPOSE) == frozenset()


@pytest.mark.parametrize("state", list(ClaimState))
@pytest.mark.parametrize("action", TRANSITION_ACTIONS)
def test_every_action_in_every_state(state: ClaimState, action: Action) -> None:
    claim = in_state(state)
    now = claim.expires_at if action is Action.EXPIRE else T0 + timedelta(minutes=2)
    if TARGET[action] in EXPECTED_NEXT[state.value]:
        after = act(claim, action, now)
        assert after.state.value == TARGET[action]
        assert after.updated_at == now
        assert (after.claim_id, after.minutes, after.person_ref) == (
            claim.claim_id, claim.minutes, claim.person_ref)
        assert claim.state is state  # the input is untouched
    else:
        with pytest.raises(FailedPrecondition) as info:
            act(claim, action, now)
        assert info.value.reason == "CLAIM_STATE"
        assert state.value in info.value.message


def test_state_error_says_what_would_do() -> None:
    with pytest.raises(FailedPrecondition, match="can be completed only when accepted"):
        complete(in_state(ClaimState.PROPOSED), T0)


def test_the_whole_happy_path_carries_reason_and_posting() -> None:
    claim = make()
    assert claim.updated_at == T0 and claim.reason is None and claim.posted_minutes is None
    held = accept(claim, T0 + timedelta(seconds=1))
    done = complete(held, T0 + timedelta(days=0, hours=3), posted=75)
    assert (done.state, done.posted_minutes, done.reason) == (ClaimState.COMPLETED, 75, None)
    assert expire(claim, claim.expires_at).reason is RejectReason.EXPIRED
    assert reject(claim, T0, RejectReason.BUSY).reason is RejectReason.BUSY
    assert void(held, T0 + timedelta(hours=1), RejectReason.POLICY).reason is RejectReason.POLICY


# ------------------------------------------------------------------ deadlines and clocks


@pytest.mark.parametrize("action", [Action.ACCEPT, Action.REJECT])
def test_proposed_claims_cannot_be_decided_at_or_after_the_deadline(action: Action) -> None:
    claim = make()
    act(claim, action, claim.expires_at - timedelta(microseconds=1))
    for late in (claim.expires_at, claim.expires_at + timedelta(days=3)):
        with pytest.raises(FailedPrecondition) as info:
            act(claim, action, late)
        assert info.value.reason == "CLAIM_EXPIRED"
        assert "only expired" in info.value.message


@pytest.mark.parametrize("action", [Action.COMPLETE, Action.VOID])
def test_accepted_claims_cannot_be_finished_at_or_after_the_deadline(action: Action) -> None:
    claim = in_state(ClaimState.ACCEPTED)
    act(claim, action, claim.expires_at - timedelta(microseconds=1))
    with pytest.raises(FailedPrecondition) as info:
        act(claim, action, claim.expires_at)
    assert info.value.reason == "CLAIM_EXPIRED"


@pytest.mark.parametrize("state", [ClaimState.PROPOSED, ClaimState.ACCEPTED])
def test_expiry_only_at_or_after_the_deadline(state: ClaimState) -> None:
    claim = in_state(state)
    with pytest.raises(FailedPrecondition) as info:
        expire(claim, claim.expires_at - timedelta(microseconds=1))
    assert info.value.reason == "CLAIM_NOT_DUE"
    assert expire(claim, claim.expires_at).state is ClaimState.EXPIRED
    assert expire(claim, claim.expires_at + timedelta(days=400)).state is ClaimState.EXPIRED


def test_the_clock_may_not_go_backwards() -> None:
    held = accept(make(), T0 + timedelta(hours=1))
    with pytest.raises(InvalidArgument) as info:
        complete(held, T0 + timedelta(minutes=59))
    assert info.value.reason == "CLOCK_WENT_BACKWARDS"
    with pytest.raises(InvalidArgument, match="clock went backwards"):
        accept(make(), T0 - timedelta(seconds=1))
    assert complete(held, T0 + timedelta(hours=1)).state is ClaimState.COMPLETED


@pytest.mark.parametrize("action", TRANSITION_ACTIONS)
def test_transitions_refuse_a_naive_now(action: Action) -> None:
    claim = in_state(ClaimState.ACCEPTED if action in (Action.COMPLETE, Action.VOID)
                     else ClaimState.PROPOSED)
    with pytest.raises(InvalidArgument) as info:
        act(claim, action, datetime(2026, 11, 25, 10, 0))
    assert info.value.reason == "NAIVE_TIME"


def test_other_time_zones_compare_by_instant() -> None:
    shanghai = timezone(timedelta(hours=8))
    claim = make(created_at=T0.astimezone(shanghai))
    assert accept(claim, T0 + timedelta(seconds=1)).state is ClaimState.ACCEPTED


# ------------------------------------------------------------------ completion amounts


def test_a_redemption_may_post_less_than_it_held_never_more() -> None:
    held = in_state(ClaimState.ACCEPTED, minutes=120)
    now = T0 + timedelta(hours=2)
    assert complete(held, now).posted_minutes == 120
    assert complete(held, now, posted=1).posted_minutes == 1
    for bad in (0, -5, 121, True):
        with pytest.raises(InvalidArgument) as info:
            complete(held, now, posted=bad)
        assert info.value.reason == "MINUTES_OUT_OF_RANGE"


def test_a_move_posts_the_whole_balance() -> None:
    held = in_state(ClaimState.ACCEPTED, kind=ClaimKind.MOVE, minutes=5000)
    now = T0 + timedelta(hours=2)
    assert complete(held, now).posted_minutes == 5000
    with pytest.raises(InvalidArgument) as info:
        complete(held, now, posted=4999)
    assert info.value.reason == "PARTIAL_MOVE"


# ------------------------------------------------------------------ permissions

EXPECTED_ACTORS = {
    Action.PROPOSE: {CREDITOR},
    Action.ACCEPT: {DEBTOR},
    Action.REJECT: {DEBTOR, CLEARINGHOUSE},
    Action.COMPLETE: {CREDITOR},
    Action.VOID: {CREDITOR},
    Action.EXPIRE: {CLEARINGHOUSE},
}


@pytest.mark.parametrize("kind", list(ClaimKind))
@pytest.mark.parametrize("action", list(Action))
def test_who_may_do_what(kind: ClaimKind, action: Action) -> None:
    claim = make(kind=kind)
    for actor in (CREDITOR, DEBTOR, OTHER, CLEARINGHOUSE, "", "32010"):
        expected = EXPECTED_ACTORS[action]
        if action is Action.PROPOSE and kind is ClaimKind.MOVE:
            expected = {DEBTOR}  # the old home proposes a move: it knows the balance
        allowed = actor in expected
        assert actor_may(claim, action, actor) is allowed
        if allowed:
            check_actor(claim, action, actor)
        else:
            with pytest.raises(PermissionDenied) as info:
                check_actor(claim, action, actor)
            assert info.value.reason == "NOT_YOUR_CLAIM"
            assert claim.claim_id in info.value.message


# ------------------------------------------------------------------ reasons


def test_reason_classes() -> None:
    final = {r.value for r in RejectReason if r.final}
    assert final == {"INSUFFICIENT_BALANCE", "NOT_A_RELATIVE", "POLICY", "UNKNOWN_PERSON",
                     "NOT_HOME_DISTRICT", "NO_CONSENT", "CANCELLED"}
    assert {r.value for r in RejectReason if r.temporary} == {
        "EXPIRED", "LIMIT_REACHED", "DEBTOR_OFFLINE", "BUSY"}
    for r in RejectReason:
        assert r.error_class == ("F" if r.final else "T")
        assert r.final is not r.temporary
        assert re.fullmatch(r"[A-Z_]+", r.value) and r.value == r.name


def test_which_reasons_go_with_which_ending() -> None:
    assert RejectReason.EXPIRED not in REJECT_REASONS
    assert RejectReason.CANCELLED not in REJECT_REASONS
    assert {RejectReason.CANCELLED, RejectReason.POLICY} == VOID_REASONS
    claim, held = make(), in_state(ClaimState.ACCEPTED)
    for reason in RejectReason:
        if reason in REJECT_REASONS:
            assert reject(claim, T0, reason).reason is reason
        else:
            with pytest.raises(InvalidArgument, match="cannot be rejected"):
                reject(claim, T0, reason)
        if reason in VOID_REASONS:
            assert void(held, T0 + timedelta(hours=1), reason).reason is reason
        else:
            with pytest.raises(InvalidArgument, match="cannot be voided"):
                void(held, T0 + timedelta(hours=1), reason)


# ------------------------------------------------------------------ field validation


@pytest.mark.parametrize("claim_id", [
    "", "not-a-uuid",
    "0190f1a2-3b4c-4d5e-8f60-718293a4b5c6",  # version 4
    "0190f1a2-3b4c-1d5e-8f60-718293a4b5c6",  # version 1
    "0190f1a2-3b4c-7d5e-cf60-718293a4b5c6",  # not the RFC variant
    "0190F1A2-3B4C-7D5E-8F60-718293A4B5C6",  # upper case
    "0190f1a23b4c7d5e8f60718293a4b5c6",  # not canonical
    "{0190f1a2-3b4c-7d5e-8f60-718293a4b5c6}",
    "0190f1a2-3b4c-7d5e-8f60-718293a4b5c6 ",
    "0190f1a2-3b4c-7d5e-8f60-718293a4b5c6\n",
    "0190f1a2-3b4c-7d5e-8f60-718293a4b5cg",
])
def test_bad_claim_ids(claim_id: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        make(claim_id=claim_id)
    assert info.value.reason == "MALFORMED_CLAIM_ID"


def test_good_claim_ids() -> None:
    for _ in range(100):
        make(claim_id=uuid7())
    make(claim_id="0190f1a2-3b4c-7d5e-bf60-718293a4b5c6")


@pytest.mark.parametrize("field", ["creditor", "debtor"])
@pytest.mark.parametrize("node_id", ["", "32011", "3201150", "32011a", "３２０１１５", " 320115",
                                     "320115\n"])
def test_bad_node_ids(field: str, node_id: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        make(**{field: node_id})
    assert info.value.reason == "MALFORMED_NODE_ID"
    assert field in info.value.message


def test_a_district_cannot_claim_from_itself() -> None:
    with pytest.raises(InvalidArgument) as info:
        make(creditor=DEBTOR)
    assert info.value.reason == "CLAIM_TO_SELF"


@pytest.mark.parametrize("ref", ["", "ab" * 31, "ab" * 33, "AB" * 32, "zz" * 32, "ab" * 31 + "a "])
def test_bad_person_refs(ref: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        make(person_ref=ref)
    assert info.value.reason == "MALFORMED_PERSON_REF"


@pytest.mark.parametrize(("kind", "top"), [(ClaimKind.REDEMPTION, MAX_REDEMPTION_MINUTES),
                                           (ClaimKind.MOVE, MAX_MOVE_MINUTES)])
def test_minutes_range(kind: ClaimKind, top: int) -> None:
    assert kind.max_minutes == top <= MAX_CLAIM_MINUTES
    assert make(kind=kind, minutes=1).minutes == 1
    assert make(kind=kind, minutes=top).minutes == top
    for bad in (0, -1, -top, top + 1, MAX_CLAIM_MINUTES + 1, 10**18, True, 1.5, "60"):
        with pytest.raises(InvalidArgument) as info:
            make(kind=kind, minutes=bad)
        assert info.value.reason == "MINUTES_OUT_OF_RANGE"


def test_limits_are_the_documented_ones() -> None:
    # a move's bound is the largest stored-hours cap a city may set, 100,000 h (ADR 0012)
    assert (MAX_REDEMPTION_MINUTES, MAX_MOVE_MINUTES) == (1440, 6_000_000) == (
        MINUTES_PER_DAY, MAX_CAP_MINUTES)
    assert (timedelta(seconds=1), timedelta(days=30)) == (MIN_CLAIM_WINDOW, MAX_CLAIM_WINDOW)


@pytest.mark.parametrize("cap_hours", [1501, 2000, 100_000])
def test_a_move_of_a_balance_a_raised_cap_allows_is_a_claim(cap_hours: int) -> None:
    # a city may raise cap_hours past 1,500 h: the whole balance it lets a person store moves
    moved = make(kind=ClaimKind.MOVE, minutes=hours(cap_hours))
    assert moved.minutes == hours(cap_hours)
    done = complete(accept(moved, moved.created_at + timedelta(seconds=1)),
                    moved.created_at + timedelta(seconds=2))
    assert done.posted_minutes == hours(cap_hours)


def test_a_move_past_the_largest_cap_is_refused() -> None:
    with pytest.raises(InvalidArgument) as info:
        make(kind=ClaimKind.MOVE, minutes=MAX_CAP_MINUTES + 1)
    assert info.value.reason == "MINUTES_OUT_OF_RANGE"
    assert "6000000" in info.value.message


def test_bad_kind() -> None:
    with pytest.raises(InvalidArgument) as info:
        make(kind="redemption!")
    assert info.value.reason == "BAD_CLAIM_KIND"


@pytest.mark.parametrize("field", ["created_at", "expires_at", "updated_at"])
def test_naive_datetimes(field: str) -> None:
    naive = {"created_at": datetime(2026, 11, 25, 9), "expires_at": datetime(2026, 11, 26, 9),
             "updated_at": datetime(2026, 11, 25, 10)}[field]
    with pytest.raises(InvalidArgument) as info:
        make(**{field: naive})
    assert info.value.reason == "NAIVE_TIME"


@pytest.mark.parametrize("window", [timedelta(0), -timedelta(hours=1),
                                    MIN_CLAIM_WINDOW - timedelta(microseconds=1),
                                    MAX_CLAIM_WINDOW + timedelta(microseconds=1),
                                    timedelta(days=365)])
def test_bad_deadlines(window: timedelta) -> None:
    with pytest.raises(InvalidArgument) as info:
        make(expires_at=T0 + window)
    assert info.value.reason == "BAD_DEADLINE"


def test_deadline_bounds_are_inclusive() -> None:
    make(expires_at=T0 + MIN_CLAIM_WINDOW)
    make(expires_at=T0 + MAX_CLAIM_WINDOW)


@pytest.mark.parametrize("changes", [
    {"reason": RejectReason.POLICY},  # proposed with a reason
    {"state": ClaimState.REJECTED},  # rejected without one
    {"state": ClaimState.REJECTED, "reason": RejectReason.EXPIRED},
    {"state": ClaimState.EXPIRED, "reason": RejectReason.BUSY},
    {"state": ClaimState.VOIDED, "reason": RejectReason.BUSY},
    {"state": ClaimState.COMPLETED},  # nothing posted
    {"state": ClaimState.ACCEPTED, "posted_minutes": 5},
    {"state": "accepted"},
    {"updated_at": T0 - timedelta(seconds=1)},
    {"updated_at": T0 + timedelta(seconds=1)},  # proposed, yet changed
])
def test_inconsistent_states_are_bugs(changes: dict[str, Any]) -> None:
    with pytest.raises(InvariantViolation):
        make(**changes)


def test_stored_claims_round_trip() -> None:
    done = in_state(ClaimState.COMPLETED)
    assert replace(done) == done  # every finished claim passes its own checks again
    assert Claim(**{f: getattr(done, f) for f in Claim.__dataclass_fields__}) == done


# ------------------------------------------------------------------ idempotency


def test_a_resubmission_gets_the_recorded_outcome() -> None:
    recorded = reject(make(), T0, RejectReason.NOT_A_RELATIVE)
    again = make(claim_id=recorded.claim_id, created_at=T0 + timedelta(minutes=5),
                 expires_at=T0 + timedelta(days=2))
    assert check_resubmission(recorded, again) is recorded


@pytest.mark.parametrize("changes", [
    {"minutes": 91}, {"kind": ClaimKind.MOVE}, {"creditor": OTHER}, {"debtor": OTHER},
    {"person_ref": "cd" * 32}])
def test_the_same_id_with_a_different_body_is_refused(changes: dict[str, Any]) -> None:
    recorded = make()
    with pytest.raises(AlreadyExists) as info:
        check_resubmission(recorded, make(claim_id=recorded.claim_id, **changes))
    assert info.value.reason == "CLAIM_ID_REUSED"


# ------------------------------------------------------------------ errors


def test_errors_carry_status_message_and_reason() -> None:
    error = FailedPrecondition("claim is done", "CLAIM_STATE")
    assert (str(error), error.message, error.reason, error.status) == (
        "claim is done", "claim is done", "CLAIM_STATE", "FAILED_PRECONDITION")
    assert InvalidArgument("x").reason == "INVALID_ARGUMENT"
    assert isinstance(error, Refusal)
    assert not issubclass(InvariantViolation, Refusal)
