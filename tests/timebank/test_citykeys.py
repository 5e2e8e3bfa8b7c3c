"""The chain of the city's keys and the offline act file, with real Ed25519 keys."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from timebank import actfile, citykeys, transparency
from timebank import checkpoint as notes
from timebank.admissions import AdmissionsError, certificate_of, chain_of, verify_act
from timebank.citykeys import CityKeys, KeyChainError
from timebank.envelope import CITY, Signed, encode, identity, sign
from timebank.keys import generate, key_id, public_key
from timebank.v1 import clearing_pb2 as pb

NOW = datetime(2027, 1, 1, tzinfo=UTC)
OLD, NEW, THIEF = generate(), generate(), generate()


def _admission(root: object, node_id: str = "320115") -> Signed:
    body = pb.AdmissionCertificate(node_id=node_id, district="江宁区",
                                   public_key=public_key(generate()), serial=1
                                   ).SerializeToString(deterministic=True)
    return sign("admission", body, CITY, root)  # type: ignore[arg-type]


def _rotation(by: object, old: bytes, new: bytes, kept: list[Signed], serial: int = 1,
              ) -> Signed:
    body = citykeys.root_rotation_body(serial, old, new, [identity(e) for e in kept], 1)
    return sign(citykeys.CITY_KEY, body, CITY, by)  # type: ignore[arg-type]


def test_acts_of_the_old_root_kept_by_the_rotation_verify_and_later_ones_are_refused() -> None:
    before = _admission(OLD)
    rotation = _rotation(OLD, public_key(OLD), public_key(NEW), [before])
    keys = CityKeys(public_key(OLD), [rotation])
    assert keys.roots == (public_key(OLD), public_key(NEW))
    assert keys.key_for(before) == public_key(OLD)
    assert keys.key_for(rotation) == public_key(OLD)
    assert keys.key_for(_admission(NEW, "320106")) == public_key(NEW)
    late = _admission(OLD, "320113")  # signed with the rotated-out key after the rotation
    with pytest.raises(KeyChainError) as e:
        keys.key_for(late)
    assert e.value.reason == "ROTATED_OUT_CITY_KEY" and e.value.message.startswith("城市根密钥")
    with pytest.raises(KeyChainError, match=r"UNKNOWN|not the city root key"):
        keys.key_for(_admission(THIEF))
    # verify_act follows the same chain: the reader configured with the old root only
    acts = [encode(e) for e in (before, rotation)]
    chain = chain_of(public_key(OLD), acts)
    assert verify_act(encode(before), chain).node_id == certificate_of(before.body).node_id
    verify_act(encode(_admission(NEW, "320106")), chain)
    with pytest.raises(AdmissionsError, match="rotated-out"):
        verify_act(encode(late), chain)
    # a bare old key (no chain) would have taken it: that is why every reader chains
    verify_act(encode(late), public_key(OLD))


def test_a_rotation_not_signed_by_the_trusted_root_is_not_followed() -> None:
    forged = _rotation(THIEF, public_key(OLD), public_key(THIEF), [])
    keys = CityKeys(public_key(OLD), [forged])
    assert keys.roots == (public_key(OLD),)
    with pytest.raises(KeyChainError):
        keys.key_for(_admission(THIEF))


def test_two_rotations_with_one_serial_break_the_chain() -> None:
    good = _rotation(OLD, public_key(OLD), public_key(NEW), [])
    racing = _rotation(OLD, public_key(OLD), public_key(THIEF), [])
    with pytest.raises(KeyChainError) as e:
        CityKeys(public_key(OLD), [good, racing])
    assert e.value.reason == "BROKEN_KEY_CHAIN"
    assert CityKeys(public_key(OLD), [good, good]).current_root == public_key(NEW)


def test_a_second_rotation_chains_from_the_first() -> None:
    third = generate()
    first = _rotation(OLD, public_key(OLD), public_key(NEW), [])
    second = _rotation(NEW, public_key(NEW), public_key(third), [], serial=2)
    wrong = _rotation(OLD, public_key(NEW), public_key(third), [], serial=2)
    assert CityKeys(public_key(OLD), [second, first]).current_root == public_key(third)
    assert CityKeys(public_key(OLD), [first, wrong]).current_root == public_key(NEW)
    assert CityKeys(public_key(OLD), [second]).current_root == public_key(OLD)  # a gap


def _head(size: int, key: object, origin: str) -> str:
    text = notes.Checkpoint(origin, size, bytes(32), (transparency.time_line(1),)).body()
    return notes.sign_note(text, origin, key)  # type: ignore[arg-type]


def test_a_clearinghouse_rotation_signs_heads_from_its_size_and_old_heads_still_verify() -> None:
    ch_old, ch_new = generate(), generate()
    body = citykeys.clearinghouse_rotation_body(1, public_key(ch_old), public_key(ch_new), 10, 1)
    rotation = sign(citykeys.CLEARINGHOUSE_KEY, body, CITY, OLD)
    keys = CityKeys(public_key(OLD), [rotation], public_key(ch_old)).log_keys()
    origin = transparency.clearinghouse_origin(public_key(ch_old))
    assert keys.origin == origin and keys.at(9) == public_key(ch_old)
    assert keys.at(10) == public_key(ch_new)
    assert transparency.check_head(_head(9, ch_old, origin), keys).size == 9
    assert transparency.check_head(_head(10, ch_new, origin), keys).size == 10
    with pytest.raises(transparency.LogError):  # the old key cannot sign a later head
        transparency.check_head(_head(11, ch_old, origin), keys)
    with pytest.raises(transparency.LogError):  # nor the new one an earlier head
        transparency.check_head(_head(9, ch_new, origin), keys)
    # the clearinghouse's word alone (a rotation the city did not sign) changes nothing
    self_signed = sign(citykeys.CLEARINGHOUSE_KEY, body, CITY, ch_old)
    alone = CityKeys(public_key(OLD), [self_signed], public_key(ch_old)).log_keys()
    assert alone.keys == (public_key(ch_old),)


def test_the_act_file_round_trip_shows_what_it_signs_and_refuses_tampering() -> None:
    body = pb.AdmissionCertificate(node_id="320115", district="江宁区",
                                   public_key=public_key(generate()), serial=3
                                   ).SerializeToString(deterministic=True)
    act = actfile.ActFile("admission", body, key_id(public_key(OLD)))
    text = actfile.render(act)
    assert text.startswith("# 城市根密钥待签文件") and "320115 江宁区" in text
    parsed = actfile.parse(text.encode())
    assert parsed == act
    with pytest.raises(actfile.ActFileError, match="应由根密钥"):
        actfile.sign_act(parsed, NEW)
    signed = actfile.parse(actfile.render(actfile.sign_act(parsed, OLD)).encode())
    verify_act(encode(signed.envelope), public_key(OLD))
    # one bit of the body changed: the file still parses, the signature no longer holds
    b64 = base64.b64encode(body).decode()
    tampered_body = bytearray(body)
    tampered_body[-1] ^= 1
    tampered = actfile.render(signed).replace(b64, base64.b64encode(tampered_body).decode())
    with pytest.raises(AdmissionsError, match=r"BAD_SIGNATURE|does not verify"):
        verify_act(encode(actfile.parse(tampered.encode()).envelope), public_key(OLD))


@pytest.mark.parametrize("text", [
    "", "hello\n", "timebank-city-act v1\nkind admission\n",
    "timebank-city-act v1\nkind admission\nkey 0123456789abcdef\nbody !!!\n",
    "timebank-city-act v1\nkind admission\nkey 0123456789abcdef\nbody AAAA\n",
    "timebank-city-act v1\nkind payment\nkey 0123456789abcdef\nbody AAAA\n",
])
def test_an_act_file_that_cannot_be_understood_is_refused(text: str) -> None:
    with pytest.raises(actfile.ActFileError):
        actfile.parse(text.encode())


def test_the_new_root_may_countersign_and_a_bad_countersignature_is_refused() -> None:
    body = citykeys.root_rotation_body(1, public_key(OLD), public_key(NEW), [], 1)
    signed = citykeys.countersigned_body(body, NEW)
    assert citykeys.read_root_rotation(signed).countersigned
    assert not citykeys.read_root_rotation(body).countersigned
    with pytest.raises(KeyChainError, match="not the one given"):
        citykeys.countersigned_body(body, THIEF)
    wire = pb.CityKeyRotation.FromString(signed)
    wire.new_key_signature = THIEF.sign(citykeys.countersign_message(
        1, public_key(OLD), public_key(NEW))).signature
    forged = wire.SerializeToString(deterministic=True)
    with pytest.raises(KeyChainError, match="countersignature"):
        citykeys.read_root_rotation(forged)
    rotation = sign(citykeys.CITY_KEY, forged, CITY, OLD)
    assert CityKeys(public_key(OLD), [rotation]).roots == (public_key(OLD),)  # not followed
    act = actfile.ActFile(citykeys.CITY_KEY, body, key_id(public_key(OLD)))
    done = actfile.sign_act(act, OLD, NEW)
    assert CityKeys(public_key(OLD), [done.envelope]).current_root == public_key(NEW)
    assert "是 yes" in actfile.render(done)
