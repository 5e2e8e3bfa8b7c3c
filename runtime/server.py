"""One gRPC server skeleton for the node and the clearinghouse.

``start_server`` runs a synchronous ``grpc.server`` on a thread pool (the use-cases use
sync SQLAlchemy connections) with every call observed (``runtime.observe``), gRPC health
checking (``grpc.health.v1.Health``: SERVING for "" and the service) and server
reflection, and the protocol version checked and answered on every call of the service
(``runtime.protocol.ProtocolGate``: another major is refused FAILED_PRECONDITION).
Requests over ``max_message_bytes`` are refused RESOURCE_EXHAUSTED by gRPC
itself; responses may be larger (pages, positions). Keepalive: the server pings an idle
client every 2 minutes and drops it if no answer comes within 20 s; it accepts client
pings at most every 30 s, also on idle connections. Clients use ``channel_options`` so
both sides agree.

``serve_forever`` is the life of a serving process: metrics endpoint, the service's
parts, SIGTERM and SIGINT, one ``serving`` and one ``stopped`` log line, and the parts
stopped in reverse order.

**TLS** (``runtime.tls``, ADR 0015): ``start_server`` serves the ``ServerTls`` it is
given, picking up renewed certificate files for new connections without a restart;
with a client CA every client must present a certificate it issued, and with a CRL a
revoked one is refused UNAUTHENTICATED on every call. ``checks`` (e.g. the
clearinghouse binding a certificate to the district it may act for) run before each
call's handler, inside the observer. ``tls=None`` serves plaintext: a choice made in
code (in-process tests) or by an operator's ``--insecure``, which ``serve_forever``
logs as a warning at every start.
"""

from __future__ import annotations

import gc
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from types import FrameType

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Gauge
from prometheus_client.registry import Collector

from runtime.health import PROBE_SECONDS, DatabaseProbe
from runtime.metrics import start_metrics_server, stop_metrics_server
from runtime.observe import CallObserver
from runtime.protocol import ProtocolGate
from runtime.tls import (
    CallChecks,
    Check,
    Revocations,
    ServerTls,
    revocation_check,
    server_credentials,
)
from timebank.protocol import PROTOCOL, Version

log = structlog.get_logger("runtime.server")

#: Responses (pages of orders or history, positions of many districts) may be larger
#: than requests.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
SERVER_KEEPALIVE_MS = 120_000
KEEPALIVE_TIMEOUT_MS = 20_000
MIN_CLIENT_PING_INTERVAL_MS = 30_000
CLIENT_KEEPALIVE_MS = 60_000
#: Allocations between young-generation garbage collections. CPython's default (700)
#: makes a busy server stop for a collection every few requests; its objects are
#: short-lived and acyclic, so collections find little and only add latency.
GC_YOUNG_THRESHOLD = 50_000
#: What a plaintext server logs at every start.
INSECURE_WARNING = ("未启用 TLS：因 --insecure（或 insecure = true）以明文提供服务，"
                    "网络上任何人都可窃听和冒充 / serving gRPC WITHOUT TLS because of "
                    "--insecure (or insecure = true): anyone on the network can read and "
                    "forge calls")


def server_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """The channel arguments ``start_server`` uses."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max(max_message_bytes, MAX_RESPONSE_BYTES)),
        ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share it
        ("grpc.keepalive_time_ms", SERVER_KEEPALIVE_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
        ("grpc.http2.max_ping_strikes", 2),
    ]


def channel_options(max_message_bytes: int = MAX_RESPONSE_BYTES) -> list[tuple[str, int]]:
    """Channel arguments for a client of these servers (keepalive agreeing with them)."""
    return [
        ("grpc.max_receive_message_length", max(max_message_bytes, MAX_RESPONSE_BYTES)),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", CLIENT_KEEPALIVE_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


class HealthServicer(health.HealthServicer):  # type: ignore[misc]  # untyped package
    """``grpc.health.v1.Health`` as grpcio-health-checking serves it, and ``List`` too:
    the package declares that rpc but does not serve it, so a List call raised
    NotImplementedError and was answered INTERNAL. Here it lists the status of every
    service this server reports on, as Check gives each."""

    def __init__(self) -> None:
        super().__init__()
        self._names: set[str] = {""}

    def set(self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType,
            ) -> None:
        self._names.add(service)
        super().set(service, status)

    def List(self, request: health_pb2.HealthListRequest,  # noqa: N802 - the rpc's name
             context: grpc.ServicerContext) -> health_pb2.HealthListResponse:
        out = health_pb2.HealthListResponse()
        for name in sorted(self._names):
            out.statuses[name].CopyFrom(
                self.Check(health_pb2.HealthCheckRequest(service=name), context))
        return out


@dataclass(frozen=True, slots=True)
class RunningServer:
    """A started server: its bound port, and how to stop it."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    #: Called on stop, after health reports NOT_SERVING and before the server stops
    #: (the clearinghouse ends its open streams here).
    on_stop: Callable[[], None] | None = None

    def stop(self, grace: float | None) -> None:
        """Report NOT_SERVING, then stop taking calls and let running ones finish
        within ``grace`` seconds."""
        self.health.enter_graceful_shutdown()
        if self.on_stop is not None:
            self.on_stop()
        self.server.stop(grace).wait()


def start_server(service_name: str, register: Callable[[grpc.Server], None],
                 observer: CallObserver, listen: str, *, max_message_bytes: int,
                 workers: int, thread_name_prefix: str, tls: ServerTls | None,
                 checks: Sequence[Check] = (),
                 on_stop: Callable[[], None] | None = None,
                 protocol: Version = PROTOCOL) -> RunningServer:
    """Start serving on ``listen``, TLS as ``tls`` says (None: plaintext): ``register``
    adds the service's handlers for ``service_name``; ``checks`` run before every
    call's handler; callers of another major than ``protocol`` are refused, before any
    check. Raises OSError if the address cannot be bound, ConfigError if the
    TLS files cannot be used."""
    if max_message_bytes < 1:
        raise ValueError("max_message_bytes must be positive")
    if workers < 1:
        raise ValueError("workers must be at least 1")
    credentials = None if tls is None else server_credentials(tls)
    if tls is not None and tls.crl is not None and tls.client_ca is not None:
        checks = (revocation_check(Revocations(tls.crl, tls.client_ca)), *checks)
    interceptors: list[grpc.ServerInterceptor] = [observer, ProtocolGate(protocol)]
    if checks:
        interceptors.append(CallChecks(checks))
    server = grpc.server(
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix=thread_name_prefix),
        interceptors=interceptors, options=server_options(max_message_bytes))
    register(server)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (service_name, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    try:
        port = (server.add_insecure_port(listen) if credentials is None
                else server.add_secure_port(listen, credentials))
    except RuntimeError as e:
        server.stop(None)
        raise OSError(f"cannot listen on {listen}: {e}") from None
    if port == 0:
        server.stop(None)
        raise OSError(f"cannot listen on {listen}")
    server.start()
    for name in ("", service_name):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, port, health_servicer, on_stop)


def watch_database(running: RunningServer, url: str, up: Gauge, *,
                   interval: float = PROBE_SECONDS) -> DatabaseProbe:
    """Probe the database at ``url`` every ``interval`` seconds (``runtime.health``):
    health service "" NOT_SERVING and ``up`` 0 while it is unreachable, SERVING and 1
    when it answers again. Started; stop it before the server."""
    def report(reachable: bool) -> None:
        up.set(1 if reachable else 0)
        running.health.set("", health_pb2.HealthCheckResponse.SERVING if reachable
                           else health_pb2.HealthCheckResponse.NOT_SERVING)

    probe = DatabaseProbe(url, report, interval=interval)
    probe.start()
    return probe


def is_loopback(listen: str) -> bool:
    """Whether a "host:port" listen address is on this machine only."""
    host = listen.rpartition(":")[0].strip("[]")
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")


def tune_gc() -> None:
    """Move what start-up allocated (modules, schemas, compiled statements) out of the
    collector's way, and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


@dataclass(frozen=True, slots=True)
class Serving:
    """What a process is serving, handed to ``serve_forever``'s ``on_ready``."""

    port: int
    metrics_port: int  # 0: no metrics endpoint


#: Starts a service's parts, pushing each one's stop onto the stack, and returns its
#: gRPC server's port and what the ``serving`` and ``stopped`` lines say about it.
StartParts = Callable[[ExitStack], tuple[int, Mapping[str, object]]]


@contextmanager
def stopped_by_signals(stop: Callable[[], None]) -> Iterator[None]:
    """SIGTERM and SIGINT call ``stop``, and the process goes on to end cleanly, exit
    code 0 (from the main thread only; signals cannot be handled elsewhere); the
    previous handlers come back afterwards. Every serving process of the city stops
    this one way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve_forever(service: str, listen: str, metrics_listen: str, start: StartParts, *,
                  tls: bool, stop: threading.Event | None = None,
                  on_ready: Callable[[Serving], None] | None = None,
                  collectors: Sequence[Collector] = ()) -> None:
    """Serve until SIGTERM or SIGINT (or until ``stop`` is set).

    Starts the Prometheus endpoint if ``metrics_listen`` is set (with ``collectors``,
    read at each scrape), then the service's
    parts (``start``); logs ``<service> serving`` (with ``listen``, ``port``,
    ``metrics_port``, ``tls`` and what ``start`` returned) and calls ``on_ready``; without
    ``tls`` (the operator's ``--insecure``) a warning first, at every start. Once
    stopped, stops the parts in reverse order and logs ``<service> stopped``. Raises
    what ``start`` raises, and OSError if an address cannot be bound.
    """
    tune_gc()
    stop = stop or threading.Event()
    about: dict[str, object] = {}
    with ExitStack() as parts:
        parts.callback(lambda: log.info(f"{service} stopped", **about))
        metrics_port = 0
        if metrics_listen:
            metrics_server, metrics_port = start_metrics_server(metrics_listen, collectors)
            parts.callback(stop_metrics_server, metrics_server)
        port, said = start(parts)
        about.update(said)
        parts.enter_context(stopped_by_signals(stop.set))
        if not tls:
            log.warning(f"{INSECURE_WARNING} ({service})", listen=listen,
                        loopback=is_loopback(listen))
        log.info(f"{service} serving", listen=listen, port=port, metrics_port=metrics_port,
                 tls=tls, **about)
        if on_ready is not None:
            on_ready(Serving(port, metrics_port))
        stop.wait()


__all__ = ["INSECURE_WARNING", "MAX_RESPONSE_BYTES", "RunningServer", "Serving", "StartParts",
           "channel_options", "is_loopback", "serve_forever", "server_options", "start_server",
           "tune_gc", "watch_database"]
