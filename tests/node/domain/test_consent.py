"""The pure consent rules (ADR 0017): which consent pays for a redemption, or why none."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.domain.consent import (
    MAX_ACTIVE_CONSENTS,
    MAX_ONCE,
    MAX_STANDING,
    MISSING,
    Consent,
    ConsentKind,
    ConsentState,
    cover,
    revoked,
    terms,
    used,
)
from runtime.errors import FailedPrecondition, InvalidArgument, InvariantViolation
from timebank.claimkinds import MAX_REDEMPTION_MINUTES

T0 = datetime(2026, 12, 1, 9, tzinfo=UTC)
MOTHER, OTHER = "a" * 64, "b" * 64
PAYER = 5


def consent(cid: int = 1, *, kind: ConsentKind = ConsentKind.STANDING, per: int = 0,
            total: int = 0, used_: int = 0, days: int = 30, order: int | None = None,
            grantee: str = MOTHER, payer: int = PAYER,
            state: ConsentState = ConsentState.ACTIVE) -> Consent:
    return Consent(cid, payer, grantee, kind, state, per, total, used_, T0,
                   T0 + timedelta(days=days), "person:5", order,
                   T0 if state is ConsentState.REVOKED else None)


def test_no_consent_refuses_and_says_so() -> None:
    found = cover([], PAYER, MOTHER, 60, T0)
    assert not found.covered and found.missing == "none"
    assert "has not consented" in MISSING["none"][1]
    # another payer's consent, or one for another person, is no consent at all
    found = cover([consent(payer=6), consent(grantee=OTHER)], PAYER, MOTHER, 60, T0)
    assert found.missing == "none"


def test_standing_consent_within_its_bounds() -> None:
    c = consent(per=60, total=100, used_=50, days=2)
    assert cover([c], PAYER, MOTHER, 50, T0).consent == c
    assert cover([c], PAYER, MOTHER, 61, T0).missing == "per_order"
    assert cover([c], PAYER, MOTHER, 51, T0).missing == "total"
    assert cover([c], PAYER, MOTHER, 10, T0 + timedelta(days=2)).missing == "expired"
    assert cover([c], PAYER, MOTHER, 10, T0 - timedelta(seconds=1)).missing == "expired"
    gone = revoked(c, T0, "person:5")
    assert cover([gone], PAYER, MOTHER, 10, T0).missing == "revoked"
    with pytest.raises(FailedPrecondition):
        revoked(gone, T0, "person:5")


def test_a_one_time_confirmation_pays_once() -> None:
    once = consent(kind=ConsentKind.ONCE, per=60, days=30)
    assert cover([once], PAYER, MOTHER, 60, T0).consent == once
    after = used(once, 45)
    assert after.state is ConsentState.USED and after.used_minutes == 45
    assert cover([after], PAYER, MOTHER, 10, T0).missing == "used"
    with pytest.raises(InvariantViolation):
        used(after, 10)
    for_order = consent(2, kind=ConsentKind.ONCE, per=60, order=7)
    assert cover([for_order], PAYER, MOTHER, 60, T0, order_id=8).missing == "other_order"
    assert cover([for_order], PAYER, MOTHER, 60, T0).missing == "other_order"  # a claim
    assert cover([for_order], PAYER, MOTHER, 60, T0, order_id=7).consent == for_order


def test_which_consent_pays_first() -> None:
    """A confirmation for this order, then a standing consent, then a confirmation for
    the person: a standing consent never uses up a confirmation given for one time."""
    standing = consent(3)
    loose = consent(1, kind=ConsentKind.ONCE, per=60)
    bound = consent(2, kind=ConsentKind.ONCE, per=60, order=9)
    assert cover([loose, standing, bound], PAYER, MOTHER, 30, T0, 9).consent == bound
    assert cover([loose, standing, bound], PAYER, MOTHER, 30, T0, 8).consent == standing
    assert cover([loose, bound], PAYER, MOTHER, 30, T0, 8).consent == loose


@st.composite
def some_consent(draw: st.DrawFn) -> Consent:
    kind = draw(st.sampled_from(ConsentKind))
    gone = draw(st.booleans())
    return consent(draw(st.integers(1, 50)), kind=kind, per=draw(st.integers(1, 600)),
                   total=0 if kind is ConsentKind.ONCE else draw(st.integers(0, 600)),
                   days=draw(st.integers(1, 60)), grantee=draw(st.sampled_from([MOTHER, OTHER])),
                   payer=draw(st.sampled_from([PAYER, 6])),
                   state=ConsentState.REVOKED if gone else ConsentState.ACTIVE)


@given(st.lists(some_consent(), max_size=8), st.integers(1, 900), st.integers(0, 90 * 24))
def test_a_consent_that_pays_allows_exactly_this(made: list[Consent], minutes: int,
                                                 hours: int) -> None:
    at = T0 + timedelta(hours=hours)
    found = cover(made, PAYER, MOTHER, minutes, at)
    fits = [c for c in made if c.payer_id == PAYER and c.grantee_ref == MOTHER
            and c.state is ConsentState.ACTIVE and c.granted_at <= at < c.expires_at
            and minutes <= c.per_order
            and (not c.total_minutes or c.used_minutes + minutes <= c.total_minutes)]
    assert found.covered == bool(fits)
    if found.consent is not None:
        assert found.consent in fits and found.missing == ""
        assert used(found.consent, minutes).used_minutes == found.consent.used_minutes + minutes
    else:
        assert found.missing in MISSING


def test_terms_bound_every_consent() -> None:
    t = terms(ConsentKind.STANDING, 0, 0, None, None, T0, 0)
    assert t.expires_at == T0 + MAX_STANDING
    t = terms(ConsentKind.ONCE, 30, 0, None, 4, T0, 0)
    assert (t.expires_at, t.order_id) == (T0 + MAX_ONCE, 4)
    bad = [
        (ConsentKind.STANDING, MAX_REDEMPTION_MINUTES + 1, 0, None, None, "MINUTES_OUT_OF_RANGE"),
        (ConsentKind.STANDING, 0, -1, None, None, "MINUTES_OUT_OF_RANGE"),
        (ConsentKind.ONCE, 0, 0, None, None, "MINUTES_OUT_OF_RANGE"),
        (ConsentKind.ONCE, 30, 60, None, None, "MINUTES_OUT_OF_RANGE"),
        (ConsentKind.STANDING, 0, 0, None, 3, "ORDER_NEEDS_ONCE"),
        (ConsentKind.STANDING, 0, 0, T0, None, "CONSENT_ENDS_IN_PAST"),
        (ConsentKind.ONCE, 30, 0, T0 + MAX_ONCE + timedelta(seconds=1), None,
         "CONSENT_TOO_LONG"),
        (ConsentKind.STANDING, 0, 0, T0.replace(tzinfo=None), None, "INVALID_ARGUMENT"),
    ]
    for kind, per, total, until, order, reason in bad:
        with pytest.raises(InvalidArgument) as e:
            terms(kind, per, total, until, order, T0, 0)
        assert e.value.reason == reason
    with pytest.raises(FailedPrecondition) as f:
        terms(ConsentKind.STANDING, 0, 0, None, None, T0, MAX_ACTIVE_CONSENTS)
    assert f.value.reason == "TOO_MANY_CONSENTS"


def test_a_malformed_consent_is_a_bug() -> None:
    good = consent()
    for change in ({"grantee_ref": "A" * 64}, {"kind": ConsentKind.ONCE},
                   {"order_id": 3}, {"used_minutes": 10, "total_minutes": 5},
                   {"state": ConsentState.USED}, {"state": ConsentState.REVOKED},
                   {"expires_at": T0}, {"granted_by": ""}):
        with pytest.raises(InvariantViolation):
            replace(good, **change)  # type: ignore[arg-type]
