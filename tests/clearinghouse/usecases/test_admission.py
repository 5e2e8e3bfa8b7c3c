"""Admission, rotation and revocation of node keys, and the key ring built from them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from nacl.signing import SigningKey

from clearinghouse.storage.repo import AdmissionRecord
from clearinghouse.usecases import admission, log, wire
from clearinghouse.usecases.app import ClearinghouseApp
from clearinghouse.usecases.clock import ManualClock
from runtime.errors import (
    AlreadyExists,
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
    revocation,
    snapshot,
)
from timebank.admissions import CityAdmissions, verify_act
from timebank.envelope import CITY, EnvelopeError, Reason, Signed, sign
from timebank.keys import key_id, public_key
from timebank.v1 import clearing_pb2

JN, GL = "320115", "320106"
JN_KEY, GL_KEY = node_key(JN), node_key(GL)


def admit(app: ClearinghouseApp, cert: Signed) -> AdmissionRecord:
    return app.execute(admission.admit, cert, CITY_PUBLIC)


def ring_refuses(app: ClearinghouseApp, envelope: Signed) -> Reason:
    ring = app.query(admission.key_ring)
    with pytest.raises(EnvelopeError) as caught:
        ring.verify(envelope)
    return caught.value.reason


def hello(signer: str, key: SigningKey) -> Signed:
    return sign("directory.register", b"hello", signer, key)


def test_admit_stores_the_certificate_as_received_and_trusts_the_key(
        ch_app: ClearinghouseApp, ch_clock: ManualClock) -> None:
    cert = certificate(JN, "江宁区", JN_KEY)
    record = admit(ch_app, cert)
    assert (record.node_id, record.district, record.serial) == (JN, "江宁区", 1)
    assert record.key_id == key_id(public_key(JN_KEY)) and not record.revoked
    assert record.admitted_at == ch_clock.now()
    stored = ch_app.query(admission.admissions)
    assert stored == [record]
    assert clearing_pb2.Envelope.FromString(stored[0].certificate).body == cert.body
    assert ch_app.query(lambda tx: tx.repo.position(JN)) == (0, 0)
    ring = ch_app.query(admission.key_ring)
    assert ring.verify(hello(JN, JN_KEY)) == b"hello"


def test_the_same_certificate_again_changes_nothing(
        ch_app: ClearinghouseApp, ch_clock: ManualClock) -> None:
    cert = certificate(JN, "江宁区", JN_KEY)
    first = admit(ch_app, cert)
    before = snapshot(ch_app)
    ch_clock.advance(timedelta(hours=1))
    assert admit(ch_app, cert) == first
    assert snapshot(ch_app) == before


def _forged_signature() -> Signed:
    good = certificate(JN, "江宁区", JN_KEY)
    other = certificate(JN, "江宁区", JN_KEY, serial=7)
    return Signed(good.kind, good.body, good.signer, good.key_id, other.signature)


def _wrong_kind() -> Signed:
    body = clearing_pb2.AdmissionCertificate(node_id=JN, district="江宁区",
                                             public_key=public_key(JN_KEY), serial=1)
    return sign("revocation", body.SerializeToString(), CITY, CITY_KEY)


BAD = {
    "bad city signature": (_forged_signature(), PermissionDenied, "BAD_SIGNATURE"),
    "key id mismatch (not the city key)": (
        certificate(JN, "江宁区", JN_KEY, signer_key=node_key("999999")),
        PermissionDenied, "WRONG_KEY"),
    "signed by a node, not the city": (
        sign("admission", b"", GL, CITY_KEY), PermissionDenied, "NOT_CITY_SIGNED"),
    "wrong kind": (_wrong_kind(), InvalidArgument, "WRONG_KIND"),
    "malformed body": (sign("admission", b"\xff\xff\xff", CITY, CITY_KEY),
                       InvalidArgument, "MALFORMED_BODY"),
    "five-digit node id": (certificate("32011", "江宁区", JN_KEY),
                           InvalidArgument, "MALFORMED_NODE_ID"),
    "empty district": (certificate(JN, "", JN_KEY), InvalidArgument, "MALFORMED_DISTRICT"),
    "31-byte key": (certificate(JN, "江宁区", public_key(JN_KEY)[:31]),
                    InvalidArgument, "MALFORMED_PUBLIC_KEY"),
    "serial 0": (certificate(JN, "江宁区", JN_KEY, serial=0),
                 InvalidArgument, "MALFORMED_SERIAL"),
    "serial 2**63": (certificate(JN, "江宁区", JN_KEY, serial=2**63),
                     InvalidArgument, "MALFORMED_SERIAL"),
    "serial 2**64 - 1": (certificate(JN, "江宁区", JN_KEY, serial=2**64 - 1),
                         InvalidArgument, "MALFORMED_SERIAL"),
    "another node's key": (certificate(JN, "江宁区", GL_KEY), AlreadyExists, "KEY_IN_USE"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_certificate_is_refused_and_changes_nothing(
        ch_app: ClearinghouseApp, case: str) -> None:
    admit(ch_app, certificate(GL, "鼓楼区", GL_KEY))
    envelope, status, reason = BAD[case]
    error = refused(ch_app, admission.admit, envelope, CITY_PUBLIC)
    assert isinstance(error, status) and error.reason == reason, error


def test_a_certificate_not_valid_yet_is_refused(
        ch_app: ClearinghouseApp, ch_clock: ManualClock) -> None:
    cert = certificate(JN, "江宁区", JN_KEY, not_before=ch_clock.now() + timedelta(minutes=1))
    error = refused(ch_app, admission.admit, cert, CITY_PUBLIC)
    assert isinstance(error, FailedPrecondition) and error.reason == "NOT_YET_VALID"
    ch_clock.advance(timedelta(minutes=1))
    assert admit(ch_app, cert).node_id == JN


@pytest.mark.parametrize("serial", [1, 2])
def test_another_certificate_needs_a_higher_serial(ch_app: ClearinghouseApp, serial: int) -> None:
    admit(ch_app, certificate(JN, "江宁区", JN_KEY, serial=2))
    other = certificate(JN, "江宁区 (new name)", node_key(JN, 1), serial=serial)
    error = refused(ch_app, admission.admit, other, CITY_PUBLIC)
    assert isinstance(error, AlreadyExists) and error.reason == "STALE_SERIAL"


def test_rotation_with_a_higher_serial_revokes_the_old_key(ch_app: ClearinghouseApp) -> None:
    old_cert = certificate(JN, "江宁区", JN_KEY)
    admit(ch_app, old_cert)
    new_key = node_key(JN, 1)
    record = admit(ch_app, certificate(JN, "江宁区", new_key, serial=2))
    assert (record.serial, record.key_id) == (2, key_id(public_key(new_key)))
    assert ring_refuses(ch_app, hello(JN, JN_KEY)) is Reason.REVOKED_KEY
    assert ch_app.query(admission.key_ring).verify(hello(JN, new_key)) == b"hello"
    retired = ch_app.query(lambda tx: tx.repo.retired_keys(JN))
    assert [r.key_id for r in retired] == [key_id(public_key(JN_KEY))]
    assert retired[0].revocation is None
    # the old certificate, or the old key under a higher serial, can never come back
    error = refused(ch_app, admission.admit, old_cert, CITY_PUBLIC)
    assert error.reason == "STALE_SERIAL"
    error = refused(ch_app, admission.admit, certificate(JN, "江宁区", JN_KEY, serial=3),
                    CITY_PUBLIC)
    assert isinstance(error, FailedPrecondition) and error.reason == "KEY_REVOKED"


def test_a_higher_serial_for_the_same_key_updates_the_admission(
        ch_app: ClearinghouseApp) -> None:
    admit(ch_app, certificate(JN, "江宁区", JN_KEY))
    record = admit(ch_app, certificate(JN, "江宁新区", JN_KEY, serial=2))
    assert (record.district, record.serial) == ("江宁新区", 2)
    assert ch_app.query(lambda tx: tx.repo.retired_keys()) == []
    assert ch_app.query(admission.key_ring).verify(hello(JN, JN_KEY)) == b"hello"


def test_revocation_stops_the_key_for_ever(ch_app: ClearinghouseApp) -> None:
    admit(ch_app, certificate(JN, "江宁区", JN_KEY))
    admit(ch_app, certificate(GL, "鼓楼区", GL_KEY))
    kid = key_id(public_key(JN_KEY))
    act = revocation(JN, kid)
    ch_app.execute(admission.revoke, act, CITY_PUBLIC)
    assert ring_refuses(ch_app, hello(JN, JN_KEY)) is Reason.REVOKED_KEY
    assert ch_app.query(admission.key_ring).verify(hello(GL, GL_KEY)) == b"hello"
    [_gl, jn] = ch_app.query(admission.admissions)
    assert jn.revoked and jn.revocation is not None

    before = snapshot(ch_app)
    ch_app.execute(admission.revoke, act, CITY_PUBLIC)  # the same act again: nothing
    assert snapshot(ch_app) == before
    error = refused(ch_app, admission.revoke, revocation(JN, kid, "another reason"),
                    CITY_PUBLIC)
    assert isinstance(error, AlreadyExists) and error.reason == "ALREADY_REVOKED"
    error = refused(ch_app, admission.admit, certificate(JN, "江宁区", JN_KEY, serial=2),
                    CITY_PUBLIC)
    assert error.reason == "KEY_REVOKED"

    # a new key under a higher serial readmits the node; the revocation stays on record
    new_key = node_key(JN, 1)
    admit(ch_app, certificate(JN, "江宁区", new_key, serial=2))
    assert ch_app.query(admission.key_ring).verify(hello(JN, new_key)) == b"hello"
    assert ring_refuses(ch_app, hello(JN, JN_KEY)) is Reason.REVOKED_KEY
    [retired] = ch_app.query(lambda tx: tx.repo.retired_keys(JN))
    assert retired.revocation == jn.revocation and retired.revoked_at == jn.revoked_at


def test_a_rotated_key_can_still_be_revoked_on_record(ch_app: ClearinghouseApp) -> None:
    admit(ch_app, certificate(JN, "江宁区", JN_KEY))
    admit(ch_app, certificate(JN, "江宁区", node_key(JN, 1), serial=2))
    act = revocation(JN, key_id(public_key(JN_KEY)))
    ch_app.execute(admission.revoke, act, CITY_PUBLIC)
    [retired] = ch_app.query(lambda tx: tx.repo.retired_keys(JN))
    assert retired.revocation is not None
    assert ch_app.query(admission.key_ring).verify(hello(JN, node_key(JN, 1))) == b"hello"


def test_bad_revocations_are_refused_and_change_nothing(ch_app: ClearinghouseApp) -> None:
    admit(ch_app, certificate(JN, "江宁区", JN_KEY))
    kid = key_id(public_key(JN_KEY))
    forged = revocation(JN, kid, signer_key=node_key(JN))
    cases = [
        (forged, PermissionDenied, "WRONG_KEY"),
        (Signed("revocation", b"x" + revocation(JN, kid).body, CITY, key_id(CITY_PUBLIC),
                revocation(JN, kid).signature), PermissionDenied, "BAD_SIGNATURE"),
        (certificate(JN, "江宁区", JN_KEY), InvalidArgument, "WRONG_KIND"),
        (revocation(GL, kid), NotFound, "UNKNOWN_NODE"),
        (revocation(JN, key_id(public_key(GL_KEY))), NotFound, "UNKNOWN_KEY"),
        (revocation(JN, kid, "x" * 201), InvalidArgument, "MALFORMED_REASON"),
    ]
    for envelope, status, reason in cases:
        error = refused(ch_app, admission.revoke, envelope, CITY_PUBLIC)
        assert isinstance(error, status) and error.reason == reason, (reason, error)
    assert ch_app.query(admission.key_ring).verify(hello(JN, JN_KEY)) == b"hello"


def test_the_key_ring_refuses_unknown_signers_and_keys(ch_app: ClearinghouseApp) -> None:
    admit(ch_app, certificate(JN, "江宁区", JN_KEY))
    assert ring_refuses(ch_app, hello(GL, GL_KEY)) is Reason.UNKNOWN_SIGNER
    assert ring_refuses(ch_app, hello(JN, node_key(JN, 5))) is Reason.UNKNOWN_KEY
    assert ring_refuses(ch_app, hello(CITY, CITY_KEY)) is Reason.UNKNOWN_SIGNER
    tampered = hello(JN, JN_KEY)
    tampered = Signed(tampered.kind, b"hellO", JN, tampered.key_id, tampered.signature)
    assert ring_refuses(ch_app, tampered) is Reason.BAD_SIGNATURE


def test_the_admissions_served_carry_every_city_signed_revocation(
        ch_app: ClearinghouseApp) -> None:
    """What a node verifies for itself (GetAdmissions): every certificate and every
    revocation, of current and retired keys, as the city signed them."""
    admit(ch_app, certificate(JN, "江宁区", JN_KEY))
    admit(ch_app, certificate(GL, "鼓楼区", GL_KEY))
    rotated = certificate(JN, "江宁区", node_key(JN, 1), serial=2)
    admit(ch_app, rotated)
    retired_act = revocation(JN, key_id(public_key(JN_KEY)))  # the key rotated away
    current_act = revocation(GL, key_id(public_key(GL_KEY)))  # a current key
    ch_app.execute(admission.revoke, retired_act, CITY_PUBLIC)
    ch_app.execute(admission.revoke, current_act, CITY_PUBLIC)
    served = ch_app.query(log.admissions)
    found = [wire.from_bytes(r) for r in served.revocations]
    assert sorted(r.body for r in found) == sorted([retired_act.body, current_act.body])
    assert all(r.signer == CITY for r in found)
    assert len(served.certificates) == 3 and list(served.revoked_node_ids) == [GL]
    # each verifies under the city key alone, as a node checks it
    city = CityAdmissions(verify_act(e, CITY_PUBLIC)
                          for e in [*served.certificates, *served.revocations])
    assert city.admitted(GL) is None
    assert city.admitted(JN) is not None and city.admitted(JN).serial == 2  # type: ignore[union-attr]
    assert city.is_revoked(JN, key_id(public_key(JN_KEY)))
