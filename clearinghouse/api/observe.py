"""What the serving clearinghouse tells its operator beyond every call's ``rpc`` line
(``runtime.observe``): its claims and positions as Prometheus metrics, warnings, and
logs kept free of PersonRefs.

Every call's line carries, besides the method, status code and duration, what the
servicer noted on the way (``runtime.observe.note``): the signer and kind of an
envelope, the claim id and state, and for a refusal its ErrorInfo reason and message. A
refusal is an operator's or a node's matter and is logged without a traceback; only a
bug (INTERNAL) is logged with one, under its error id.

**PersonRefs stay out of the logs**: a PersonRef is noted by its first 8 hex characters
only (``person``), and every string on an ``rpc`` line passes ``redact``, which cuts any
64-hex-character run to its first 8. ``configure_logging`` (called by ``serve_forever``)
also redacts every string of every event, rendered tracebacks included.

Metrics, besides ``timebank_clearinghouse_rpcs_total``, ``…_rpc_duration_seconds``,
``…_rpcs_in_flight`` and ``…_refusals_total`` (``runtime.metrics``; the refusals include
a SubmitBatch's refused envelopes, each also logged as ``envelope refused``, and ``BUSY``
is the Submit rate limit):

- ``timebank_clearinghouse_write_group_size``: how many SubmitBatch, Ack and
  AddCosignature calls each write transaction took together (group commit,
  ``ClearinghouseApp.execute_together``), and
  ``timebank_clearinghouse_write_groups_failed_total``: groups rolled back and run again
  one call at a time (one call's error, or an envelope to undo after it wrote; rare);
- ``timebank_clearinghouse_claim_transitions_total{kind, state}``: claims that reached a
  state (proposed, accepted, rejected, completed, voided, expired); a resubmission that
  changes nothing is not counted;
- read from the database at each scrape (``StatusCollector``), so that they are right
  after a restart and in every replica sharing one PostgreSQL:
  ``timebank_clearinghouse_claims{state}`` (claims in each state),
  ``timebank_clearinghouse_log_size`` (entries in the city's log),
  ``timebank_clearinghouse_net_position_minutes{node}``,
  ``timebank_clearinghouse_net_debit_limit_minutes{node}`` and
  ``timebank_clearinghouse_open_claims{node}`` (each admitted district's position, limit
  and open claims), ``timebank_clearinghouse_last_delivery_seq{node}`` and
  ``timebank_clearinghouse_deliveries_unacked{node}`` (what is queued for it, and how
  much of that its node has not acknowledged). A district that has used 80% of its
  limit or more is also warned about in the log after a completed claim (``district
  near its net debit limit``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import structlog
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from clearinghouse.domain.claims import Claim
from clearinghouse.domain.positions import NEAR_LIMIT_PERCENT, near_limit
from clearinghouse.usecases.app import ClearinghouseApp, Tx
from clearinghouse.usecases.log import log_of
from runtime import logging
from runtime.metrics import RpcMetrics
from runtime.observe import MAX_MESSAGE_CHARS

log = structlog.get_logger("clearinghouse.api")

RPCS = RpcMetrics.register("clearinghouse")
CLAIM_TRANSITIONS = Counter(
    "timebank_clearinghouse_claim_transitions", "Claims that reached a state, by kind and state",
    ["kind", "state"])
WRITE_GROUP_SIZE = Histogram(
    "timebank_clearinghouse_write_group_size",
    "SubmitBatch, Ack and AddCosignature calls committed together in one transaction",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16))
WRITE_GROUPS_FAILED = Counter(
    "timebank_clearinghouse_write_groups_failed",
    "Write groups rolled back and run again one call at a time")

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def redact(text: str) -> str:
    """``text`` with every 64-hex-character run (a PersonRef) cut to its first 8."""
    return _HEX64.sub(lambda m: m.group(0)[:8] + "…", text)


def person(person_ref: str) -> str:
    """How a PersonRef appears in a log line: its first 8 characters."""
    return person_ref[:8]


def position(node_id: str, net: int, limit: int) -> None:
    """A district's position after a completed claim: warn when it nears its limit (the
    bureau's cue to settle or to raise the limit before claims are refused)."""
    if near_limit(net, limit):
        used = -net * 100 // limit if limit else 100
        log.warning("district near its net debit limit", node=node_id, owes_minutes=-net,
                    net_debit_limit_minutes=limit, used_percent=used,
                    threshold_percent=NEAR_LIMIT_PERCENT)


def batch_refusal(method: str, reason: str, message: str) -> None:
    """One envelope of a batch call was refused (the call itself succeeded): counted
    with the call's refusals, and logged on its own line."""
    RPCS.refusals.labels(method=method, reason=reason).inc()
    log.info("envelope refused", method=method, reason=reason,
             message=redact(message)[:MAX_MESSAGE_CHARS])


def write_group(size: int) -> None:
    """A group of queued writes committed together (``size`` > 0), or rolled back to be
    run one by one (``-size``)."""
    if size > 0:
        WRITE_GROUP_SIZE.observe(size)
    else:
        WRITE_GROUPS_FAILED.inc()


def claim_transition(claim: Claim) -> None:
    """Count a claim that just reached its state."""
    CLAIM_TRANSITIONS.labels(kind=claim.kind.value, state=claim.state.value).inc()


@dataclass(frozen=True, slots=True)
class CityFigures:
    claims: dict[str, int]
    log_size: int
    #: node -> (net, limit, open claims, last delivery queued, last acknowledged)
    positions: dict[str, tuple[int, int, int, int, int]]


def city_figures(tx: Tx) -> CityFigures:
    """What the metrics show, in one read: bounded by the claim states and the admitted
    districts (each an index or a small table)."""
    return CityFigures(tx.repo.claim_counts(), log_of(tx).size(),
                       tx.repo.district_figures())


class StatusCollector:
    """The clearinghouse's figures from its database, read at each scrape."""

    def __init__(self, app: ClearinghouseApp) -> None:
        self._app = app

    def collect(self) -> Iterator[Metric]:
        found = self._app.query(city_figures)
        claims = GaugeMetricFamily("timebank_clearinghouse_claims",
                                   "Claims in the clearinghouse, by state", labels=["state"])
        for state, count in sorted(found.claims.items()):
            claims.add_metric([state], count)
        yield claims
        yield GaugeMetricFamily("timebank_clearinghouse_log_size",
                                "Entries in the city's transparency log", value=found.log_size)
        net = GaugeMetricFamily("timebank_clearinghouse_net_position_minutes",
                                "A district's net position: owed to it (+) or by it (-)",
                                labels=["node"])
        limit = GaugeMetricFamily("timebank_clearinghouse_net_debit_limit_minutes",
                                  "How far a district may owe, net", labels=["node"])
        open_claims = GaugeMetricFamily("timebank_clearinghouse_open_claims",
                                        "Open (proposed or accepted) claims a district is a "
                                        "party to", labels=["node"])
        queued = GaugeMetricFamily("timebank_clearinghouse_last_delivery_seq",
                                   "The last delivery queued for a district", labels=["node"])
        unacked = GaugeMetricFamily("timebank_clearinghouse_deliveries_unacked",
                                    "Deliveries queued for a district it has not acknowledged "
                                    "yet (its node is behind, or away)", labels=["node"])
        for node, (minutes, most, count, last, acked) in sorted(found.positions.items()):
            net.add_metric([node], minutes)
            limit.add_metric([node], most)
            open_claims.add_metric([node], count)
            queued.add_metric([node], last)
            unacked.add_metric([node], max(0, last - acked))
        yield from (net, limit, open_claims, queued, unacked)


def configure_logging(level: str = "info", fmt: str = "json") -> bool:
    """The serving clearinghouse's logs, unless something in this process already
    configured them: one JSON object per line by default (``fmt="console"`` for a
    terminal), every string passed through ``redact``."""
    return logging.configure_logging(level, fmt, scrub=redact,
                                     bind={"service": "clearinghouse"})


__all__ = ["RPCS", "CityFigures", "StatusCollector", "batch_refusal", "city_figures",
           "claim_transition", "configure_logging", "person", "position", "redact"]
