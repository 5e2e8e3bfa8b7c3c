"""Use-case errors → gRPC statuses. The one place a refusal becomes a status code.

Every ``Refusal`` carries the status it means (``error.status``, a
``grpc.StatusCode`` name), a message for the operator and a stable ``reason``; the
client receives the code, the message and a ``google.rpc.ErrorInfo`` detail (reason,
domain "timebank.v1"). An ``EnvelopeError`` that escapes a use-case is PERMISSION_DENIED,
or INVALID_ARGUMENT for a malformed or oversized envelope (``wire.refused``).

Anything else is a bug: it is logged with its traceback under a short error id, and the
client gets INTERNAL with that id, never a traceback and never UNKNOWN. The clearinghouse
never imports the node, so this mirrors ``node.api.errors``. The decorators also open and
close each call's log line and metrics (``clearinghouse.api.observe``).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

import grpc
import structlog
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from clearinghouse.api import observe
from clearinghouse.usecases import wire
from runtime.errors import InvariantViolation, Refusal
from timebank.envelope import EnvelopeError

ERROR_DOMAIN = "timebank.v1"

log = structlog.get_logger("clearinghouse.api")

S = TypeVar("S")
Req = TypeVar("Req")
Resp = TypeVar("Resp")


def grpc_code(error: Refusal) -> grpc.StatusCode:
    """The gRPC status code a refusal means (INTERNAL if it names none we know)."""
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


def refusal_of(error: BaseException) -> tuple[grpc.StatusCode, str, str, dict[str, str]]:
    """(code, message, reason, ErrorInfo metadata) to answer an error raised while
    serving a call with. A bug is logged here, with its traceback, under an error id."""
    if isinstance(error, EnvelopeError):
        error = wire.refused(error)
    if isinstance(error, Refusal):
        return grpc_code(error), error.message, error.reason, {}
    error_id = uuid.uuid4().hex[:12]
    if isinstance(error, InvariantViolation):
        log.critical("clearinghouse invariant violated; the request was rolled back",
                     error_id=error_id, exc_info=error)
        reason = "INVARIANT_VIOLATION"
    else:
        log.error("unexpected error while serving a call", error_id=error_id, exc_info=error)
        reason = "INTERNAL"
    return (grpc.StatusCode.INTERNAL,
            "the clearinghouse could not complete this request because of an internal "
            "error; nothing was changed. Operators: see the clearinghouse's log for error "
            f"id {error_id}", reason, {"error_id": error_id})


def status_of(error: BaseException) -> grpc.Status:
    """The status to answer with for an error raised while serving a call."""
    return rich_status(*refusal_of(error))


def grpc_errors(
    method: Callable[[S, Req, grpc.ServicerContext], Resp],
) -> Callable[[S, Req, grpc.ServicerContext], Resp]:
    """Decorate a unary servicer method: errors become statuses as described above, and
    the call is logged and measured (``clearinghouse.api.observe``)."""
    name = method.__name__

    @functools.wraps(method)
    def wrapper(self: S, request: Req, context: grpc.ServicerContext) -> Resp:
        call = observe.begin(name)
        try:
            response = method(self, request, context)
        except Exception as e:  # every error must become a status
            code, message, reason, metadata = refusal_of(e)
        else:
            call.end(grpc.StatusCode.OK)
            return response
        call.end(code, reason, message)
        # Outside the except block: abort raises, and must not be caught above.
        context.abort_with_status(rich_status(code, message, reason, metadata))

    return wrapper


def grpc_stream_errors(
    method: Callable[[S, Req, grpc.ServicerContext], Iterator[Resp]],
) -> Callable[[S, Req, grpc.ServicerContext], Iterator[Resp]]:
    """Decorate a server-streaming servicer method the same way. A stream the client
    cancels is logged as CANCELLED."""
    name = method.__name__

    @functools.wraps(method)
    def wrapper(self: S, request: Req, context: grpc.ServicerContext) -> Iterator[Resp]:
        call = observe.begin(name)
        try:
            yield from method(self, request, context)
        except GeneratorExit:
            call.end(grpc.StatusCode.CANCELLED)
            raise
        except Exception as e:  # every error must become a status
            code, message, reason, metadata = refusal_of(e)
        else:
            call.end(grpc.StatusCode.OK if context.is_active() else grpc.StatusCode.CANCELLED)
            return
        call.end(code, reason, message)
        context.abort_with_status(rich_status(code, message, reason, metadata))

    return wrapper


__all__ = ["ERROR_DOMAIN", "grpc_code", "grpc_errors", "grpc_stream_errors", "refusal_of",
           "rich_status", "status_of"]
