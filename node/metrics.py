"""Prometheus metrics of a serving node, on their own HTTP port (``[server] metrics_listen``).

- ``timebank_node_rpcs_total{method, code}``: calls handled, by gRPC status code;
- ``timebank_node_rpc_duration_seconds{method}``: how long calls took;
- ``timebank_node_rpcs_in_flight``: calls being handled now;
- ``timebank_node_orders_recorded_total`` and ``timebank_node_recording_failures_total``:
  what the background recording loop did.
"""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RPCS = Counter("timebank_node_rpcs", "gRPC calls handled, by method and status code",
               ["method", "code"])
RPC_SECONDS = Histogram(
    "timebank_node_rpc_duration_seconds", "Time taken to handle a gRPC call", ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
IN_FLIGHT = Gauge("timebank_node_rpcs_in_flight", "gRPC calls being handled now")
ORDERS_RECORDED = Counter("timebank_node_orders_recorded",
                          "Orders recorded by the background recording loop")
RECORDING_FAILURES = Counter("timebank_node_recording_failures",
                             "Rounds of the background recording loop that failed")


def observe_rpc(method: str, code: str, seconds: float) -> None:
    RPCS.labels(method=method, code=code).inc()
    RPC_SECONDS.labels(method=method).observe(seconds)


def parse_listen(listen: str) -> tuple[str, int]:
    """Split "host:port" ("[::1]:9464", ":9464" = every interface) into its parts."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"a listen address is host:port, not {listen!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def start_metrics_server(listen: str) -> tuple[WSGIServer, int]:
    """Serve /metrics on ``listen`` in a daemon thread; return the server and its port.

    Stop it with ``server.shutdown()`` (then ``server.server_close()``).
    """
    host, port = parse_listen(listen)
    server, _thread = start_http_server(port, addr=host)
    return server, int(server.server_port)
