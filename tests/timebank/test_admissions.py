"""The city's acts as a reader verifies them (timebank.admissions): only what the city key
signed counts, and a district's envelope verifies only under a key the city certified for
that district and never revoked. Real Ed25519 keys throughout."""

from __future__ import annotations

import pytest
from nacl.signing import SigningKey

from timebank import admissions as adm
from timebank.admissions import AdmissionsError, CityAdmissions, verify_act
from timebank.envelope import CITY, CLEARINGHOUSE, EnvelopeError, Reason, Signed, sign
from timebank.keys import key_id, public_key
from timebank.v1 import clearing_pb2 as pb

CITY_KEY = SigningKey(b"admissions-test-city-root".ljust(32, b"."))
OTHER_CITY = SigningKey(b"admissions-test-another-city".ljust(32, b"."))
JN, GL = "320115", "320106"
JN_OLD = SigningKey(b"admissions-test-jn-old".ljust(32, b"."))
JN_NEW = SigningKey(b"admissions-test-jn-new".ljust(32, b"."))
GL_KEY = SigningKey(b"admissions-test-gl".ljust(32, b"."))
STRANGER = SigningKey(b"admissions-test-stranger".ljust(32, b"."))


def wire(signed: Signed) -> bytes:
    return pb.Envelope(kind=signed.kind, body=signed.body, signer=signed.signer,
                       key_id=signed.key_id, signature=signed.signature).SerializeToString()


def certificate(node_id: str, key: SigningKey, serial: int, *, district: str = "江宁区",
                by: SigningKey = CITY_KEY, signer: str = CITY) -> bytes:
    body = pb.AdmissionCertificate(node_id=node_id, district=district,
                                   public_key=public_key(key), serial=serial)
    return wire(sign(adm.ADMISSION, body.SerializeToString(), signer, by))


def revocation(node_id: str, key: SigningKey) -> bytes:
    body = pb.Revocation(node_id=node_id, key_id=key_id(public_key(key)), reason="lost")
    return wire(sign(adm.REVOCATION, body.SerializeToString(), CITY, CITY_KEY))


def roster(epoch: int) -> bytes:
    body = pb.Roster(epoch=epoch, members=[pb.RosterMember(node_id=JN, district="江宁区",
                                                           public_key=public_key(JN_NEW))])
    return wire(sign(adm.ROSTER, body.SerializeToString(), CITY, CITY_KEY))


def view(*envelopes: bytes) -> CityAdmissions:
    return CityAdmissions(verify_act(e, public_key(CITY_KEY)) for e in envelopes)


def said_by(node_id: str, key: SigningKey, text: bytes = b"a decision") -> Signed:
    return sign("claim.decide", text, node_id, key)


def refused(city: CityAdmissions, envelope: Signed) -> Reason:
    with pytest.raises(EnvelopeError) as e:
        city.verify(envelope)
    return e.value.reason


def test_every_kind_of_city_act_is_kept_verbatim() -> None:
    acts = [certificate(JN, JN_OLD, 1), revocation(JN, JN_OLD), roster(1),
            wire(sign(adm.POLICY, pb.CityPolicy(serial=1, policy_toml="x = 1")
                      .SerializeToString(), CITY, CITY_KEY))]
    checked = [verify_act(a, public_key(CITY_KEY)) for a in acts]
    assert [(a.kind, a.node_id) for a in checked] == [
        ("admission", JN), ("revocation", JN), ("roster", ""), ("policy", "")]
    assert [a.envelope for a in checked] == acts
    city = CityAdmissions(checked + checked)  # each once
    assert len(city) == 4
    assert city.envelopes(adm.ROSTER) == [acts[2]]
    assert city.envelopes(adm.POLICY) == [acts[3]]


@pytest.mark.parametrize("forged", [
    "another city's key", "a node's signature", "the clearinghouse's", "a flipped bit",
    "not a city kind", "not an envelope", "a 31-byte key", "a bad revocation key id"])
def test_what_the_city_did_not_sign_is_refused(forged: str) -> None:
    good = certificate(JN, JN_OLD, 1)
    envelope = {
        "another city's key": certificate(JN, JN_OLD, 1, by=OTHER_CITY),
        "a node's signature": certificate(JN, JN_OLD, 1, by=JN_OLD, signer=JN),
        "the clearinghouse's": certificate(JN, JN_OLD, 1, by=STRANGER, signer=CLEARINGHOUSE),
        "a flipped bit": good[:-1] + bytes([good[-1] ^ 1]),
        "not a city kind": wire(sign("receipt", b"", CITY, CITY_KEY)),
        "not an envelope": b"\xff\xff\xff",
        "a 31-byte key": wire(sign(adm.ADMISSION, pb.AdmissionCertificate(
            node_id=JN, district="江宁区", public_key=b"k" * 31, serial=1)
            .SerializeToString(), CITY, CITY_KEY)),
        "a bad revocation key id": wire(sign(adm.REVOCATION, pb.Revocation(
            node_id=JN, key_id="XYZ").SerializeToString(), CITY, CITY_KEY)),
    }[forged]
    with pytest.raises(AdmissionsError):
        verify_act(envelope, public_key(CITY_KEY))
    verify_act(good, public_key(CITY_KEY))  # the real one passes


def test_a_district_envelope_verifies_only_under_a_certified_key() -> None:
    city = view(certificate(JN, JN_OLD, 1), certificate(GL, GL_KEY, 1, district="鼓楼区"))
    assert city.verify(said_by(JN, JN_OLD)) == b"a decision"
    assert refused(city, said_by(JN, STRANGER)) is Reason.UNKNOWN_KEY  # never certified
    assert refused(city, said_by("320113", STRANGER)) is Reason.UNKNOWN_SIGNER
    assert refused(city, said_by(JN, GL_KEY)) is Reason.UNKNOWN_KEY  # another district's
    genuine = said_by(JN, JN_OLD)
    forged = Signed(genuine.kind, b"another decision", JN, genuine.key_id, genuine.signature)
    assert refused(city, forged) is Reason.BAD_SIGNATURE
    by_ch = sign("claim.decide", b"x", CLEARINGHOUSE, STRANGER)
    assert refused(city, by_ch) is Reason.MALFORMED  # only districts are checked here
    assert city.knows_key(JN, key_id(public_key(JN_OLD)))
    assert not city.knows_key(JN, key_id(public_key(STRANGER)))


def test_a_rotated_key_still_verifies_what_it_signed_and_a_revoked_one_nothing() -> None:
    old, new = key_id(public_key(JN_OLD)), key_id(public_key(JN_NEW))
    rotated = view(certificate(JN, JN_OLD, 1), certificate(JN, JN_NEW, 2))
    current = rotated.admitted(JN)
    assert current is not None and (current.key_id, current.serial) == (new, 2)
    assert rotated.verify(said_by(JN, JN_NEW)) == b"a decision"
    assert rotated.verify(said_by(JN, JN_OLD)) == b"a decision"  # may still be on its way
    revoked = rotated.with_acts([verify_act(revocation(JN, JN_OLD), public_key(CITY_KEY))])
    assert revoked.is_revoked(JN, old) and revoked.knows_key(JN, old)
    assert refused(revoked, said_by(JN, JN_OLD)) is Reason.REVOKED_KEY
    assert revoked.verify(said_by(JN, JN_NEW)) == b"a decision"
    assert revoked.admitted(JN) == current  # the current key is not the revoked one
    # the current key revoked: the district is not admitted, and signs nothing
    cut_off = revoked.with_acts([verify_act(revocation(JN, JN_NEW), public_key(CITY_KEY))])
    assert cut_off.admitted(JN) is None
    assert refused(cut_off, said_by(JN, JN_NEW)) is Reason.REVOKED_KEY
    assert [c.serial for c in cut_off.certificates(JN)] == [1, 2]


def test_a_district_with_no_certificate_is_not_admitted() -> None:
    city = view(certificate(JN, JN_OLD, 1))
    assert city.admitted(GL) is None and city.certificates(GL) == []
    assert CityAdmissions().admitted(JN) is None


def test_a_view_is_bounded() -> None:
    one = verify_act(certificate(JN, JN_OLD, 1), public_key(CITY_KEY))
    many = [adm.CityAct(one.kind, one.node_id, one.envelope, n.to_bytes(32, "big"))
            for n in range(adm.MAX_ACTS + 1)]
    with pytest.raises(AdmissionsError, match="more than"):
        CityAdmissions(many)
