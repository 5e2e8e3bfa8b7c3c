"""Serving the clearinghouse: the gRPC server, the expiry sweep, the settlement
schedule, and `timebank clearinghouse serve`.

The server is the runtime's skeleton (``runtime.server``) serving
``timebank.v1.ClearinghouseService``, with health checking ("" NOT_SERVING while this
replica cannot reach its database: ``runtime.health``) and server reflection.
Requests over 64 KiB are refused RESOURCE_EXHAUSTED by gRPC itself. Each open
Subscribe holds a worker thread, so ``workers`` bounds the nodes that can subscribe at
once (plus headroom for calls).

It serves mutual TLS (``[tls]``, ADR 0015): every client presents a certificate the
city CA issued, a revoked one (in the CRL) is refused UNAUTHENTICATED, and
``clearinghouse.api.callers`` binds the certificate to what the call may do: a node's
certificate acts only for its own district, an observer's only reads, a bureau
operator's reads and closes settlement periods (CloseSettlement, signed as the schedule
signs and logged under the operator's name). Everything a node
receives is signed by the clearinghouse key all the same, and everything it sends is
signed by its own. Plaintext only with ``--insecure``, logged at every start.

Each node's Submit calls draw from an in-process token bucket (``[limits]``
``submits_per_second`` and ``submit_burst``; ``clearinghouse.api.ratelimit``). Every call
is observed (``runtime.observe``): logged on one ``rpc`` line with PersonRefs cut short,
measured, and its errors answered with their status; an ``EnvelopeError`` from the
contract is PERMISSION_DENIED, or INVALID_ARGUMENT for a malformed or oversized envelope
(``wire.refused``). With ``metrics_listen`` set, Prometheus metrics are served on that
address (``clearinghouse.api.observe``).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping
from contextlib import ExitStack

import structlog
from nacl.signing import SigningKey

from clearinghouse import bootstrap
from clearinghouse.api import callers, observe
from clearinghouse.api.ratelimit import RateLimiter
from clearinghouse.api.servicer import SERVICE_NAME, ClearinghouseServicer, handlers
from clearinghouse.config import (
    DEFAULT_SUBMIT_BURST,
    DEFAULT_SUBMITS_PER_SECOND,
    DEFAULT_WORKERS,
    ClearinghouseConfig,
)
from clearinghouse.usecases import claims, restored, settlement, wire
from clearinghouse.usecases.app import ClearinghouseApp
from clearinghouse.usecases.clock import Clock
from runtime import server
from runtime.errors import Refusal
from runtime.observe import CallObserver
from runtime.periodic import Periodic
from runtime.rpcstatus import ErrorMapping
from runtime.server import RunningServer, Serving
from runtime.tls import ServerTls
from timebank import keys
from timebank.envelope import CLEARINGHOUSE, EnvelopeError, sign

log = structlog.get_logger("clearinghouse.api")

MAX_MESSAGE_BYTES = 64 * 1024
DEFAULT_GRACE_SECONDS = 5.0
SWEEP_INTERVAL_SECONDS = 1.0
#: How long a thread may hold the GIL while another waits for it (Python's default is
#: 5 ms). The one writer gives the GIL up at every wait for the database and must win
#: it back from the gRPC threads before it goes on, holding the write lock all along:
#: 0.5 ms measured 40 to 50% more claims a second on PostgreSQL (docs/performance.md).
GIL_SWITCH_INTERVAL_SECONDS = 0.0005
#: How often the serving clearinghouse looks whether the city policy's schedule closes a
#: settlement period now.
SETTLEMENT_INTERVAL_SECONDS = 60.0


def _contract_refusal(error: Exception) -> Refusal | None:
    """An envelope the contract refused, as the refusal it answers with."""
    return wire.refused(error) if isinstance(error, EnvelopeError) else None


OBSERVER = CallObserver(observe.RPCS, ErrorMapping("clearinghouse", _contract_refusal),
                        scrub=observe.redact)


def start_server(app: ClearinghouseApp, signing_key: SigningKey,
                 listen: str = "127.0.0.1:0", *,
                 max_message_bytes: int = MAX_MESSAGE_BYTES,
                 workers: int = DEFAULT_WORKERS,
                 submits_per_second: int = DEFAULT_SUBMITS_PER_SECOND,
                 submit_burst: int = DEFAULT_SUBMIT_BURST,
                 origin_key: bytes | None = None,
                 rotated_key: Callable[[bytes], SigningKey | None] | None = None,
                 tls: ServerTls | None = None,
                 settlement_signer: Callable[[], settlement.Sign] | None = None,
                 ) -> RunningServer:
    """Start serving ``app`` on ``listen``, signing with ``signing_key``: mutual TLS as
    ``tls`` says, each caller bound to its certificate (None: plaintext, the choice of
    in-process tests and ``--insecure``; nobody is bound to anything, and nobody may
    close a settlement period over gRPC). ``settlement_signer`` gives the signer of a
    statement a bureau operator closes (CloseSettlement): the one the settlement
    schedule uses (default: ``signing_key``, or the key it was rotated to).
    Each node may Submit ``submits_per_second`` envelopes a second, ``submit_burst`` at
    once (RESOURCE_EXHAUSTED BUSY beyond). Stopping it ends the Subscribe streams."""
    limiter = RateLimiter(submits_per_second, submit_burst)
    servicer = ClearinghouseServicer(app, signing_key, limiter=limiter, origin_key=origin_key,
                                     rotated_key=rotated_key,
                                     settlement_signer=settlement_signer)
    # Every write transaction from here on ends by signing a tree head for what it
    # logged; the first one also covers what was logged offline (admissions, limits).
    app.after_write = servicer.publish_head
    app.on_group = observe.write_group
    app.execute(lambda tx: None)
    return server.start_server(
        SERVICE_NAME, lambda s: s.add_generic_rpc_handlers((handlers(servicer),)), OBSERVER,
        listen, max_message_bytes=max_message_bytes, workers=workers,
        thread_name_prefix="clearinghouse-rpc", on_stop=servicer.close, tls=tls,
        checks=() if tls is None else (callers.check,))


class ExpirySweep(Periodic):
    """Expires overdue claims (``claims.expire_due``) every ``interval`` seconds in a
    daemon thread until ``stop()``. A failed round is logged and the sweep carries on."""

    thread_name = "clearinghouse-expiry"
    what = "expiring overdue claims"

    def __init__(self, app: ClearinghouseApp,
                 interval: float = SWEEP_INTERVAL_SECONDS) -> None:
        super().__init__(interval)
        self._app = app

    def run_once(self) -> int:
        """Expire what is due now, in batches; return how many claims expired."""
        total = 0
        while not self.stopping:
            expired = self._app.execute(claims.expire_due)
            for claim in expired:
                observe.claim_transition(claim)
                log.info("claim expired", claim_id=claim.claim_id, creditor=claim.creditor,
                         debtor=claim.debtor)
            total += len(expired)
            if len(expired) < claims.EXPIRE_BATCH:
                break
        return total

    def round(self) -> None:
        self.run_once()


class SettlementSchedule(Periodic):
    """Closes the previous month when the city policy's schedule says so
    (``settlement.close_due``), looking every ``interval`` seconds: a cheap read first,
    the close (under the write lock, checked again there) only when it is due. Several
    replicas may run it: the write lock lets one close the month, and the others find it
    closed."""

    thread_name = "clearinghouse-settlement"
    what = "closing a scheduled settlement period"
    round_at_start = True

    def __init__(self, app: ClearinghouseApp, sign: Callable[[], settlement.Sign],
                 interval: float = SETTLEMENT_INTERVAL_SECONDS) -> None:
        super().__init__(interval)
        self._app = app
        self._sign = sign  # the signer of the key that signs now (it may be rotated)

    def run_once(self) -> settlement.Closed | None:
        if self._app.query(settlement.due) is None:
            return None
        closed = self._app.execute(settlement.close_due, self._sign())
        if closed is not None:
            log.info("settlement period closed", period=closed.statement.period,
                     serial=closed.statement.serial, claims=closed.statement.sheet.claims,
                     log_index=closed.log_index)
        return closed

    def round(self) -> None:
        self.run_once()


def _log_at_start(app: ClearinghouseApp) -> restored.LogAtStart:
    """The log's size and latest head at start; a warning if that head is old (a
    database restored from a backup, perhaps: the districts will say so)."""
    standing = app.query(restored.at_start)
    if standing.latest_at is not None and standing.stale(app.clock.now()):
        log.warning("日志的最新树头签于很久以前：如果这是从备份恢复的数据库，各区节点持有更大的树头，"
                    "会报分叉告警，请先阅读 docs/operations.md 的恢复步骤 / the log's latest "
                    "head was signed long ago: if this database was restored from a backup, "
                    "the districts hold larger heads and will raise their fork alarm; read "
                    "the recovery steps in docs/operations.md before serving on",
                    log_size=standing.size, latest_head_at=standing.latest_at.isoformat())
    return standing


def serve_forever(config: ClearinghouseConfig, *, clock: Clock | None = None,
                  stop: threading.Event | None = None,
                  on_ready: Callable[[Serving], None] | None = None,
                  grace_seconds: float = DEFAULT_GRACE_SECONDS,
                  sweep_interval: float = SWEEP_INTERVAL_SECONDS) -> None:
    """Serve the clearinghouse until SIGTERM or SIGINT (or ``stop`` is set).

    Configures logging (unless something in this process already did), opens the
    database (refusing a stale schema), checks the clearinghouse key, starts the metrics
    endpoint if ``metrics_listen`` is set, the gRPC server, the expiry sweep and the
    settlement schedule (``SettlementSchedule``), calls ``on_ready``; on a signal reports
    NOT_SERVING, ends the streams, lets running calls finish within ``grace_seconds``,
    stops the sweep and the schedule and closes the database. Raises
    ConfigError or OSError (address).
    """
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_SECONDS)  # for the whole process
    observe.configure_logging(config.log_level, config.log_format)
    tls = config.server_tls()  # refuses to serve without TLS unless insecure
    app = bootstrap.open_app(config, clock)
    standing = _log_at_start(app)
    # it was just reached: up before health first says SERVING (the probe keeps it after)
    observe.RPCS.database_up.set(1)

    def start(parts: ExitStack) -> tuple[int, Mapping[str, object]]:
        key = bootstrap.signing_key(config, app)

        def signer() -> settlement.Sign:
            current = bootstrap.signing_key(config, app)
            return lambda kind, body: sign(kind, body, CLEARINGHOUSE, current)

        running = start_server(app, key, config.listen,
                               max_message_bytes=config.max_message_bytes,
                               workers=config.workers,
                               submits_per_second=config.submits_per_second,
                               submit_burst=config.submit_burst, tls=tls,
                               origin_key=bootstrap.origin_key(app),
                               rotated_key=lambda public: bootstrap.clearinghouse_keys(
                                   config, app).get(public),
                               settlement_signer=signer)
        parts.callback(running.stop, grace_seconds)
        probe = server.watch_database(running, app.db.url, observe.RPCS.database_up)
        parts.callback(probe.stop, grace_seconds)
        sweep = ExpirySweep(app, sweep_interval)
        sweep.start()
        parts.callback(sweep.stop, grace_seconds)
        schedule = SettlementSchedule(app, signer)
        schedule.start()
        parts.callback(schedule.stop, grace_seconds)
        return running.port, {"log_size": standing.size,
                              "submits_per_second": config.submits_per_second,
                              "submit_burst": config.submit_burst,
                              "key_id": keys.key_id(keys.public_key(key))}

    try:
        server.serve_forever("clearinghouse", config.listen, config.metrics_listen, start,
                             tls=tls is not None, stop=stop, on_ready=on_ready,
                             collectors=(observe.StatusCollector(app),))
    finally:
        app.db.dispose()
