"""Use-case errors → gRPC statuses. The one place a refusal becomes a status code.

Every ``Refusal`` carries the status it means (``error.status``, a
``grpc.StatusCode`` name), a message for the operator and a stable ``reason``;
the client receives the code, the message, and a ``google.rpc.ErrorInfo``
detail (reason, domain "timebank.v1") that apps can branch on.

Anything else is a bug: it is logged with its traceback under a short error id,
and the client gets INTERNAL with that id, never a traceback and never UNKNOWN.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Mapping
from typing import TypeVar

import grpc
import structlog
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from runtime.errors import InvariantViolation, Refusal

ERROR_DOMAIN = "timebank.v1"

log = structlog.get_logger("node.api")

S = TypeVar("S")
Req = TypeVar("Req")
Resp = TypeVar("Resp")


def grpc_code(error: Refusal) -> grpc.StatusCode:
    """The gRPC status code a refusal means (INTERNAL if it names none we know)."""
    code = grpc.StatusCode.__members__.get(error.status)
    if code is None or code is grpc.StatusCode.OK:
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


def status_of(error: BaseException) -> grpc.Status:
    """The status to answer with for an error raised while serving a call.

    Refusals (``Refusal``) map to their code; an ``InvariantViolation`` or any
    other exception is logged here with its traceback and answered INTERNAL.
    """
    if isinstance(error, Refusal):
        structlog.contextvars.bind_contextvars(reason=error.reason)
        return rich_status(grpc_code(error), error.message, error.reason)
    error_id = uuid.uuid4().hex[:12]
    if isinstance(error, InvariantViolation):
        log.critical("ledger invariant violated; the request was rolled back",
                     error_id=error_id, exc_info=error)
        reason = "INVARIANT_VIOLATION"
    else:
        log.error("unexpected error while serving a call", error_id=error_id, exc_info=error)
        reason = "INTERNAL"
    structlog.contextvars.bind_contextvars(reason=reason, error_id=error_id)
    return rich_status(
        grpc.StatusCode.INTERNAL,
        f"the node could not complete this request because of an internal error; nothing "
        f"was changed. Operators: see the node's log for error id {error_id}",
        reason, {"error_id": error_id})


def abort_invalid(context: grpc.ServicerContext, message: str, reason: str) -> None:
    """Refuse a malformed request outright (used before a use-case is reached)."""
    context.abort_with_status(rich_status(grpc.StatusCode.INVALID_ARGUMENT, message, reason))


def grpc_errors(
    method: Callable[[S, Req, grpc.ServicerContext], Resp],
) -> Callable[[S, Req, grpc.ServicerContext], Resp]:
    """Decorate a servicer method: errors become statuses as described above."""

    @functools.wraps(method)
    def wrapper(self: S, request: Req, context: grpc.ServicerContext) -> Resp:
        try:
            return method(self, request, context)
        except Exception as e:  # every error must become a status
            status = status_of(e)
        # Outside the except block: abort raises, and must not be caught above.
        context.abort_with_status(status)

    return wrapper


__all__ = ["ERROR_DOMAIN", "abort_invalid", "grpc_code", "grpc_errors", "rich_status",
           "status_of"]
