"""The directory: PersonRef → home node, registered by the home node itself."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest

from clearinghouse.storage.repo import DirectoryRecord
from clearinghouse.usecases import admission, directory
from clearinghouse.usecases.app import ClearinghouseApp
from clearinghouse.usecases.clock import ManualClock
from runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from tests.clearinghouse.conftest import (
    CITY_KEY,
    CITY_PUBLIC,
    certificate,
    node_key,
    refused,
    registration,
    revocation,
    snapshot,
)
from timebank.envelope import CITY, Signed, sign
from timebank.keys import key_id, public_key
from timebank.v1 import clearing_pb2

JN, GL, QX = "320115", "320106", "320113"
JN_KEY, GL_KEY, QX_KEY = node_key(JN), node_key(GL), node_key(QX)
ALICE = hashlib.sha256(b"alice").hexdigest()
BOB = hashlib.sha256(b"bob").hexdigest()


@pytest.fixture
def city(ch_app: ClearinghouseApp) -> ClearinghouseApp:
    """江宁区 and 鼓楼区 admitted; 栖霞区 not."""
    for node, district, key in ((JN, "江宁区", JN_KEY), (GL, "鼓楼区", GL_KEY)):
        ch_app.execute(admission.admit, certificate(node, district, key), CITY_PUBLIC)
    return ch_app


def register(app: ClearinghouseApp, envelope: Signed) -> DirectoryRecord:
    ring = app.query(admission.key_ring)
    return app.execute(directory.register, envelope, ring)


def refused_registration(app: ClearinghouseApp, envelope: Signed) -> Exception:
    ring = app.query(admission.key_ring)
    return refused(app, directory.register, envelope, ring)


def test_register_then_lookup(city: ClearinghouseApp, ch_clock: ManualClock) -> None:
    envelope = registration(ALICE, JN, JN, JN_KEY)
    record = register(city, envelope)
    assert (record.person_ref, record.home_node_id) == (ALICE, JN)
    assert record.registered_at == ch_clock.now()
    assert clearing_pb2.Envelope.FromString(record.registration).body == envelope.body
    assert city.query(directory.lookup, ALICE) == JN


def test_the_same_registration_again_changes_nothing(
        city: ClearinghouseApp, ch_clock: ManualClock) -> None:
    first = register(city, registration(ALICE, JN, JN, JN_KEY))
    before = snapshot(city)
    ch_clock.advance(timedelta(days=1))
    again = clearing_pb2.DirectoryRegistration(person_ref=ALICE, home_node_id=JN)
    again.at.FromSeconds(12345)  # a re-sent registration, stamped later
    resent = sign("directory.register", again.SerializeToString(), JN, JN_KEY)
    assert register(city, registration(ALICE, JN, JN, JN_KEY)) == first
    assert register(city, resent) == first
    assert snapshot(city) == before


def test_a_person_homed_elsewhere_is_refused(city: ClearinghouseApp) -> None:
    register(city, registration(ALICE, JN, JN, JN_KEY))
    error = refused_registration(city, registration(ALICE, GL, GL, GL_KEY))
    assert isinstance(error, FailedPrecondition) and error.reason == "HOMED_ELSEWHERE"
    assert city.query(directory.lookup, ALICE) == JN


def _bad_signature() -> Signed:
    good = registration(BOB, JN, JN, JN_KEY)
    return Signed(good.kind, good.body, JN, good.key_id,
                  registration(ALICE, JN, JN, JN_KEY).signature)


BAD = {
    "unadmitted signer": (registration(BOB, QX, QX, QX_KEY), PermissionDenied,
                          "UNKNOWN_SIGNER"),
    "unknown key of an admitted node": (registration(BOB, JN, JN, node_key(JN, 1)),
                                        PermissionDenied, "UNKNOWN_KEY"),
    "bad signature": (_bad_signature(), PermissionDenied, "BAD_SIGNATURE"),
    "a node signing for another node": (registration(BOB, GL, JN, JN_KEY),
                                        PermissionDenied, "NOT_YOUR_PERSON"),
    "the city signing": (registration(BOB, JN, CITY, CITY_KEY), PermissionDenied,
                         "UNKNOWN_SIGNER"),
    "wrong kind": (registration(BOB, JN, JN, JN_KEY, kind="claim.propose"),
                   InvalidArgument, "WRONG_KIND"),
    "malformed body": (sign("directory.register", b"\xff\xff", JN, JN_KEY),
                       InvalidArgument, "MALFORMED_BODY"),
    "malformed person ref": (registration("ALICE", JN, JN, JN_KEY), InvalidArgument,
                             "MALFORMED_PERSON_REF"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_registration_is_refused_and_changes_nothing(
        city: ClearinghouseApp, case: str) -> None:
    register(city, registration(ALICE, JN, JN, JN_KEY))
    envelope, status, reason = BAD[case]
    error = refused_registration(city, envelope)
    assert isinstance(error, status) and getattr(error, "reason", None) == reason, error


def test_a_revoked_key_cannot_register(city: ClearinghouseApp) -> None:
    stale_ring = city.query(admission.key_ring)  # built before the revocation
    city.execute(admission.revoke, revocation(JN, key_id(public_key(JN_KEY))), CITY_PUBLIC)
    envelope = registration(BOB, JN, JN, JN_KEY)
    error = refused_registration(city, envelope)
    assert isinstance(error, PermissionDenied) and error.reason == "REVOKED_KEY"
    # a ring built before the revocation does not let the key through either
    error = refused(city, directory.register, envelope, stale_ring)
    assert isinstance(error, PermissionDenied) and error.reason == "REVOKED_KEY"


def test_lookup_of_an_unknown_or_malformed_person(city: ClearinghouseApp) -> None:
    with pytest.raises(NotFound) as caught:
        city.query(directory.lookup, BOB)
    assert caught.value.reason == "UNKNOWN_PERSON"
    with pytest.raises(InvalidArgument):
        city.query(directory.lookup, "not-a-ref")
