"""The protocol version on every call: one client interceptor, one server interceptor.

``ProtocolHeader`` adds ``timebank-protocol: MAJOR.MINOR`` (``timebank.protocol``) to
every call on a channel; ``runtime.tls.channel``, the one way a client channel is made,
installs it, so node → clearinghouse, node → node and CLI → node calls all carry it.

``ProtocolGate`` is installed by ``runtime.server.start_server`` inside the call
observer, so that what it refuses is answered, logged and counted like any refusal. For
every call of the service (health and reflection are left alone: probes and tools that
know nothing of this project call them) it

- answers with its own version in the response's initial metadata, so a client sees
  whom it talks to on every call, refused or not;
- serves a caller of the same major version, whatever its minor (a minor version only
  adds what an older peer can ignore);
- refuses a caller of another major FAILED_PRECONDITION ``PROTOCOL_MISMATCH``, before
  its request is parsed (a request of another major may not parse), with a message
  naming both versions and who must upgrade; an unreadable header is INVALID_ARGUMENT
  ``BAD_PROTOCOL_HEADER``.

A call **without** the header is served. Every client of this project sends it, so an
unversioned call comes from a tool or a client of another language built from
``timebank proto export`` (grpcurl, a monitor reading the public log): refusing those
would break them for no safety gained. The signatures stay safe either way, since an
envelope's signed prefix names its own version (``timebank.v1/``, ADR 0003), and such a
client can read the server's version from the answer's metadata. docs/protocol.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import grpc

from runtime.errors import FailedPrecondition, InvalidArgument, Refusal
from timebank.protocol import HEADER, MAX_TEXT, PROTOCOL, Version

#: Services every gRPC tool calls without knowing this project: never gated.
EXEMPT = ("/grpc.health.", "/grpc.reflection.")
MISMATCH = "PROTOCOL_MISMATCH"
BAD_HEADER = "BAD_PROTOCOL_HEADER"


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Sequence[tuple[str, str | bytes]] | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class ProtocolHeader(grpc.UnaryUnaryClientInterceptor,
                     grpc.UnaryStreamClientInterceptor,
                     grpc.StreamUnaryClientInterceptor,
                     grpc.StreamStreamClientInterceptor):
    """Adds ``timebank-protocol: <version>`` to every call."""

    def __init__(self, version: Version = PROTOCOL) -> None:
        self.version = version
        self._entry = (HEADER, str(version))

    def _details(self, details: Any) -> _Details:
        metadata = [*(m for m in (details.metadata or ()) if m[0] != HEADER), self._entry]
        return _Details(details.method, details.timeout, metadata, details.credentials,
                        details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any,
                               requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any,
                                requests: Any) -> Any:
        return continuation(self._details(details), requests)


def versioned(channel: grpc.Channel, version: Version = PROTOCOL) -> grpc.Channel:
    """``channel``, every call on it carrying ``version``."""
    return grpc.intercept_channel(channel, ProtocolHeader(version))


def server_version(metadata: Sequence[tuple[str, str | bytes]] | None) -> Version | None:
    """The version a server answered with, from a call's initial metadata (None: it sent
    none, or one that cannot be read)."""
    for key, value in metadata or ():
        if key == HEADER and isinstance(value, str):
            try:
                return Version.parse(value)
            except ValueError:
                return None
    return None


def mismatch(server: Version, caller: Version) -> FailedPrecondition:
    """The refusal of a caller whose major version is not the server's."""
    if caller.major < server.major:
        zh = f"调用方须升级到使用协议 {server.major}.x 的版本"
        en = f"the caller must upgrade to a release speaking protocol {server.major}.x"
    else:
        zh = f"本服务须升级到使用协议 {caller.major}.x 的版本"
        en = f"this server must be upgraded to a release speaking protocol {caller.major}.x"
    return FailedPrecondition(
        f"协议版本不兼容：本服务使用 timebank 协议 {server}，调用方使用 {caller}，主版本不同"
        f"无法互通；{zh} / protocol mismatch: this server speaks timebank protocol {server}, "
        f"the caller {caller}; different major versions cannot talk: {en}", MISMATCH)


def check(server: Version, metadata: Sequence[tuple[str, str | bytes]] | None,
          ) -> Refusal | None:
    """Why a call with this invocation metadata is refused (None: it is served)."""
    sent = [value for key, value in metadata or () if key == HEADER]
    if not sent:
        return None
    text = sent[0] if len(sent) == 1 and isinstance(sent[0], str) else ""
    try:
        caller = Version.parse(text)
    except ValueError:
        shown = ", ".join(repr(v[:MAX_TEXT + 1]) for v in sent[:2])
        return InvalidArgument(
            f"无法识别的协议版本头 {HEADER}: {shown}（应为一个 主版本.次版本，如 {server}）"
            f" / unreadable {HEADER} header {shown} (expected one MAJOR.MINOR, e.g. "
            f"{server})", BAD_HEADER)
    return None if server.talks_to(caller) else mismatch(server, caller)


Behaviour = Callable[[Any, grpc.ServicerContext], Any]


class ProtocolGate(grpc.ServerInterceptor):
    """Serves callers of ``version``'s major, refuses others; answers with ``version``
    (see the module's doc)."""

    def __init__(self, version: Version = PROTOCOL) -> None:
        self.version = version
        self._answer = ((HEADER, str(version)),)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(EXEMPT):
            return handler
        refused = check(self.version, handler_call_details.invocation_metadata)
        answer = self._answer
        unary, stream = handler.unary_unary, handler.unary_stream
        if unary is not None:
            def one(request: Any, context: grpc.ServicerContext) -> Any:
                context.send_initial_metadata(answer)
                if refused is not None:
                    raise refused
                return unary(request, context)

            return grpc.unary_unary_rpc_method_handler(
                one, request_deserializer=None if refused else handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if stream is not None:
            def many(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                context.send_initial_metadata(answer)
                if refused is not None:
                    raise refused
                yield from stream(request, context)

            return grpc.unary_stream_rpc_method_handler(
                many, request_deserializer=None if refused else handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return handler  # client- and bidirectional streams: no service here has one


__all__ = ["BAD_HEADER", "EXEMPT", "MISMATCH", "ProtocolGate", "ProtocolHeader", "check",
           "mismatch", "server_version", "versioned"]
