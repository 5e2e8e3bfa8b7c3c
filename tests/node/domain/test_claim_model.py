"""A node's claim as a model: the transition table by role, the one function every change
goes through, the states a claim is first recorded in, and what a claim may hold."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.domain.claims import (
    ACCEPT,
    FINAL_STATES,
    MAX_MOVE_MINUTES,
    MAX_REDEMPTION_MINUTES,
    OPEN_STATES,
    OPENING,
    TRANSITIONS,
    Claim,
    ClaimKind,
    ClaimState,
    Decision,
    Reason,
    Role,
    accept,
    annotate,
    complete,
    expire,
    finish,
    may_become,
    move_relayed,
    move_started,
    new_claim_id,
    redemption_decided,
    redemption_proposed,
    reject,
    void,
)
from node.domain.ledger import Origin
from node.domain.policy import Policy, PolicyError
from runtime.errors import InvariantViolation
from timebank.minutes import MAX_CAP_MINUTES, hours

S = ClaimState
T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
LATER = T0 + timedelta(minutes=5)
OTHER = "320113"
PAYER, SERVED = "ab" * 32, "cd" * 32
CLAIM_ID = new_claim_id(1_764_061_200_000, bytes(10))


def claim_in(state: ClaimState, role: Role = Role.CREDITOR,
             kind: ClaimKind = ClaimKind.REDEMPTION, minutes: int = 60,
             posted: int | None = None, **changes: Any) -> Claim:
    """A well-formed claim of ``role`` and ``kind`` in ``state``."""
    if posted is None:
        posted = minutes if state in (S.FINISHING, S.COMPLETED) else 0
    reason = {S.REJECTED: "POLICY", S.VOIDED: "CANCELLED", S.EXPIRED: "EXPIRED"}.get(state, "")
    fields: dict[str, Any] = {
        "claim_id": CLAIM_ID, "kind": kind, "role": role, "counterparty": OTHER,
        "person_ref": PAYER, "minutes": minutes, "state": state,
        "expires_at": T0 + timedelta(days=30), "created_at": T0, "updated_at": T0,
        "posted_minutes": posted, "reason": reason,
        "order_id": 7 if kind is ClaimKind.REDEMPTION and role is Role.CREDITOR else None,
        "origins": ((Origin.INDIVIDUAL, minutes),) if kind is ClaimKind.MOVE else (),
    }
    fields.update(changes)
    return Claim(**fields)


#: The function that takes a claim to each state (none leads back to PROPOSED).
CHANGES: dict[ClaimState, Callable[[Claim, datetime], Claim]] = {
    S.ACCEPTED: accept,
    S.REJECTED: lambda c, now: reject(c, now, "NOT_A_RELATIVE", "no family link"),
    S.FINISHING: lambda c, now: finish(c, now, c.minutes),
    S.COMPLETED: lambda c, now: complete(c, now, c.minutes),
    S.VOIDED: lambda c, now: void(c, now, "CANCELLED"),
    S.EXPIRED: expire,
}

EVERY_PAIR = [(role, before, after) for role in Role for before in TRANSITIONS[role]
              for after in CHANGES]


# ------------------------------------------------------------------ the table


def test_the_table_as_adr_0012_states_it() -> None:
    assert TRANSITIONS[Role.CREDITOR] == {
        S.PROPOSED: {S.ACCEPTED, S.REJECTED, S.EXPIRED},
        S.ACCEPTED: {S.FINISHING, S.EXPIRED},
        S.FINISHING: {S.COMPLETED, S.VOIDED, S.EXPIRED},
        S.COMPLETED: set(), S.VOIDED: set(), S.REJECTED: set(), S.EXPIRED: set(),
    }
    assert TRANSITIONS[Role.DEBTOR] == {
        S.ACCEPTED: {S.COMPLETED, S.VOIDED, S.REJECTED, S.EXPIRED},
        S.COMPLETED: set(), S.VOIDED: set(), S.REJECTED: set(), S.EXPIRED: set(),
    }
    assert {Role.CREDITOR: {S.PROPOSED, S.ACCEPTED},
                       Role.DEBTOR: {S.ACCEPTED, S.REJECTED}} == OPENING


def test_final_and_open_states_are_read_off_the_table() -> None:
    assert {S.COMPLETED, S.VOIDED, S.REJECTED, S.EXPIRED} == FINAL_STATES
    assert {S.PROPOSED, S.ACCEPTED, S.FINISHING} == OPEN_STATES
    assert {s for s in ClaimState if s.final} == FINAL_STATES
    assert {s for s in ClaimState if s.open} == OPEN_STATES
    for role, table in TRANSITIONS.items():
        for state, after in table.items():
            assert after <= set(table), (role, state)  # never to a state the role lacks
            assert (not after) == state.final, (role, state)
        assert OPENING[role] <= set(table)


def test_every_state_a_role_lists_is_reached_from_where_its_claims_open() -> None:
    for role, table in TRANSITIONS.items():
        reached, frontier = set(OPENING[role]), list(OPENING[role])
        while frontier:
            for after in table[frontier.pop()]:
                if after not in reached:
                    reached.add(after)
                    frontier.append(after)
        assert reached == set(table), role


def test_every_open_claim_can_expire_and_nothing_returns_to_proposed() -> None:
    for table in TRANSITIONS.values():
        for state, after in table.items():
            assert S.PROPOSED not in after
            assert state.final or S.EXPIRED in after


# ------------------------------------------------------------------ every transition


@pytest.mark.parametrize(("role", "before", "after"), EVERY_PAIR)
def test_each_change_is_made_exactly_when_the_table_allows_it(
        role: Role, before: ClaimState, after: ClaimState) -> None:
    kind = ClaimKind.MOVE if role is Role.DEBTOR and before is S.ACCEPTED else \
        ClaimKind.REDEMPTION
    claim = claim_in(before, role, kind)
    assert may_become(claim, after) == (after in TRANSITIONS[role][before])
    if after in TRANSITIONS[role][before]:
        changed = CHANGES[after](claim, LATER)
        assert (changed.state, changed.updated_at) == (after, LATER)
        assert replace(changed, state=claim.state, updated_at=claim.updated_at,
                       posted_minutes=claim.posted_minutes, reason=claim.reason,
                       detail=claim.detail) == claim  # nothing else changed
    else:
        with pytest.raises(InvariantViolation, match=f"from there to {after.value}"):
            CHANGES[after](claim, LATER)


@given(role=st.sampled_from(Role), kind=st.sampled_from(ClaimKind),
       before=st.sampled_from(ClaimState), after=st.sampled_from(sorted(CHANGES)),
       minutes=st.integers(1, MAX_REDEMPTION_MINUTES),
       later=st.timedeltas(timedelta(0), timedelta(days=60)))
def test_any_claim_changes_only_as_the_table_says(
        role: Role, kind: ClaimKind, before: ClaimState, after: ClaimState, minutes: int,
        later: timedelta) -> None:
    if before not in TRANSITIONS[role]:
        with pytest.raises(InvariantViolation, match="is never"):
            claim_in(before, role, kind, minutes)
        return
    claim = claim_in(before, role, kind, minutes)
    allowed = after in TRANSITIONS[role][before]
    try:
        changed = CHANGES[after](claim, T0 + later)
    except InvariantViolation:
        assert not allowed
        return
    assert allowed
    assert changed.state is after and claim.state is before  # the input is left as it was
    assert changed.posted_minutes == (minutes if after in (S.FINISHING, S.COMPLETED) else 0)
    assert bool(changed.reason) == (after in (S.REJECTED, S.VOIDED, S.EXPIRED))


def test_no_function_takes_a_claim_back_to_proposed() -> None:
    for role, table in TRANSITIONS.items():
        for state in table:
            assert not may_become(claim_in(state, role, ClaimKind.MOVE if role is Role.DEBTOR
                                           else ClaimKind.REDEMPTION), S.PROPOSED)


def test_a_note_keeps_the_state_and_only_on_an_open_claim() -> None:
    proposed = claim_in(S.PROPOSED)
    noted = annotate(proposed, LATER, "order cancelled before acceptance")
    assert (noted.state, noted.detail, noted.updated_at) == (
        S.PROPOSED, "order cancelled before acceptance", LATER)
    with pytest.raises(InvariantViolation, match="not noted on"):
        annotate(claim_in(S.COMPLETED), LATER, "late")


# ------------------------------------------------------------------ what changes carry


def test_the_creditor_finishes_with_what_it_will_post_and_completes_with_it() -> None:
    claim = claim_in(S.ACCEPTED, minutes=60)
    asked = finish(claim, LATER, 45)
    assert (asked.state, asked.posted_minutes) == (S.FINISHING, 45)
    assert complete(asked, LATER, asked.posted_minutes).posted_minutes == 45
    voiding = finish(claim, LATER, 0)  # nothing to pay: its finish is a void
    assert voiding.posted_minutes == 0
    assert void(voiding, LATER, "CANCELLED").posted_minutes == 0
    with pytest.raises(InvariantViolation, match="completed posting nothing"):
        complete(voiding, LATER, 0)
    with pytest.raises(InvariantViolation, match="posts 61 of 60"):
        finish(claim, LATER, 61)


def test_a_move_posts_its_whole_balance_or_nothing() -> None:
    move = claim_in(S.ACCEPTED, Role.DEBTOR, ClaimKind.MOVE, 90)
    with pytest.raises(InvariantViolation, match="whole 90 min"):
        complete(move, LATER, 60)
    assert complete(move, LATER, 90).posted_minutes == 90
    taken_in = claim_in(S.ACCEPTED, Role.CREDITOR, ClaimKind.MOVE, 90)
    with pytest.raises(InvariantViolation, match="whole 90 min"):
        finish(taken_in, LATER, 30)
    assert finish(taken_in, LATER, 90, person_id=4).person_id == 4


def test_ending_without_posting_says_why() -> None:
    with pytest.raises(InvariantViolation, match="rejected with reason ''"):
        reject(claim_in(S.PROPOSED), LATER, "", "")
    with pytest.raises(InvariantViolation, match="voided with reason ''"):
        void(claim_in(S.FINISHING, posted=0), LATER, "")
    assert expire(claim_in(S.FINISHING), LATER).reason == Reason.EXPIRED
    # the clearinghouse's own refusal codes are kept as they are
    assert reject(claim_in(S.PROPOSED), LATER, "MOVE_IN_PROGRESS", "moving").reason == \
        "MOVE_IN_PROGRESS"


# ------------------------------------------------------------------ where claims open


def test_a_redemption_opens_proposed_at_the_creditor() -> None:
    claim = redemption_proposed(CLAIM_ID, OTHER, PAYER, SERVED, 90, 7, 3, T0,
                                T0 + timedelta(days=30))
    assert (claim.role, claim.kind, claim.state) == (Role.CREDITOR, ClaimKind.REDEMPTION,
                                                     S.PROPOSED)
    assert (claim.order_id, claim.person_id, claim.recipient_ref) == (7, 3, SERVED)
    assert claim.created_at == claim.updated_at == T0


def test_a_redemption_opens_decided_at_the_debtor() -> None:
    held = redemption_decided(CLAIM_ID, OTHER, PAYER, "", 90, 3, ACCEPT, T0,
                              T0 + timedelta(days=30))
    assert (held.role, held.state, held.reason, held.order_id) == (
        Role.DEBTOR, S.ACCEPTED, "", None)
    refused = redemption_decided(CLAIM_ID, OTHER, PAYER, "", 90, None,
                                 Decision(Reason.INSUFFICIENT_BALANCE, "10 min available"),
                                 T0, T0 + timedelta(days=30))
    assert (refused.state, refused.reason, refused.detail) == (
        S.REJECTED, "INSUFFICIENT_BALANCE", "10 min available")
    assert refused.state.final


def test_a_move_opens_accepted_at_the_old_home_with_its_origins() -> None:
    move = move_started(CLAIM_ID, OTHER, PAYER, [(Origin.INDIVIDUAL, 90), (Origin.GRANTED, 30)],
                        3, T0, T0 + timedelta(days=1))
    assert (move.role, move.state, move.minutes) == (Role.DEBTOR, S.ACCEPTED, 120)
    assert move.origins == ((Origin.INDIVIDUAL, 90), (Origin.GRANTED, 30))


@pytest.mark.parametrize("accepted", [True, False])
def test_a_move_opens_at_the_new_home_as_relayed(accepted: bool) -> None:
    move = move_relayed(CLAIM_ID, OTHER, PAYER, 90, [(Origin.DONATED, 90)], None, accepted,
                        T0, T0 + timedelta(days=1))
    assert move.role is Role.CREDITOR
    assert move.state is (S.ACCEPTED if accepted else S.PROPOSED)


# ------------------------------------------------------------------ a move's bound


@pytest.mark.parametrize("cap_hours", [1500, 1501, 2000, 100_000])
def test_a_move_carries_any_balance_a_citys_cap_allows(cap_hours: int) -> None:
    policy = Policy(cap_minutes=hours(cap_hours))
    move = move_started(CLAIM_ID, OTHER, PAYER, [(Origin.INDIVIDUAL, policy.cap_minutes)], 3,
                        T0, T0 + timedelta(days=1))
    assert move.minutes == hours(cap_hours)


def test_the_move_bound_is_the_largest_cap_the_policy_allows() -> None:
    assert MAX_MOVE_MINUTES == MAX_CAP_MINUTES == hours(100_000)
    Policy(cap_minutes=MAX_CAP_MINUTES)
    with pytest.raises(PolicyError):
        Policy(cap_minutes=MAX_CAP_MINUTES + 1)
    with pytest.raises(InvariantViolation, match=re.escape("1..6000000 min")):
        move_started(CLAIM_ID, OTHER, PAYER, [(Origin.INDIVIDUAL, MAX_CAP_MINUTES),
                                              (Origin.GRANTED, 1)], 3, T0, T0 + timedelta(1))


# ------------------------------------------------------------------ what a claim may hold


BROKEN: dict[str, tuple[dict[str, Any], str]] = {
    "an id that is not a UUIDv7": ({"claim_id": "not-a-uuid"}, "UUIDv7"),
    "an uppercase id": ({"claim_id": CLAIM_ID.upper()}, "UUIDv7"),
    "a counterparty that is no node id": ({"counterparty": "32011"}, "not a node id"),
    "a malformed PersonRef": ({"person_ref": "AB" * 32}, "PersonRef"),
    "a malformed recipient": ({"recipient_ref": "x"}, "recipient"),
    "no minutes": ({"minutes": 0}, "redemption claims 1..1440"),
    "more than a day redeemed": ({"minutes": 1441}, "redemption claims 1..1440"),
    "minutes as a bool": ({"minutes": True}, "redemption claims"),
    "a redemption with origins": ({"origins": ((Origin.INDIVIDUAL, 60),)}, "origins"),
    "an order on a debtor's claim": ({"role": Role.DEBTOR, "state": S.ACCEPTED},
                                     "pays for an order"),
    "a reason while open": ({"reason": "POLICY"}, "accepted with reason"),
    "minutes to post while accepted": ({"posted_minutes": 5}, "accepted with 5 min"),
    "a reason code too long": ({"state": S.REJECTED, "reason": "X" * 33}, "at most 32"),
    "a detail too long": ({"detail": "x" * 501}, "at most 500"),
    "a naive time": ({"updated_at": datetime(2026, 11, 25)}, "time zone"),
}


@pytest.mark.parametrize("what", sorted(BROKEN))
def test_a_claim_that_breaks_its_invariants_is_never_built(what: str) -> None:
    changes, message = BROKEN[what]
    good = claim_in(S.ACCEPTED)
    with pytest.raises(InvariantViolation, match=re.escape(message)):
        replace(good, **changes)


@pytest.mark.parametrize(("state", "role"), [(S.PROPOSED, Role.DEBTOR),
                                             (S.FINISHING, Role.DEBTOR)])
def test_a_debtor_never_proposes_or_finishes(state: ClaimState, role: Role) -> None:
    with pytest.raises(InvariantViolation, match=f"debtor's claim is never {state.value}"):
        claim_in(state, role, ClaimKind.MOVE)


@pytest.mark.parametrize("origins", [(), ((Origin.INDIVIDUAL, 50),),
                                     ((Origin.INDIVIDUAL, 60), (Origin.GRANTED, 0)),
                                     (("individual", 60),)])
def test_a_moves_origins_add_up_to_it(origins: tuple[tuple[Origin, int], ...]) -> None:
    with pytest.raises(InvariantViolation, match="origins"):
        claim_in(S.ACCEPTED, Role.DEBTOR, ClaimKind.MOVE, 60, origins=origins)


def test_an_expiry_is_only_ever_for_expired() -> None:
    with pytest.raises(InvariantViolation, match="expired with reason 'POLICY'"):
        claim_in(S.EXPIRED, reason="POLICY")
