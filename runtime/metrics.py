"""Prometheus metrics of a serving node or clearinghouse, on their own HTTP port
(``metrics_listen``).

Every service counts its calls the same way (``runtime.observe``), under its own prefix
(``timebank_node_``, ``timebank_clearinghouse_``):

- ``…_rpcs_total{method, code}``: calls handled, by gRPC status code;
- ``…_rpc_duration_seconds{method, code}``: how long calls took, by how they ended (for
  a server stream, how long it stayed open);
- ``…_rpcs_in_flight``: calls being handled now;
- ``…_refusals_total{method, reason}``: calls that did not succeed, by ErrorInfo reason
  (the status name where there is none, as for a cancelled stream).

- ``…_database_up``: 1 while this process reaches its database (``runtime.health``).

A service registers its own metrics beside these (the node's recording loop, the
clearinghouse's claims). Figures that live in the database (claims by state, the outbox,
positions, the log's size) are read from it when Prometheus scrapes (``Collector``s
given to ``start_metrics_server``), so they are right after a restart and in each of
several processes sharing one database; a scrape that cannot read the database leaves
them out and counts ``timebank_scrape_errors_total``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

log = structlog.get_logger("runtime.metrics")
#: The most a scrape waits for a service's figures from its database (Prometheus's
#: default scrape timeout is 10 s).
SCRAPE_TIMEOUT_SECONDS = 5.0
SCRAPE_ERRORS = Counter("timebank_scrape_errors",
                        "Scrapes whose figures from the database could not be read")

#: Seconds; up to an hour, for the streams a node keeps open.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 60.0, 600.0, 3600.0)
_SERVICE = re.compile(r"[a-z][a-z_]*")


@dataclass(frozen=True, slots=True)
class RpcMetrics:
    """The call metrics of one service. Create once per process (``register``):
    Prometheus refuses a second metric of the same name."""

    calls: Counter
    seconds: Histogram
    in_flight: Gauge
    refusals: Counter
    database_up: Gauge

    @classmethod
    def register(cls, service: str) -> RpcMetrics:
        """Register ``timebank_<service>_rpcs_total`` and the rest with Prometheus."""
        if not _SERVICE.fullmatch(service):
            raise ValueError(f"a service's metric prefix is lowercase letters, not {service!r}")
        prefix = f"timebank_{service}_"
        return cls(
            calls=Counter(f"{prefix}rpcs", "gRPC calls handled, by method and status code",
                          ["method", "code"]),
            seconds=Histogram(f"{prefix}rpc_duration_seconds",
                              "Time taken to handle a gRPC call, by method and status code",
                              ["method", "code"],
                              buckets=DURATION_BUCKETS),
            in_flight=Gauge(f"{prefix}rpcs_in_flight", "gRPC calls being handled now"),
            refusals=Counter(f"{prefix}refusals", "Refused calls, by method and reason",
                             ["method", "reason"]),
            database_up=Gauge(f"{prefix}database_up",
                              "1 while this process reaches its database (SELECT 1 every "
                              "few seconds), 0 while it does not"),
        )

    def observe(self, method: str, code: str, reason: str, seconds: float) -> None:
        """Count one finished call; ``reason`` is counted unless the call succeeded."""
        self.calls.labels(method=method, code=code).inc()
        self.seconds.labels(method=method, code=code).observe(seconds)
        if code != "OK":
            self.refusals.labels(method=method, reason=reason or code).inc()


def parse_listen(listen: str) -> tuple[str, int]:
    """Split "host:port" ("[::1]:9464", ":9464" = every interface) into its parts."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"a listen address is host:port, not {listen!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


class _Everything(Collector):
    """The process's default registry, as one collector of another registry."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


class _Guarded(Collector):
    """A collector read in a thread of its own, for at most ``timeout`` seconds: its
    failure (the database away) or slowness (the database unreachable on a dead network)
    leaves its figures out of the scrape instead of failing or stalling the whole
    scrape. While a read that overran is still running, the next scrapes skip it."""

    def __init__(self, inner: Collector, timeout: float) -> None:
        self._inner = inner
        self._timeout = timeout
        self._running: threading.Thread | None = None

    def _skipped(self, why: str, **fields: object) -> None:
        SCRAPE_ERRORS.inc()
        log.warning(f"指标读取数据库失败 / metrics could not read the database: {why}",
                    collector=type(self._inner).__name__, **fields)

    def collect(self) -> Iterator[Metric]:
        if self._running is not None and self._running.is_alive():
            self._skipped("an earlier read is still running")
            return
        found: list[Metric] = []
        failed: list[BaseException] = []

        def read() -> None:
            try:
                found.extend(self._inner.collect())
            except Exception as e:  # reported below; the rest of the scrape answers
                failed.append(e)

        self._running = threading.Thread(target=read, name="timebank-scrape", daemon=True)
        self._running.start()
        self._running.join(self._timeout)
        if self._running.is_alive():
            self._skipped("it did not answer in time", timeout_seconds=self._timeout)
            return
        if failed:
            self._skipped(type(failed[0]).__name__, exc_info=failed[0])
            return
        yield from found


def scrape_registry(collectors: Sequence[Collector],
                    timeout: float = SCRAPE_TIMEOUT_SECONDS) -> CollectorRegistry:
    """The process's metrics and ``collectors``' (read at each scrape, each for at most
    ``timeout`` seconds)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Everything())
    for collector in collectors:
        registry.register(_Guarded(collector, timeout))
    return registry


def start_metrics_server(listen: str, collectors: Sequence[Collector] = (),
                         ) -> tuple[WSGIServer, int]:
    """Serve /metrics on ``listen`` in a daemon thread: this process's metrics and what
    ``collectors`` read at each scrape. Return the server and its port; stop it with
    ``stop_metrics_server``."""
    host, port = parse_listen(listen)
    server, _thread = start_http_server(port, addr=host, registry=scrape_registry(collectors))
    return server, int(server.server_port)


def stop_metrics_server(server: WSGIServer) -> None:
    server.shutdown()
    server.server_close()


__all__ = ["DURATION_BUCKETS", "SCRAPE_ERRORS", "RpcMetrics", "parse_listen",
           "scrape_registry", "start_metrics_server", "stop_metrics_server"]
