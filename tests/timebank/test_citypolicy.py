"""City-signed policies: what a reader accepts, and which policy is in force when."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from nacl.signing import SigningKey

from timebank import citypolicy
from timebank.citypolicy import (
    GRACE,
    PolicyActError,
    Term,
    accepted_digests,
    in_force,
    policy_body,
    read_city_policy,
    timeline,
)
from timebank.envelope import CITY, sign
from timebank.keys import public_key
from timebank.policy import DEFAULT_POLICY_TOML, MAX_POLICY_BYTES, load_policy, policy_sha256
from timebank.v1 import clearing_pb2

CITY_KEY = SigningKey(b"test-city-root".ljust(32, b"."))
OTHER_KEY = SigningKey(b"someone-else".ljust(32, b"."))
T0 = datetime(2027, 1, 1, tzinfo=UTC)
SHORT = DEFAULT_POLICY_TOML.replace("publicity_days = 7", "publicity_days = 0")


def act(serial: int = 1, text: str = DEFAULT_POLICY_TOML, effective: datetime = T0,
        issued: datetime = T0, *, key: SigningKey = CITY_KEY, signer: str = CITY,
        kind: str = "policy"):  # type: ignore[no-untyped-def]
    return sign(kind, policy_body(serial, text, effective, issued), signer, key)


def test_a_city_signed_policy_reads_back_with_its_digest_and_rules() -> None:
    read = read_city_policy(act(3, SHORT, T0 + timedelta(days=1)), public_key(CITY_KEY))
    assert (read.serial, read.text, read.effective_at, read.issued_at) == (
        3, SHORT, T0 + timedelta(days=1), T0)
    assert read.sha256 == policy_sha256(SHORT) == bytes.fromhex(load_policy(SHORT).digest)
    assert read.policy.publicity_days == 0
    assert read.term == Term(3, T0 + timedelta(days=1), read.sha256)


@pytest.mark.parametrize(("make", "reason"), [
    (lambda: act(key=OTHER_KEY), "WRONG_KEY"),
    (lambda: act(signer="320115"), citypolicy.NOT_CITY_SIGNED),
    (lambda: act(kind="admission"), citypolicy.WRONG_KIND),
    (lambda: act(text="publicity_days = -1\n"), citypolicy.BAD_POLICY),
    (lambda: act(text="not toml ["), citypolicy.BAD_POLICY),
    (lambda: act(text="x" * (MAX_POLICY_BYTES + 1)), citypolicy.BAD_POLICY),
    (lambda: act(0), citypolicy.MALFORMED_SERIAL),
    (lambda: act(effective=T0 - timedelta(seconds=1)), citypolicy.MALFORMED_TIME),
    (lambda: act(effective=T0 + timedelta(days=4000)), citypolicy.MALFORMED_TIME),
    (lambda: sign("policy", b"\xff\xff", CITY, CITY_KEY), citypolicy.MALFORMED_BODY),
    (lambda: sign("policy", clearing_pb2.CityPolicy(serial=1, policy_toml=DEFAULT_POLICY_TOML)
                  .SerializeToString(), CITY, CITY_KEY), citypolicy.MALFORMED_TIME),
])
def test_a_policy_act_is_refused_with_its_reason(make, reason: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PolicyActError) as caught:
        read_city_policy(make(), public_key(CITY_KEY))
    assert caught.value.reason == reason


def test_a_changed_text_fails_the_city_signature() -> None:
    good = act()
    body = clearing_pb2.CityPolicy.FromString(good.body)
    body.policy_toml = SHORT
    forged = type(good)(good.kind, body.SerializeToString(), good.signer, good.key_id,
                        good.signature)
    with pytest.raises(PolicyActError) as caught:
        read_city_policy(forged, public_key(CITY_KEY))
    assert caught.value.reason == "BAD_SIGNATURE"
    assert caught.value.reason in citypolicy.SIGNATURE_REASONS


def terms(*spec: tuple[int, int]) -> list[Term]:
    """(serial, hours after T0) each; the digest names the serial."""
    return [Term(s, T0 + timedelta(hours=h), bytes([s]) * 32) for s, h in spec]


def test_in_force_is_the_highest_serial_already_effective() -> None:
    policies = terms((1, 0), (2, 10), (3, 5))
    assert in_force(policies, T0 - timedelta(seconds=1)) is None
    assert in_force(policies, T0).serial == 1  # type: ignore[union-attr]
    assert in_force(policies, T0 + timedelta(hours=4)).serial == 1  # type: ignore[union-attr]
    # serial 3 (effective at 5 h) supersedes the scheduled serial 2 (10 h) for ever
    assert in_force(policies, T0 + timedelta(hours=5)).serial == 3  # type: ignore[union-attr]
    assert in_force(policies, T0 + timedelta(hours=20)).serial == 3  # type: ignore[union-attr]
    assert [(at, p.serial) for at, p in timeline(policies)] == [
        (T0, 1), (T0 + timedelta(hours=5), 3)]


def test_around_a_change_both_policies_are_accepted_for_the_grace_only() -> None:
    policies = terms((1, 0), (2, 10))
    switch = T0 + timedelta(hours=10)
    one, two = bytes([1]) * 32, bytes([2]) * 32
    assert accepted_digests(policies, switch - GRACE - timedelta(seconds=1)) == {one}
    assert accepted_digests(policies, switch - GRACE) == {one, two}
    assert accepted_digests(policies, switch + GRACE - timedelta(seconds=1)) == {one, two}
    assert accepted_digests(policies, switch + GRACE) == {two}


def test_before_the_first_policy_is_in_force_anything_is_accepted() -> None:
    policies = terms((1, 10))
    assert accepted_digests([], T0) is None
    assert accepted_digests(policies, T0) is None
    assert accepted_digests(policies, T0 + timedelta(hours=10) - GRACE) is None
    assert accepted_digests(policies, T0 + timedelta(hours=10) + GRACE) == {bytes([1]) * 32}
