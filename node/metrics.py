"""Prometheus metrics of a serving node, on their own HTTP port (``[server] metrics_listen``).

- ``timebank_node_rpcs_total{method, code}``, ``timebank_node_rpc_duration_seconds{method, code}``,
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
  last statement this node posted (issue 16);
- ``timebank_node_link_up``: 1 while the node's channel to the clearinghouse is
  connected, 0 while it is not (in memory: it is this process's state);
- read from the database at each scrape (``StatusCollector``, ``node.usecases.status``):
  ``timebank_node_claims{state}``, ``timebank_node_outbox_messages`` and
  ``timebank_node_outbox_oldest_age_seconds`` (what waits to be sent to the
  clearinghouse, and for how long), ``timebank_node_last_delivery_seq`` (the last
  delivery applied), ``timebank_node_log_verified_size``, ``timebank_node_log_final_size``
  and ``timebank_node_log_verified_age_seconds`` (the log as far as this node verified
  it, as far as a quorum of districts cosigned it, and how old the newest verified head
  is), and ``timebank_node_log_unfinal_seconds`` (how long that head has waited for a
  quorum: 0 once final).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from node.usecases.app import NodeApp
from node.usecases.status import node_status
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

LINK_UP = Gauge("timebank_node_link_up",
                "1 while the channel to the clearinghouse is connected, 0 while it is not")


class StatusCollector:
    """The node's figures from its database, read at each scrape (one short read)."""

    def __init__(self, app: NodeApp) -> None:
        self._app = app

    def collect(self) -> Iterator[Metric]:
        status = self._app.query(node_status)
        claims = GaugeMetricFamily("timebank_node_claims",
                                   "Inter-district claims this node is a party to, by state",
                                   labels=["state"])
        for state, count in sorted(status.claims.items()):
            claims.add_metric([state], count)
        yield claims
        yield GaugeMetricFamily("timebank_node_outbox_messages",
                                "Messages waiting to be sent to the clearinghouse",
                                value=status.outbox_pending)
        yield GaugeMetricFamily("timebank_node_outbox_oldest_age_seconds",
                                "How long the oldest unsent message has waited (0: none)",
                                value=status.outbox_oldest_age_seconds)
        yield GaugeMetricFamily("timebank_node_last_delivery_seq",
                                "The sequence number of the last clearinghouse delivery "
                                "applied", value=status.last_delivery_seq)
        yield GaugeMetricFamily("timebank_node_log_verified_size",
                                "Entries of the city's log up to the newest head this node "
                                "verified", value=0 if status.verified is None
                                else status.verified.size)
        yield GaugeMetricFamily("timebank_node_log_final_size",
                                "Entries of the city's log up to the newest head a quorum of "
                                "districts cosigned", value=0 if status.final is None
                                else status.final.size)
        age = status.age_seconds(status.verified)
        if age is not None:
            yield GaugeMetricFamily("timebank_node_log_verified_age_seconds",
                                    "Age of the newest tree head this node verified",
                                    value=age)
        yield GaugeMetricFamily("timebank_node_log_unfinal_seconds",
                                "How long the newest head this node verified has waited for "
                                "a quorum of districts to cosign it (0: final)",
                                value=status.finality_lag_seconds)
