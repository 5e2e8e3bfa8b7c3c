"""The version of the wire protocol, MAJOR.MINOR, that every call between the services carries.

The contract (``proto/timebank/v1``) changes in two ways. A *minor* change adds
something an older peer can ignore (a field, a message, an rpc, an enum value): peers one
or more minor versions apart still talk. A *major* change is anything ``buf breaking``
refuses against the last release's image (``proto/releases/``), or a change of meaning
under unchanged field numbers: peers of different majors cannot talk, and the server
refuses the call (FAILED_PRECONDITION ``PROTOCOL_MISMATCH``) with a message naming both
versions and who must upgrade, instead of misreading it. docs/protocol.md has the rules.

A client sends its version as gRPC metadata ``timebank-protocol: MAJOR.MINOR``; a server
answers with its own in the response's initial metadata. The signed envelopes carry
their own, separate version in their domain prefix (``timebank.v1/``, ADR 0003), which
this number does not change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: The gRPC metadata key (lowercase, as gRPC requires).
HEADER = "timebank-protocol"
#: A version as text is at most this long ("65535.65535").
MAX_TEXT = 11
MAX_PART = 65535

_TEXT = re.compile(r"(0|[1-9][0-9]{0,4})\.(0|[1-9][0-9]{0,4})")


@dataclass(frozen=True, slots=True, order=True)
class Version:
    """A protocol version. Two versions interoperate when their majors are equal."""

    major: int
    minor: int

    def __post_init__(self) -> None:
        for part in (self.major, self.minor):
            if not isinstance(part, int) or isinstance(part, bool) or not 0 <= part <= MAX_PART:
                raise ValueError(f"a protocol version part is an integer 0..{MAX_PART}, "
                                 f"not {part!r}")

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    @classmethod
    def parse(cls, text: str) -> Version:
        """``MAJOR.MINOR`` in decimal without leading zeros; ValueError otherwise."""
        found = _TEXT.fullmatch(text) if len(text) <= MAX_TEXT else None
        if found is None:
            raise ValueError(f"not a protocol version (MAJOR.MINOR): {text[:MAX_TEXT + 1]!r}")
        return cls(int(found.group(1)), int(found.group(2)))

    def talks_to(self, other: Version) -> bool:
        """Whether a peer at ``other`` can be served: the same major, any minor."""
        return self.major == other.major


#: This release's protocol: 1.0 since release 0.2.0 (pyproject.toml's version).
MAJOR = 1
MINOR = 0
PROTOCOL = Version(MAJOR, MINOR)

__all__ = ["HEADER", "MAJOR", "MINOR", "PROTOCOL", "Version"]
