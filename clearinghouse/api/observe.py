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

- ``timebank_clearinghouse_claim_transitions_total{kind, state}``: claims that reached a
  state (proposed, accepted, rejected, completed, voided, expired); a resubmission that
  changes nothing is not counted;
- ``timebank_clearinghouse_net_position_minutes{node}`` and
  ``timebank_clearinghouse_net_debit_limit_minutes{node}``: each district's position and
  limit after its last completed claim. A district that has used 80% of its limit or
  more is also warned about in the log (``district near its net debit limit``).
"""

from __future__ import annotations

import re

import structlog
from prometheus_client import Counter, Gauge

from clearinghouse.domain.claims import Claim
from clearinghouse.domain.positions import NEAR_LIMIT_PERCENT, near_limit
from runtime import logging
from runtime.metrics import RpcMetrics
from runtime.observe import MAX_MESSAGE_CHARS

log = structlog.get_logger("clearinghouse.api")

RPCS = RpcMetrics.register("clearinghouse")
CLAIM_TRANSITIONS = Counter(
    "timebank_clearinghouse_claim_transitions", "Claims that reached a state, by kind and state",
    ["kind", "state"])
NET_POSITION = Gauge("timebank_clearinghouse_net_position_minutes",
                     "A district's net position: owed to it (+) or by it (-)", ["node"])
NET_DEBIT_LIMIT = Gauge("timebank_clearinghouse_net_debit_limit_minutes",
                        "How far a district may owe, net", ["node"])

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def redact(text: str) -> str:
    """``text`` with every 64-hex-character run (a PersonRef) cut to its first 8."""
    return _HEX64.sub(lambda m: m.group(0)[:8] + "…", text)


def person(person_ref: str) -> str:
    """How a PersonRef appears in a log line: its first 8 characters."""
    return person_ref[:8]


def position(node_id: str, net: int, limit: int) -> None:
    """Record a district's position after a completed claim; warn when it nears its limit
    (the bureau's cue to settle or to raise the limit before claims are refused)."""
    NET_POSITION.labels(node=node_id).set(net)
    NET_DEBIT_LIMIT.labels(node=node_id).set(limit)
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


def claim_transition(claim: Claim) -> None:
    """Count a claim that just reached its state."""
    CLAIM_TRANSITIONS.labels(kind=claim.kind.value, state=claim.state.value).inc()


def configure_logging(level: str = "info", fmt: str = "console") -> bool:
    """The serving clearinghouse's logs (``[log] level`` and ``format``), unless something
    in this process already configured them; every string passed through ``redact``."""
    return logging.configure_logging(level, fmt, scrub=redact)


__all__ = ["RPCS", "batch_refusal", "claim_transition", "configure_logging", "person",
           "position", "redact"]
