"""Errors raised while serving a call → gRPC statuses: the one place where what a
service raises becomes what its client receives.

A ``Refusal`` answers with the status it names (``error.status``), its message for the
operator, and a ``google.rpc.ErrorInfo`` detail carrying its stable ``reason`` under the
domain "timebank.v1", which programs branch on. A service may name other errors it
treats as refusals with a translator (the clearinghouse: an ``EnvelopeError`` from the
contract is PERMISSION_DENIED or INVALID_ARGUMENT).

Anything else is a bug. It is logged here with its traceback under a short error id
(an ``InvariantViolation`` as critical), and the client gets INTERNAL with that id in
the message and in the ErrorInfo metadata: never a traceback, never UNKNOWN.
``runtime.observe`` applies this to every call a service serves.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import grpc
import structlog
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from runtime.errors import InvalidArgument, InvariantViolation, Refusal

ERROR_DOMAIN = "timebank.v1"
#: The reason of a request whose bytes are not the method's request message.
MALFORMED_REQUEST = "MALFORMED_REQUEST"

log = structlog.get_logger("runtime.rpcstatus")

#: Turns an error a service treats as a refusal into one (None: it is not one).
Translate = Callable[[Exception], Refusal | None]


def grpc_code(error: Refusal) -> grpc.StatusCode:
    """The gRPC status code a refusal means (INTERNAL if it names none we know, or OK
    or UNKNOWN, which no refusal may answer with)."""
    code = grpc.StatusCode.__members__.get(error.status)
    if code is None or code in (grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN):
        return grpc.StatusCode.INTERNAL
    return code


def rich_status(code: grpc.StatusCode, message: str, reason: str,
                metadata: Mapping[str, str] | None = None) -> grpc.Status:
    """A status with an ErrorInfo detail, ready for ``context.abort_with_status``."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN,
                                       metadata=dict(metadata or {}))
    detail = any_pb2.Any()
    detail.Pack(info)
    numeric: int = code.value[0]
    status: grpc.Status = rpc_status.to_status(
        status_pb2.Status(code=numeric, message=message, details=[detail]))
    return status


def malformed_request(method: str) -> InvalidArgument:
    """The refusal of a request whose bytes are not a ``method`` request message."""
    return InvalidArgument(f"the request is not a valid {method} request message",
                           MALFORMED_REQUEST)


@dataclass(frozen=True, slots=True)
class Answer:
    """What a failed call answers: the status code, the message, the ErrorInfo reason
    and, for a bug, the id the service's log has it under."""

    code: grpc.StatusCode
    message: str
    reason: str
    error_id: str = ""

    def __post_init__(self) -> None:
        assert self.code not in (grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN), self.code

    @classmethod
    def of(cls, refusal: Refusal) -> Answer:
        return cls(grpc_code(refusal), refusal.message, refusal.reason)

    def status(self) -> grpc.Status:
        metadata = {"error_id": self.error_id} if self.error_id else None
        return rich_status(self.code, self.message, self.reason, metadata)


def _no_translation(_error: Exception) -> Refusal | None:
    return None


@dataclass(frozen=True, slots=True)
class ErrorMapping:
    """How one service answers the errors its calls raise.

    ``service`` names it to the client in the answer to a bug ("the node could not
    complete this request … see the node's log for error id …"); ``translate`` turns the
    other errors it treats as refusals into refusals.
    """

    service: str
    translate: Translate = _no_translation

    def answer(self, error: Exception) -> Answer:
        """The answer to ``error``; a bug is logged here, with its traceback."""
        refusal = error if isinstance(error, Refusal) else self.translate(error)
        if refusal is not None:
            return Answer.of(refusal)
        error_id = uuid.uuid4().hex[:12]
        if isinstance(error, InvariantViolation):
            log.critical(f"{self.service} invariant violated; the request was rolled back",
                         error_id=error_id, exc_info=error)
            reason = "INVARIANT_VIOLATION"
        else:
            log.error("unexpected error while serving a call", error_id=error_id,
                      exc_info=error)
            reason = "INTERNAL"
        return Answer(
            grpc.StatusCode.INTERNAL,
            f"the {self.service} could not complete this request because of an internal "
            f"error; nothing was changed. Operators: see the {self.service}'s log for error "
            f"id {error_id}", reason, error_id)


__all__ = ["ERROR_DOMAIN", "MALFORMED_REQUEST", "Answer", "ErrorMapping", "Translate",
           "grpc_code", "malformed_request", "rich_status"]
