"""Serving a node: the gRPC server, the background recording loop, and `timebank node serve`.

The server is a synchronous ``grpc.server`` on a thread pool: use-cases use sync
SQLAlchemy sessions, and a district's request rate is modest. It serves
``timebank.v1.NodeService``, gRPC health checking (``grpc.health.v1.Health``:
SERVING for "" and "timebank.v1.NodeService") and server reflection.

**Plaintext only, for now.** The server listens without TLS; keep it on loopback
or behind a TLS-terminating proxy on a trusted network. Mutual TLS between nodes
and the clearinghouse arrives with the clearinghouse (see DESIGN.md).

Every call passes ``CallInterceptor``: it binds structlog context variables
(method, the ids in the request), counts the call in Prometheus, writes one log
line with the status code and duration, and clears the context afterwards (pool
threads are reused). It also parses the request itself, so a request that is not
a valid protobuf message is INVALID_ARGUMENT rather than gRPC's default INTERNAL.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import FrameType
from typing import Any

import grpc
import structlog
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from node import metrics
from node.api.errors import rich_status
from node.api.servicer import SERVICE_NAME, NodeServicer
from node.bootstrap import open_app
from node.config import ConfigError, NodeConfig
from node.domain.clock import Clock
from node.link.clearing_link import ClearingLink
from node.logging import configure_logging
from node.usecases import orders
from node.usecases.app import NodeApp
from runtime import serving
from timebank import keys
from timebank.v1 import node_pb2_grpc

log = structlog.get_logger("node.api")

#: Responses (pages of orders or history) may be larger than requests.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
#: Keepalive: the server pings an idle client every 2 minutes and drops it if no
#: answer comes within 20 s; it accepts client pings at most every 30 s, also on
#: idle connections. Clients should use ``channel_options()`` so both sides agree.
SERVER_KEEPALIVE_MS = 120_000
KEEPALIVE_TIMEOUT_MS = 20_000
MIN_CLIENT_PING_INTERVAL_MS = 30_000
CLIENT_KEEPALIVE_MS = 60_000
DEFAULT_GRACE_SECONDS = 10.0
DEFAULT_RECORDING_INTERVAL = 30.0

_ID_FIELDS = frozenset({"order_id", "person_id", "recipient_id", "volunteer_id", "other_id",
                        "payer_id", "staff_id", "service_point_id", "seq"})
_QUIET_SERVICES = ("/grpc.health.", "/grpc.reflection.")


def server_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """The channel arguments ``start_server`` uses."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max(max_message_bytes, MAX_RESPONSE_BYTES)),
        ("grpc.so_reuseport", 0),  # a second node on the same port must fail, not share it
        ("grpc.keepalive_time_ms", SERVER_KEEPALIVE_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
        ("grpc.http2.max_ping_strikes", 2),
    ]


def channel_options(max_message_bytes: int = MAX_RESPONSE_BYTES) -> list[tuple[str, int]]:
    """Channel arguments for a client of this server (keepalive agreeing with the server)."""
    return [
        ("grpc.max_receive_message_length", max(max_message_bytes, MAX_RESPONSE_BYTES)),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", CLIENT_KEEPALIVE_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


# ---------------------------------------------------------------- per-call context

def _ids_of(request: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(request, Message):
        for field, value in request.ListFields():
            if field.name in _ID_FIELDS or field.name == "idempotency_key":
                out[field.name] = value
    return out


def _code_of(context: grpc.ServicerContext, default: grpc.StatusCode) -> grpc.StatusCode:
    code = getattr(context, "code", None)
    found = code() if callable(code) else None
    return found if isinstance(found, grpc.StatusCode) else default


class CallInterceptor(grpc.ServerInterceptor):
    """Parse, bind log context, log, measure and clear, around every unary call."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler  # streaming calls (reflection, health Watch) pass untouched
        behaviour = handler.unary_unary
        parse = handler.request_deserializer
        full = handler_call_details.method
        method = full.rsplit("/", 1)[-1]
        quiet = full.startswith(_QUIET_SERVICES)

        def call(raw: bytes, context: grpc.ServicerContext) -> Any:
            structlog.contextvars.clear_contextvars()
            structlog.contextvars.bind_contextvars(method=method)
            metrics.IN_FLIGHT.inc()
            started = time.perf_counter()
            code = grpc.StatusCode.UNKNOWN
            try:
                try:
                    request = parse(raw) if parse is not None else raw
                except (DecodeError, ValueError, TypeError):
                    code = grpc.StatusCode.INVALID_ARGUMENT
                    context.abort_with_status(rich_status(
                        code, f"the request is not a valid {method} request message",
                        "MALFORMED_REQUEST"))
                structlog.contextvars.bind_contextvars(**_ids_of(request))
                response = behaviour(request, context)
                code = _code_of(context, grpc.StatusCode.OK)
                return response
            except BaseException:
                code = _code_of(context, grpc.StatusCode.UNKNOWN)
                raise
            finally:
                elapsed = time.perf_counter() - started
                metrics.IN_FLIGHT.dec()
                metrics.observe_rpc(method, code.name, elapsed)
                emit = log.debug if quiet else log.info
                emit("rpc", code=code.name, ms=round(elapsed * 1000, 2))
                structlog.contextvars.clear_contextvars()

        return grpc.unary_unary_rpc_method_handler(
            call, request_deserializer=None, response_serializer=handler.response_serializer)


# ---------------------------------------------------------------- the server

@dataclass(frozen=True, slots=True)
class RunningServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer

    def stop(self, grace: float | None = DEFAULT_GRACE_SECONDS) -> None:
        """Report NOT_SERVING, then stop taking calls and let running ones finish."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()


def _start(app: NodeApp, listen: str, max_message_bytes: int, workers: int,
           link: ClearingLink | None = None) -> RunningServer:
    if max_message_bytes < 1:
        raise ValueError("max_message_bytes must be positive")
    if workers < 1:
        raise ValueError("workers must be at least 1")
    server = grpc.server(
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="timebank-rpc"),
        interceptors=[CallInterceptor()],
        options=server_options(max_message_bytes),
    )
    servicer = (NodeServicer(app) if link is None
                else NodeServicer(app, link.address, link.wake))
    node_pb2_grpc.add_NodeServiceServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    try:
        port = server.add_insecure_port(listen)
    except RuntimeError as e:
        server.stop(None)
        raise OSError(f"cannot listen on {listen}: {e}") from None
    if port == 0:
        server.stop(None)
        raise OSError(f"cannot listen on {listen}")
    server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, port, health_servicer)


def start_server(app: NodeApp, listen: str = "127.0.0.1:0", *, max_message_bytes: int = 65536,
                 workers: int = 8) -> tuple[grpc.Server, int]:
    """Start serving ``app`` (plaintext) on ``listen``; return the server and its bound port.

    Requests over ``max_message_bytes`` are refused RESOURCE_EXHAUSTED by gRPC itself.
    Stop with ``server.stop(grace)``.
    """
    running = _start(app, listen, max_message_bytes, workers)
    return running.server, running.port


# ---------------------------------------------------------------- recording in the background

class RecordingLoop:
    """Records every order whose publicity period is over, every ``interval`` seconds.

    Runs in a daemon thread until ``stop()``. A failed round is logged (with its
    traceback) and counted, and the loop carries on; it never dies on an error.
    """

    def __init__(self, app: NodeApp, interval: float = DEFAULT_RECORDING_INTERVAL, *,
                 batch: int = 1000, on_recorded: Callable[[], None] | None = None) -> None:
        if interval <= 0:
            raise ValueError("the recording interval must be positive")
        self._on_recorded = on_recorded  # recording may queue claim completions
        self._app = app
        self.interval = interval
        self.batch = batch
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        """Record what is due now, in batches; return how many orders were recorded."""
        total = 0
        while not self._stop.is_set():
            recorded = self._app.execute(orders.record_due_orders, self.batch)
            for view in recorded:
                o = view.record
                log.info("order recorded", order_id=o.id, volunteer_id=o.volunteer_id,
                         recorded_minutes=o.recorded_minutes, banked_minutes=o.banked_minutes,
                         excess_to_pool_minutes=o.excess_to_pool_minutes,
                         unbanked_minutes=o.unbanked_minutes, notices=list(view.notices))
            metrics.ORDERS_RECORDED.inc(len(recorded))
            total += len(recorded)
            if len(recorded) < self.batch:
                break
        return total

    def run_isolated(self) -> int:
        """Record due orders one transaction each, so one order that fails (a bug or a
        bad row) is logged and skipped instead of holding back every other order."""
        total = 0
        for order_id in self._app.query(orders.due_order_ids, self.batch):
            try:
                self._app.execute(orders.record_order, order_id)
            except Exception:  # isolate the failing order; the rest still get recorded
                metrics.RECORDING_FAILURES.inc()
                log.exception("order could not be recorded; will try again", order_id=order_id)
            else:
                metrics.ORDERS_RECORDED.inc()
                total += 1
        return total

    def _round(self) -> None:
        try:
            count = self.run_once()
        except Exception:  # the loop must survive any failure
            metrics.RECORDING_FAILURES.inc()
            log.exception("recording a batch of due orders failed; recording them one by one",
                          retry_in_seconds=self.interval)
            try:
                count = self.run_isolated()
            except Exception:
                log.exception("recording due orders failed; will try again",
                              retry_in_seconds=self.interval)
                return
        if count:
            log.info("recorded due orders", count=count)
            if self._on_recorded is not None:
                self._on_recorded()

    def _run(self) -> None:
        while True:
            self._round()
            if self._stop.wait(self.interval):
                return

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the recording loop is already running")
        self._thread = threading.Thread(target=self._run, name="timebank-recording",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = DEFAULT_GRACE_SECONDS) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


# ---------------------------------------------------------------- `timebank node serve`

@dataclass(frozen=True, slots=True)
class Serving:
    """What ``serve_forever`` is serving, handed to its ``on_ready`` callback."""

    port: int
    metrics_port: int  # 0: no metrics endpoint


def open_link(app: NodeApp, config: NodeConfig) -> ClearingLink:
    """The node's connection to its city clearinghouse, from its configuration."""
    try:
        key = keys.read_seed(config.signing_key_file)
    except keys.KeyFileError as e:
        raise ConfigError(str(e)) from None
    return ClearingLink(app, config.clearinghouse_address,
                        bytes.fromhex(config.clearinghouse_public_key), key,
                        channel_options=channel_options())


def _is_loopback(listen: str) -> bool:
    host = listen.rpartition(":")[0].strip("[]")
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")


def serve_forever(config: NodeConfig, *, clock: Clock | None = None,
                  stop: threading.Event | None = None,
                  on_ready: Callable[[Serving], None] | None = None,
                  grace_seconds: float = DEFAULT_GRACE_SECONDS,
                  recording_interval: float = DEFAULT_RECORDING_INTERVAL) -> None:
    """Serve the node described by ``config`` until SIGTERM or SIGINT (or ``stop`` is set).

    Configures logging, opens the node (refusing a stale schema or another node's
    database), starts the metrics endpoint if ``metrics_listen`` is set, the gRPC
    server and the recording loop; on a signal reports NOT_SERVING, lets running
    calls finish within ``grace_seconds`` and closes the database.
    Raises ``node.config.ConfigError`` if the node cannot be opened and ``OSError``
    if an address cannot be bound.
    """
    configure_logging(config.log_level, config.log_format)
    serving.tune_gc()
    stop = stop or threading.Event()
    app = open_app(config, clock)
    metrics_server = None
    running: RunningServer | None = None
    loop: RecordingLoop | None = None
    link: ClearingLink | None = None
    previous: dict[signal.Signals, Any] = {}

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    try:
        metrics_port = 0
        if config.metrics_listen:
            metrics_server, metrics_port = metrics.start_metrics_server(config.metrics_listen)
        if config.federated:
            link = open_link(app, config)
            link.start()
        running = _start(app, config.listen, config.max_message_bytes, config.workers, link)
        loop = RecordingLoop(app, recording_interval, on_recorded=None if link is None
                             else link.wake)
        loop.start()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, on_signal)
        if not _is_loopback(config.listen):
            log.warning("serving plaintext gRPC on a non-loopback address: put it behind TLS "
                        "on a trusted network (TLS arrives with the clearinghouse)",
                        listen=config.listen)
        log.info("node serving", node_id=config.node_id, district=config.district,
                 listen=config.listen, port=running.port, metrics_port=metrics_port,
                 policy_digest=app.policy.digest, tls=False)
        if on_ready is not None:
            on_ready(Serving(running.port, metrics_port))
        stop.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if running is not None:
            running.stop(grace_seconds)
        if loop is not None:
            loop.stop(grace_seconds)
        if link is not None:
            link.stop(grace_seconds)
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
        app.db.dispose()
        log.info("node stopped", node_id=config.node_id)
