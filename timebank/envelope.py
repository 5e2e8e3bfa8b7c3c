"""Signed envelopes: every message between nodes and the clearinghouse travels in one.

An envelope carries the body bytes exactly as they were signed, the body's *kind*, who
signed (a six-digit node id, ``"clearinghouse"`` or ``"city"``), the key id of the
signing key, and a 64-byte Ed25519 signature over :func:`signing_input`.

Protobuf encoding is not canonical, so a receiver verifies the body bytes it received
and parses them only afterwards; nothing is ever re-encoded to be verified. See
docs/decisions/0003-signed-envelopes.md.

The *envelope* around the body is another matter: anyone holding a signed envelope (every
logged one is public) can re-encode it (fields reordered or repeated, an unknown field
appended, a length written as a longer varint) without touching what was signed. So an
envelope is known by what was signed and by whom, never by the bytes it arrived as:
:func:`identity` is the SHA-256 of its kind, body, signer and key id, and :func:`encode`
its one canonical encoding, the only form anyone stores, logs or compares. A receipt's
``envelope_sha256`` is the identity. :func:`decode` reads any protobuf encoding.

The signer field itself is not under the signature. It is bound through the key: a key
ring holds each public key for exactly one signer, so an envelope whose signer was
changed names a key that signer does not have. A body that names a party (a claim's
creditor, say) must still be checked against ``envelope.signer`` by whoever parses it.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum

from google.protobuf.message import DecodeError
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from timebank.ids import is_node_id
from timebank.keys import PUBLIC_KEY_LEN, key_id
from timebank.v1 import clearing_pb2

__all__ = [
    "CITY",
    "CLEARINGHOUSE",
    "DOMAIN",
    "IDENTITY_DOMAIN",
    "MAX_BODY_BYTES",
    "MAX_KIND_LEN",
    "SIGNATURE_LEN",
    "EnvelopeError",
    "KeyRing",
    "Reason",
    "Signed",
    "decode",
    "encode",
    "identity",
    "sign",
    "signing_input",
    "verify",
]

#: Prefix of every signing input: the protocol and its version.
DOMAIN = b"timebank.v1/"
#: Prefix of the input an envelope's identity hashes (never a signing input: no kind
#: contains a "-" or a "/", so no signing input starts with it).
IDENTITY_DOMAIN = b"timebank.v1/envelope-identity\x00"
MAX_KIND_LEN = 64
MAX_BODY_BYTES = 64 * 1024
SIGNATURE_LEN = 64
CLEARINGHOUSE = "clearinghouse"
CITY = "city"

_KIND = re.compile(r"[a-z][a-z0-9_.]*")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_SPECIAL_SIGNERS = frozenset({CLEARINGHOUSE, CITY})


class Reason(StrEnum):
    """Which check an envelope failed."""

    MALFORMED = "MALFORMED"  # a field has the wrong type, shape or length
    OVERSIZED = "OVERSIZED"  # the body is larger than MAX_BODY_BYTES
    WRONG_KEY = "WRONG_KEY"  # the envelope names a different key than the one given
    BAD_SIGNATURE = "BAD_SIGNATURE"  # the signature does not verify over kind and body
    UNKNOWN_SIGNER = "UNKNOWN_SIGNER"  # the key ring has no keys for this signer
    UNKNOWN_KEY = "UNKNOWN_KEY"  # the signer is known, this key id is not one of theirs
    REVOKED_KEY = "REVOKED_KEY"  # the key was revoked


class EnvelopeError(Exception):
    """An envelope was refused; ``reason`` says which check failed."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message


def _check_kind(kind: object) -> str:
    if not isinstance(kind, str):
        raise EnvelopeError(Reason.MALFORMED, "kind must be a str")
    if len(kind) > MAX_KIND_LEN or not _KIND.fullmatch(kind):
        raise EnvelopeError(
            Reason.MALFORMED,
            f"kind {kind[:80]!r} must be 1..{MAX_KIND_LEN} ascii characters "
            "matching [a-z][a-z0-9_.]*",
        )
    return kind


def _check_body(body: object) -> bytes:
    if type(body) is not bytes:  # not bytearray/memoryview: the bytes must not change
        raise EnvelopeError(Reason.MALFORMED, "body must be bytes")
    if len(body) > MAX_BODY_BYTES:
        raise EnvelopeError(
            Reason.OVERSIZED, f"body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}"
        )
    return body


def _check_signer(signer: object) -> str:
    if not isinstance(signer, str) or not (
        signer in _SPECIAL_SIGNERS or is_node_id(signer)
    ):
        shown = signer[:80] if isinstance(signer, str) else type(signer).__name__
        raise EnvelopeError(
            Reason.MALFORMED,
            f"signer {shown!r} must be a six-digit node id, {CLEARINGHOUSE!r} or {CITY!r}",
        )
    return signer


def _check_key_id(kid: object) -> str:
    if not isinstance(kid, str) or len(kid) != 16 or not _KEY_ID.fullmatch(kid):
        raise EnvelopeError(Reason.MALFORMED, "key_id must be 16 lowercase hex characters")
    return kid


def _check_signature(signature: object) -> bytes:
    if type(signature) is not bytes or len(signature) != SIGNATURE_LEN:
        raise EnvelopeError(Reason.MALFORMED, f"signature must be exactly {SIGNATURE_LEN} bytes")
    return signature


@dataclass(frozen=True, slots=True)
class Signed:
    """A signed envelope. Constructing one checks every field's shape and size
    (raising :class:`EnvelopeError` MALFORMED or OVERSIZED), not the signature."""

    kind: str
    body: bytes
    signer: str
    key_id: str
    signature: bytes

    def __post_init__(self) -> None:
        _check_kind(self.kind)
        _check_body(self.body)
        _check_signer(self.signer)
        _check_key_id(self.key_id)
        _check_signature(self.signature)


def signing_input(kind: str, body: bytes) -> bytes:
    """The bytes an Ed25519 signature covers.

    ``b"timebank.v1/" + kind + b"\\x00" + len(body) as 8 bytes big-endian + body``.

    The prefix and kind separate domains: a signature made for one kind of message (or
    another protocol, or another version) never verifies as another. The NUL ends the
    kind, which cannot contain one. The length makes the encoding self-delimiting as
    DSSE's pre-authentication encoding does, so no two (kind, body) pairs share an
    input, and a future field appended after the body could never be confused with
    body bytes.
    """
    _check_kind(kind)
    _check_body(body)
    return DOMAIN + kind.encode("ascii") + b"\x00" + len(body).to_bytes(8, "big") + body


def identity(envelope: Signed) -> bytes:
    """What an envelope *is*: SHA-256 over its kind, body, signer and key id.

    ``SHA-256(IDENTITY_DOMAIN || for each of kind, body, signer, key id (ASCII or bytes):
    its length as 8 bytes big-endian, then it)``. The signature is left out: an envelope
    means what its signer signed, and a second valid signature over the same kind and
    body by the same key (only its holder can make one) is the same message. Two
    encodings of one envelope have one identity; so a receiver that keys what it did on
    the identity does it once, however the envelope is re-encoded. Receipts carry it as
    ``envelope_sha256``.
    """
    if not isinstance(envelope, Signed):
        raise EnvelopeError(Reason.MALFORMED, "not a Signed envelope")
    digest = hashlib.sha256(IDENTITY_DOMAIN)
    for part in (envelope.kind.encode("ascii"), envelope.body,
                 envelope.signer.encode("ascii"), envelope.key_id.encode("ascii")):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def encode(envelope: Signed) -> bytes:
    """The one canonical encoding of ``envelope`` as a ``timebank.v1.Envelope``.

    Fields 1 to 5 (kind, body, signer, key id, signature) in that order, each that is
    not empty exactly once as its tag byte (field number << 3 | 2), its length as a
    minimal varint and its bytes; nothing else. It is what protobuf's deterministic
    serialisation of those five fields gives, written out here so that the bytes are
    fixed by this contract rather than by a library's choices.
    """
    if not isinstance(envelope, Signed):
        raise EnvelopeError(Reason.MALFORMED, "not a Signed envelope")
    out = bytearray()
    for number, part in enumerate((envelope.kind.encode("ascii"), envelope.body,
                                   envelope.signer.encode("ascii"),
                                   envelope.key_id.encode("ascii"), envelope.signature), 1):
        if part:
            out += bytes([number << 3 | 2]) + _varint(len(part)) + part
    return bytes(out)


def decode(data: bytes) -> Signed:
    """The envelope a serialised ``timebank.v1.Envelope`` carries, in any protobuf
    encoding of it (unknown fields dropped, a repeated field's last value kept, as
    protobuf reads them), its fields' shapes checked. Not verified: see ``verify``."""
    if not isinstance(data, bytes):
        raise EnvelopeError(Reason.MALFORMED, "an envelope is read from bytes")
    try:
        message = clearing_pb2.Envelope.FromString(data)
    except DecodeError:
        raise EnvelopeError(Reason.MALFORMED, "not a serialised timebank.v1.Envelope") from None
    return Signed(message.kind, message.body, message.signer, message.key_id,
                  message.signature)


def sign(kind: str, body: bytes, signer: str, key: SigningKey) -> Signed:
    """Sign ``body`` as a message of ``kind`` from ``signer`` with ``key``."""
    message = signing_input(kind, body)
    _check_signer(signer)
    signature = key.sign(message).signature
    return Signed(kind, body, signer, key_id(bytes(key.verify_key)), signature)


def verify(envelope: Signed, public_key: bytes) -> bytes:
    """Check ``envelope`` against ``public_key``; return the body bytes exactly as received.

    Raises :class:`EnvelopeError` with WRONG_KEY if the envelope names another key,
    BAD_SIGNATURE if the signature does not cover this kind and body under this key.
    Whether the key belongs to ``envelope.signer`` is the caller's business; a
    :class:`KeyRing` checks that too.
    """
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_LEN:
        raise ValueError(f"an Ed25519 public key is exactly {PUBLIC_KEY_LEN} bytes")
    return _verify_with(envelope, VerifyKey(public_key), key_id(public_key))


def _verify_with(envelope: Signed, verify_key: VerifyKey, kid: str) -> bytes:
    if not isinstance(envelope, Signed):
        raise EnvelopeError(Reason.MALFORMED, "not a Signed envelope")
    if envelope.key_id != kid:
        raise EnvelopeError(
            Reason.WRONG_KEY,
            f"envelope names key {envelope.key_id}, verifying with key {kid}",
        )
    try:
        verify_key.verify(signing_input(envelope.kind, envelope.body), envelope.signature)
    except BadSignatureError:
        raise EnvelopeError(
            Reason.BAD_SIGNATURE,
            f"signature by {envelope.signer} key {kid} does not verify "
            f"over kind {envelope.kind!r} and its body",
        ) from None
    return envelope.body


class KeyRing(Mapping[tuple[str, str], bytes]):
    """Public keys by (signer, key id), with revocation.

    As a mapping it holds the usable (unrevoked) keys. A public key belongs to exactly
    one signer. Revocation is permanent: a revoked key can never be added again, and a
    revocation may arrive before the key itself. Reads need no lock; changes take one.
    """

    def __init__(self) -> None:
        self._keys: dict[tuple[str, str], tuple[bytes, VerifyKey]] = {}
        self._owner: dict[str, str] = {}  # key id -> signer
        self._signers: dict[str, int] = {}  # signer -> number of usable keys
        self._revoked: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def __getitem__(self, item: tuple[str, str]) -> bytes:
        return self._keys[item][0]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._keys))

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, signer: str, public_key: bytes) -> str:
        """Trust ``public_key`` for ``signer``; return its key id. Adding it again is a no-op."""
        _check_signer(signer)
        kid = key_id(public_key)
        with self._lock:
            if (signer, kid) in self._revoked:
                raise ValueError(f"key {kid} of {signer} was revoked; it cannot be added again")
            owner = self._owner.get(kid)
            if owner is not None and owner != signer:
                raise ValueError(f"key {kid} already belongs to {owner}, not to {signer}")
            known = self._keys.get((signer, kid))
            if known is not None:
                if known[0] != public_key:  # two keys, one 64-bit id: refuse both ways
                    raise ValueError(f"a different key with id {kid} is already held")
                return kid
            self._keys[(signer, kid)] = (public_key, VerifyKey(public_key))
            self._owner[kid] = signer
            self._signers[signer] = self._signers.get(signer, 0) + 1
        return kid

    def revoke(self, signer: str, key_id: str) -> None:
        """Stop trusting a key, for ever. Envelopes signed by it fail with REVOKED_KEY."""
        _check_signer(signer)
        _check_key_id(key_id)
        with self._lock:
            self._revoked.add((signer, key_id))  # first, so a concurrent verify sees it
            if self._keys.pop((signer, key_id), None) is not None:
                self._signers[signer] -= 1
                if not self._signers[signer]:
                    del self._signers[signer]

    def is_revoked(self, signer: str, key_id: str) -> bool:
        return (signer, key_id) in self._revoked

    def verify(self, envelope: Signed) -> bytes:
        """Check the envelope against the key its signer holds under its key id.

        Returns the body bytes as received, or raises :class:`EnvelopeError` naming the
        first check that failed: REVOKED_KEY, UNKNOWN_SIGNER, UNKNOWN_KEY, BAD_SIGNATURE.
        """
        if not isinstance(envelope, Signed):
            raise EnvelopeError(Reason.MALFORMED, "not a Signed envelope")
        ref = (envelope.signer, envelope.key_id)
        if ref in self._revoked:
            raise EnvelopeError(
                Reason.REVOKED_KEY, f"key {envelope.key_id} of {envelope.signer} is revoked"
            )
        entry = self._keys.get(ref)
        if entry is None:
            if envelope.signer not in self._signers:
                raise EnvelopeError(
                    Reason.UNKNOWN_SIGNER, f"no keys are held for signer {envelope.signer}"
                )
            raise EnvelopeError(
                Reason.UNKNOWN_KEY,
                f"signer {envelope.signer} has no key with id {envelope.key_id}",
            )
        return _verify_with(envelope, entry[1], envelope.key_id)
