"""Naming a consent's grantee by ID card number (ADR 0017): the payer knows a relative's
number, not their PersonRef; the node derives the ref as enrolment does (the city
secret, the card's check digit validated), and the consent is then the one a ref-named
grant would be. On SQLite and PostgreSQL."""

from __future__ import annotations

import itertools

import pytest

from node.domain.consent import ConsentKind
from node.domain.identity import id_card_with_check_digit, person_ref
from node.domain.orders import PersonKind
from node.usecases import consent as consent_uc
from node.usecases import people
from node.usecases.app import NodeApp
from node.usecases.consent import ConsentView
from node.usecases.views import Actor
from runtime.errors import InvalidArgument
from tests.conftest import CITY_SECRET
from tests.helpers import enrol, id_card, snapshot

GULOU = "320106"  # another district: the mother is enrolled there, not here


def _grant(app: NodeApp, payer: int, *, grantee_id: int = 0, ref: str = "",
           number: str = "", max_minutes: int = 60) -> ConsentView:
    """The payer's standing consent, granted by the payer, naming the grantee as told."""
    return app.execute(consent_uc.grant_consent, payer, grantee_id, ref, ConsentKind.STANDING,
                       max_minutes, 0, None, 0, Actor(person_id=payer),
                       grantee_id_number=number)


def _covers(app: NodeApp, payer: int, ref: str, minutes: int) -> tuple[int, str]:
    """What the payer's home decides for a redemption for ``ref`` (the check a claim from
    another district meets in ``claims._decide_redemption``): the consent that pays, or
    why none does."""
    found = app.query(lambda tx: consent_uc.cover(tx, tx.repo.people.get(payer), ref,
                                                  minutes))
    return (0 if found.consent is None else found.consent.id), found.missing


def _with_check_x() -> str:
    """A valid ID card number whose check character is X."""
    for serial in itertools.count(100):
        number = id_card_with_check_digit(f"{GULOU}19380101{serial:03d}")
        if number.endswith("X"):
            return number
    raise AssertionError("unreachable")


def test_a_grantee_named_by_id_number_has_the_ref_enrolment_gives(node_app: NodeApp) -> None:
    app = node_app
    daughter = enrol(app, "王芳", 1965)
    number = id_card(1938)
    granted = _grant(app, daughter.id, number=number)
    # not enrolled here (yet): named by the ref derived with the city secret
    assert granted.grantee_id == 0 and granted.in_force
    assert granted.consent.grantee_ref == person_ref(CITY_SECRET, number)
    assert granted.consent.granted_by == f"person:{daughter.id}"
    mother = app.execute(people.enrol_person, PersonKind.INDIVIDUAL, "李秀英", number,
                         "13800000000", False, 0)
    assert mother.person_ref == granted.consent.grantee_ref
    (listed,) = app.query(consent_uc.list_consents, daughter.id, 0, 10)
    assert (listed.consent.id, listed.grantee_id) == (granted.consent.id, mother.id)
    # named by id here, the same person: the same ref
    by_id = _grant(app, daughter.id, grantee_id=mother.id)
    assert by_id.consent.grantee_ref == granted.consent.grantee_ref


def test_a_consent_by_id_number_covers_redemptions_as_a_ref_named_one(
        node_app: NodeApp) -> None:
    """Two sisters keep their hours here; their mother is enrolled in 鼓楼区 only. One
    names her by ID card number, the other by the PersonRef 鼓楼区 shows: both consents
    are for the same person and answer a redemption for her alike."""
    app = node_app
    by_number, by_ref = enrol(app, "王芳", 1965).id, enrol(app, "王丽", 1968).id
    number = id_card(1938, GULOU)
    ref = person_ref(CITY_SECRET, number)  # what 鼓楼区's enrolment gave her
    numbered = _grant(app, by_number, number=number)
    named = _grant(app, by_ref, ref=ref)
    assert numbered.consent.grantee_ref == named.consent.grantee_ref == ref
    assert numbered.grantee_id == named.grantee_id == 0
    for payer, consent_id in ((by_number, numbered.consent.id), (by_ref, named.consent.id)):
        assert _covers(app, payer, ref, 60) == (consent_id, "")
        assert _covers(app, payer, ref, 61) == (0, "per_order")
        assert _covers(app, payer, person_ref(CITY_SECRET, id_card(1940, GULOU)), 30) \
            == (0, "none")
    app.execute(consent_uc.revoke_consent, numbered.consent.id, Actor(person_id=by_number))
    assert _covers(app, by_number, ref, 30) == (0, "revoked")


def test_the_number_is_normalised_as_enrolment_does(node_app: NodeApp) -> None:
    """Spaces removed, a lower-case x read as X: the ref of the number as enrolled."""
    app = node_app
    daughter = enrol(app, "王芳", 1965).id
    number = _with_check_x()
    typed = f" {number[:6]} {number[6:14]} {number[14:-1]}x "
    granted = _grant(app, daughter, number=typed)
    assert granted.consent.grantee_ref == people.city_ref(app.node, PersonKind.INDIVIDUAL,
                                                          number)
    mother = app.execute(people.enrol_person, PersonKind.INDIVIDUAL, "李秀英", number.lower(),
                         "", False, 0)
    assert mother.person_ref == granted.consent.grantee_ref


def test_a_bad_check_digit_is_refused_as_enrolment_refuses_it(node_app: NodeApp) -> None:
    app = node_app
    daughter = enrol(app, "王芳", 1965).id
    good = id_card(1938, GULOU)
    bad = good[:-1] + ("1" if good[-1] != "1" else "2")
    before = snapshot(app)
    with pytest.raises(InvalidArgument) as refused:
        _grant(app, daughter, number=bad)
    with pytest.raises(InvalidArgument) as at_enrolment:
        app.execute(people.enrol_person, PersonKind.INDIVIDUAL, "李秀英", bad, "", False, 0)
    assert refused.value.reason == at_enrolment.value.reason == "MALFORMED_ID_NUMBER"
    assert refused.value.message == at_enrolment.value.message
    assert "check digit" in refused.value.message
    assert snapshot(app) == before


@pytest.mark.parametrize("given", [
    ("grantee_id", "ref"), ("grantee_id", "number"), ("ref", "number"),
    ("grantee_id", "ref", "number"), ()])
def test_exactly_one_way_of_naming_the_grantee(node_app: NodeApp,
                                               given: tuple[str, ...]) -> None:
    """Two or three ways at once (even naming the same person), or none: refused."""
    app = node_app
    daughter = enrol(app, "王芳", 1965).id
    mother = enrol(app, "李秀英", 1938)
    number = app.query(lambda tx: tx.repo.people.get(mother.id).id_number)
    before = snapshot(app)
    with pytest.raises(InvalidArgument) as e:
        _grant(app, daughter, grantee_id=mother.id if "grantee_id" in given else 0,
               ref=mother.person_ref if "ref" in given else "",
               number=number if "number" in given else "")
    assert e.value.reason == "GRANTEE_REQUIRED"
    assert e.value.message.startswith("请指定被授权人") and "exactly one" in e.value.message
    assert "ID card number" in e.value.message
    assert snapshot(app) == before


def test_the_payers_own_number_is_refused(node_app: NodeApp) -> None:
    app = node_app
    number = id_card(1965)
    daughter = app.execute(people.enrol_person, PersonKind.INDIVIDUAL, "王芳", number,
                           "13800000000", False, 0).id
    before = snapshot(app)
    with pytest.raises(InvalidArgument) as e:
        _grant(app, daughter, number=f" {number} ")
    assert e.value.reason == "CONSENT_TO_SELF"
    assert snapshot(app) == before
