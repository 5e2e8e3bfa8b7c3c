"""Prometheus metrics of a serving node, on their own HTTP port (``[server] metrics_listen``).

- ``timebank_node_rpcs_total{method, code}``, ``timebank_node_rpc_duration_seconds{method}``,
  ``timebank_node_rpcs_in_flight`` and ``timebank_node_refusals_total{method, reason}``:
  every call, as ``runtime.metrics`` counts them for any service;
- ``timebank_node_orders_recorded_total`` and ``timebank_node_recording_failures_total``:
  what the background recording loop did.
"""

from __future__ import annotations

from prometheus_client import Counter

from runtime.metrics import RpcMetrics

RPCS = RpcMetrics.register("node")
ORDERS_RECORDED = Counter("timebank_node_orders_recorded",
                          "Orders recorded by the background recording loop")
RECORDING_FAILURES = Counter("timebank_node_recording_failures",
                             "Rounds of the background recording loop that failed")
