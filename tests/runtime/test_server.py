"""The life of a serving process (``runtime.server.serve_forever``) on 127.0.0.1 and on
every interface: the parts start, the process says it is serving (and warns, at every
start, when it serves without TLS), and everything stops in reverse order."""

from __future__ import annotations

import threading
import urllib.request
from contextlib import ExitStack
from typing import Any

import grpc
import pytest
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from runtime.observe import CallObserver
from runtime.rpcerrors import error_reason
from runtime.rpcstatus import ErrorMapping
from runtime.server import INSECURE_WARNING, Serving, is_loopback, serve_forever, start_server
from runtime.tls import ClientTls, ServerTls, channel
from tests.runtime.test_observe import METRICS, SERVICE

TIMEOUT = 10.0


def _serve_in_thread(listen: str, metrics_listen: str = "", *,
                     tls: tuple[ServerTls, ClientTls] | None = None,
                     ) -> tuple[list[dict[str, Any]], list[str], Serving]:
    """Serve a service with no methods on ``listen`` until its health was checked; return
    the log, the order its parts stopped in, and what ``on_ready`` was given."""
    stopped: list[str] = []
    ready: list[Serving] = []
    stop, up = threading.Event(), threading.Event()

    def start(parts: ExitStack) -> tuple[int, dict[str, object]]:
        parts.callback(stopped.append, "first part")
        running = start_server(SERVICE, lambda s: None,
                               CallObserver(METRICS, ErrorMapping("probe")), listen,
                               max_message_bytes=4096, workers=2, thread_name_prefix="probe",
                               tls=None if tls is None else tls[0])
        parts.callback(lambda: (running.stop(1.0), stopped.append("server")))
        return running.port, {"district": "江宁区"}

    def on_ready(serving: Serving) -> None:
        ready.append(serving)
        up.set()

    with structlog.testing.capture_logs() as logs:
        thread = threading.Thread(target=serve_forever, args=("probe", listen, metrics_listen,
                                                              start),
                                  kwargs={"stop": stop, "on_ready": on_ready,
                                          "tls": tls is not None})
        thread.start()
        try:
            assert up.wait(TIMEOUT)
            with channel(f"127.0.0.1:{ready[0].port}",
                         None if tls is None else tls[1]) as client:
                answer = health_pb2_grpc.HealthStub(client).Check(
                    health_pb2.HealthCheckRequest(service=SERVICE), timeout=TIMEOUT)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
            if metrics_listen:
                url = f"http://127.0.0.1:{ready[0].metrics_port}/metrics"
                with urllib.request.urlopen(url, timeout=TIMEOUT) as reply:
                    assert "timebank_probe_rpcs_total" in reply.read().decode()
        finally:
            stop.set()
            thread.join(TIMEOUT)
    assert not thread.is_alive()
    return logs, stopped, ready[0]


def test_a_tls_server_serves_says_so_and_stops_in_reverse_order(
        tls_pair: tuple[ServerTls, ClientTls]) -> None:
    logs, stopped, serving = _serve_in_thread("127.0.0.1:0", metrics_listen="127.0.0.1:0",
                                              tls=tls_pair)
    assert serving.port > 0 and serving.metrics_port > 0
    events = [e["event"] for e in logs]
    assert events[0] == "probe serving" and events[-1] == "probe stopped"
    said = logs[0]
    assert (said["port"], said["metrics_port"]) == (serving.port, serving.metrics_port)
    assert (said["tls"], said["district"], said["listen"]) == (True, "江宁区", "127.0.0.1:0")
    assert logs[-1]["district"] == "江宁区"
    assert not [e for e in logs if e["log_level"] == "warning"]
    assert stopped == ["server", "first part"]
    with pytest.raises(OSError):  # the metrics endpoint stopped with the rest
        urllib.request.urlopen(f"http://127.0.0.1:{serving.metrics_port}/metrics",
                               timeout=TIMEOUT)


@pytest.mark.parametrize(("listen", "loopback"), [("0.0.0.0:0", False), ("127.0.0.1:0", True)])
def test_plaintext_is_served_with_a_warning_at_every_start(listen: str, loopback: bool) -> None:
    for _ in range(2):
        logs, stopped, serving = _serve_in_thread(listen)
        (warning,) = [e for e in logs if e["log_level"] == "warning"]
        assert warning["event"].startswith(INSECURE_WARNING)
        assert "--insecure" in warning["event"] and "WITHOUT TLS" in warning["event"]
        assert (warning["listen"], warning["loopback"]) == (listen, loopback)
        assert logs.index(warning) < [e["event"] for e in logs].index("probe serving")
        assert [e["tls"] for e in logs if e["event"] == "probe serving"] == [False]
        assert serving.metrics_port == 0 and stopped == ["server", "first part"]


@pytest.mark.parametrize(("listen", "loopback"), [
    ("127.0.0.1:7443", True), ("127.8.9.1:0", True), ("localhost:7443", True),
    ("[::1]:7443", True), ("0.0.0.0:7443", False), (":7443", False), ("[::]:7443", False),
    ("192.168.1.20:7443", False), ("node.example:7443", False),
])
def test_which_addresses_are_loopback(listen: str, loopback: bool) -> None:
    assert is_loopback(listen) is loopback


def test_an_address_that_cannot_be_bound_stops_what_had_started() -> None:
    started: list[str] = []

    def start(parts: ExitStack) -> tuple[int, dict[str, object]]:
        parts.callback(started.append, "stopped")
        start_server(SERVICE, lambda s: None, CallObserver(METRICS, ErrorMapping("probe")),
                     "256.0.0.1:0", max_message_bytes=4096, workers=1,
                     thread_name_prefix="probe", tls=None)
        raise AssertionError("the address cannot be bound")

    with pytest.raises(OSError, match=r"cannot listen on 256\.0\.0\.1:0"):
        serve_forever("probe", "256.0.0.1:0", "", start, tls=False, stop=threading.Event())
    assert started == ["stopped"]


@pytest.fixture
def probe() -> Any:
    running = start_server(SERVICE, lambda s: None, CallObserver(METRICS, ErrorMapping("probe")),
                           "127.0.0.1:0", max_message_bytes=4096, workers=2,
                           thread_name_prefix="probe", tls=None)
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield channel
    running.stop(None)


REFLECT = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


@pytest.mark.parametrize("garbage", [b"\xff", b"\x0a\x03\xff\xc0\x80", b"\x08"])
def test_reflection_refuses_what_is_not_a_request_as_invalid_argument(
        probe: grpc.Channel, garbage: bytes) -> None:
    """gRPC itself answered INTERNAL to a reflection message it could not parse."""
    ask = probe.stream_stream(REFLECT)
    with pytest.raises(grpc.RpcError) as caught:
        list(ask(iter([garbage]), timeout=TIMEOUT))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(caught.value) == "MALFORMED_REQUEST"
    # ... after a good one too, and the server still answers good ones
    good = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()
    with pytest.raises(grpc.RpcError) as caught:
        list(ask(iter([good, garbage]), timeout=TIMEOUT))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    (answer,) = ask(iter([good]), timeout=TIMEOUT)
    names = reflection_pb2.ServerReflectionResponse.FromString(answer)
    assert SERVICE in [s.name for s in names.list_services_response.service]


def test_health_lists_every_service_it_reports_on(probe: grpc.Channel) -> None:
    """grpcio-health-checking declares List but did not serve it (INTERNAL)."""
    listed = health_pb2_grpc.HealthStub(probe).List(health_pb2.HealthListRequest(),
                                                    timeout=TIMEOUT)
    assert {name: s.status for name, s in listed.statuses.items()} == {
        "": health_pb2.HealthCheckResponse.SERVING,
        SERVICE: health_pb2.HealthCheckResponse.SERVING}
    with pytest.raises(grpc.RpcError) as caught:
        probe.unary_unary("/grpc.health.v1.Health/Check")(b"\xff", timeout=TIMEOUT)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
