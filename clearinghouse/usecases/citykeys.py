"""The city's keys as this clearinghouse follows them: rotations of the city root key and
of its own signing key (``timebank.citykeys``, ADR 0018).

The chain starts from the two keys recorded when the clearinghouse was initialised
(never from a key file on this machine: the city root key lives offline) and follows
the rotations the city signed, stored here and logged. Every city act the
clearinghouse takes is checked under the root key the chain allows for it, so an act a
rotated-out root key signs after its rotation is refused (PERMISSION_DENIED
ROTATED_OUT_CITY_KEY) and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from clearinghouse.usecases import log, wire
from clearinghouse.usecases.app import Tx
from runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
)
from timebank import citykeys, transparency
from timebank.citykeys import CITY_KEY, CLEARINGHOUSE_KEY, CityKeys, KeyChainError
from timebank.envelope import CITY, EnvelopeError, Signed, identity, verify
from timebank.keys import key_id

#: Database meta keys: the city root key and the clearinghouse key this database was
#: initialised with (the start of every chain; rotations never change them).
META_CITY_PUBLIC_KEY = "city_public_key"
META_CITY_KEY_ID = "city_key_id"
META_CLEARINGHOUSE_PUBLIC_KEY = "clearinghouse_public_key"
META_CLEARINGHOUSE_KEY_ID = "clearinghouse_key_id"


def _meta_key(tx: Tx, name: str) -> bytes | None:
    found = tx.repo.meta(name)
    return None if found is None else bytes.fromhex(found)


def chain(tx: Tx) -> CityKeys:
    """The chain from the keys recorded at ``init`` through every stored rotation.
    FAILED_PRECONDITION NO_CITY_KEY if this database records no city key."""
    root = _meta_key(tx, META_CITY_PUBLIC_KEY)
    if root is None:
        raise FailedPrecondition("this clearinghouse's database records no city root key: "
                                 "run `timebank clearinghouse init`", "NO_CITY_KEY")
    envelopes = [wire.from_bytes(e) for _, _, e in tx.repo.key_acts()]
    return CityKeys(root, envelopes, _meta_key(tx, META_CLEARINGHOUSE_PUBLIC_KEY))


def keys_for(tx: Tx, city_public_key: bytes) -> bytes | CityKeys:
    """What a city act is checked under: the chain once the city root key has been
    rotated (whatever key the caller holds), else ``city_public_key`` as given."""
    if any(kind == CITY_KEY for kind, _, _ in tx.repo.key_acts()):
        return chain(tx)
    return city_public_key


def signer_refused(e: KeyChainError) -> PermissionDenied:
    return PermissionDenied(e.message, e.reason)


def rotated_log_keys(tx: Tx) -> transparency.LogKeys | None:
    """Which clearinghouse key signs heads of which size, once the city has rotated it;
    None while it never has (one cheap read per write transaction)."""
    if not any(kind == CLEARINGHOUSE_KEY for kind, _, _ in tx.repo.key_acts()):
        return None
    return chain(tx).log_keys()


def current_clearinghouse_key(tx: Tx) -> bytes:
    """The key that signs the next tree head (and receipts and deliveries)."""
    keys = chain(tx)
    return keys.log_keys().at(log.log_of(tx).size() + 1)


@dataclass(frozen=True, slots=True)
class Rotated:
    """A rotation taken: its serial, the new key's id, its log leaf (None: it was
    recorded before)."""

    serial: int
    key_id: str
    log_index: int | None


def _stored(tx: Tx, kind: str, serial: int, envelope: Signed) -> bool:
    """Whether this very act is stored (True); ALREADY_EXISTS if another act has its
    serial."""
    for k, s, data in tx.repo.key_acts():
        if k == kind and s == serial:
            if identity(wire.from_bytes(data)) == identity(envelope):
                return True
            raise AlreadyExists(f"{kind} rotation {serial} was taken already: a new rotation "
                                "carries the next serial", "STALE_SERIAL")
    return False


def _check_city_signed(envelope: Signed, kind: str) -> None:
    wire.check_kind(envelope, kind)
    if envelope.signer != CITY:
        raise PermissionDenied(f"a {kind!r} act is signed by the city root key, not by "
                               f"{envelope.signer[:16]!r}", "NOT_CITY_SIGNED")


def _verify(envelope: Signed, key: bytes) -> None:
    try:
        verify(envelope, key)
    except EnvelopeError as e:
        raise wire.refused(e) from None


def rotate_root(tx: Tx, envelope: Signed) -> Rotated:
    """Take a ``city_key`` rotation: signed by the current root key, the next serial,
    leaving valid every act of the old key this clearinghouse holds (ACTS_NOT_KEPT
    otherwise: a district's admission would vanish). Logged as a leaf."""
    _check_city_signed(envelope, CITY_KEY)
    keys = chain(tx)
    try:
        rotation = citykeys.read_root_rotation(envelope.body)
    except KeyChainError as e:
        raise InvalidArgument(e.message, e.reason) from None
    if _stored(tx, CITY_KEY, rotation.serial, envelope):
        return Rotated(rotation.serial, key_id(rotation.new_key), None)
    current = keys.current_root
    if envelope.key_id != key_id(current):
        raise PermissionDenied(
            f"城市根密钥轮换必须由现用根密钥 {key_id(current)} 签署 / a city key rotation is "
            f"signed by the current city root key {key_id(current)}, not "
            f"{envelope.key_id[:16]}", citykeys.ROTATED_OUT)
    _verify(envelope, current)
    if rotation.serial != keys.root_rotations + 1 or rotation.old_key != current:
        raise FailedPrecondition(
            f"the next city key rotation is serial {keys.root_rotations + 1} from key "
            f"{key_id(current)}", "SERIAL_GAP")
    missing = [d for d in signed_by(tx, current) if d not in rotation.valid_acts]
    if missing:
        raise FailedPrecondition(
            f"the rotation leaves {len(missing)} act(s) of the old key out, which every "
            "reader would then refuse; prepare it again", "ACTS_NOT_KEPT")
    tx.repo.insert_key_act(CITY_KEY, rotation.serial, wire.to_bytes(envelope), tx.now)
    index = log.record_city_act(tx, CITY_KEY, envelope, "")
    return Rotated(rotation.serial, key_id(rotation.new_key), index)


def rotate_clearinghouse(tx: Tx, envelope: Signed) -> Rotated:
    """Take a ``clearinghouse_key`` rotation: signed by a root key the chain allows, the
    next serial, from the current clearinghouse key, effective at a tree size the log
    has not reached (LOG_MOVED otherwise: prepare it again). Logged as a leaf; the head
    of ``effective_size`` and every later one are signed by the new key."""
    _check_city_signed(envelope, CLEARINGHOUSE_KEY)
    keys = chain(tx)
    try:
        rotation = citykeys.read_clearinghouse_rotation(envelope.body)
        _verify(envelope, keys.key_for(envelope))
    except KeyChainError as e:
        if e.reason in (citykeys.ROTATED_OUT, citykeys.UNKNOWN_KEY):
            raise signer_refused(e) from None
        raise InvalidArgument(e.message, e.reason) from None
    if _stored(tx, CLEARINGHOUSE_KEY, rotation.serial, envelope):
        return Rotated(rotation.serial, key_id(rotation.new_key), None)
    done = keys.clearinghouse_rotations
    current = keys.log_keys().keys[-1]
    if rotation.serial != len(done) + 1 or rotation.old_key != current:
        raise FailedPrecondition(
            f"the next clearinghouse key rotation is serial {len(done) + 1} from key "
            f"{key_id(current)}", "SERIAL_GAP")
    size = log.log_of(tx).size()
    if rotation.effective_size < size + 1:
        raise FailedPrecondition(
            f"日志已增长到 {size}，请重新准备 / the log has {size} leaves already; the rotation "
            f"was to take effect at size {rotation.effective_size}: prepare it again",
            "LOG_MOVED")
    tx.repo.insert_key_act(CLEARINGHOUSE_KEY, rotation.serial, wire.to_bytes(envelope),
                           tx.now)
    index = log.record_city_act(tx, CLEARINGHOUSE_KEY, envelope, "")
    return Rotated(rotation.serial, key_id(rotation.new_key), index)


def signed_by(tx: Tx, root: bytes) -> list[bytes]:
    """The identities of every city act this clearinghouse holds signed by ``root``
    (what a rotation of that key must leave valid)."""
    kid = key_id(root)
    envelopes = [a.certificate for a in tx.repo.admissions()]
    envelopes += [a.revocation for a in tx.repo.admissions() if a.revocation is not None]
    for r in tx.repo.retired_keys():
        envelopes.append(r.certificate)
        if r.revocation is not None:
            envelopes.append(r.revocation)
    envelopes += tx.repo.rosters()
    envelopes += [p.envelope for p in tx.repo.city_policies()]
    envelopes += [e for _, _, e in tx.repo.key_acts()]
    envelopes += tx.repo.settlements.city_acts()
    found = (wire.from_bytes(e) for e in envelopes)
    return sorted({identity(e) for e in found if e.key_id == kid})


__all__ = [
    "META_CITY_KEY_ID",
    "META_CITY_PUBLIC_KEY",
    "META_CLEARINGHOUSE_KEY_ID",
    "META_CLEARINGHOUSE_PUBLIC_KEY",
    "Rotated",
    "chain",
    "current_clearinghouse_key",
    "keys_for",
    "rotate_clearinghouse",
    "rotate_root",
    "rotated_log_keys",
    "signed_by",
    "signer_refused",
]
