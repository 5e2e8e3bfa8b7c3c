"""Consent across districts (ADR 0017): 鼓楼区 serves a mother paid with her daughter's
hours kept in 江宁区, through a real clearinghouse server and each node's real link.
The daughter's home decides: without her consent it refuses the claim (NO_CONSENT) and
鼓楼区 cancels the order saying why; with it, it holds the hours and records the
consent with the claim and the ledger entry."""

from __future__ import annotations

from datetime import timedelta

from node.domain.claims import ClaimState, Reason
from node.domain.consent import ConsentKind, ConsentState
from node.domain.orders import OrderState
from node.usecases import claims, consent, ledger, orders, people
from node.usecases.views import Actor
from tests.federation.conftest import City
from tests.federation.support import (
    GL,
    JN,
    QX,
    Family,
    assert_consistent,
    assert_nothing_held,
    family,
    order_for_mother,
    serve_and_record,
)


def _grant(city: City, f: Family, *, once: bool = False, minutes: int = 0,
           until: timedelta | None = None, by_number: bool = False) -> int:
    """The daughter consents at home, naming her mother by PersonRef (``by_number``: by
    her ID card number, from which 江宁区 derives the ref)."""
    jn = city[JN].app
    ref = city[GL].app.query(people.get_person, f.mother).person_ref
    number = city[GL].app.query(lambda tx: tx.repo.people.get(f.mother).id_number)
    kind = ConsentKind.ONCE if once else ConsentKind.STANDING
    end = None if until is None else city.clock.now() + until
    return jn.execute(consent.grant_consent, f.daughter, 0, "" if by_number else ref, kind,
                      minutes, 0, end, 0, Actor(person_id=f.daughter),
                      grantee_id_number=number if by_number else "").consent.id


def _refused(city: City, f: Family, minutes: int, says: str, *, held: int = 0) -> None:
    order = order_for_mother(city, f, minutes)
    city.settle()
    claim = city[GL].app.query(claims.get_claim, order.record.claim_id or "")
    assert (claim.state, claim.reason) == (ClaimState.REJECTED, Reason.NO_CONSENT.value)
    home = city[JN].app.query(claims.get_claim, claim.claim_id)
    assert home.state is ClaimState.REJECTED and says in home.detail
    cancelled = city[GL].app.query(orders.get_order, order.record.id).record
    assert cancelled.state == OrderState.CANCELLED
    # the operator reads why: Chinese first, then English, the code; and no names
    reason = cancelled.cancel_reason
    assert reason.startswith("付款人未同意") and "has not consented" in reason
    assert "[NO_CONSENT]" in reason and "王芳" not in reason and "李秀英" not in reason
    if not held:
        assert_nothing_held(city)
    assert city[JN].app.query(ledger.balance, f.daughter).held == held
    assert city[JN].app.query(lambda tx: tx.repo.consents.use_of(claim_id=claim.claim_id)) \
        is None


def test_the_home_refuses_without_consent_and_records_it_with(city: City) -> None:
    f = family(city, consented=False)
    _refused(city, f, 60, "has not consented")
    consent_id = _grant(city, f)
    order = order_for_mother(city, f)
    city.settle()
    claim_id = order.record.claim_id or ""
    assert city[JN].app.query(claims.get_claim, claim_id).state is ClaimState.ACCEPTED
    use = city[JN].app.query(lambda tx: tx.repo.consents.use_of(claim_id=claim_id))
    assert use is not None and (use.consent_id, use.minutes) == (consent_id, 60)
    serve_and_record(city, GL, order.record.id, f.mother)
    city.settle()
    assert city[GL].app.query(orders.get_order, order.record.id).record.charged_minutes == 60
    memos = [e.entry.memo for e, _ in city[JN].app.query(ledger.history, f.daughter, 0, 100)
             .entries]
    assert f"claim {claim_id}: spent in {GL} (consent {consent_id})" in memos
    assert assert_consistent(city) == {JN: -60, GL: 60, QX: 0}


def test_a_consent_naming_her_by_id_number_pays_as_one_naming_her_ref(city: City) -> None:
    f = family(city, consented=False)
    consent_id = _grant(city, f, by_number=True, minutes=60)
    _refused(city, f, 90, "minutes per order")
    order = order_for_mother(city, f)
    city.settle()
    claim_id = order.record.claim_id or ""
    assert city[JN].app.query(claims.get_claim, claim_id).state is ClaimState.ACCEPTED
    use = city[JN].app.query(lambda tx: tx.repo.consents.use_of(claim_id=claim_id))
    assert use is not None and (use.consent_id, use.minutes) == (consent_id, 60)


def test_revoked_consent_refuses_new_claims_and_keeps_holds(city: City) -> None:
    f = family(city, consented=False)
    consent_id = _grant(city, f)
    held = order_for_mother(city, f, 30)
    city.settle()
    city[JN].app.execute(consent.revoke_consent, consent_id, Actor(person_id=f.daughter))
    assert city[GL].app.query(orders.get_order, held.record.id).record.held_minutes == 30
    assert city[JN].app.query(ledger.balance, f.daughter).held == 30
    _refused_but_held = order_for_mother(city, f, 30)
    city.settle()
    claim = city[GL].app.query(claims.get_claim, _refused_but_held.record.claim_id or "")
    assert claim.reason == Reason.NO_CONSENT.value
    assert "revoked" in city[JN].app.query(claims.get_claim, claim.claim_id).detail


def test_bounds_and_a_one_time_confirmation_across_districts(city: City) -> None:
    f = family(city, consented=False)
    _grant(city, f, minutes=30, until=timedelta(days=1))
    _refused(city, f, 45, "minutes per order")
    city.clock.advance(timedelta(days=2))
    _refused(city, f, 15, "expired")
    once = _grant(city, f, once=True, minutes=60)
    paid = order_for_mother(city, f, 45)
    city.settle()
    assert city[JN].app.query(claims.get_claim, paid.record.claim_id or "").state \
        is ClaimState.ACCEPTED
    used = city[JN].app.query(lambda tx: tx.repo.consents.get(once))
    assert used.state is ConsentState.USED and used.used_minutes == 45
    _refused(city, f, 15, "used already", held=45)
