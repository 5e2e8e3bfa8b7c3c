"""The city's transparency log as its readers see it (ADR 0007): the names in its
checkpoints, and the checks a node, an auditor or a passbook verifier makes on what the
clearinghouse shows them. Pure functions over bytes and text; no I/O.

A tree head is a C2SP checkpoint signed by the clearinghouse under the log's origin
(``clearinghouse_origin``); districts cosign heads as witnesses under
``witness_name(node_id)``. A reader keeps the last head it verified and accepts a new one
only with a consistency proof from it, so a clearinghouse that showed it one history
cannot later show it another.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from timebank import checkpoint as notes
from timebank import merkle
from timebank.keys import key_id


class LogError(Exception):
    """What the clearinghouse showed does not hold together: a bad signature, a head
    inconsistent with one seen before, a proof that does not prove."""


def clearinghouse_origin(clearinghouse_public_key: bytes) -> str:
    """The log's name in its checkpoints, and the clearinghouse's note key name: unique
    per clearinghouse key, so two cities' logs can never be confused."""
    return f"timebank.clearinghouse/{key_id(clearinghouse_public_key)}"


def witness_name(node_id: str) -> str:
    """A district's key name when it cosigns tree heads."""
    return f"timebank.district/{node_id}"


#: The largest tree size, leaf index or delivery sequence number anyone may name: what a
#: signed 64-bit database integer holds. A larger one is a malformed request, refused
#: before it reaches a database driver (which would overflow).
MAX_LOG_NUMBER = 2**63 - 1
DISTRICTS_PREFIX = "timebank-districts "
TIME_PREFIX = "timebank-time "
ROSTER_PREFIX = "timebank-roster "
_DIGEST_LEN = 32


def districts_line(count: int) -> str:
    """The checkpoint extension line stating how many districts the city has admitted."""
    return f"{DISTRICTS_PREFIX}{count}"


def time_line(unix_seconds: int) -> str:
    """The checkpoint extension line stating when the clearinghouse signed the head."""
    return f"{TIME_PREFIX}{unix_seconds}"


def roster_line(epoch: int, digest: bytes) -> str:
    """The checkpoint extension line naming the city-signed roster (``timebank.roster``)
    a head is judged by: its epoch and the SHA-256 of its signed body."""
    if not 1 <= epoch <= MAX_LOG_NUMBER or len(digest) != _DIGEST_LEN:
        raise ValueError("a roster line names an epoch from 1 and a 32-byte digest")
    return f"{ROSTER_PREFIX}{epoch} {base64.b64encode(digest).decode('ascii')}"


def _roster(lines: tuple[str, ...]) -> tuple[int, bytes] | None:
    found = [line for line in lines if line.startswith(ROSTER_PREFIX)]
    if not found:
        return None
    parts = found[0].removeprefix(ROSTER_PREFIX).split(" ")
    if len(found) == 1 and len(parts) == 2 and parts[0].isdigit() and len(parts[0]) <= 19:
        try:
            epoch = int(parts[0])
            digest = base64.b64decode(parts[1].encode("ascii"), validate=True)
            if roster_line(epoch, digest) == found[0]:  # one spelling only
                return epoch, digest
        except (binascii.Error, ValueError, UnicodeEncodeError):
            pass
    raise LogError("the tree head's roster line is malformed")


def quorum(districts: int) -> int:
    """How many districts must cosign a head for it to be final: more than half."""
    return districts // 2 + 1


@dataclass(frozen=True, slots=True)
class Head:
    """A tree head whose clearinghouse signature checked out. ``districts``: how many
    districts the head says were admitted at its size; ``at``: when it was signed (UNIX
    seconds); ``roster``: the (epoch, digest) of the city-signed roster it names; None
    where the head does not say."""

    size: int
    root: bytes
    note: str
    districts: int | None = None
    at: int | None = None
    roster: tuple[int, bytes] | None = None


@dataclass(frozen=True, slots=True)
class LogKeys:
    """Which key signs the log's heads of which size: ``first`` (the key the log was
    started with, whose id names the log's origin for ever) below the first change,
    then each ``(effective_size, key)`` of ``changes`` (increasing sizes) from that size
    on. Built from city-signed rotations (``timebank.citykeys``), never from the
    clearinghouse's word; a bare key is a log whose key never changed."""

    first: bytes
    changes: tuple[tuple[int, bytes], ...] = ()

    @property
    def origin(self) -> str:
        return clearinghouse_origin(self.first)

    @property
    def keys(self) -> tuple[bytes, ...]:
        return (self.first, *(k for _, k in self.changes))

    def named(self, kid: str) -> bytes:
        """The key of the chain with key id ``kid`` (the first key if none is: the
        signature check then says WRONG_KEY). For what the clearinghouse signs besides
        heads (receipts, deliveries), checked against the log by proofs."""
        return next((k for k in self.keys if key_id(k) == kid), self.first)

    def at(self, size: int) -> bytes:
        """The key that signs the head of ``size``."""
        found = self.first
        for effective, key in self.changes:
            if size >= effective:
                found = key
        return found


def log_keys(keys: bytes | LogKeys) -> LogKeys:
    """``keys`` as a ``LogKeys`` (a bare key: one that never changed)."""
    return keys if isinstance(keys, LogKeys) else LogKeys(keys)


def check_head(note: str, clearinghouse_public_key: bytes | LogKeys) -> Head:
    """The head a signed checkpoint states, once the clearinghouse's signature (by the
    key that signs heads of its size) and the origin are checked."""
    keys = log_keys(clearinghouse_public_key)
    origin = keys.origin
    try:
        size = _read(note)[0].size
    except LogError:
        size = 0  # the signature check below says what is wrong with it
    try:
        notes.verify_note(note, origin, keys.at(size))
    except notes.CheckpointError as e:
        raise LogError(f"the tree head is not signed by the clearinghouse: {e}") from None
    head, found_origin = _read(note)
    if found_origin != origin:
        raise LogError(f"the tree head is for log {found_origin!r}, not {origin!r}")
    return head


def read_head(note: str) -> Head:
    """What a signed checkpoint states, its signatures not checked: for the
    clearinghouse reading back the heads it signed itself."""
    return _read(note)[0]


def _read(note: str) -> tuple[Head, str]:
    try:
        found = notes.Checkpoint.parse(notes.SignedNote.parse(note).text)
    except notes.CheckpointError as e:
        raise LogError(f"the tree head is malformed: {e}") from None
    districts = _number(found.extensions, DISTRICTS_PREFIX, 6)
    at = _number(found.extensions, TIME_PREFIX, 19)
    roster = _roster(found.extensions)
    return Head(found.size, found.root, note, districts, at, roster), found.origin


def _number(lines: tuple[str, ...], prefix: str, digits: int) -> int | None:
    """The number on the one extension line starting with ``prefix`` (None if none)."""
    found = [line.removeprefix(prefix) for line in lines if line.startswith(prefix)]
    if not found:
        return None
    if len(found) > 1 or not found[0].isdigit() or len(found[0]) > digits:
        raise LogError(f"the tree head's {prefix.strip()!r} line is malformed")
    return int(found[0])


def check_extends(old: Head | None, new: Head, proof: list[bytes]) -> None:
    """``new`` extends ``old`` (the last head verified), by the RFC 9162 consistency
    proof; a smaller tree, or another root at the same size, is a forked log."""
    if old is None or old.size == 0:
        return
    if new.size < old.size:
        raise LogError(f"the log shrank: a head of {new.size} leaves after one of {old.size}")
    if new.size == old.size:
        if new.root != old.root:
            raise LogError(f"two different heads of {new.size} leaves: the log was forked")
        return
    if not merkle.verify_consistency(old.size, new.size, old.root, new.root, proof):
        raise LogError(f"the head of {new.size} leaves is not consistent with the head of "
                       f"{old.size} seen before: the log was rewritten or forked")


def check_included(entry: bytes, index: int, head: Head, path: list[bytes]) -> None:
    """Leaf ``index`` of the log holds ``entry``, in the tree ``head`` states."""
    if not merkle.verify_inclusion(entry, index, head.size, path, head.root):
        raise LogError(f"log leaf {index} is not proven in the head of {head.size} leaves")


__all__ = [
    "Head",
    "LogError",
    "check_extends",
    "check_head",
    "check_included",
    "clearinghouse_origin",
    "districts_line",
    "quorum",
    "read_head",
    "roster_line",
    "time_line",
    "witness_name",
]
