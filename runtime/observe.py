"""What a serving node or clearinghouse does around every call: one interceptor.

``CallObserver`` wraps each unary and server-streaming method of the server it is
installed on. For every call it:

1. clears the structlog context variables (pool threads are reused) and binds
   ``method`` and ``request_id``, so every line logged while serving the call names
   them. The request id is the caller's ``x-request-id`` metadata if it sent a usable
   one (up to 64 letters, digits and ``._:-``), else a new random one; either way it is
   returned in the trailing metadata (``x-request-id``), also on a refusal, so a
   caller can quote it and an operator find the call's lines;
2. parses the request itself: bytes that are not the method's request message are
   INVALID_ARGUMENT ``MALFORMED_REQUEST`` (gRPC's own parser would answer INTERNAL). A
   method registered without a deserializer gets the bytes as received;
3. binds the request's ids: its top-level scalar fields named ``id``, ``…_id``, ``seq``
   or ``idempotency_key``. The servicer binds more with ``note`` (the signer of an
   envelope, the claim it moved);
4. calls the servicer. An error it raises becomes the status ``runtime.rpcstatus`` says
   (a refusal with its ErrorInfo; a bug INTERNAL with an error id, logged with its
   traceback), so no servicer method answers UNKNOWN or sends a traceback;
5. counts the call (``runtime.metrics``) and writes one log line, event ``rpc``: every
   bound field, ``code``, ``ms`` and, for a call that failed, ``reason``, ``message``
   and any ``error_id``. Health and reflection calls log at debug level, bugs at error;
6. clears the context variables again.

A stream ends OK when the servicer returns, CANCELLED when the client went away first.
Client-streaming and bidirectional methods (reflection) are not logged or counted, but
their requests are parsed here too, one by one as the servicer reads them: a message
that is not the method's request ends the call INVALID_ARGUMENT ``MALFORMED_REQUEST``
instead of gRPC's INTERNAL.

``scrub``, if given, is applied to every string on the ``rpc`` line: the clearinghouse
passes one that cuts PersonRefs short.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from runtime.metrics import RpcMetrics
from runtime.rpcstatus import Answer, ErrorMapping, malformed_request, rich_status

log = structlog.get_logger("runtime.observe")

#: A refusal's message is cut to this many characters on the ``rpc`` line.
MAX_MESSAGE_CHARS = 300
_QUIET_SERVICES = ("/grpc.health.", "/grpc.reflection.")
_NAMED_FIELDS = frozenset({"id", "seq", "idempotency_key"})
#: The metadata key a caller may send its own request id in, and in which every answer
#: carries the call's.
REQUEST_ID_KEY = "x-request-id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

Parse = Callable[[bytes], Any]


def note(**fields: object) -> None:
    """Add fields to the current call's ``rpc`` line (and to every line logged while
    serving it)."""
    structlog.contextvars.bind_contextvars(**fields)


def request_ids(request: object) -> dict[str, object]:
    """The fields of ``request`` its call's log lines carry (see the module's doc)."""
    if not isinstance(request, Message):
        return {}
    return {field.name: value for field, value in request.ListFields()
            if (field.name in _NAMED_FIELDS or field.name.endswith("_id"))
            and field.type != FieldDescriptor.TYPE_MESSAGE and not field.is_repeated}


def request_id(metadata: object) -> str:
    """The caller's request id from its invocation metadata if it is usable, else a new
    one (16 hex characters)."""
    for key, value in metadata if isinstance(metadata, tuple | list) else ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and _REQUEST_ID.fullmatch(value):
            return value
    return secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class _Status(grpc.Status):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def _with_request_id(status: grpc.Status, rid: str) -> grpc.Status:
    """``status`` whose trailing metadata also carries the call's request id
    (``abort_with_status`` replaces what ``set_trailing_metadata`` set)."""
    return _Status(status.code, status.details,
                   (*tuple(status.trailing_metadata or ()), (REQUEST_ID_KEY, rid)))


def _identity(text: str) -> str:
    return text


def _code_of(context: grpc.ServicerContext, default: grpc.StatusCode) -> grpc.StatusCode:
    """The code the servicer set on ``context`` (by ``set_code`` or an abort), if any."""
    code = getattr(context, "code", None)
    found = code() if callable(code) else None
    return found if isinstance(found, grpc.StatusCode) else default


class _Call:
    """One call being served: its timing, how it ended, and its line at the end."""

    __slots__ = ("_observer", "_started", "answer", "code", "method", "quiet", "request_id")

    def __init__(self, observer: CallObserver, method: str, quiet: bool,
                 context: grpc.ServicerContext) -> None:
        self._observer = observer
        self.method = method
        self.quiet = quiet
        self.code = grpc.StatusCode.UNKNOWN
        self.answer: Answer | None = None
        self.request_id = request_id(context.invocation_metadata())
        context.set_trailing_metadata(((REQUEST_ID_KEY, self.request_id),))
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(method=method, request_id=self.request_id)
        observer.metrics.in_flight.inc()
        self._started = time.perf_counter()

    def parse(self, parse: Parse | None, raw: bytes) -> Any:
        if parse is None:
            return raw
        try:
            request = parse(raw)
        except (DecodeError, ValueError, TypeError):
            raise malformed_request(self.method) from None
        structlog.contextvars.bind_contextvars(**request_ids(request))
        return request

    def failed(self, error: Exception, context: grpc.ServicerContext) -> Answer | None:
        """The answer to an error the servicer raised; None if it aborted the call itself
        (the status it chose stands)."""
        if _code_of(context, grpc.StatusCode.OK) is grpc.StatusCode.OK:
            self.answer = self._observer.errors.answer(error)
            self.code = self.answer.code
        return self.answer

    def end(self, context: grpc.ServicerContext) -> None:
        if self.code is grpc.StatusCode.UNKNOWN:  # an abort, or an error beyond Exception
            self.code = _code_of(context, grpc.StatusCode.UNKNOWN)
        code, answer = self.code, self.answer
        elapsed = time.perf_counter() - self._started
        observer = self._observer
        observer.metrics.in_flight.dec()
        observer.metrics.observe(self.method, code.name,
                                 answer.reason if answer is not None else "", elapsed)
        fields = structlog.contextvars.get_contextvars()
        fields.update(code=code.name, ms=round(elapsed * 1000, 2))
        if answer is not None:
            fields["reason"] = answer.reason
            fields["message"] = answer.message[:MAX_MESSAGE_CHARS]
            if answer.error_id:
                fields["error_id"] = answer.error_id
        scrub = observer.scrub
        line = {k: scrub(v) if isinstance(v, str) else v for k, v in fields.items()}
        if code is grpc.StatusCode.INTERNAL:
            log.error("rpc", **line)
        elif self.quiet:
            log.debug("rpc", **line)
        else:
            log.info("rpc", **line)
        structlog.contextvars.clear_contextvars()


class CallObserver(grpc.ServerInterceptor):
    """Parse, bind, call, answer errors, count, log and clear, around every unary and
    server-streaming call (see the module's doc)."""

    def __init__(self, metrics: RpcMetrics, errors: ErrorMapping, *,
                 scrub: Callable[[str], str] = _identity) -> None:
        self.metrics = metrics
        self.errors = errors
        self.scrub = scrub

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        full = handler_call_details.method
        method = full.rsplit("/", 1)[-1]
        quiet = full.startswith(_QUIET_SERVICES)
        parse = handler.request_deserializer
        unary, stream = handler.unary_unary, handler.unary_stream
        if unary is not None:
            def one(raw: bytes, context: grpc.ServicerContext) -> Any:
                (response,) = self._serve(
                    method, quiet, lambda request: iter((unary(request, context),)), parse,
                    raw, context)
                return response

            return grpc.unary_unary_rpc_method_handler(
                one, response_serializer=handler.response_serializer)
        if stream is not None:
            def many(raw: bytes, context: grpc.ServicerContext) -> Iterator[Any]:
                return self._serve(method, quiet, lambda request: stream(request, context),
                                   parse, raw, context)

            return grpc.unary_stream_rpc_method_handler(
                many, response_serializer=handler.response_serializer)
        return _parsing_stream_requests(handler, method)

    def _serve(self, method: str, quiet: bool, respond: Callable[[Any], Iterator[Any]],
               parse: Parse | None, raw: bytes, context: grpc.ServicerContext,
               ) -> Iterator[Any]:
        """The responses to one call, observed. A unary call is a stream of one."""
        observed = _Call(self, method, quiet, context)
        try:
            try:
                yield from respond(observed.parse(parse, raw))
            except GeneratorExit:  # the server dropped the stream: the client left
                observed.code = grpc.StatusCode.CANCELLED
                raise
            except Exception as e:  # every error must become a status
                answer = observed.failed(e, context)
                if answer is None:
                    raise
            else:
                observed.code = _code_of(context, grpc.StatusCode.OK if context.is_active()
                                         else grpc.StatusCode.CANCELLED)
                return
            # Outside the except block: abort raises, and must not be caught above.
            context.abort_with_status(_with_request_id(answer.status(), observed.request_id))
        finally:
            observed.end(context)


def _parsing_stream_requests(handler: grpc.RpcMethodHandler[Any, Any],
                             method: str) -> grpc.RpcMethodHandler[Any, Any]:
    """A client-streaming or bidirectional handler that gets its requests' bytes and
    parses each itself, refusing one that does not parse with INVALID_ARGUMENT."""
    parse = handler.request_deserializer
    if parse is None:
        return handler

    def parsed(raw: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[Any]:
        for data in raw:
            try:
                yield parse(data)
            except (DecodeError, ValueError, TypeError):
                refusal = malformed_request(method)
                context.abort_with_status(rich_status(
                    grpc.StatusCode.INVALID_ARGUMENT, refusal.message, refusal.reason))

    both, client = handler.stream_stream, handler.stream_unary
    if both is not None:
        return grpc.stream_stream_rpc_method_handler(
            lambda raw, context: both(parsed(raw, context), context),
            response_serializer=handler.response_serializer)
    if client is not None:
        return grpc.stream_unary_rpc_method_handler(
            lambda raw, context: client(parsed(raw, context), context),
            response_serializer=handler.response_serializer)
    return handler


__all__ = ["MAX_MESSAGE_CHARS", "REQUEST_ID_KEY", "CallObserver", "note", "request_id",
           "request_ids"]
