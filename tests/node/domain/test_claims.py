"""A node's pure claim rules: the home district's decision on a redemption, where a
moved balance goes on arrival, and claim ids."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.domain.claims import (
    ACCEPT,
    MAX_REDEMPTION_MINUTES,
    TEMPORARY,
    Arrival,
    ClaimState,
    Decision,
    Reason,
    arrival,
    decide_redemption,
    new_claim_id,
)
from node.domain.consent import Consent, ConsentKind, ConsentState, Cover
from node.domain.ledger import Origin
from node.domain.orders import PersonFacts, PersonKind
from node.domain.policy import Policy, Relation
from runtime.errors import InvalidArgument

POLICY = Policy()
ELDER = PersonFacts(7, PersonKind.INDIVIDUAL, 70, False)
YOUNG = PersonFacts(8, PersonKind.INDIVIDUAL, 40, False)
GROUP = PersonFacts(9, PersonKind.GROUP, 0, False)


def _own(payer: PersonFacts | None, *, age: int = 70, priority: bool = False,
         available: int = 600, minutes: int = 60, policy: Policy = POLICY) -> Decision:
    return decide_redemption(policy, payer, True, age, priority, None, available, minutes)


#: The payer's consent, as ``node.domain.consent.cover`` finds it (ADR 0017).
CONSENTED = Cover(Consent(1, 8, "a" * 64, ConsentKind.STANDING, ConsentState.ACTIVE, 0, 0, 0,
                          datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC),
                          "person:8"))


def _for_relative(relation: Relation | None, *, payer: PersonFacts | None = YOUNG, age: int = 80,
                  available: int = 600, minutes: int = 60,
                  policy: Policy = POLICY, consent: Cover | None = CONSENTED) -> Decision:
    return decide_redemption(policy, payer, False, age, False, relation, available, minutes,
                             consent)


# ------------------------------------------------------------------ decide_redemption


def test_own_hours_with_enough_available_are_accepted() -> None:
    decision = _own(ELDER)
    assert decision == ACCEPT
    assert ACCEPT.accept and ACCEPT.reason is None


def test_a_relatives_hours_for_a_linked_elder_are_accepted() -> None:
    for relation in POLICY.relative_kinds:
        assert _for_relative(relation) == ACCEPT


def test_a_relatives_hours_without_consent_are_refused_before_the_balance() -> None:
    for missing in (None, Cover(None, "none"), Cover(None, "revoked")):
        decision = _for_relative(Relation.PARENT, consent=missing, available=0)
        assert decision.reason is Reason.NO_CONSENT
        assert "consent" in decision.detail
    assert "revoked" in _for_relative(Relation.PARENT, consent=Cover(None, "revoked")).detail
    # the rules of who may pay come first: no consent makes a stranger's hours spendable
    assert _for_relative(None, consent=None).reason is Reason.NOT_A_RELATIVE


def test_exactly_the_available_minutes_are_enough() -> None:
    assert _own(ELDER, available=60, minutes=60) == ACCEPT


def test_one_minute_short_is_insufficient_balance() -> None:
    decision = _own(ELDER, available=59, minutes=60)
    assert not decision.accept
    assert decision.reason is Reason.INSUFFICIENT_BALANCE
    assert decision.detail == "59 min available, 60 min claimed"


def test_a_person_not_enrolled_at_home_is_unknown() -> None:
    decision = _own(None)
    assert decision.reason is Reason.UNKNOWN_PERSON
    decision = _for_relative(Relation.PARENT, payer=None)
    assert decision.reason is Reason.UNKNOWN_PERSON


def test_unknown_comes_before_every_other_rule() -> None:
    # nothing else is looked at when the home district does not know the person
    decision = decide_redemption(POLICY, None, False, 1, False, None, 0, 0)
    assert decision.reason is Reason.UNKNOWN_PERSON


@pytest.mark.parametrize("minutes", [0, -1, MAX_REDEMPTION_MINUTES + 1])
def test_minutes_outside_one_day_break_policy(minutes: int) -> None:
    decision = _own(ELDER, minutes=minutes, available=10_000)
    assert decision.reason is Reason.POLICY


def test_a_full_day_is_the_most_one_redemption_takes() -> None:
    assert _own(ELDER, minutes=MAX_REDEMPTION_MINUTES, available=10_000) == ACCEPT


def test_a_group_cannot_be_served_with_its_own_hours() -> None:
    decision = _own(GROUP)
    assert decision.reason is Reason.POLICY


def test_a_group_may_not_pay_for_others_when_its_hours_are_donate_only() -> None:
    decision = _for_relative(None, payer=GROUP)
    assert decision.reason is Reason.POLICY
    assert decision.detail == "GROUP_HOURS_DONATE_ONLY"
    allowed = Policy(group_hours_donate_only=False)
    assert _for_relative(None, payer=GROUP, policy=allowed) == ACCEPT


def test_own_hours_below_the_redeeming_age_break_policy() -> None:
    decision = _own(YOUNG, age=40)
    assert decision.reason is Reason.POLICY
    assert decision.detail == "TOO_YOUNG_TO_REDEEM"


def test_a_priority_person_may_redeem_below_the_age() -> None:
    assert _own(YOUNG, age=40, priority=True) == ACCEPT


def test_no_family_link_is_not_a_relative() -> None:
    decision = _for_relative(None)
    assert decision.reason is Reason.NOT_A_RELATIVE
    assert decision.detail == "NOT_A_RELATIVE"


def test_a_proxy_is_not_a_relative() -> None:
    decision = _for_relative(Relation.PROXY)
    assert decision.reason is Reason.NOT_A_RELATIVE


def test_a_relation_the_city_does_not_allow_breaks_policy() -> None:
    narrow = Policy(relative_kinds=frozenset({Relation.SPOUSE}))
    decision = _for_relative(Relation.SIBLING, policy=narrow)
    assert decision.reason is Reason.POLICY
    assert decision.detail == "RELATION_NOT_ALLOWED"


def test_a_relative_below_the_age_breaks_policy() -> None:
    decision = _for_relative(Relation.CHILD, age=30)
    assert decision.reason is Reason.POLICY
    assert decision.detail == "RELATIVE_TOO_YOUNG"


def test_the_rules_come_before_the_balance() -> None:
    # a refusal on who may redeem says so, even when the balance is short too
    decision = _for_relative(None, available=0)
    assert decision.reason is Reason.NOT_A_RELATIVE


def test_details_never_carry_local_ids() -> None:
    # the message of check_payment names people by local id; the detail is its code only
    payer = PersonFacts(4242, PersonKind.INDIVIDUAL, 50, False)
    for decision in (_for_relative(None, payer=payer), _for_relative(Relation.CHILD,
                                                                     payer=payer, age=5)):
        assert "4242" not in decision.detail


def test_reasons_are_the_clearinghouse_codes() -> None:
    assert {r.value for r in Reason} == {
        "INSUFFICIENT_BALANCE", "NOT_A_RELATIVE", "POLICY", "UNKNOWN_PERSON",
        "NOT_HOME_DISTRICT", "NO_CONSENT", "EXPIRED", "LIMIT_REACHED", "DEBTOR_OFFLINE",
        "BUSY", "CANCELLED"}
    assert {Reason.EXPIRED, Reason.LIMIT_REACHED, Reason.DEBTOR_OFFLINE,
                         Reason.BUSY} == TEMPORARY


def test_claim_states_final_and_open() -> None:
    final = {s for s in ClaimState if s.final}
    assert final == {ClaimState.COMPLETED, ClaimState.VOIDED, ClaimState.REJECTED,
                     ClaimState.EXPIRED}
    assert {s for s in ClaimState if s.open} == set(ClaimState) - final


# ------------------------------------------------------------------ arrival


def test_arrival_below_the_cap_banks_everything() -> None:
    split = arrival([(Origin.INDIVIDUAL, 90), (Origin.GRANTED, 30)], 0, 600)
    assert split == Arrival(((Origin.INDIVIDUAL, 90), (Origin.GRANTED, 30)), 0)
    assert split.total == 120


def test_arrival_fills_to_the_cap_in_origin_order_then_the_pool() -> None:
    split = arrival([(Origin.INDIVIDUAL, 90), (Origin.DONATED, 60)], 30, 120)
    assert split.banked == ((Origin.INDIVIDUAL, 90),)
    assert split.to_pool == 60
    split = arrival([(Origin.INDIVIDUAL, 90), (Origin.DONATED, 60)], 0, 120)
    assert split.banked == ((Origin.INDIVIDUAL, 90), (Origin.DONATED, 30))
    assert split.to_pool == 30


def test_arrival_exactly_at_the_cap_banks_it_all() -> None:
    split = arrival([(Origin.INDIVIDUAL, 60)], 60, 120)
    assert split == Arrival(((Origin.INDIVIDUAL, 60),), 0)


def test_arrival_at_or_over_the_cap_sends_everything_to_the_pool() -> None:
    assert arrival([(Origin.INDIVIDUAL, 60)], 120, 120) == Arrival((), 60)
    # a balance already past the cap (a lowered cap) leaves no negative room
    assert arrival([(Origin.INDIVIDUAL, 60)], 500, 120) == Arrival((), 60)


def test_arrival_refuses_an_origin_without_minutes() -> None:
    for minutes in (0, -5):
        with pytest.raises(InvalidArgument):
            arrival([(Origin.INDIVIDUAL, 10), (Origin.GROUP, minutes)], 0, 100)


def test_arrival_of_nothing_is_nothing() -> None:
    assert arrival([], 0, 100) == Arrival((), 0)


@given(st.lists(st.tuples(st.sampled_from(list(Origin)), st.integers(1, 10_000)),
                max_size=6),
       st.integers(0, 200_000), st.integers(1, 100_000))
def test_arrival_conserves_minutes_and_respects_the_cap(
        origins: list[tuple[Origin, int]], already: int, cap: int) -> None:
    split = arrival(origins, already, cap)
    moved = sum(m for _, m in origins)
    assert split.total == moved
    banked = sum(m for _, m in split.banked)
    assert banked == min(moved, max(0, cap - already))
    assert split.to_pool >= 0
    assert all(m > 0 for _, m in split.banked)


# ------------------------------------------------------------------ claim ids

_UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def _check_uuid7(claim_id: str, ms: int | None = None) -> None:
    assert _UUID7.match(claim_id), claim_id
    parsed = uuid.UUID(claim_id)
    assert str(parsed) == claim_id  # lowercase canonical form
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    if ms is not None:
        assert int(claim_id.replace("-", "")[:12], 16) == ms


def test_a_claim_id_is_a_lowercase_uuid7_with_the_rfc_variant() -> None:
    _check_uuid7(new_claim_id(1_772_413_200_000))
    for rand in (b"\x00" * 10, b"\xff" * 10, bytes(range(10))):
        _check_uuid7(new_claim_id(1_772_413_200_000, rand), 1_772_413_200_000)


def test_a_claim_id_carries_its_milliseconds_and_random_bits() -> None:
    rand = bytes.fromhex("0123456789abcdef0123")
    claim_id = new_claim_id(0x0123456789AB, rand)
    assert claim_id == "01234567-89ab-7123-8567-89abcdef0123"
    assert new_claim_id(0x0123456789AB, rand) == claim_id  # deterministic given its inputs


def test_fresh_claim_ids_differ() -> None:
    ids = {new_claim_id(1_000) for _ in range(200)}
    assert len(ids) == 200


@given(st.integers(0, (1 << 48) - 2), st.integers(1, 10_000), st.binary(min_size=10,
                                                                        max_size=10),
       st.binary(min_size=10, max_size=10))
def test_claim_ids_sort_by_time(ms: int, later: int, r1: bytes, r2: bytes) -> None:
    second = min(ms + later, (1 << 48) - 1)
    a, b = new_claim_id(ms, r1), new_claim_id(second, r2)
    _check_uuid7(a, ms)
    _check_uuid7(b, second)
    assert a < b


def test_the_edges_of_the_48_bit_time() -> None:
    _check_uuid7(new_claim_id(0, b"\x00" * 10), 0)
    _check_uuid7(new_claim_id((1 << 48) - 1, b"\x00" * 10), (1 << 48) - 1)
    for ms in (-1, 1 << 48):
        with pytest.raises(InvalidArgument):
            new_claim_id(ms)


def test_a_claim_id_takes_exactly_ten_random_bytes() -> None:
    for rand in (b"", b"\x00" * 9, b"\x00" * 11):
        with pytest.raises(InvalidArgument):
            new_claim_id(0, rand)
