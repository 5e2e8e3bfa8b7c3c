"""The city's keys over time: the chain of rotations a reader follows from the keys it
was configured with (ADR 0018). Pure: no I/O, no clock.

Two acts change a key, both signed by the city root key and logged:

- ``city_key`` (``CityKeyRotation``): the root key being retired names the next one.
  It lists the envelope identities of every act the retiring key signed that stays
  valid; anything else that key ever signs is refused (``ROTATED_OUT_CITY_KEY``), so a
  stolen root key, once rotated out, can admit no one. Serial 1, 2, ... each signed by
  the key the one before named.
- ``clearinghouse_key`` (``ClearinghouseKeyRotation``): the clearinghouse's next key and
  the tree size from which it signs heads. Heads below that size verify under the old
  key for ever, so passbooks and checkpoints signed before still verify; the log keeps
  its name (the origin of the first key).

A reader never takes a key from the clearinghouse's word: ``CityKeys`` starts from the
root key (and clearinghouse key) in its own configuration and accepts a rotation only
if the key already trusted signed it, in serial order. Two different rotations with one
serial (a stolen key racing the bureau) make the whole chain refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf.message import DecodeError
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from timebank import transparency
from timebank.envelope import CITY, EnvelopeError, Signed, identity, verify
from timebank.keys import PUBLIC_KEY_LEN, SigningKey, key_id, public_key
from timebank.v1 import clearing_pb2 as pb

__all__ = [
    "CITY_KEY",
    "CLEARINGHOUSE_KEY",
    "KEY_KINDS",
    "MAX_ROTATIONS",
    "MAX_VALID_ACTS",
    "CityKeys",
    "ClearinghouseRotation",
    "KeyChainError",
    "RootRotation",
    "clearinghouse_rotation_body",
    "countersign_message",
    "countersigned_body",
    "read_clearinghouse_rotation",
    "read_root_rotation",
    "root_rotation_body",
]

CITY_KEY = "city_key"
CLEARINGHOUSE_KEY = "clearinghouse_key"
KEY_KINDS = frozenset({CITY_KEY, CLEARINGHOUSE_KEY})
#: The most rotations of either key a reader follows: one a month for eight years.
MAX_ROTATIONS = 100
#: The most acts a retired root key leaves valid: each identity takes 34 bytes of a
#: 64 KiB body. A city that has signed more under one root rotates its key sooner.
MAX_VALID_ACTS = 1800
_MAX_NUMBER = transparency.MAX_LOG_NUMBER

#: Reasons (``KeyChainError.reason``).
ROTATED_OUT = "ROTATED_OUT_CITY_KEY"
UNKNOWN_KEY = "UNKNOWN_CITY_KEY"
BROKEN_CHAIN = "BROKEN_KEY_CHAIN"
MALFORMED = "MALFORMED_ROTATION"


class KeyChainError(ValueError):
    """A rotation is malformed or not chained, or an act is signed by a key the chain
    does not allow for it; ``reason`` is a stable code, ``message`` says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class RootRotation:
    serial: int
    old_key: bytes
    new_key: bytes
    valid_acts: frozenset[bytes]
    issued_at: int
    countersigned: bool = False  # the new key signed it too: the bureau holds it


@dataclass(frozen=True, slots=True)
class ClearinghouseRotation:
    serial: int
    old_key: bytes
    new_key: bytes
    effective_size: int
    issued_at: int


def _check_keys(serial: int, old: bytes, new: bytes, what: str) -> None:
    if not 1 <= serial <= _MAX_NUMBER:
        raise KeyChainError(MALFORMED, f"a {what} rotation's serial is 1 to 2^63 - 1")
    if len(old) != PUBLIC_KEY_LEN or len(new) != PUBLIC_KEY_LEN:
        raise KeyChainError(MALFORMED, f"a {what} rotation names two {PUBLIC_KEY_LEN}-byte "
                                       "keys")
    if old == new:
        raise KeyChainError(MALFORMED, f"a {what} rotation names a new key, not the same one")


def root_rotation_body(serial: int, old: bytes, new: bytes, valid_acts: Iterable[bytes],
                       issued_at: int) -> bytes:
    """The ``CityKeyRotation`` the retiring root key signs (identities sorted)."""
    acts = sorted(set(valid_acts))
    msg = pb.CityKeyRotation(serial=serial, old_public_key=old, new_public_key=new,
                             valid_acts=acts)
    msg.issued_at.FromSeconds(issued_at)
    data = msg.SerializeToString(deterministic=True)
    read_root_rotation(data)  # never sign what a reader would refuse
    return data


def read_root_rotation(body: bytes) -> RootRotation:
    try:
        msg = pb.CityKeyRotation.FromString(body)
    except DecodeError:
        raise KeyChainError(MALFORMED, "the body is not a CityKeyRotation") from None
    _check_keys(msg.serial, msg.old_public_key, msg.new_public_key, "city key")
    if len(msg.valid_acts) > MAX_VALID_ACTS:
        raise KeyChainError(MALFORMED, f"a city key rotation leaves at most {MAX_VALID_ACTS} "
                                       "acts valid")
    if any(len(a) != 32 for a in msg.valid_acts):
        raise KeyChainError(MALFORMED, "a city key rotation lists 32-byte envelope identities")
    old, new = bytes(msg.old_public_key), bytes(msg.new_public_key)
    countersigned = bool(msg.new_key_signature)
    if countersigned:
        try:
            VerifyKey(new).verify(countersign_message(msg.serial, old, new),
                                  bytes(msg.new_key_signature))
        except (BadSignatureError, ValueError):
            raise KeyChainError(MALFORMED, "新根密钥的会签无效 / the new root key's "
                                           "countersignature does not verify") from None
    return RootRotation(msg.serial, old, new, frozenset(bytes(a) for a in msg.valid_acts),
                        msg.issued_at.seconds, countersigned)


def countersign_message(serial: int, old: bytes, new: bytes) -> bytes:
    """What the new root key signs to show the bureau holds it (``new_key_signature``)."""
    return b"timebank.v1/city-key-countersign\0" + serial.to_bytes(8, "big") + old + new


def countersigned_body(body: bytes, new_key: SigningKey) -> bytes:
    """The rotation ``body`` with the new root key's countersignature added (on the
    offline machine, before the old key signs the whole)."""
    rotation = read_root_rotation(body)
    if public_key(new_key) != rotation.new_key:
        raise KeyChainError(MALFORMED, f"此轮换的新根密钥是 {key_id(rotation.new_key)}，不是所给的 "
                                       f"{key_id(public_key(new_key))} / the rotation names new "
                                       f"root key {key_id(rotation.new_key)}, not the one given")
    msg = pb.CityKeyRotation.FromString(body)
    msg.new_key_signature = new_key.sign(
        countersign_message(rotation.serial, rotation.old_key, rotation.new_key)).signature
    data = msg.SerializeToString(deterministic=True)
    read_root_rotation(data)
    return data


def clearinghouse_rotation_body(serial: int, old: bytes, new: bytes, effective_size: int,
                                issued_at: int) -> bytes:
    msg = pb.ClearinghouseKeyRotation(serial=serial, old_public_key=old, new_public_key=new,
                                      effective_size=effective_size)
    msg.issued_at.FromSeconds(issued_at)
    data = msg.SerializeToString(deterministic=True)
    read_clearinghouse_rotation(data)
    return data


def read_clearinghouse_rotation(body: bytes) -> ClearinghouseRotation:
    try:
        msg = pb.ClearinghouseKeyRotation.FromString(body)
    except DecodeError:
        raise KeyChainError(MALFORMED, "the body is not a ClearinghouseKeyRotation") from None
    _check_keys(msg.serial, msg.old_public_key, msg.new_public_key, "clearinghouse key")
    if not 1 <= msg.effective_size <= _MAX_NUMBER:
        raise KeyChainError(MALFORMED, "a clearinghouse key takes effect at a tree size of 1 "
                                       "to 2^63 - 1")
    return ClearinghouseRotation(msg.serial, bytes(msg.old_public_key),
                                 bytes(msg.new_public_key), msg.effective_size,
                                 msg.issued_at.seconds)


def _by_serial(found: list[tuple[int, Signed]], what: str) -> list[Signed]:
    """One envelope per serial 1, 2, ... (the same act twice counts once); a second
    act with a serial breaks the chain; a gap ends it."""
    chosen: dict[int, Signed] = {}
    for serial, envelope in found:
        other = chosen.setdefault(serial, envelope)
        if identity(other) != identity(envelope):
            raise KeyChainError(BROKEN_CHAIN, f"two different {what} rotations carry serial "
                                              f"{serial}: the city key may be in other hands")
    out: list[Signed] = []
    while len(out) + 1 in chosen:
        out.append(chosen[len(out) + 1])
    return out


class CityKeys:
    """The root keys and clearinghouse keys a reader trusts, from the ones it was
    configured with (``root``, and ``clearinghouse`` if it reads the log) and the
    rotation envelopes it was given (others are ignored). Immutable."""

    __slots__ = ("_ch_rotations", "_chain_acts", "_retired", "_roots", "clearinghouse", "root")

    def __init__(self, root: bytes, envelopes: Iterable[Signed] = (),
                 clearinghouse: bytes | None = None) -> None:
        if len(root) != PUBLIC_KEY_LEN:
            raise ValueError(f"a city root key is {PUBLIC_KEY_LEN} bytes")
        self.root = root
        self.clearinghouse = clearinghouse
        roots_found: list[tuple[int, Signed]] = []
        ch_found: list[tuple[int, Signed]] = []
        for envelope in envelopes:
            if envelope.signer != CITY or envelope.kind not in KEY_KINDS:
                continue
            try:
                if envelope.kind == CITY_KEY:
                    roots_found.append((read_root_rotation(envelope.body).serial, envelope))
                else:
                    ch_found.append((read_clearinghouse_rotation(envelope.body).serial,
                                     envelope))
            except KeyChainError:
                continue
            if len(roots_found) + len(ch_found) > 2 * MAX_ROTATIONS:
                raise KeyChainError(BROKEN_CHAIN, f"more than {MAX_ROTATIONS} rotations")
        roots = [root]
        retired: dict[str, RootRotation] = {}
        chain_acts: set[bytes] = set()
        for envelope in _by_serial(roots_found, "city key"):
            rotation = read_root_rotation(envelope.body)
            current = roots[-1]
            if rotation.old_key != current or not _signed_by(envelope, current):
                break  # not signed by the key trusted now: the chain stops here
            if rotation.new_key in roots:
                raise KeyChainError(BROKEN_CHAIN, "a city key rotation returns to a key "
                                                  "retired before")
            retired[key_id(current)] = rotation
            chain_acts.add(identity(envelope))
            roots.append(rotation.new_key)
        self._roots = tuple(roots)
        self._retired = retired
        self._chain_acts = frozenset(chain_acts)
        rotations: list[ClearinghouseRotation] = []
        if clearinghouse is not None:
            current_ch = clearinghouse
            for envelope in _by_serial(ch_found, "clearinghouse key"):
                change = read_clearinghouse_rotation(envelope.body)
                try:
                    valid = _signed_by(envelope, self.key_for(envelope))
                except KeyChainError:
                    valid = False
                if (not valid or change.old_key != current_ch
                        or (rotations and change.effective_size
                            <= rotations[-1].effective_size)):
                    break
                rotations.append(change)
                current_ch = change.new_key
        self._ch_rotations = tuple(rotations)

    @property
    def roots(self) -> tuple[bytes, ...]:
        """Every root key of the chain, the configured one first, the current one last."""
        return self._roots

    @property
    def current_root(self) -> bytes:
        return self._roots[-1]

    @property
    def root_rotations(self) -> int:
        return len(self._roots) - 1

    @property
    def clearinghouse_rotations(self) -> tuple[ClearinghouseRotation, ...]:
        return self._ch_rotations

    def key_for(self, envelope: Signed) -> bytes:
        """The root key ``envelope`` (a city act) must verify under: the current root,
        or a retired one if the act is among those its rotation left valid (or is a
        rotation of the chain). Raises ``KeyChainError``: ROTATED_OUT_CITY_KEY for any
        other act of a retired key, UNKNOWN_CITY_KEY for a key not in the chain."""
        current = self._roots[-1]
        if envelope.key_id == key_id(current):
            return current
        for old in self._roots[:-1]:
            if envelope.key_id != key_id(old):
                continue
            kept = self._retired[key_id(old)].valid_acts
            found = identity(envelope)
            if found in kept or found in self._chain_acts:
                return old
            raise KeyChainError(
                ROTATED_OUT,
                f"城市根密钥 {envelope.key_id} 已轮换停用，此后签署的 {envelope.kind!r} 不予接受 / "
                f"a {envelope.kind!r} signed by the rotated-out city key {envelope.key_id} "
                "that its rotation did not keep: refused")
        raise KeyChainError(
            UNKNOWN_KEY,
            f"签名密钥 {envelope.key_id[:16]} 不是本市根密钥 / the {envelope.kind[:32]!r} is "
            f"signed by key {envelope.key_id[:16]!r}, which is not the city root key nor "
            "one it rotated to")

    def log_keys(self) -> transparency.LogKeys:
        """Which clearinghouse key signs heads of which size (``transparency.LogKeys``)."""
        if self.clearinghouse is None:
            raise ValueError("these keys were built without the clearinghouse's key")
        return transparency.LogKeys(self.clearinghouse, tuple(
            (r.effective_size, r.new_key) for r in self._ch_rotations))


def _signed_by(envelope: Signed, key: bytes) -> bool:
    try:
        verify(envelope, key)
    except EnvelopeError:
        return False
    return True


def root_key_for(city_key: bytes | CityKeys, envelope: Signed) -> bytes:
    """The key a city act must verify under: ``city_key`` itself when a reader holds a
    bare key (no rotation known), else the chain's answer (``CityKeys.key_for``)."""
    return city_key.key_for(envelope) if isinstance(city_key, CityKeys) else city_key
