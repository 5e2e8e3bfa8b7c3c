"""Prometheus metrics of a serving node or clearinghouse, on their own HTTP port
(``metrics_listen``).

Every service counts its calls the same way (``runtime.observe``), under its own prefix
(``timebank_node_``, ``timebank_clearinghouse_``):

- ``…_rpcs_total{method, code}``: calls handled, by gRPC status code;
- ``…_rpc_duration_seconds{method}``: how long calls took (for a server stream, how long
  it stayed open);
- ``…_rpcs_in_flight``: calls being handled now;
- ``…_refusals_total{method, reason}``: calls that did not succeed, by ErrorInfo reason
  (the status name where there is none, as for a cancelled stream).

A service registers its own metrics beside these (the node's recording loop, the
clearinghouse's claims and positions).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, start_http_server

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
                              "Time taken to handle a gRPC call", ["method"],
                              buckets=DURATION_BUCKETS),
            in_flight=Gauge(f"{prefix}rpcs_in_flight", "gRPC calls being handled now"),
            refusals=Counter(f"{prefix}refusals", "Refused calls, by method and reason",
                             ["method", "reason"]),
        )

    def observe(self, method: str, code: str, reason: str, seconds: float) -> None:
        """Count one finished call; ``reason`` is counted unless the call succeeded."""
        self.calls.labels(method=method, code=code).inc()
        self.seconds.labels(method=method).observe(seconds)
        if code != "OK":
            self.refusals.labels(method=method, reason=reason or code).inc()


def parse_listen(listen: str) -> tuple[str, int]:
    """Split "host:port" ("[::1]:9464", ":9464" = every interface) into its parts."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"a listen address is host:port, not {listen!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def start_metrics_server(listen: str) -> tuple[WSGIServer, int]:
    """Serve /metrics on ``listen`` in a daemon thread; return the server and its port.
    Stop it with ``stop_metrics_server``."""
    host, port = parse_listen(listen)
    server, _thread = start_http_server(port, addr=host)
    return server, int(server.server_port)


def stop_metrics_server(server: WSGIServer) -> None:
    server.shutdown()
    server.server_close()


__all__ = ["DURATION_BUCKETS", "RpcMetrics", "parse_listen", "start_metrics_server",
           "stop_metrics_server"]
