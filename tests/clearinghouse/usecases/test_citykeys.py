"""The clearinghouse follows the city's key rotations (ADR 0018): on SQLite and
PostgreSQL, every refusal changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from clearinghouse.usecases import admission, citykeys, log, policies, wire
from clearinghouse.usecases.app import ClearinghouseApp, Tx
from tests.clearinghouse.conftest import CITY_KEY, CITY_PUBLIC, certificate, node_key, refused
from timebank import citykeys as contract
from timebank import citypolicy
from timebank.envelope import CITY, Signed, identity, sign
from timebank.keys import SigningKey, key_id, public_key
from timebank.policy import DEFAULT_POLICY_TOML

JN, GL = "320115", "320106"
NEW_ROOT = SigningKey(b"citykeys test: the next root".ljust(32, b"."))
CH_KEY = SigningKey(b"citykeys test: the clearinghouse".ljust(32, b"."))
CH_NEXT = SigningKey(b"citykeys test: the next ch key".ljust(32, b"."))


@pytest.fixture
def city(ch_app: ClearinghouseApp) -> ClearinghouseApp:
    def init(tx: Tx) -> None:
        tx.repo.set_meta(citykeys.META_CITY_PUBLIC_KEY, CITY_PUBLIC.hex())
        tx.repo.set_meta(citykeys.META_CLEARINGHOUSE_PUBLIC_KEY, public_key(CH_KEY).hex())

    ch_app.execute(init)
    ch_app.execute(admission.admit, certificate(JN, "江宁区", node_key(JN)), CITY_PUBLIC)
    return ch_app


def _root_rotation(app: ClearinghouseApp, *, by: SigningKey = CITY_KEY, serial: int = 1,
                   kept: list[bytes] | None = None, new: SigningKey = NEW_ROOT) -> Signed:
    if kept is None:
        kept = app.query(citykeys.signed_by, CITY_PUBLIC)
    body = contract.root_rotation_body(serial, CITY_PUBLIC, public_key(new), kept, 1)
    return sign(contract.CITY_KEY, body, CITY, by)


def _policy(by: SigningKey, at: datetime) -> Signed:
    body = citypolicy.policy_body(1, DEFAULT_POLICY_TOML, at + timedelta(minutes=1), at)
    return sign(citypolicy.POLICY_KIND, body, CITY, by)


def test_a_root_rotation_keeps_the_old_acts_and_refuses_later_ones(
        city: ClearinghouseApp) -> None:
    assert refused(city, citykeys.rotate_root, _root_rotation(city, kept=[])
                   ).reason == "ACTS_NOT_KEPT"
    forged = _root_rotation(city, by=NEW_ROOT)
    assert refused(city, citykeys.rotate_root, forged).reason == "ROTATED_OUT_CITY_KEY"
    rotation = _root_rotation(city)
    done = city.execute(citykeys.rotate_root, rotation)
    assert done.serial == 1 and done.key_id == key_id(public_key(NEW_ROOT))
    assert done.log_index is not None
    assert city.execute(citykeys.rotate_root, rotation).log_index is None  # the same again
    other = _root_rotation(city, new=SigningKey(b"x" * 32), kept=city.query(
        citykeys.signed_by, CITY_PUBLIC))
    assert refused(city, citykeys.rotate_root, other).reason == "STALE_SERIAL"

    late = certificate(GL, "鼓楼区", node_key(GL))  # the rotated-out key, after rotating
    error = refused(city, admission.admit, late, CITY_PUBLIC)
    assert error.status == "PERMISSION_DENIED" and error.reason == "ROTATED_OUT_CITY_KEY"
    assert error.message.startswith("城市根密钥")
    now = datetime(2027, 1, 1, tzinfo=UTC)
    assert refused(city, policies.issue, _policy(CITY_KEY, now), CITY_PUBLIC
                   ).reason == "ROTATED_OUT_CITY_KEY"
    city.execute(admission.admit, certificate(GL, "鼓楼区", node_key(GL), signer_key=NEW_ROOT),
                 CITY_PUBLIC)
    assert [a.node_id for a in city.query(admission.admissions)] == [GL, JN]
    chain = city.query(citykeys.chain)
    held = city.query(admission.admission, JN)
    assert held is not None and chain.key_for(wire.from_bytes(held.certificate)) == CITY_PUBLIC
    served = city.query(log.admissions)
    assert [identity(wire.from_bytes(e)) for e in served.key_acts] == [identity(rotation)]


def _ch_rotation(app: ClearinghouseApp, size: int, by: SigningKey = CITY_KEY) -> Signed:
    body = contract.clearinghouse_rotation_body(1, public_key(CH_KEY), public_key(CH_NEXT),
                                                size, 1)
    return sign(contract.CLEARINGHOUSE_KEY, body, CITY, by)


def test_a_clearinghouse_rotation_takes_effect_at_a_size_the_log_has_not_reached(
        city: ClearinghouseApp) -> None:
    size = city.query(lambda tx: log.log_of(tx).size())
    assert city.query(citykeys.rotated_log_keys) is None
    assert refused(city, citykeys.rotate_clearinghouse, _ch_rotation(city, size)
                   ).reason == "LOG_MOVED"
    assert refused(city, citykeys.rotate_clearinghouse,
                   _ch_rotation(city, size + 1, by=CH_KEY)).status == "PERMISSION_DENIED"
    done = city.execute(citykeys.rotate_clearinghouse, _ch_rotation(city, size + 1))
    assert done.log_index == size  # its own leaf; the head that holds it is the new key's
    keys = city.query(citykeys.rotated_log_keys)
    assert keys is not None and keys.at(size) == public_key(CH_KEY)
    assert keys.at(size + 1) == public_key(CH_NEXT)
    assert city.query(citykeys.current_clearinghouse_key) == public_key(CH_NEXT)
