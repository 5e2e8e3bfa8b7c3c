"""Signed envelopes: round trip, tampering, domain separation, limits, the key ring."""

from __future__ import annotations

import dataclasses
import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.reencode import reencoded
from timebank import keys
from timebank.envelope import (
    MAX_BODY_BYTES,
    EnvelopeError,
    KeyRing,
    Reason,
    Signed,
    decode,
    encode,
    identity,
    sign,
    signing_input,
    verify,
)
from timebank.v1 import clearing_pb2 as pb

KEY = keys.SigningKey(bytes(range(32)))
PUB = keys.public_key(KEY)
OTHER = keys.SigningKey(bytes(range(1, 33)))
OTHER_PUB = keys.public_key(OTHER)
BODY = "hello, 通存通兑".encode()
NODE = "320115"


def reason(e: pytest.ExceptionInfo[EnvelopeError]) -> Reason:
    return e.value.reason


def signed(body: bytes = BODY, kind: str = "claim.propose", signer: str = NODE) -> Signed:
    return sign(kind, body, signer, KEY)


# --- the format -------------------------------------------------------------------------


def test_known_answer_vector() -> None:
    """Ed25519 is deterministic: any change to signing_input or key handling shows here.

    Cross-checked once with an independent Ed25519 (OpenSSL through `cryptography`).
    """
    assert PUB.hex() == "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
    env = signed()
    assert env.key_id == "56475aa75463474c"
    assert env.signature.hex() == (
        "284531f0ac089e4610d83ebe92dc060b07b63982cf8f375fbb5fad376a11f18d"
        "952ca31c7abfba0d75c1005f5f3f21873e620198c42ab4d93d3be7e3b0ac9607"
    )


def test_signing_input_layout() -> None:
    assert signing_input("claim.propose", b"abc") == (
        b"timebank.v1/claim.propose\x00" + b"\x00" * 7 + b"\x03" + b"abc"
    )
    assert signing_input("a", b"") == b"timebank.v1/a\x00" + b"\x00" * 8


def test_round_trip() -> None:
    env = signed()
    assert (env.kind, env.body, env.signer) == ("claim.propose", BODY, NODE)
    assert env.key_id == keys.key_id(PUB)
    assert verify(env, PUB) is env.body  # the bytes as received, not a re-encoding
    ring = KeyRing()
    ring.add(NODE, PUB)
    assert ring.verify(env) == BODY


def test_empty_and_maximal_bodies_round_trip() -> None:
    for body in (b"", b"\xff" * MAX_BODY_BYTES):
        assert verify(signed(body), PUB) == body


# --- tampering ----------------------------------------------------------------------------


def test_tampered_body_rejected() -> None:
    env = signed()
    for body in (BODY + b"x", BODY[:-1], b"X" + BODY[1:], b""):
        with pytest.raises(EnvelopeError) as e:
            verify(dataclasses.replace(env, body=body), PUB)
        assert reason(e) is Reason.BAD_SIGNATURE


def test_tampered_kind_rejected() -> None:
    env = signed()
    with pytest.raises(EnvelopeError) as e:
        verify(dataclasses.replace(env, kind="claim.accept"), PUB)
    assert reason(e) is Reason.BAD_SIGNATURE


def test_tampered_signature_rejected() -> None:
    env = signed()
    flipped = bytes([env.signature[0] ^ 1]) + env.signature[1:]
    with pytest.raises(EnvelopeError) as e:
        verify(dataclasses.replace(env, signature=flipped), PUB)
    assert reason(e) is Reason.BAD_SIGNATURE


def test_tampered_key_id_rejected() -> None:
    env = dataclasses.replace(signed(), key_id=keys.key_id(OTHER_PUB))
    with pytest.raises(EnvelopeError) as e:
        verify(env, PUB)
    assert reason(e) is Reason.WRONG_KEY
    ring = KeyRing()
    ring.add(NODE, PUB)
    with pytest.raises(EnvelopeError) as e:
        ring.verify(env)
    assert reason(e) is Reason.UNKNOWN_KEY


def test_tampered_signer_rejected_by_key_ring() -> None:
    """The signer is bound through the key: each key belongs to exactly one signer."""
    ring = KeyRing()
    ring.add(NODE, PUB)
    ring.add("320106", OTHER_PUB)
    env = signed()
    with pytest.raises(EnvelopeError) as e:
        ring.verify(dataclasses.replace(env, signer="320106"))
    assert reason(e) is Reason.UNKNOWN_KEY
    with pytest.raises(EnvelopeError) as e:
        ring.verify(dataclasses.replace(env, signer="320113"))
    assert reason(e) is Reason.UNKNOWN_SIGNER
    # and the key ring will not let the key be claimed by a second signer
    with pytest.raises(ValueError, match="already belongs to 320115"):
        ring.add("320106", PUB)


def test_signature_for_one_kind_does_not_verify_as_another() -> None:
    """Domain separation: same key, same body, different kind."""
    env = sign("claim.accept", BODY, NODE, KEY)
    for other in ("claim.reject", "claim.acceptx", "claim.accep", "checkpoint"):
        with pytest.raises(EnvelopeError) as e:
            verify(dataclasses.replace(env, kind=other), PUB)
        assert reason(e) is Reason.BAD_SIGNATURE


def test_kind_and_body_boundary_cannot_be_shifted() -> None:
    """Without the NUL and the length, ("ab", b"c") and ("a", b"bc") could collide."""
    assert signing_input("ab", b"c") != signing_input("a", b"bc")
    env = sign("a.b", b"c", NODE, KEY)
    with pytest.raises(EnvelopeError) as e:
        verify(dataclasses.replace(env, kind="a", body=b".bc"), PUB)
    assert reason(e) is Reason.BAD_SIGNATURE


def test_raw_signature_over_body_alone_is_refused() -> None:
    """A signature made outside the protocol (over the bare body) is no envelope signature."""
    raw = KEY.sign(BODY).signature
    with pytest.raises(EnvelopeError) as e:
        verify(dataclasses.replace(signed(), signature=raw), PUB)
    assert reason(e) is Reason.BAD_SIGNATURE


def test_wrong_key() -> None:
    env = sign("claim.propose", BODY, NODE, OTHER)
    with pytest.raises(EnvelopeError) as e:
        verify(env, PUB)
    assert reason(e) is Reason.WRONG_KEY
    assert "56475aa75463474c" in str(e.value)


def test_verify_refuses_a_public_key_of_wrong_length() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        verify(signed(), PUB[:31])


# --- limits and shapes ------------------------------------------------------------------


def test_oversized_body() -> None:
    big = b"\x00" * (MAX_BODY_BYTES + 1)
    with pytest.raises(EnvelopeError) as e:
        sign("claim.propose", big, NODE, KEY)
    assert reason(e) is Reason.OVERSIZED
    with pytest.raises(EnvelopeError) as e:
        dataclasses.replace(signed(), body=big)
    assert reason(e) is Reason.OVERSIZED
    with pytest.raises(EnvelopeError) as e:
        signing_input("claim.propose", big)
    assert reason(e) is Reason.OVERSIZED


@pytest.mark.parametrize(
    "kind",
    ["", "Claim", "1claim", "_claim", ".claim", "claim-propose", "claim propose", "claim/x",
     "claim\x00x", "claim\n", "clаim", "é", "a" * 65],  # "clаim" has a Cyrillic а
)
def test_malformed_kind(kind: str) -> None:
    with pytest.raises(EnvelopeError) as e:
        sign(kind, BODY, NODE, KEY)
    assert reason(e) is Reason.MALFORMED
    with pytest.raises(EnvelopeError) as e:
        dataclasses.replace(signed(), kind=kind)
    assert reason(e) is Reason.MALFORMED


def test_longest_kind_accepted() -> None:
    kind = "a" * 64
    assert verify(sign(kind, BODY, NODE, KEY), PUB) == BODY


@pytest.mark.parametrize(
    "signer", ["", "32011", "3201150", "３２０１１５", "Clearinghouse", "city ", "province", 320115]
)
def test_malformed_signer(signer: object) -> None:
    with pytest.raises(EnvelopeError) as e:
        sign("claim.propose", BODY, signer, KEY)  # type: ignore[arg-type]
    assert reason(e) is Reason.MALFORMED


@pytest.mark.parametrize("signer", ["320115", "clearinghouse", "city"])
def test_accepted_signers(signer: str) -> None:
    assert sign("claim.propose", BODY, signer, KEY).signer == signer


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("key_id", "56475AA75463474C"),
        ("key_id", "56475aa75463474"),
        ("key_id", "56475aa75463474c0"),
        ("key_id", "56475aa75463474g"),
        ("key_id", b"56475aa75463474c"),
        ("signature", b"\x00" * 63),
        ("signature", b"\x00" * 65),
        ("signature", b""),
        ("signature", bytearray(64)),
        ("signature", "00" * 64),
        ("body", bytearray(BODY)),
        ("body", memoryview(BODY)),
        ("body", BODY.decode()),
        ("kind", b"claim.propose"),
    ],
)
def test_malformed_fields(field: str, value: object) -> None:
    with pytest.raises(EnvelopeError) as e:
        dataclasses.replace(signed(), **{field: value})  # type: ignore[arg-type]
    assert reason(e) is Reason.MALFORMED


def test_envelope_is_immutable() -> None:
    env = signed()
    with pytest.raises(dataclasses.FrozenInstanceError):
        env.body = b"x"  # type: ignore[misc]


def test_verify_refuses_non_envelope() -> None:
    with pytest.raises(EnvelopeError) as e:
        verify(object(), PUB)  # type: ignore[arg-type]
    assert reason(e) is Reason.MALFORMED


# --- the key ring -------------------------------------------------------------------------


def test_key_ring_mapping_and_idempotent_add() -> None:
    ring = KeyRing()
    kid = ring.add(NODE, PUB)
    assert ring.add(NODE, PUB) == kid == keys.key_id(PUB)
    assert ring[(NODE, kid)] == PUB
    assert dict(ring) == {(NODE, kid): PUB}
    assert (NODE, kid) in ring and len(ring) == 1


def test_key_ring_holds_several_keys_per_signer() -> None:
    ring = KeyRing()
    ring.add("clearinghouse", PUB)
    ring.add("clearinghouse", OTHER_PUB)
    assert ring.verify(sign("tree_head", BODY, "clearinghouse", KEY)) == BODY
    assert ring.verify(sign("tree_head", BODY, "clearinghouse", OTHER)) == BODY


def test_revoked_key() -> None:
    ring = KeyRing()
    ring.add(NODE, PUB)
    ring.add(NODE, OTHER_PUB)
    env = signed()
    ring.revoke(NODE, env.key_id)
    with pytest.raises(EnvelopeError) as e:
        ring.verify(env)
    assert reason(e) is Reason.REVOKED_KEY
    assert f"key {env.key_id} of {NODE} is revoked" in str(e.value)
    assert ring.is_revoked(NODE, env.key_id)
    assert (NODE, env.key_id) not in ring
    # the signer's other key still works; the revoked one can never come back
    assert ring.verify(sign("claim.propose", BODY, NODE, OTHER)) == BODY
    with pytest.raises(ValueError, match="revoked"):
        ring.add(NODE, PUB)


def test_revoking_the_last_key_reports_revoked_not_unknown() -> None:
    ring = KeyRing()
    ring.add(NODE, PUB)
    ring.revoke(NODE, keys.key_id(PUB))
    with pytest.raises(EnvelopeError) as e:
        ring.verify(signed())
    assert reason(e) is Reason.REVOKED_KEY
    assert len(ring) == 0


def test_revocation_before_the_key_is_known() -> None:
    ring = KeyRing()
    ring.revoke(NODE, keys.key_id(PUB))
    with pytest.raises(ValueError, match="revoked"):
        ring.add(NODE, PUB)
    with pytest.raises(EnvelopeError) as e:
        ring.verify(signed())
    assert reason(e) is Reason.REVOKED_KEY


def test_key_ring_bad_signature() -> None:
    ring = KeyRing()
    ring.add(NODE, PUB)
    env = dataclasses.replace(signed(), body=b"other")
    with pytest.raises(EnvelopeError) as e:
        ring.verify(env)
    assert reason(e) is Reason.BAD_SIGNATURE


def test_key_ring_refuses_malformed_input() -> None:
    ring = KeyRing()
    with pytest.raises(EnvelopeError):
        ring.add("nobody", PUB)
    with pytest.raises(ValueError):
        ring.add(NODE, PUB[:16])
    with pytest.raises(EnvelopeError):
        ring.revoke(NODE, "xyz")


# --- properties ---------------------------------------------------------------------------

kinds = st.from_regex(r"[a-z][a-z0-9_.]{0,63}", fullmatch=True)
bodies = st.binary(max_size=2048)


@settings(max_examples=200, deadline=None)
@given(kind=kinds, body=bodies)
def test_property_round_trip(kind: str, body: bytes) -> None:
    env = sign(kind, body, NODE, KEY)
    assert verify(env, PUB) == body


@settings(max_examples=200, deadline=None)
@given(kind=kinds, body=bodies.filter(bool), data=st.data())
def test_property_single_byte_flip_in_body_fails(
    kind: str, body: bytes, data: st.DataObject
) -> None:
    env = sign(kind, body, NODE, KEY)
    i = data.draw(st.integers(0, len(body) - 1), label="index")
    x = data.draw(st.integers(1, 255), label="xor")
    tampered = body[:i] + bytes([body[i] ^ x]) + body[i + 1 :]
    with pytest.raises(EnvelopeError) as e:
        verify(dataclasses.replace(env, body=tampered), PUB)
    assert reason(e) is Reason.BAD_SIGNATURE


@settings(max_examples=200, deadline=None)
@given(kind=kinds, body=bodies, i=st.integers(0, 63), x=st.integers(1, 255))
def test_property_single_byte_flip_in_signature_fails(
    kind: str, body: bytes, i: int, x: int
) -> None:
    env = sign(kind, body, NODE, KEY)
    sig = env.signature
    tampered = sig[:i] + bytes([sig[i] ^ x]) + sig[i + 1 :]
    with pytest.raises(EnvelopeError) as e:
        verify(dataclasses.replace(env, signature=tampered), PUB)
    assert reason(e) is Reason.BAD_SIGNATURE


# --- identity and the canonical encoding --------------------------------------------------


def _pb(env: Signed) -> bytes:
    return pb.Envelope(kind=env.kind, body=env.body, signer=env.signer, key_id=env.key_id,
                       signature=env.signature).SerializeToString(deterministic=True)


@pytest.mark.parametrize("body", [b"", b"x", BODY, bytes(200), bytes(MAX_BODY_BYTES)])
def test_the_canonical_encoding_is_protobufs_deterministic_one(body: bytes) -> None:
    env = signed(body)
    assert encode(env) == _pb(env)
    assert decode(encode(env)) == env


def test_identity_layout() -> None:
    env = signed(b"abc", kind="a", signer="city")
    expected = hashlib.sha256(
        b"timebank.v1/envelope-identity\x00"
        + (1).to_bytes(8, "big") + b"a" + (3).to_bytes(8, "big") + b"abc"
        + (4).to_bytes(8, "big") + b"city" + (16).to_bytes(8, "big") + env.key_id.encode()
    ).digest()
    assert identity(env) == expected


def test_identity_is_what_was_signed_and_by_whom() -> None:
    env = signed()
    other_signature = dataclasses.replace(env, signature=bytes(64))
    assert identity(other_signature) == identity(env)  # the signature is not part of it
    for changed in (signed(BODY + b"!"), signed(kind="claim.decide"), signed(signer="320106"),
                    dataclasses.replace(env, key_id="0" * 16)):
        assert identity(changed) != identity(env)
    # lengths are part of the input: parts cannot be shifted into each other
    assert identity(signed(b"ab", kind="a.b")) != identity(signed(b"b.ab", kind="a"))


def test_every_reencoding_decodes_to_the_same_envelope_and_identity() -> None:
    env = signed()
    canonical = encode(env)
    rng = random.Random(14)
    seen = {canonical}
    for _ in range(500):
        data = reencoded(canonical, rng)
        seen.add(data)
        again = decode(data)
        assert again == env, data.hex()
        assert identity(again) == identity(env)
        assert encode(again) == canonical
    assert len(seen) > 450  # really different encodings


@pytest.mark.parametrize("data", [b"\xff", b"\x0a\x05ab", b"\x0a\x02\xff\xfe", b"",
                                  b"\x12\x01x"])
def test_decode_refuses_what_is_not_a_well_formed_envelope(data: bytes) -> None:
    with pytest.raises(EnvelopeError) as caught:
        decode(data)
    assert reason(caught) == Reason.MALFORMED


def test_decode_and_encode_take_only_their_types() -> None:
    with pytest.raises(EnvelopeError):
        decode(bytearray(encode(signed())))  # type: ignore[arg-type]
    with pytest.raises(EnvelopeError):
        encode(_pb(signed()))  # type: ignore[arg-type]
    with pytest.raises(EnvelopeError):
        identity(_pb(signed()))  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(kind=st.from_regex(r"[a-z][a-z0-9_.]{0,63}", fullmatch=True),
       body=st.binary(max_size=300), seed=st.integers(0, 2**32))
def test_property_reencoding_keeps_identity(kind: str, body: bytes, seed: int) -> None:
    env = signed(body, kind=kind)
    data = reencoded(encode(env), random.Random(seed))
    assert identity(decode(data)) == identity(env) and encode(decode(data)) == encode(env)
