"""Every call a service serves, observed: on a real gRPC server on 127.0.0.1 running a
small service of its own (requests and replies borrowed from the contract).

A refusal is its status with an ErrorInfo, a bug is INTERNAL with an error id and a
logged traceback, bytes that are not the request are INVALID_ARGUMENT, a streaming call
is observed to its end (or its cancellation); each call has one ``rpc`` line and is
counted, and its context is cleared afterwards."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
import structlog
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from prometheus_client import REGISTRY

from runtime.errors import InvariantViolation, NotFound, PermissionDenied, Refusal
from runtime.metrics import RpcMetrics
from runtime.observe import CallObserver, note
from runtime.rpcstatus import ERROR_DOMAIN, ErrorMapping
from runtime.server import RunningServer, start_server
from timebank.v1 import node_pb2 as pb

SERVICE = "timebank.test.Probe"
TIMEOUT = 10.0
METRICS = RpcMetrics.register("probe")
SECRET = "password=hunter2"


class ForeignError(Exception):
    """An error of another package that the probe service treats as a refusal."""


def _translate(error: Exception) -> Refusal | None:
    if isinstance(error, ForeignError):
        return PermissionDenied(f"refused: {error}", "FOREIGN")
    return None


def _redact(text: str) -> str:
    return text.replace(SECRET, "password=…")


class Probe:
    """The probe service: each method does one thing a servicer may do."""

    def __init__(self) -> None:
        self.stream_may_end = threading.Event()

    def Echo(self, request: pb.GetOrderRequest, context: grpc.ServicerContext,  # noqa: N802
             ) -> pb.GetOrderRequest:
        note(noted="by the servicer")
        return request

    def Refuse(self, request: pb.GetOrderRequest, context: grpc.ServicerContext,  # noqa: N802
               ) -> pb.GetOrderRequest:
        raise NotFound(f"order {request.order_id} does not exist", "UNKNOWN_ORDER")

    def Crash(self, request: pb.GetOrderRequest, context: grpc.ServicerContext,  # noqa: N802
              ) -> pb.GetOrderRequest:
        raise RuntimeError(f"{SECRET} at /var/lib/probe")

    def Break(self, request: bytes, context: grpc.ServicerContext) -> bytes:  # noqa: N802
        raise InvariantViolation("minutes appeared from nowhere")

    def Foreign(self, request: bytes, context: grpc.ServicerContext) -> bytes:  # noqa: N802
        raise ForeignError(f"not yours ({SECRET})")

    def Abort(self, request: bytes, context: grpc.ServicerContext) -> bytes:  # noqa: N802
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, "aborted by the servicer")
        raise AssertionError("abort returns no value")

    def Count(self, request: pb.GetOrderRequest, context: grpc.ServicerContext,  # noqa: N802
              ) -> Iterator[pb.GetOrderRequest]:
        for i in range(request.order_id):
            yield pb.GetOrderRequest(order_id=i)
        note(counted=request.order_id)

    def CountThenRefuse(self, request: pb.GetOrderRequest,  # noqa: N802
                        context: grpc.ServicerContext) -> Iterator[pb.GetOrderRequest]:
        yield pb.GetOrderRequest(order_id=1)
        raise NotFound("the rest is gone", "GONE")

    def Forever(self, request: pb.GetOrderRequest,  # noqa: N802
                context: grpc.ServicerContext) -> Iterator[pb.GetOrderRequest]:
        while context.is_active():
            yield pb.GetOrderRequest(order_id=1)
            self.stream_may_end.wait(0.05)


def _handlers(probe: Probe) -> grpc.GenericRpcHandler:
    parse = pb.GetOrderRequest.FromString
    out = pb.GetOrderRequest.SerializeToString

    def unary(fn: Callable[..., Any], typed: bool = True) -> grpc.RpcMethodHandler[Any, Any]:
        return grpc.unary_unary_rpc_method_handler(
            fn, request_deserializer=parse if typed else None,
            response_serializer=out if typed else None)

    return grpc.method_handlers_generic_handler(SERVICE, {
        "Echo": unary(probe.Echo), "Refuse": unary(probe.Refuse), "Crash": unary(probe.Crash),
        "Break": unary(probe.Break, False), "Foreign": unary(probe.Foreign, False),
        "Abort": unary(probe.Abort, False),
        **{name: grpc.unary_stream_rpc_method_handler(
            getattr(probe, name), request_deserializer=parse, response_serializer=out)
           for name in ("Count", "CountThenRefuse", "Forever")},
    })


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def server(probe: Probe) -> Iterator[RunningServer]:
    observer = CallObserver(METRICS, ErrorMapping("probe", _translate), scrub=_redact)
    running = start_server(SERVICE, lambda s: s.add_generic_rpc_handlers((_handlers(probe),)),
                           observer, "127.0.0.1:0", max_message_bytes=4096, workers=4,
                           thread_name_prefix="probe", tls=None)
    yield running
    running.stop(None)


@pytest.fixture
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    with structlog.testing.capture_logs(
            processors=[structlog.contextvars.merge_contextvars]) as captured:
        yield captured


def call(channel: grpc.Channel, method: str, request: bytes) -> bytes:
    rpc: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        f"/{SERVICE}/{method}")
    return rpc(request, timeout=TIMEOUT)


def refused(channel: grpc.Channel, method: str, request: bytes = b"",
            ) -> tuple[grpc.StatusCode, str, error_details_pb2.ErrorInfo]:
    """The status code, message and ErrorInfo of a call that must fail."""
    with pytest.raises(grpc.RpcError) as caught:
        call(channel, method, request)
    error = caught.value
    assert isinstance(error, grpc.Call)
    status = rpc_status.from_call(error)
    assert status is not None, "every failed call carries a rich status"
    (detail,) = status.details
    info = error_details_pb2.ErrorInfo()
    assert detail.Unpack(info)
    assert info.domain == ERROR_DOMAIN
    return error.code(), error.details() or "", info


def rpc_lines(logs: list[dict[str, Any]], method: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "rpc" and e.get("method") == method]


def count(method: str, code: str) -> float:
    return REGISTRY.get_sample_value("timebank_probe_rpcs_total",
                                     {"method": method, "code": code}) or 0.0


def refusals(method: str, reason: str) -> float:
    return REGISTRY.get_sample_value("timebank_probe_refusals_total",
                                     {"method": method, "reason": reason}) or 0.0


# ------------------------------------------------------------------ unary calls


def test_a_call_is_logged_once_with_its_ids_and_counted(
        channel: grpc.Channel, logs: list[dict[str, Any]]) -> None:
    before = count("Echo", "OK")
    request = pb.GetOrderRequest(order_id=42).SerializeToString()
    assert call(channel, "Echo", request) == request
    assert call(channel, "Echo", pb.GetOrderRequest().SerializeToString()) == b""
    first, second = rpc_lines(logs, "Echo")
    assert (first["code"], first["order_id"], first["noted"]) == ("OK", 42, "by the servicer")
    assert first["log_level"] == "info" and isinstance(first["ms"], float)
    assert "reason" not in first and "message" not in first
    assert "order_id" not in second  # the context of one call does not leak into the next
    assert count("Echo", "OK") == before + 2


def test_a_refusal_is_its_status_with_error_info_and_no_traceback(
        channel: grpc.Channel, logs: list[dict[str, Any]]) -> None:
    before = refusals("Refuse", "UNKNOWN_ORDER")
    code, message, info = refused(channel, "Refuse",
                                  pb.GetOrderRequest(order_id=7).SerializeToString())
    assert (code, info.reason) == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_ORDER")
    assert message == "order 7 does not exist" and not info.metadata
    (line,) = rpc_lines(logs, "Refuse")
    assert (line["code"], line["reason"], line["order_id"]) == ("NOT_FOUND", "UNKNOWN_ORDER", 7)
    assert line["message"] == "order 7 does not exist" and line["log_level"] == "info"
    assert not [e for e in logs if "exc_info" in e]
    assert refusals("Refuse", "UNKNOWN_ORDER") == before + 1


def test_a_bug_is_internal_with_an_error_id_and_its_traceback_is_logged(
        channel: grpc.Channel, logs: list[dict[str, Any]]) -> None:
    code, message, info = refused(channel, "Crash",
                                  pb.GetOrderRequest(order_id=3).SerializeToString())
    assert (code, info.reason) == (grpc.StatusCode.INTERNAL, "INTERNAL")
    error_id = info.metadata["error_id"]
    assert len(error_id) == 12 and f"error id {error_id}" in message
    assert "the probe could not complete this request" in message
    assert "hunter2" not in message and "RuntimeError" not in message
    (bug,) = [e for e in logs if "exc_info" in e]
    assert isinstance(bug["exc_info"], RuntimeError) and bug["log_level"] == "error"
    assert (bug["error_id"], bug["method"], bug["order_id"]) == (error_id, "Crash", 3)
    (line,) = rpc_lines(logs, "Crash")
    assert (line["code"], line["error_id"], line["log_level"]) == ("INTERNAL", error_id, "error")


def test_a_broken_invariant_is_internal_and_logged_as_critical(
        channel: grpc.Channel, logs: list[dict[str, Any]]) -> None:
    code, _message, info = refused(channel, "Break")
    assert (code, info.reason) == (grpc.StatusCode.INTERNAL, "INVARIANT_VIOLATION")
    assert [e["log_level"] for e in logs if "exc_info" in e] == ["critical"]


def test_a_translated_error_is_a_refusal_and_the_line_is_scrubbed(
        channel: grpc.Channel, logs: list[dict[str, Any]]) -> None:
    code, message, info = refused(channel, "Foreign")
    assert (code, info.reason) == (grpc.StatusCode.PERMISSION_DENIED, "FOREIGN")
    assert SECRET in message  # the client gets the message as it was written ...
    (line,) = rpc_lines(logs, "Foreign")
    assert "hunter2" not in line["message"] and "password=…" in line["message"]  # ... the log not


def test_a_servicer_that_aborts_keeps_its_status(
        channel: grpc.Channel, logs: list[dict[str, Any]]) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call(channel, "Abort", b"")
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    (line,) = rpc_lines(logs, "Abort")
    assert line["code"] == "FAILED_PRECONDITION" and "reason" not in line


@pytest.mark.parametrize("body", [b"\xff\xff\xff", b"\x08"], ids=["garbage", "truncated"])
def test_bytes_that_are_not_the_request_are_invalid_argument(
        channel: grpc.Channel, logs: list[dict[str, Any]], body: bytes) -> None:
    for method in ("Echo", "Count"):
        if method == "Echo":
            code, message, info = refused(channel, method, body)
        else:
            with pytest.raises(grpc.RpcError) as caught:
                list(channel.unary_stream(f"/{SERVICE}/{method}")(body, timeout=TIMEOUT))
            status = rpc_status.from_call(caught.value)
            assert status is not None
            code, message = caught.value.code(), status.message
            info = error_details_pb2.ErrorInfo()
            status.details[0].Unpack(info)
        assert (code, info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST")
        assert method in message
        (line,) = rpc_lines(logs, method)
        assert line["code"] == "INVALID_ARGUMENT"


# ------------------------------------------------------------------ streams


def test_a_stream_is_observed_to_its_end(
        channel: grpc.Channel, logs: list[dict[str, Any]]) -> None:
    before = count("Count", "OK")
    stream = channel.unary_stream(f"/{SERVICE}/Count",
                                  request_serializer=pb.GetOrderRequest.SerializeToString,
                                  response_deserializer=pb.GetOrderRequest.FromString)
    got = [m.order_id for m in stream(pb.GetOrderRequest(order_id=3), timeout=TIMEOUT)]
    assert got == [0, 1, 2]
    (line,) = rpc_lines(logs, "Count")
    assert (line["code"], line["order_id"], line["counted"]) == ("OK", 3, 3)
    assert count("Count", "OK") == before + 1


def test_a_refusal_in_the_middle_of_a_stream_ends_it_with_its_status(
        channel: grpc.Channel, logs: list[dict[str, Any]]) -> None:
    stream = channel.unary_stream(f"/{SERVICE}/CountThenRefuse",
                                  request_serializer=pb.GetOrderRequest.SerializeToString,
                                  response_deserializer=pb.GetOrderRequest.FromString)
    got: list[int] = []
    with pytest.raises(grpc.RpcError) as caught:
        for message in stream(pb.GetOrderRequest(), timeout=TIMEOUT):
            got.append(message.order_id)
    assert got == [1]
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    (line,) = rpc_lines(logs, "CountThenRefuse")
    assert (line["code"], line["reason"]) == ("NOT_FOUND", "GONE")


def test_a_stream_the_client_cancels_is_counted_cancelled(
        channel: grpc.Channel, probe: Probe, logs: list[dict[str, Any]]) -> None:
    before = count("Forever", "CANCELLED")
    stream = channel.unary_stream(f"/{SERVICE}/Forever",
                                  request_serializer=pb.GetOrderRequest.SerializeToString,
                                  response_deserializer=pb.GetOrderRequest.FromString)
    call_ = stream(pb.GetOrderRequest(order_id=5), timeout=TIMEOUT)
    assert next(call_).order_id == 1
    call_.cancel()
    probe.stream_may_end.set()
    deadline = time.monotonic() + TIMEOUT
    while not rpc_lines(logs, "Forever") and time.monotonic() < deadline:
        time.sleep(0.02)
    (line,) = rpc_lines(logs, "Forever")
    assert (line["code"], line["order_id"]) == ("CANCELLED", 5)
    assert count("Forever", "CANCELLED") == before + 1


# ------------------------------------------------------------------ the skeleton


def test_health_and_reflection_are_served_and_logged_quietly(
        server: RunningServer, channel: grpc.Channel, logs: list[dict[str, Any]]) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", SERVICE):
        answer = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=TIMEOUT)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    assert [e["log_level"] for e in rpc_lines(logs, "Check")] == ["debug", "debug"]
    server.health.enter_graceful_shutdown()
    answer = health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=TIMEOUT)
    assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING


def test_a_taken_port_is_an_os_error(server: RunningServer) -> None:
    with pytest.raises(OSError, match="cannot listen"):
        start_server(SERVICE, lambda s: None, CallObserver(METRICS, ErrorMapping("probe")),
                     f"127.0.0.1:{server.port}", max_message_bytes=4096, workers=1,
                     thread_name_prefix="probe-2", tls=None)


# ------------------------------------------------------------------ request ids


def _with_id(channel: grpc.Channel, method: str, request: bytes,
             sent: str | None) -> tuple[grpc.StatusCode, str]:
    """The status of a call sending ``sent`` as x-request-id, and the id it returned."""
    rpc: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        f"/{SERVICE}/{method}")
    metadata = None if sent is None else (("x-request-id", sent),)
    try:
        _answer, done = rpc.with_call(request, timeout=TIMEOUT, metadata=metadata)
    except grpc.RpcError as e:
        assert isinstance(e, grpc.Call)
        done = e
    trailing = dict(done.trailing_metadata() or ())
    return done.code(), str(trailing.get("x-request-id", ""))


def test_every_call_has_a_request_id_returned_on_success_and_refusal(
        channel: grpc.Channel, logs: list[dict[str, Any]]) -> None:
    request = pb.GetOrderRequest(order_id=7).SerializeToString()
    assert _with_id(channel, "Echo", request, "desk-3:ab12") == (grpc.StatusCode.OK,
                                                                 "desk-3:ab12")
    code, made = _with_id(channel, "Echo", request, None)
    assert code is grpc.StatusCode.OK and len(made) == 16 and int(made, 16) >= 0
    code, unusable = _with_id(channel, "Echo", request, "no spaces allowed")
    assert code is grpc.StatusCode.OK and unusable != "no spaces allowed" and len(unusable) == 16
    assert _with_id(channel, "Refuse", request, "r-1") == (grpc.StatusCode.NOT_FOUND, "r-1")
    code, bug = _with_id(channel, "Crash", request, "r-2")
    assert (code, bug) == (grpc.StatusCode.INTERNAL, "r-2")
    lines = rpc_lines(logs, "Echo") + rpc_lines(logs, "Refuse") + rpc_lines(logs, "Crash")
    assert [e["request_id"] for e in lines] == ["desk-3:ab12", made, unusable, "r-1", "r-2"]


def test_a_refusal_keeps_its_rich_status_beside_the_request_id(channel: grpc.Channel) -> None:
    code, message, info = refused(channel, "Refuse",
                                  pb.GetOrderRequest(order_id=5).SerializeToString())
    assert (code, info.reason) == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_ORDER")
    assert "order 5" in message
