"""The city policy as a city-signed act, and which policy is in force when.

The bureau puts a policy in force by signing a ``timebank.v1.CityPolicy`` (serial, the
TOML text, when it takes effect, when it was issued) with the city root key: an envelope
of kind ``policy``, signer ``city``. The clearinghouse records it in its log; every node
fetches the envelopes and checks them here, under the city public key it was configured
with, never one the clearinghouse gives it. Whoever reads a policy act reads it with
``read_city_policy``, so that the clearinghouse, the nodes and an auditor accept exactly
the same acts, and the text through ``timebank.policy``'s one parser.

**Which policy is in force at time t**: of the policies issued, the one with the highest
serial whose ``effective_at`` is at or before t (``in_force``). The same rule for every
reader gives every district the same policy at the same instant, switching at the time
the act states, with no restart. A higher serial issued with an earlier effective time
than a policy still scheduled supersedes it: the scheduled one never comes into force
(that is how the bureau withdraws a scheduled change).

**Around a change** a message made just before the switch can arrive just after it, and
clocks differ a little: the clearinghouse accepts every policy in force at some instant
within ``GRACE`` of its own clock (``accepted_digests``), so a claim in flight at the
switch does not fail. If at some instant of that window no city policy was in force yet,
any policy is accepted: before the city's first act takes effect, each node runs its
local policy file.

Pure: no clock is read, no file or network touched; times are the caller's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar

from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from timebank.citykeys import CityKeys, KeyChainError, root_key_for
from timebank.envelope import CITY, EnvelopeError, Signed, verify
from timebank.envelope import Reason as EnvelopeReason
from timebank.policy import Policy, PolicyError, load_policy, policy_sha256
from timebank.v1 import clearing_pb2

#: The envelope kind of a city-signed policy.
POLICY_KIND = "policy"
#: Around a change of policy, the one in force just before (or just after) is accepted
#: too for this long, by the clearinghouse's clock: a claim message made at the switch,
#: and the delay of a node's outbox (retries back off to 30 seconds), fit well inside.
GRACE = timedelta(minutes=10)
MAX_SERIAL = 2**63 - 1
#: The furthest ahead of its issue a policy may take effect.
MAX_AHEAD = timedelta(days=3660)
#: Every time a policy act carries must lie in these years.
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(9000, 1, 1, tzinfo=UTC)

#: Why a policy act was refused (``PolicyActError.reason``): its envelope, then its body.
WRONG_KIND = "WRONG_KIND"
NOT_CITY_SIGNED = "NOT_CITY_SIGNED"
MALFORMED_BODY = "MALFORMED_BODY"
MALFORMED_SERIAL = "MALFORMED_SERIAL"
MALFORMED_TIME = "MALFORMED_TIME"
BAD_POLICY = "BAD_POLICY"
#: The reasons that say the act is not the city's (its signature or signer); the others
#: say the act itself is malformed.
SIGNATURE_REASONS = frozenset({NOT_CITY_SIGNED, "ROTATED_OUT_CITY_KEY", "UNKNOWN_CITY_KEY",
                               *(r.value for r in EnvelopeReason
                                                  if r not in (EnvelopeReason.MALFORMED,
                                                               EnvelopeReason.OVERSIZED))})


class PolicyActError(ValueError):
    """A policy act was refused; ``reason`` is a stable code, ``message`` says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class Dated(Protocol):
    """What the in-force rule reads of a policy: its serial, from when, its digest."""

    @property
    def serial(self) -> int: ...

    @property
    def effective_at(self) -> datetime: ...

    @property
    def sha256(self) -> bytes: ...


D = TypeVar("D", bound=Dated)


@dataclass(frozen=True, slots=True)
class Term:
    """A policy's place in the schedule without its text: enough to say which is in
    force and to compare digests (what the clearinghouse reads per claim message)."""

    serial: int
    effective_at: datetime
    sha256: bytes


@dataclass(frozen=True, slots=True)
class CityPolicy:
    """A city-signed policy, verified and parsed: ``policy`` is what a node runs."""

    serial: int
    text: str
    effective_at: datetime
    issued_at: datetime
    sha256: bytes
    policy: Policy
    envelope: Signed  # as received; it verifies again under the city key

    @property
    def term(self) -> Term:
        return Term(self.serial, self.effective_at, self.sha256)


def _time(stamp: Timestamp, what: str) -> datetime:
    try:
        at = stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise PolicyActError(MALFORMED_TIME, f"a policy's {what} is not a valid time") from None
    if not _EARLIEST <= at < _LATEST:
        raise PolicyActError(MALFORMED_TIME, f"a policy's {what} ({at.isoformat()}) is out of "
                             "range")
    return at


def read_city_policy(envelope: Signed, city_public_key: bytes | CityKeys) -> CityPolicy:
    """The policy a city-signed ``policy`` envelope puts in force, checked: kind,
    signer ``city``, the signature under ``city_public_key`` over the bytes received,
    then the body (serial 1 or more, both times set and in range, taking effect no
    earlier than issued and at most ``MAX_AHEAD`` later, a valid policy text).
    Raises ``PolicyActError``; nothing is parsed before the signature holds."""
    if not isinstance(envelope, Signed):
        raise PolicyActError(EnvelopeReason.MALFORMED.value, "not a signed envelope")
    if envelope.kind != POLICY_KIND:
        raise PolicyActError(WRONG_KIND, f"expected a {POLICY_KIND!r} envelope, got "
                             f"{envelope.kind[:64]!r}")
    if envelope.signer != CITY:
        raise PolicyActError(NOT_CITY_SIGNED, "a city policy is signed by the city root key, "
                             f"not by {envelope.signer[:16]!r}")
    try:
        body = verify(envelope, root_key_for(city_public_key, envelope))
    except EnvelopeError as e:
        raise PolicyActError(e.reason.value, f"the policy's envelope: {e.message}") from None
    except KeyChainError as e:
        raise PolicyActError(e.reason, e.message) from None
    try:
        msg = clearing_pb2.CityPolicy.FromString(body)
    except DecodeError:
        raise PolicyActError(MALFORMED_BODY, "the body is not a CityPolicy") from None
    if not 1 <= msg.serial <= MAX_SERIAL:
        raise PolicyActError(MALFORMED_SERIAL, f"a policy's serial is 1 to {MAX_SERIAL}")
    if not (msg.HasField("effective_at") and msg.HasField("issued_at")):
        raise PolicyActError(MALFORMED_TIME, "a policy states when it was issued and from "
                             "when it applies")
    effective_at = _time(msg.effective_at, "effective time")
    issued_at = _time(msg.issued_at, "issue time")
    if effective_at < issued_at:
        raise PolicyActError(MALFORMED_TIME, f"policy {msg.serial} would take effect "
                             f"({effective_at.isoformat()}) before it was issued "
                             f"({issued_at.isoformat()})")
    if effective_at - issued_at > MAX_AHEAD:
        raise PolicyActError(MALFORMED_TIME, f"a policy takes effect at most "
                             f"{MAX_AHEAD.days} days after it is issued")
    try:
        policy = load_policy(msg.policy_toml)
    except PolicyError as e:
        raise PolicyActError(BAD_POLICY, f"policy {msg.serial}: {e}") from None
    return CityPolicy(msg.serial, msg.policy_toml, effective_at, issued_at,
                      policy_sha256(msg.policy_toml), policy, envelope)


def in_force(policies: Iterable[D], at: datetime) -> D | None:
    """The policy in force at ``at``: the highest serial whose effective time is at or
    before it (None: none yet)."""
    found: D | None = None
    for p in policies:
        if p.effective_at <= at and (found is None or p.serial > found.serial):
            found = p
    return found


def timeline(policies: Iterable[D]) -> list[tuple[datetime, D]]:
    """When the policy in force changes and to which, in time order: at any instant the
    last entry at or before it is in force (none before the first). A policy that is
    superseded before its time never appears."""
    known = list(policies)
    out: list[tuple[datetime, D]] = []
    for at in sorted({p.effective_at for p in known}):
        current = in_force(known, at)
        if current is not None and (not out or out[-1][1].serial != current.serial):
            out.append((at, current))
    return out


def accepted_digests(policies: Sequence[D], at: datetime,
                     grace: timedelta = GRACE) -> frozenset[bytes] | None:
    """The digests of every policy in force at some instant within ``grace`` of ``at``;
    None if at some such instant no city policy was in force (any policy is accepted)."""
    low, high = at - grace, at + grace
    instants = [low, *(p.effective_at for p in policies if low < p.effective_at <= high)]
    found = [in_force(policies, i) for i in instants]
    if any(p is None for p in found):
        return None
    return frozenset(p.sha256 for p in found if p is not None)


def policy_body(serial: int, text: str, effective_at: datetime, issued_at: datetime) -> bytes:
    """The serialised ``CityPolicy`` the bureau signs (times must carry a zone)."""
    if effective_at.tzinfo is None or issued_at.tzinfo is None:
        raise ValueError("refusing a naive datetime: times are signed as UTC")
    msg = clearing_pb2.CityPolicy(serial=serial, policy_toml=text)
    msg.effective_at.FromDatetime(effective_at.astimezone(UTC))
    msg.issued_at.FromDatetime(issued_at.astimezone(UTC))
    return msg.SerializeToString(deterministic=True)


__all__ = ["GRACE", "MAX_AHEAD", "POLICY_KIND", "CityPolicy", "Dated", "PolicyActError",
           "Term", "accepted_digests", "in_force", "policy_body", "read_city_policy",
           "timeline"]
