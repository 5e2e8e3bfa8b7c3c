"""Signed tree heads in the C2SP transparency-log formats, so existing tooling can read them.

The clearinghouse signs the head of its Merkle tree as a *checkpoint* (c2sp.org/tlog-checkpoint)
inside a *signed note* (c2sp.org/signed-note, Ed25519, signature type 0x01); each district node
witnesses it by appending a *cosignature* (c2sp.org/tlog-cosignature, cosignature/v1, Ed25519,
signature type 0x04) to the same note. Using the published formats rather than our own means
transparency-dev witnesses, sigsum tools and litewitness can check our heads, and we can check
theirs.

A signed note, as text::

    <note text, ending in a newline>
    <blank line>
    — <key name> <base64(4-byte key hash || signature)>     (one or more lines)

The note text of a checkpoint is: origin line, tree size (ASCII decimal, no leading zeroes),
base64 of the 32-byte root hash, then optional non-empty extension lines; every line ends in
a newline.

Everything here is pure (no I/O, no clock): the caller passes the cosignature time, and
a verifier that has a clock passes ``now`` to refuse cosignatures dated more than
``MAX_COSIGNATURE_SKEW`` seconds after it. Parsing is strict and bounded (1 MiB per note,
100 signature lines, 255-character key names, sizes and times below 2**63), because notes
arrive from other machines. Signatures with an unknown key name or key hash are ignored,
as the spec requires, but a signature line that claims a key the verifier knows (its name
and key hash match) and does not verify rejects the whole note: the signed-note spec says
a failed signature from a known key should, and a note that carries one was tampered with
or made by mistake, so no part of it is counted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

__all__ = [
    "ALG_COSIGNATURE_V1",
    "ALG_ED25519",
    "MAX_COSIGNATURE_SKEW",
    "MAX_NAME_LEN",
    "MAX_NOTE_BYTES",
    "MAX_SIGNATURES",
    "MAX_UINT63",
    "Checkpoint",
    "CheckpointError",
    "FutureCosignature",
    "NoteSignature",
    "SignedNote",
    "add_signatures",
    "cosign",
    "cosignature_message",
    "cosigners",
    "key_hash",
    "parse_verifier_key",
    "sign_note",
    "verifier_key",
    "verify_cosignature",
    "verify_note",
]

#: signed-note signature type of a plain Ed25519 note signature.
ALG_ED25519 = 0x01
#: signed-note signature type of a timestamped Ed25519 cosignature (tlog-cosignature v1).
ALG_COSIGNATURE_V1 = 0x04
#: Largest signed note we parse, in UTF-8 bytes (defensive bound; the spec leaves it to us).
MAX_NOTE_BYTES = 1 << 20
#: Most signature lines we accept in one note (golang.org/x/mod/sumdb/note's limit too).
MAX_SIGNATURES = 100
#: Longest key name, in characters.
MAX_NAME_LEN = 255
#: Largest tree size or timestamp (the cosignature spec caps timestamps at 2**63 - 1).
MAX_UINT63 = (1 << 63) - 1
#: How far after a verifier's clock a cosignature's time may be, in seconds. Clocks of
#: districts and of whoever verifies differ by seconds, not minutes; a cosignature dated
#: later than this was made on a clock that is wrong (or is meant to look fresher than
#: it is), and is refused rather than believed.
MAX_COSIGNATURE_SKEW = 300

_SIG_PREFIX = "\u2014 "  # EM DASH, SPACE
_KEY_HASH_LEN = 4
_PUBLIC_KEY_LEN = 32
_ED25519_SIG_LEN = 64
_TIMESTAMP_LEN = 8
_ROOT_LEN = 32
_COSIGNATURE_HEADER = "cosignature/v1\n"
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}", re.ASCII)
_HEX8 = re.compile(r"[0-9a-fA-F]{8}", re.ASCII)
# ASCII control characters other than newline: forbidden anywhere in a signed note.
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


class CheckpointError(ValueError):
    """A note, checkpoint, key or signature is malformed or does not verify."""


class FutureCosignature(CheckpointError):
    """A cosignature verifies but is dated more than ``MAX_COSIGNATURE_SKEW`` seconds
    after the verifier's clock: one of the two clocks is wrong."""


# --- small strict helpers -------------------------------------------------------------------


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64decode(text: str, what: str) -> bytes:
    """Standard, padded base64, accepted only in its one canonical spelling.

    Canonical-only so that parsing then formatting gives back the same bytes, and so that
    one value has one textual form (no alternative spellings of the same signature).
    """
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError) as exc:
        raise CheckpointError(f"{what} is not valid base64") from exc
    if _b64encode(data) != text:
        raise CheckpointError(f"{what} is not canonical padded base64")
    return data


def _check_utf8_text(text: object, what: str) -> str:
    """Text must be a str that encodes to UTF-8 and holds no control character but newline."""
    if not isinstance(text, str):
        raise CheckpointError(f"{what} must be a str, not {type(text).__name__}")
    if len(text) > MAX_NOTE_BYTES:
        raise CheckpointError(f"{what} is longer than {MAX_NOTE_BYTES} bytes")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise CheckpointError(f"{what} is not valid UTF-8 (lone surrogate)") from exc
    if size > MAX_NOTE_BYTES:
        raise CheckpointError(f"{what} is longer than {MAX_NOTE_BYTES} bytes")
    bad = _CONTROL.search(text)
    if bad is not None:
        raise CheckpointError(
            f"{what} contains the control character U+{ord(bad.group()):04X} "
            "(only newline is allowed)"
        )
    return text


def _check_name(name: object) -> str:
    """Key names: non-empty, at most 255 characters, no Unicode space, no '+', no control."""
    if not isinstance(name, str):
        raise CheckpointError(f"key name must be a str, not {type(name).__name__}")
    if not name:
        raise CheckpointError("key name is empty")
    if len(name) > MAX_NAME_LEN:
        raise CheckpointError(f"key name is longer than {MAX_NAME_LEN} characters")
    if "+" in name:
        raise CheckpointError(f"key name {name!r} contains '+'")
    if any(ch.isspace() for ch in name):
        raise CheckpointError(f"key name {name!r} contains whitespace")
    if _CONTROL.search(name) is not None:
        raise CheckpointError(f"key name {name!r} contains a control character")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CheckpointError("key name is not valid UTF-8 (lone surrogate)") from exc
    return name


def _check_note_text(text: object) -> str:
    """A note text is UTF-8 without control characters and ends in a newline."""
    checked = _check_utf8_text(text, "note text")
    if not checked.endswith("\n"):
        raise CheckpointError("note text does not end in a newline")
    return checked


def _check_public_key(public_key: object) -> bytes:
    if not isinstance(public_key, bytes | bytearray) or len(public_key) != _PUBLIC_KEY_LEN:
        raise CheckpointError(f"an Ed25519 public key is {_PUBLIC_KEY_LEN} bytes")
    return bytes(public_key)


def _check_uint63(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckpointError(f"{what} must be an int, not {type(value).__name__}")
    if not 0 <= value <= MAX_UINT63:
        raise CheckpointError(f"{what} {value} is outside 0 .. 2**63 - 1")
    return value


def _check_algorithm(algorithm: int) -> int:
    if algorithm not in (ALG_ED25519, ALG_COSIGNATURE_V1):
        raise CheckpointError(
            f"signature type 0x{algorithm:02x} is not supported (only 0x01 Ed25519 and "
            "0x04 Ed25519 cosignature/v1)"
        )
    return algorithm


def _ed25519_ok(public_key: bytes, message: bytes, signature: bytes) -> bool:
    if len(signature) != _ED25519_SIG_LEN:
        return False
    try:
        VerifyKey(public_key).verify(message, signature)
    except (BadSignatureError, ValueError):
        # ValueError: PyNaCl refuses some malformed points before checking the signature.
        return False
    return True


# --- keys -----------------------------------------------------------------------------------


def key_hash(name: str, public_key: bytes, algorithm: int = ALG_ED25519) -> bytes:
    """The 4-byte key ID: SHA-256(name || 0x0A || signature type || public key)[:4].

    It only tells a verifier which key a signature line claims to be from; the signature is
    always checked against the configured public key.
    """
    _check_name(name)
    pub = _check_public_key(public_key)
    _check_algorithm(algorithm)
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([algorithm]) + pub).digest()
    return digest[:_KEY_HASH_LEN]


def verifier_key(name: str, public_key: bytes, *, algorithm: int = ALG_ED25519) -> str:
    """The vkey string "<name>+<hex key hash>+<base64(type || public key)>" operators exchange.

    Pass ``algorithm=ALG_COSIGNATURE_V1`` for a witness (cosigner) key: witness tooling
    identifies cosigners by type-0x04 vkeys.
    """
    kh = key_hash(name, public_key, algorithm)
    return f"{name}+{kh.hex()}+{_b64encode(bytes([algorithm]) + bytes(public_key))}"


def parse_verifier_key(text: str, *, algorithm: int = ALG_ED25519) -> tuple[str, bytes, bytes]:
    """(name, 4-byte key hash, 32-byte public key) from a vkey string, checked throughout.

    The key hash in the string must match the name and key, and the type byte must be
    ``algorithm`` (0x01 for a log's note key, 0x04 for a witness's cosignature key), so a
    key meant for one role is never silently used in the other.
    """
    _check_algorithm(algorithm)
    if not isinstance(text, str):
        raise CheckpointError(f"verifier key must be a str, not {type(text).__name__}")
    if len(text) > MAX_NAME_LEN + 64:
        raise CheckpointError("verifier key is too long")
    parts = text.split("+", 2)
    if len(parts) != 3:
        raise CheckpointError("verifier key is not of the form <name>+<hash>+<key>")
    name, hash_hex, key_b64 = parts
    _check_name(name)
    if _HEX8.fullmatch(hash_hex) is None:
        raise CheckpointError("verifier key hash is not 8 hexadecimal digits")
    raw = _b64decode(key_b64, "verifier key material")
    if len(raw) != 1 + _PUBLIC_KEY_LEN:
        raise CheckpointError(
            f"verifier key material is {len(raw)} bytes, expected {1 + _PUBLIC_KEY_LEN}"
        )
    if raw[0] != algorithm:
        raise CheckpointError(
            f"verifier key has signature type 0x{raw[0]:02x}, expected 0x{algorithm:02x}"
        )
    public_key = raw[1:]
    expected = key_hash(name, public_key, algorithm)
    if bytes.fromhex(hash_hex) != expected:
        raise CheckpointError("verifier key hash does not match its name and public key")
    return name, expected, public_key


# --- checkpoints ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head as the note text of a C2SP checkpoint; validated on construction.

    ``origin`` names the log (for us e.g. "nanjing.timebank.example/clearinghouse"), ``size``
    is the number of leaves and ``root`` the 32-byte RFC 6962 root hash. Extension lines are
    opaque and optional; the spec advises against them, but cosignatures do cover them.
    """

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_line(self.origin, "checkpoint origin")
        _check_uint63(self.size, "tree size")
        if not isinstance(self.root, bytes) or len(self.root) != _ROOT_LEN:
            raise CheckpointError(f"root hash must be {_ROOT_LEN} bytes")
        if not isinstance(self.extensions, tuple):
            raise CheckpointError("extensions must be a tuple of str")
        for line in self.extensions:
            _check_line(line, "extension line")

    def body(self) -> str:
        """The note text: origin, size, base64 root, extensions, each ending in a newline."""
        lines = [self.origin, str(self.size), _b64encode(self.root), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse a checkpoint note text strictly: ``parse(c.body()) == c`` and nothing looser.

        Takes the note text only (no blank line, no signature lines); for a signed note use
        ``Checkpoint.parse(SignedNote.parse(raw).text)`` after verifying it.
        """
        _check_utf8_text(text, "checkpoint")
        if not text.endswith("\n"):
            raise CheckpointError("checkpoint does not end in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError(
                f"checkpoint has {len(lines)} lines, needs at least 3 (origin, size, root hash)"
            )
        origin, size_text, root_text, *extensions = lines
        if not origin:
            raise CheckpointError("checkpoint origin line is empty")
        if _DECIMAL.fullmatch(size_text) is None:
            raise CheckpointError(
                f"tree size {size_text!r} is not a canonical decimal (digits, no leading zeroes)"
            )
        size = int(size_text)
        if size > MAX_UINT63:
            raise CheckpointError(f"tree size {size} is not below 2**63")
        root = _b64decode(root_text, "root hash")
        if len(root) != _ROOT_LEN:
            raise CheckpointError(f"root hash is {len(root)} bytes, expected {_ROOT_LEN}")
        for number, line in enumerate(extensions, start=4):
            if not line:
                raise CheckpointError(f"checkpoint line {number} (an extension line) is empty")
        return cls(origin, size, root, tuple(extensions))


def _check_line(line: object, what: str) -> None:
    if not isinstance(line, str):
        raise CheckpointError(f"{what} must be a str, not {type(line).__name__}")
    if not line:
        raise CheckpointError(f"{what} is empty")
    if "\n" in line:
        raise CheckpointError(f"{what} contains a newline")
    _check_utf8_text(line, what)


# --- signed notes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, 4-byte key hash, and the signature bytes after it.

    ``payload`` is whatever follows the key hash: 64 bytes for a note signature, 8-byte
    timestamp plus 64 bytes for a cosignature, or anything for signature types we don't
    know (kept so that other parties' signatures survive a round trip).
    """

    name: str
    key_hash: bytes
    payload: bytes

    def __post_init__(self) -> None:
        _check_name(self.name)
        if not isinstance(self.key_hash, bytes) or len(self.key_hash) != _KEY_HASH_LEN:
            raise CheckpointError(f"key hash must be {_KEY_HASH_LEN} bytes")
        if not isinstance(self.payload, bytes) or not self.payload:
            raise CheckpointError("signature payload must be non-empty bytes")

    def line(self) -> str:
        """The signature line, with its final newline."""
        return f"{_SIG_PREFIX}{self.name} {_b64encode(self.key_hash + self.payload)}\n"

    @classmethod
    def parse_line(cls, line: str) -> NoteSignature:
        """Parse one signature line (with or without its final newline)."""
        if not isinstance(line, str):
            raise CheckpointError(f"signature line must be a str, not {type(line).__name__}")
        if line.endswith("\n"):
            line = line[:-1]
        _check_utf8_text(line, "signature line")
        if "\n" in line:
            raise CheckpointError("signature line contains a newline")
        if not line.startswith(_SIG_PREFIX):
            raise CheckpointError(
                "signature line does not start with an em dash (U+2014) and a space"
            )
        name, sep, encoded = line[len(_SIG_PREFIX) :].partition(" ")
        if not sep or not encoded:
            raise CheckpointError("signature line has no signature after the key name")
        _check_name(name)
        raw = _b64decode(encoded, f"signature by {name!r}")
        if len(raw) <= _KEY_HASH_LEN:
            raise CheckpointError(f"signature by {name!r} is too short ({len(raw)} bytes)")
        return cls(name, raw[:_KEY_HASH_LEN], raw[_KEY_HASH_LEN:])


@dataclass(frozen=True)
class SignedNote:
    """A note text with its signature lines, in order; formats back byte for byte.

    Parsing checks only the syntax: no signature is verified here (see ``verify_note``,
    ``verify_cosignature`` and ``cosigners``), so the text must not be trusted yet.
    """

    text: str
    signatures: tuple[NoteSignature, ...]

    def __post_init__(self) -> None:
        _check_note_text(self.text)
        if not isinstance(self.signatures, tuple) or not all(
            isinstance(sig, NoteSignature) for sig in self.signatures
        ):
            raise CheckpointError("signatures must be a tuple of NoteSignature")
        if not self.signatures:
            raise CheckpointError("a signed note needs at least one signature line")
        if len(self.signatures) > MAX_SIGNATURES:
            raise CheckpointError(f"note has more than {MAX_SIGNATURES} signature lines")

    def format(self) -> str:
        """The signed note: text, a blank line, then each signature line."""
        raw = self.text + "\n" + "".join(sig.line() for sig in self.signatures)
        _check_utf8_text(raw, "signed note")  # bounds the size
        return raw

    @classmethod
    def parse(cls, raw: str) -> SignedNote:
        """Split a signed note at its last blank line and parse every signature line."""
        _check_utf8_text(raw, "signed note")
        split = raw.rfind("\n\n")
        if split < 0:
            raise CheckpointError("signed note has no blank line before its signatures")
        text, block = raw[: split + 1], raw[split + 2 :]
        if not block:
            raise CheckpointError("signed note has no signature lines")
        if not block.endswith("\n"):
            raise CheckpointError("signed note does not end in a newline")
        if block.count("\n") > MAX_SIGNATURES:
            raise CheckpointError(f"signed note has more than {MAX_SIGNATURES} signature lines")
        signatures = tuple(NoteSignature.parse_line(line) for line in block[:-1].split("\n"))
        return cls(text, signatures)


def _signed_note(note: str) -> SignedNote:
    return SignedNote.parse(note)


def sign_note(text: str, name: str, key: SigningKey) -> str:
    """Sign a note text with an Ed25519 note signature (type 0x01): a complete signed note."""
    _check_note_text(text)
    sig = key.sign(text.encode("utf-8")).signature
    kh = key_hash(name, bytes(key.verify_key), ALG_ED25519)
    return SignedNote(text, (NoteSignature(name, kh, sig),)).format()


def add_signatures(note: str, *lines: str) -> str:
    """Append signature lines (e.g. cosignatures) to a signed note.

    A new line replaces an existing one with the same key name and key hash, as
    golang.org/x/mod/sumdb/note does, so re-cosigning with a fresh time doesn't pile up
    lines. Nothing is verified here.
    """
    parsed = _signed_note(note)
    new = [NoteSignature.parse_line(line) for line in lines]
    replaced = {(sig.name, sig.key_hash) for sig in new}
    kept = [sig for sig in parsed.signatures if (sig.name, sig.key_hash) not in replaced]
    return SignedNote(parsed.text, (*kept, *new)).format()


def _candidates(note: SignedNote, name: str, kh: bytes) -> list[NoteSignature]:
    return [sig for sig in note.signatures if sig.name == name and sig.key_hash == kh]


def verify_note(note: str, name: str, public_key: bytes) -> str:
    """The note text, if the note carries a valid Ed25519 note signature by (name, key).

    Lines from other keys are ignored. If several lines claim this key, every one must
    verify: the spec says a failed signature from a known key should reject the note.
    """
    parsed = _signed_note(note)
    kh = key_hash(name, public_key, ALG_ED25519)
    candidates = _candidates(parsed, name, kh)
    if not candidates:
        raise CheckpointError(f"note has no signature by {name}+{kh.hex()}")
    message = parsed.text.encode("utf-8")
    for sig in candidates:
        if not _ed25519_ok(bytes(public_key), message, sig.payload):
            raise CheckpointError(f"invalid signature by {name}+{kh.hex()}")
    return parsed.text


# --- cosignatures ---------------------------------------------------------------------------


def cosignature_message(checkpoint_text: str, timestamp: int) -> bytes:
    """What a cosigner signs: "cosignature/v1\\ntime <T>\\n" then the whole checkpoint text.

    The whole note text, extension lines included (c2sp.org/tlog-cosignature); the header
    line is domain separation so a cosignature can never pass as a note signature.
    """
    Checkpoint.parse(checkpoint_text)
    _check_uint63(timestamp, "cosignature timestamp")
    return f"{_COSIGNATURE_HEADER}time {timestamp}\n{checkpoint_text}".encode()


def cosign(checkpoint_text: str, name: str, key: SigningKey, timestamp: int) -> str:
    """A cosignature/v1 signature line (with newline) by witness ``name`` at ``timestamp``.

    ``checkpoint_text`` is the note text of the checkpoint (verify the log's signature and
    check consistency first: the cosignature says the witness did). ``timestamp`` is POSIX
    seconds, from the caller's clock. Append the line with ``add_signatures``.
    """
    message = cosignature_message(checkpoint_text, timestamp)
    signature = key.sign(message).signature
    kh = key_hash(name, bytes(key.verify_key), ALG_COSIGNATURE_V1)
    payload = timestamp.to_bytes(_TIMESTAMP_LEN, "big") + signature
    return NoteSignature(name, kh, payload).line()


def _cosignature_time(sig: NoteSignature, public_key: bytes, text: str) -> int | None:
    """The timestamp of a cosignature line if it verifies over ``text``; None if not."""
    if len(sig.payload) != _TIMESTAMP_LEN + _ED25519_SIG_LEN:
        return None
    timestamp = int.from_bytes(sig.payload[:_TIMESTAMP_LEN], "big")
    if timestamp > MAX_UINT63:
        return None
    message = cosignature_message(text, timestamp)
    if not _ed25519_ok(public_key, message, sig.payload[_TIMESTAMP_LEN:]):
        return None
    return timestamp


def _checkpoint_note(note: str) -> SignedNote:
    parsed = _signed_note(note)
    Checkpoint.parse(parsed.text)  # a cosignature is only ever over a checkpoint
    return parsed


def _check_now(now: int | None) -> int | None:
    return None if now is None else _check_uint63(now, "the verifier's clock (now)")


def _cosignature_at(sig: NoteSignature, public_key: bytes, text: str, label: str,
                    now: int | None) -> int:
    """The time of a cosignature line claiming a known key; raises if it does not verify
    or, with ``now``, if it is dated more than ``MAX_COSIGNATURE_SKEW`` seconds later."""
    timestamp = _cosignature_time(sig, public_key, text)
    if timestamp is None:
        raise CheckpointError(f"invalid cosignature by {label}")
    if now is not None and timestamp > now + MAX_COSIGNATURE_SKEW:
        raise FutureCosignature(
            f"the cosignature by {label} is dated {timestamp}, {timestamp - now} s after "
            f"this clock ({now}); at most {MAX_COSIGNATURE_SKEW} s of clock skew is allowed")
    return timestamp


def verify_cosignature(note: str, name: str, public_key: bytes, *,
                       now: int | None = None) -> int:
    """The time a witness (name, key) cosigned this checkpoint note; raises if it didn't.

    Like ``verify_note``: other keys' lines are ignored, every line claiming this key must
    verify, and with several valid lines the latest time is returned. With ``now`` (POSIX
    seconds, the verifier's clock), a line dated more than ``MAX_COSIGNATURE_SKEW`` seconds
    after it is refused too.
    """
    parsed = _checkpoint_note(note)
    pub = _check_public_key(public_key)
    now = _check_now(now)
    kh = key_hash(name, pub, ALG_COSIGNATURE_V1)
    candidates = _candidates(parsed, name, kh)
    if not candidates:
        raise CheckpointError(f"note has no cosignature by {name}+{kh.hex()}")
    return max(_cosignature_at(sig, pub, parsed.text, f"{name}+{kh.hex()}", now)
               for sig in candidates)


def cosigners(note: str, witnesses: Mapping[str, bytes], *,
              now: int | None = None) -> dict[str, int]:
    """Which of ``witnesses`` (name -> public key) cosigned the note: name -> time.

    Lines from keys not in ``witnesses`` are ignored (never counted). A line that claims
    one of ``witnesses`` (its name and key hash match) but does not verify rejects the
    note (``CheckpointError``), as the signed-note spec says a failed signature from a
    known key should; so does, with ``now`` (POSIX seconds, the verifier's clock), a
    line dated more than ``MAX_COSIGNATURE_SKEW`` seconds after it. A witness with
    several valid lines gets its latest time. A malformed note or witness entry raises.
    """
    parsed = _checkpoint_note(note)
    now = _check_now(now)
    result: dict[str, int] = {}
    for name, public_key in _witness_items(witnesses):
        pub = _check_public_key(public_key)
        kh = key_hash(name, pub, ALG_COSIGNATURE_V1)
        for sig in _candidates(parsed, name, kh):
            timestamp = _cosignature_at(sig, pub, parsed.text, f"{name}+{kh.hex()}", now)
            result[name] = max(timestamp, result.get(name, -1))
    return result


def _witness_items(witnesses: Mapping[str, bytes]) -> Iterable[tuple[str, bytes]]:
    if not isinstance(witnesses, Mapping):
        raise CheckpointError("witnesses must be a mapping of name to public key")
    return witnesses.items()
