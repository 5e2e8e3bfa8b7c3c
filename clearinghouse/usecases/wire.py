"""Signed envelopes on the wire and in storage: ``timebank.v1.Envelope`` bytes.

The clearinghouse reads an envelope in whatever protobuf encoding it arrives
(``timebank.envelope.decode``) and keeps, logs and relays only its canonical encoding
(``timebank.envelope.encode``): one envelope, one stored form, whatever a sender or a
replayer made of its bytes. The body bytes are kept exactly as signed, so a stored
envelope verifies again later; nothing under a signature is re-encoded.
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage

from clearinghouse.domain.claims import ClaimState, RejectReason
from runtime.errors import InvalidArgument, PermissionDenied
from timebank import bounds
from timebank import envelope as contract
from timebank.envelope import EnvelopeError, Reason, Signed
from timebank.v1 import clearing_pb2

M = TypeVar("M", bound=ProtoMessage)


def to_bytes(envelope: Signed) -> bytes:
    """The canonical serialised ``timebank.v1.Envelope`` carrying ``envelope``."""
    return contract.encode(envelope)


def from_bytes(data: bytes) -> Signed:
    """A stored or received ``timebank.v1.Envelope`` in any protobuf encoding, its
    fields' shapes checked (INVALID_ARGUMENT MALFORMED_ENVELOPE if it is not one)."""
    try:
        clearing_pb2.Envelope.FromString(data)
    except DecodeError:
        raise InvalidArgument("the envelope is not a timebank.v1.Envelope",
                              "MALFORMED_ENVELOPE") from None
    try:
        return contract.decode(data)
    except EnvelopeError as e:
        raise refused(e) from None


def refused(error: EnvelopeError) -> InvalidArgument | PermissionDenied:
    """The use-case error for an envelope that failed a check: its shape is the sender's
    mistake (INVALID_ARGUMENT); a signature or key that does not hold is PERMISSION_DENIED.
    The reason is the envelope check's own code (BAD_SIGNATURE, REVOKED_KEY …)."""
    if error.reason in (Reason.MALFORMED, Reason.OVERSIZED):
        return InvalidArgument(f"the envelope was refused: {error.message}", error.reason.value)
    return PermissionDenied(f"the envelope was refused: {error.message}", error.reason.value)


def check_kind(envelope: Signed, kind: str) -> None:
    if envelope.kind != kind:
        raise InvalidArgument(
            f"expected a {kind!r} envelope, got {envelope.kind[:64]!r}", "WRONG_KIND")


def parse(message_type: type[M], body: bytes, kind: str) -> M:
    """Parse a verified body; a body that is not a ``message_type`` is INVALID_ARGUMENT
    MALFORMED_BODY, and one with a Timestamp anywhere in it that holds no time is
    INVALID_ARGUMENT BAD_TIMESTAMP, before any field is used."""
    try:
        message = message_type.FromString(body)
    except DecodeError:
        raise InvalidArgument(
            f"the body of this {kind!r} envelope is not a {message_type.__name__}",
            "MALFORMED_BODY") from None
    try:
        bounds.check_times(message)
    except bounds.BadTimestamp as e:
        raise InvalidArgument(f"the body of this {kind!r} envelope: {e}",
                              "BAD_TIMESTAMP") from None
    except ValueError as e:
        raise InvalidArgument(f"the body of this {kind!r} envelope: {e}",
                              "MALFORMED_BODY") from None
    return message


REASON_PREFIX = "CLAIM_REASON_"


def wire_state(state: ClaimState) -> clearing_pb2.ClaimState.ValueType:
    """The ``timebank.v1.ClaimState`` of a domain state (receipts, deliveries, the log)."""
    return clearing_pb2.ClaimState.Value(f"CLAIM_STATE_{state.name}")


def wire_reason(reason: RejectReason | None) -> clearing_pb2.ClaimReason.ValueType:
    """The ``timebank.v1.ClaimReason`` of a domain reason (UNSPECIFIED for none)."""
    if reason is None:
        return clearing_pb2.CLAIM_REASON_UNSPECIFIED
    return clearing_pb2.ClaimReason.Value(REASON_PREFIX + reason.value)
