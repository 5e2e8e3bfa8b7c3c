"""Serving the clearinghouse: the gRPC server, the expiry sweep, and
`timebank clearinghouse serve`.

A synchronous ``grpc.server`` on a thread pool (the use-cases use sync SQLAlchemy
connections). It serves ``timebank.v1.ClearinghouseService``, gRPC health checking
(SERVING for "" and the service) and server reflection. Requests over 64 KiB are
refused RESOURCE_EXHAUSTED by gRPC itself. Each open Subscribe holds a worker thread,
so ``workers`` bounds the nodes that can subscribe at once (plus headroom for calls).

**Plaintext only, for now**: keep it on loopback or behind a TLS-terminating proxy.
Everything a node receives is signed by the clearinghouse key all the same, and
everything it sends is signed by its own.

Each node's Submit calls draw from an in-process token bucket (``[limits]``
``submits_per_second`` and ``submit_burst``; ``clearinghouse.api.ratelimit``). Every call
is logged (one ``rpc`` line) and measured; with ``metrics_listen`` set, Prometheus
metrics are served on that address (``clearinghouse.api.observe``).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import FrameType
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from nacl.signing import SigningKey

from clearinghouse.api import observe
from clearinghouse.api.ratelimit import RateLimiter
from clearinghouse.api.servicer import SERVICE_NAME, ClearinghouseServicer, handlers
from clearinghouse.bootstrap import META_CLEARINGHOUSE_PUBLIC_KEY, open_app, read_key
from clearinghouse.config import (
    DEFAULT_SUBMIT_BURST,
    DEFAULT_SUBMITS_PER_SECOND,
    ClearinghouseConfig,
    ConfigError,
)
from clearinghouse.storage.repo import Repo
from clearinghouse.usecases import claims
from clearinghouse.usecases.app import ClearinghouseApp
from clearinghouse.usecases.clock import Clock
from runtime import serving
from timebank import keys

log = structlog.get_logger("clearinghouse.api")

MAX_MESSAGE_BYTES = 64 * 1024
#: Responses (positions of many districts) may be larger than requests.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
DEFAULT_WORKERS = 32
DEFAULT_GRACE_SECONDS = 5.0
SWEEP_INTERVAL_SECONDS = 1.0


def server_options(max_message_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max(max_message_bytes, MAX_RESPONSE_BYTES)),
        ("grpc.so_reuseport", 0),  # a second clearinghouse on the same port must fail
        ("grpc.keepalive_time_ms", 120_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 30_000),
    ]


@dataclass(frozen=True, slots=True)
class RunningServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    servicer: ClearinghouseServicer

    def stop(self, grace: float | None = DEFAULT_GRACE_SECONDS) -> None:
        """Report NOT_SERVING, end the Subscribe streams, let running calls finish."""
        self.health.enter_graceful_shutdown()
        self.servicer.close()
        self.server.stop(grace).wait()


def start_server(app: ClearinghouseApp, signing_key: SigningKey,
                 listen: str = "127.0.0.1:0", *,
                 max_message_bytes: int = MAX_MESSAGE_BYTES,
                 workers: int = DEFAULT_WORKERS,
                 submits_per_second: int = DEFAULT_SUBMITS_PER_SECOND,
                 submit_burst: int = DEFAULT_SUBMIT_BURST) -> RunningServer:
    """Start serving ``app`` (plaintext) on ``listen``, signing with ``signing_key``.
    Each node may Submit ``submits_per_second`` envelopes a second, ``submit_burst`` at
    once (RESOURCE_EXHAUSTED BUSY beyond)."""
    if max_message_bytes < 1 or workers < 1:
        raise ValueError("max_message_bytes and workers must be positive")
    limiter = RateLimiter(submits_per_second, submit_burst)
    server = grpc.server(
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clearinghouse-rpc"),
        options=server_options(max_message_bytes))
    servicer = ClearinghouseServicer(app, signing_key, limiter=limiter)
    # Every write transaction from here on ends by signing a tree head for what it
    # logged; the first one also covers what was logged offline (admissions, limits).
    app.after_write = servicer.publish_head
    app.execute(lambda tx: None)
    server.add_generic_rpc_handlers((handlers(servicer),))
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
    return RunningServer(server, port, health_servicer, servicer)


class ExpirySweep:
    """Expires overdue claims (``claims.expire_due``) every ``interval`` seconds in a
    daemon thread until ``stop()``. A failed round is logged and the sweep carries on."""

    def __init__(self, app: ClearinghouseApp,
                 interval: float = SWEEP_INTERVAL_SECONDS) -> None:
        if interval <= 0:
            raise ValueError("the sweep interval must be positive")
        self._app = app
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        """Expire what is due now, in batches; return how many claims expired."""
        total = 0
        while not self._stop.is_set():
            expired = self._app.execute(claims.expire_due)
            for claim in expired:
                observe.claim_transition(claim)
                log.info("claim expired", claim_id=claim.claim_id, creditor=claim.creditor,
                         debtor=claim.debtor)
            total += len(expired)
            if len(expired) < claims.EXPIRE_BATCH:
                break
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except Exception:  # the sweep must survive any failure
                log.exception("expiring overdue claims failed; will try again",
                              retry_in_seconds=self.interval)

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the expiry sweep is already running")
        self._thread = threading.Thread(target=self._run, name="clearinghouse-expiry",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = DEFAULT_GRACE_SECONDS) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def signing_key(config: ClearinghouseConfig, app: ClearinghouseApp) -> SigningKey:
    """The clearinghouse key, checked against the one its database serves."""
    key = read_key(config.signing_key_file)
    public = keys.public_key(key)
    with app.db.read() as conn:
        recorded = Repo(conn).meta(META_CLEARINGHOUSE_PUBLIC_KEY)
    if recorded != public.hex():
        raise ConfigError(
            f"{config.signing_key_file} (key id {keys.key_id(public)}) is not the "
            "clearinghouse key this database serves")
    return key


def _is_loopback(listen: str) -> bool:
    host = listen.rpartition(":")[0].strip("[]")
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")


def serve_forever(config: ClearinghouseConfig, *, clock: Clock | None = None,
                  stop: threading.Event | None = None,
                  on_ready: Callable[[int], None] | None = None,
                  grace_seconds: float = DEFAULT_GRACE_SECONDS,
                  sweep_interval: float = SWEEP_INTERVAL_SECONDS) -> None:
    """Serve the clearinghouse until SIGTERM or SIGINT (or ``stop`` is set).

    Opens the database (refusing a stale schema), checks the clearinghouse key, starts
    the gRPC server and the expiry sweep, calls ``on_ready(port)``; on a signal reports
    NOT_SERVING, ends the streams, lets running calls finish within ``grace_seconds``,
    stops the sweep and closes the database. Raises ConfigError or OSError (address).
    """
    stop = stop or threading.Event()
    observe.configure_logging()
    serving.tune_gc()
    app = open_app(config, clock)
    running: RunningServer | None = None
    sweep: ExpirySweep | None = None
    metrics_server: WSGIServer | None = None
    previous: dict[signal.Signals, Any] = {}

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    try:
        key = signing_key(config, app)
        metrics_port = 0
        if config.metrics_listen:
            metrics_server, metrics_port = observe.start_metrics_server(config.metrics_listen)
        running = start_server(app, key, config.listen,
                               submits_per_second=config.submits_per_second,
                               submit_burst=config.submit_burst)
        sweep = ExpirySweep(app, sweep_interval)
        sweep.start()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, on_signal)
        if not _is_loopback(config.listen):
            log.warning("serving plaintext gRPC on a non-loopback address: put it behind "
                        "TLS on a trusted network", listen=config.listen)
        log.info("clearinghouse serving", listen=config.listen, port=running.port,
                 metrics_port=metrics_port, submits_per_second=config.submits_per_second,
                 submit_burst=config.submit_burst, key_id=keys.key_id(keys.public_key(key)))
        if on_ready is not None:
            on_ready(running.port)
        stop.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if running is not None:
            running.stop(grace_seconds)
        if sweep is not None:
            sweep.stop(grace_seconds)
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
        app.db.dispose()
        log.info("clearinghouse stopped")
