"""Prometheus metrics of a serving node, on their own HTTP port (``[server] metrics_listen``).

- ``timebank_node_rpcs_total{method, code}``, ``timebank_node_rpc_duration_seconds{method}``,
  ``timebank_node_rpcs_in_flight`` and ``timebank_node_refusals_total{method, reason}``:
  every call, as ``runtime.metrics`` counts them for any service;
- ``timebank_node_orders_recorded_total`` and ``timebank_node_recording_failures_total``:
  what the background recording loop did;
- ``timebank_node_refused_deliveries_total{reason}``: deliveries the node refused because
  the envelope relayed was not signed by an admitted, unrevoked key of the district that
  must say it (any at all means a clearinghouse to look into);
- ``timebank_node_city_acts_refused_total``: envelopes the clearinghouse served as the
  city's that the city key does not verify;
- ``timebank_node_log_forks``, ``timebank_node_log_finality_lag_seconds``,
  ``timebank_node_log_finality_alarm`` and ``timebank_node_peer_head_checks_total{outcome}``:
  what the link's log watch found (split views of the city's log, issue 14);
- ``timebank_node_settlement_refused_total{reason}``: settlement statements (or the acts
  on them) this node refused to act on; ``timebank_node_settlement_posted_serial``: the
  last statement this node posted (issue 16).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from runtime.metrics import RpcMetrics

RPCS = RpcMetrics.register("node")
ORDERS_RECORDED = Counter("timebank_node_orders_recorded",
                          "Orders recorded by the background recording loop")
RECORDING_FAILURES = Counter("timebank_node_recording_failures",
                             "Rounds of the background recording loop that failed")

# The log watch (issue 14): what this district found wrong with the city's log.
LOG_FORKS = Gauge("timebank_node_log_forks",
                  "Fork evidence this node holds: pairs of tree heads the clearinghouse "
                  "signed that cannot both be true (any value above 0 needs attention)")
LOG_FINALITY_LAG = Gauge("timebank_node_log_finality_lag_seconds",
                         "How long the oldest tree head this node verified has waited for a "
                         "quorum of districts to cosign it")
LOG_FINALITY_ALARM = Gauge("timebank_node_log_finality_alarm",
                           "1 while a verified tree head has waited longer than "
                           "[clearinghouse] finality_seconds for a quorum")
PEER_HEAD_CHECKS = Counter("timebank_node_peer_head_checks",
                           "Other districts' tree heads compared with the log, by outcome "
                           "(consistent, fork, unreachable, bad_head)", ["outcome"])
REFUSED_DELIVERIES = Counter("timebank_node_refused_deliveries",
                             "Deliveries refused: the relayed envelope is not signed by an "
                             "admitted, unrevoked key of the district that must say it",
                             ["reason"])
CITY_ACTS_REFUSED = Counter("timebank_node_city_acts_refused",
                            "Envelopes served as the city's that the city key does not verify")

# Settlement (issue 16): what the settler refused, and how far it has posted.
SETTLEMENT_REFUSED = Counter("timebank_node_settlement_refused",
                             "Settlement statements, or acts on them, this node refused to act "
                             "on (a bad signature, a head without quorum, a forged "
                             "countersignature ...)", ["reason"])
SETTLEMENT_POSTED_SERIAL = Gauge("timebank_node_settlement_posted_serial",
                                 "The serial of the last settlement statement this node posted")
