"""What the serving clearinghouse tells its operator: one log line per call, and
Prometheus metrics on their own HTTP port (``metrics_listen``).

Every rpc passes the error decorators in ``clearinghouse.api.errors``, which open a
``Call`` here and close it with the status the client got. The line (structlog event
``rpc``) carries the method, the status code, the duration in ms, and what the servicer
noted on the way (``note``): the signer and kind of an envelope, the claim id and state,
the ErrorInfo reason and the message of a refusal. A refusal is an operator's or a
node's matter and is logged without a traceback; only a bug (INTERNAL) is logged with
one, under its error id, by ``clearinghouse.api.errors``.

**PersonRefs stay out of the logs**: a PersonRef is noted by its first 8 hex characters
only (``person``), and every noted string and refusal message passes ``redact``, which
cuts any 64-hex-character run to its first 8. ``configure_logging`` (called by
``serve_forever``) also redacts every string of every event, rendered tracebacks
included, and renders tracebacks without local variables.

Metrics (the clearinghouse never imports the node, so these mirror ``node.metrics``):

- ``timebank_clearinghouse_rpcs_total{method, code}``: calls handled, by status code;
- ``timebank_clearinghouse_rpc_duration_seconds{method}``: how long calls took (for
  Subscribe, how long the stream stayed open);
- ``timebank_clearinghouse_rpcs_in_flight``: calls being handled now;
- ``timebank_clearinghouse_refusals_total{method, reason}``: refusals by ErrorInfo reason
  (``BUSY`` is the Submit rate limit), a SubmitBatch's refused envelopes included (each
  also logged as ``envelope refused``);
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
import time
from collections.abc import Mapping, MutableMapping
from contextvars import ContextVar
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
import structlog
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from clearinghouse.domain.claims import Claim
from clearinghouse.domain.positions import NEAR_LIMIT_PERCENT, near_limit

log = structlog.get_logger("clearinghouse.api")

RPCS = Counter("timebank_clearinghouse_rpcs", "gRPC calls handled, by method and status code",
               ["method", "code"])
RPC_SECONDS = Histogram(
    "timebank_clearinghouse_rpc_duration_seconds", "Time taken to handle a gRPC call",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
             60.0, 600.0, 3600.0))
IN_FLIGHT = Gauge("timebank_clearinghouse_rpcs_in_flight", "gRPC calls being handled now")
REFUSALS = Counter("timebank_clearinghouse_refusals", "Refused calls, by method and reason",
                   ["method", "reason"])
CLAIM_TRANSITIONS = Counter(
    "timebank_clearinghouse_claim_transitions", "Claims that reached a state, by kind and state",
    ["kind", "state"])

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
MAX_NOTE_CHARS = 300


def redact(text: str) -> str:
    """``text`` with every 64-hex-character run (a PersonRef) cut to its first 8."""
    return _HEX64.sub(lambda m: m.group(0)[:8] + "…", text)


def person(person_ref: str) -> str:
    """How a PersonRef appears in a log line: its first 8 characters."""
    return person_ref[:8]


class Call:
    """One rpc being served: its method, start time, and the fields noted for its line."""

    __slots__ = ("fields", "method", "started")

    def __init__(self, method: str) -> None:
        self.method = method
        self.started = time.perf_counter()
        self.fields: dict[str, object] = {}

    def end(self, code: grpc.StatusCode, reason: str = "", message: str = "") -> None:
        """Count the call, observe its duration, and write its one log line."""
        elapsed = time.perf_counter() - self.started
        IN_FLIGHT.dec()
        RPCS.labels(method=self.method, code=code.name).inc()
        RPC_SECONDS.labels(method=self.method).observe(elapsed)
        if code is not grpc.StatusCode.OK:
            REFUSALS.labels(method=self.method, reason=reason or code.name).inc()
        fields = {k: redact(v) if isinstance(v, str) else v for k, v in self.fields.items()}
        if reason:
            fields["reason"] = reason
        if message:
            fields["message"] = redact(message)[:MAX_NOTE_CHARS]
        emit = log.error if code is grpc.StatusCode.INTERNAL else log.info
        emit("rpc", method=self.method, code=code.name, ms=round(elapsed * 1000, 2), **fields)
        if _current.get() is self:
            _current.set(None)


_current: ContextVar[Call | None] = ContextVar("clearinghouse_call", default=None)


def begin(method: str) -> Call:
    """Open the call being served on this thread."""
    call = Call(method)
    IN_FLIGHT.inc()
    _current.set(call)
    return call


def note(**fields: object) -> None:
    """Add fields to the current call's log line (nothing if no call is open)."""
    call = _current.get()
    if call is not None:
        call.fields.update(fields)


NET_POSITION = Gauge("timebank_clearinghouse_net_position_minutes",
                     "A district's net position: owed to it (+) or by it (-)", ["node"])
NET_DEBIT_LIMIT = Gauge("timebank_clearinghouse_net_debit_limit_minutes",
                        "How far a district may owe, net", ["node"])


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
    REFUSALS.labels(method=method, reason=reason).inc()
    log.info("envelope refused", method=method, reason=reason,
             message=redact(message)[:MAX_NOTE_CHARS])


def claim_transition(claim: Claim) -> None:
    """Count a claim that just reached its state."""
    CLAIM_TRANSITIONS.labels(kind=claim.kind.value, state=claim.state.value).inc()


def _redact_event(_logger: Any, _name: str, event: MutableMapping[str, Any],
                  ) -> Mapping[str, Any]:
    """A structlog processor: every string in the event (a rendered traceback too) with
    PersonRefs cut to their first 8 characters."""
    return {k: redact(v) if isinstance(v, str) else v for k, v in event.items()}


def configure_logging() -> bool:
    """Configure structlog for a serving clearinghouse, unless something in this process
    already did: one console line per event, timestamps in UTC, tracebacks (bugs only)
    plain and without local variables, and every string passed through ``redact``.
    Returns whether it configured anything."""
    if structlog.is_configured():
        return False
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,  # plain text, no locals
            _redact_event,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        cache_logger_on_first_use=False,
    )
    return True


def parse_listen(listen: str) -> tuple[str, int]:
    """Split "host:port" ("[::1]:9474", ":9474" = every interface) into its parts."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"a listen address is host:port, not {listen!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def start_metrics_server(listen: str) -> tuple[WSGIServer, int]:
    """Serve /metrics on ``listen`` in a daemon thread; return the server and its port.
    Stop it with ``server.shutdown()`` then ``server.server_close()``."""
    host, port = parse_listen(listen)
    server, _thread = start_http_server(port, addr=host)
    return server, int(server.server_port)


__all__ = ["Call", "begin", "claim_transition", "configure_logging", "note", "person",
           "redact", "start_metrics_server"]
