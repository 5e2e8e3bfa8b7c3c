"""Bounds every message of the protocol keeps, whatever its type: checked where a message
is parsed, before any field of it is used.

A ``google.protobuf.Timestamp`` is a time only from 0001-01-01T00:00:00Z to
9999-12-31T23:59:59.999999999Z, with nanos 0 to 999,999,999 (its own definition); any
other pair of numbers parses, and then fails wherever it is turned into a time, deep in
whatever code first does (Python's datetime raises ValueError or OverflowError). So a
receiver checks every Timestamp of a message, at any depth, as soon as it has parsed it,
and refuses the message naming the field. Pure; no I/O.
"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

__all__ = ["MAX_NANOS", "MAX_SECONDS", "MIN_SECONDS", "BadTimestamp", "check_times",
           "is_valid_time"]

#: 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z in UNIX seconds (google.protobuf.Timestamp).
MIN_SECONDS = -62_135_596_800
MAX_SECONDS = 253_402_300_799
MAX_NANOS = 999_999_999
_TIMESTAMP = "google.protobuf.Timestamp"
_MAX_DEPTH = 32  # deeper than any message of ours nests; a bound on the walk


class BadTimestamp(ValueError):
    """A Timestamp field holds no time; ``field`` is its path in the message."""

    def __init__(self, field: str, seconds: int, nanos: int) -> None:
        super().__init__(f"{field} is not a valid time (seconds {seconds}, nanos {nanos}; "
                         f"a time is from year 1 to 9999, nanos 0 to {MAX_NANOS})")
        self.field = field


def is_valid_time(seconds: int, nanos: int) -> bool:
    """Whether (seconds, nanos) is a time a Timestamp may hold."""
    return MIN_SECONDS <= seconds <= MAX_SECONDS and 0 <= nanos <= MAX_NANOS


def check_times(message: Message) -> None:
    """Raise ``BadTimestamp`` for the first Timestamp in ``message`` (itself, or a field
    at any depth, repeated or not) that holds no time."""
    _walk(message, message.DESCRIPTOR.name, 0)


def _walk(message: Message, path: str, depth: int) -> None:
    if message.DESCRIPTOR.full_name == _TIMESTAMP:
        seconds, nanos = message.seconds, message.nanos  # type: ignore[attr-defined]
        if not is_valid_time(seconds, nanos):
            raise BadTimestamp(path, seconds, nanos)
        return
    if depth >= _MAX_DEPTH:
        raise ValueError(f"{path} nests deeper than {_MAX_DEPTH} messages")
    for field, value in message.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE or field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            for key, item in value.items():
                if isinstance(item, Message):
                    _walk(item, f"{path}.{field.name}[{key!r}]", depth + 1)
            continue
        if field.is_repeated:
            for i, item in enumerate(value):
                _walk(item, f"{path}.{field.name}[{i}]", depth + 1)
        else:
            _walk(value, f"{path}.{field.name}", depth + 1)
