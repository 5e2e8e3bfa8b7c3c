"""Serving a node: the gRPC server, the background recording loop, and `timebank node serve`.

The server is the runtime's skeleton (``runtime.server``) serving
``timebank.v1.NodeService``: a thread pool (use-cases use sync SQLAlchemy sessions, and
a district's request rate is modest), health checking and server reflection. Health:
"" is NOT_SERVING while the node's database is unreachable (``runtime.health``);
"timebank.v1.ClearinghouseLink" NOT_SERVING while the link to the clearinghouse is
down, "timebank.log" while the log watch holds an alarm; "" stays SERVING through
both, since the district keeps working. Metrics read from the database at each
scrape: ``node.metrics.StatusCollector``. Every call is observed by
``runtime.observe``: the ids in the request on every log line, one ``rpc`` line, the
``timebank_node_rpc*`` metrics, a refusal answered with its status and ErrorInfo, a bug
with INTERNAL and an error id, and a request that is not a protobuf message with
INVALID_ARGUMENT.

It serves TLS with the node's certificate (``[tls]``, ADR 0015); people and programs
authenticate with tokens, so no client certificate is asked for. The node's link to the
clearinghouse and to its peers uses mutual TLS with the same certificate. Plaintext only
with ``--insecure`` (or ``insecure = true``), logged as a warning at every start.

Every call but the public ones (Login, GetLogHeads, ListPublicOrders:
``node.domain.access.PUBLIC``) is authenticated and checked against the caller's role
first (``node.api.auth.Guarded``, ADR 0016).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from contextlib import ExitStack

import structlog
from grpc_health.v1 import health_pb2

from node import metrics
from node.api.auth import Guarded
from node.api.servicer import SERVICE_NAME, NodeServicer
from node.bootstrap import open_app
from node.config import NodeConfig
from node.domain.clock import Clock
from node.link.clearing_link import ClearingLink
from node.link.watch import HEALTH_SERVICE
from node.usecases import log_watch, orders
from node.usecases.app import NodeApp
from node.usecases.recovery import Divergence
from runtime import keyfiles, server
from runtime.errors import ConfigError
from runtime.logging import configure_logging
from runtime.observe import CallObserver
from runtime.periodic import Periodic
from runtime.rpcstatus import ErrorMapping
from runtime.server import RunningServer, Serving, channel_options
from runtime.tls import ServerTls
from timebank.v1 import node_pb2_grpc

log = structlog.get_logger("node.api")

#: The health service that says whether the link to the clearinghouse is up.
LINK_HEALTH_SERVICE = "timebank.v1.ClearinghouseLink"
DEFAULT_GRACE_SECONDS = 10.0
DEFAULT_RECORDING_INTERVAL = 30.0

OBSERVER = CallObserver(metrics.RPCS, ErrorMapping("node"))


def start_server(app: NodeApp, listen: str = "127.0.0.1:0", *, max_message_bytes: int = 65536,
                 workers: int = 8, link: ClearingLink | None = None,
                 tls: ServerTls | None = None) -> RunningServer:
    """Start serving ``app`` on ``listen`` (TLS as ``tls`` says; None: plaintext, the
    choice of in-process tests and ``--insecure``); stop with ``stop(grace)``.

    Requests over ``max_message_bytes`` are refused RESOURCE_EXHAUSTED by gRPC itself.
    With a ``link``, the servicer reports the clearinghouse, wakes the link's sender
    after every call that may have queued a message for the city, and asks the city
    directory through it before enrolling anyone.
    """
    servicer = (NodeServicer(app) if link is None
                else NodeServicer(app, link.address, link.wake, link.clearinghouse_key,
                                  link.refresh_admissions, link.look_up,
                                  log_keys=lambda: link.log_keys, passbooks=link))
    guarded = Guarded(servicer, app)  # every call authenticated and checked first
    running = server.start_server(
        SERVICE_NAME, lambda s: node_pb2_grpc.add_NodeServiceServicer_to_server(
            guarded, s),  # type: ignore[arg-type]  # the servicer's rpcs, each guarded
        OBSERVER, listen, max_message_bytes=max_message_bytes, workers=workers,
        thread_name_prefix="timebank-rpc", tls=tls)
    if link is not None:
        _report_log_health(running, link)
        _report_link_health(running, link)
    return running


def _report_link_health(running: RunningServer, link: ClearingLink) -> None:
    """The ``timebank.v1.ClearinghouseLink`` health service is SERVING while the link to
    the clearinghouse is up, NOT_SERVING while it is down (the node's own "" and
    NodeService stay SERVING: its district keeps working, and claims wait in the outbox)."""
    def report(up: bool) -> None:
        running.health.set(LINK_HEALTH_SERVICE, health_pb2.HealthCheckResponse.SERVING if up
                           else health_pb2.HealthCheckResponse.NOT_SERVING)

    link.on_state.append(report)
    report(link.up)


def _report_log_health(running: RunningServer, link: ClearingLink) -> None:
    """The ``timebank.log`` health service says what the link's log watch found:
    NOT_SERVING while the node holds fork evidence or the finality alarm is on (the
    node's own service stays SERVING: its district keeps working)."""
    def report(ok: bool) -> None:
        running.health.set(HEALTH_SERVICE, health_pb2.HealthCheckResponse.SERVING if ok
                           else health_pb2.HealthCheckResponse.NOT_SERVING)

    report(link.app.query(log_watch.status, link.log_keys).ok)
    link.watch.on_status = report


class RecordingLoop(Periodic):
    """Records every order whose publicity period is over, every ``interval`` seconds
    (the first round at once).

    Runs in a daemon thread until ``stop()``. A failed round is logged (with its
    traceback) and counted, and the loop carries on; it never dies on an error.
    """

    thread_name = "timebank-recording"
    what = "recording due orders"
    round_at_start = True

    def __init__(self, app: NodeApp, interval: float = DEFAULT_RECORDING_INTERVAL, *,
                 batch: int = 1000, on_recorded: Callable[[], None] | None = None) -> None:
        super().__init__(interval)
        self._on_recorded = on_recorded  # recording may queue claim completions
        self._app = app
        self.batch = batch

    def run_once(self) -> int:
        """Record what is due now, in batches; return how many orders were recorded."""
        total = 0
        while not self.stopping:
            recorded = self._app.execute(orders.record_due_orders, self.batch)
            for view in recorded:
                o = view.record
                log.info("order recorded", order_id=o.id, volunteer_id=o.volunteer_id,
                         recorded_minutes=o.recorded_minutes, banked_minutes=o.banked_minutes,
                         excess_to_pool_minutes=o.excess_to_pool_minutes,
                         unbanked_minutes=o.unbanked_minutes, notices=list(view.notices))
            metrics.ORDERS_RECORDED.inc(len(recorded))
            total += len(recorded)
            if len(recorded) < self.batch:
                break
        return total

    def run_isolated(self) -> int:
        """Record due orders one transaction each, so one order that fails (a bug or a
        bad row) is logged and skipped instead of holding back every other order."""
        total = 0
        for order_id in self._app.query(orders.due_order_ids, self.batch):
            try:
                self._app.execute(orders.record_order, order_id)
            except Exception:  # isolate the failing order; the rest still get recorded
                metrics.RECORDING_FAILURES.inc()
                log.exception("order could not be recorded; will try again", order_id=order_id)
            else:
                metrics.ORDERS_RECORDED.inc()
                total += 1
        return total

    def round(self) -> None:
        """Record what is due; if a batch fails, record the orders one by one."""
        try:
            count = self.run_once()
        except Exception:  # the loop must survive any failure
            metrics.RECORDING_FAILURES.inc()
            log.exception("recording a batch of due orders failed; recording them one by one",
                          retry_in_seconds=self.interval)
            try:
                count = self.run_isolated()
            except Exception:
                log.exception("recording due orders failed; will try again",
                              retry_in_seconds=self.interval)
                return
        if count:
            log.info("recorded due orders", count=count)
            if self._on_recorded is not None:
                self._on_recorded()


# ---------------------------------------------------------------- `timebank node serve`

def open_link(app: NodeApp, config: NodeConfig) -> ClearingLink:
    """The node's connection to its city clearinghouse, from its configuration (mutual
    TLS with the node's certificate unless insecure)."""
    try:
        key = keyfiles.read_seed(config.signing_key_file)
    except keyfiles.KeyFileError as e:
        raise ConfigError(str(e)) from None
    if not config.city_public_key:
        log.warning("no city public key is configured ([city] public_key): "
                    "this node cannot run the city-signed policy and runs its local policy "
                    "file; once the city has a policy in force its claims are refused",
                    policy_file=str(config.policy_file))
    return ClearingLink(app, config.clearinghouse_address,
                        bytes.fromhex(config.clearinghouse_public_key), key,
                        channel_options=channel_options(), tls=config.client_tls(),
                        peers=config.peer_nodes,
                        watch_seconds=config.peer_check_seconds,
                        finality_seconds=config.finality_seconds,
                        settlement_seconds=config.settlement_seconds,
                        city_public_key=(bytes.fromhex(config.city_public_key)
                                         if config.city_public_key else None))


def _compared_with_the_log(app: NodeApp, config: NodeConfig) -> Divergence | None:
    """The start check: this database compared with what this node told the city's log
    (None: the log cannot be read now)."""
    from node.link import logscan
    from timebank.transparency import LogError

    try:
        return logscan.compare_with_log(app, config)
    except (logscan.LogUnreachable, LogError) as e:
        log.warning("未能读取城市日志，暂未与之核对本节点数据库 / the city's log could not be "
                    "read to compare this database with it; checked once it can be",
                    error=str(e))
        return None


def _not_serving(divergence: Divergence) -> ConfigError:
    """The refusal to serve a database older than what this node told the city's log (a
    backup restored from before its last checkpoint or claim): its next ledger entries
    would fork its own anchored chain."""
    log.error("database behind the city's log", **divergence.json())
    return ConfigError(
        f"{divergence.summary()} 拒绝服务 / Not serving: `timebank node check --config "
        "FILE` lists what is missing; `timebank node recover --config FILE` says what the "
        "log gives back; a newer backup gives back the rest (docs/operations.md).")


#: The longest a node that started without reading the city's log waits between tries
#: to make its start check (it also tries each time its link comes up).
LOG_CHECK_RETRY_SECONDS = 60.0


class _StartCheckLater:
    """The start check of a node that started while the city's log could not be read
    (its district keeps working meanwhile): made as soon as the link comes up. A
    database found behind the log stops the node as it would have refused to start,
    and ``refusal`` says why."""

    def __init__(self, app: NodeApp, config: NodeConfig, stop: threading.Event) -> None:
        self._app, self._config, self._stop = app, config, stop
        self._link_up = threading.Event()
        self.refusal: ConfigError | None = None

    def link_state(self, up: bool) -> None:
        if up:
            self._link_up.set()

    def wake(self) -> None:
        """Look at ``stop`` now (the node is stopping), not at the next try."""
        self._link_up.set()

    def run(self) -> None:
        while not self._stop.is_set():
            self._link_up.wait(LOG_CHECK_RETRY_SECONDS)
            self._link_up.clear()
            if self._stop.is_set():
                return
            try:
                divergence = _compared_with_the_log(self._app, self._config)
            except Exception:  # e.g. a key file made unreadable: the check is tried again
                log.exception("本节点数据库未能与城市日志核对，稍后重试 / comparing this database "
                              "with the city's log failed; it is tried again")
                continue
            if divergence is None:
                continue
            if divergence.ok:
                log.info("本节点数据库已与城市日志核对一致 / this database was compared with the "
                         "city's log: nothing missing")
                return
            self.refusal = _not_serving(divergence)
            self._stop.set()
            return


def serve_forever(config: NodeConfig, *, clock: Clock | None = None,
                  stop: threading.Event | None = None,
                  on_ready: Callable[[Serving], None] | None = None,
                  grace_seconds: float = DEFAULT_GRACE_SECONDS,
                  recording_interval: float = DEFAULT_RECORDING_INTERVAL) -> None:
    """Serve the node described by ``config`` until SIGTERM or SIGINT (or ``stop`` is set).

    Configures logging (unless something in this process already did), opens the node
    (refusing a stale schema or another node's database), starts the metrics endpoint if
    ``metrics_listen`` is set, the link to the clearinghouse if the node is federated,
    the gRPC server and the recording loop; on a signal reports NOT_SERVING, lets
    running calls finish within ``grace_seconds`` and closes the database.
    Raises ``ConfigError`` if the node cannot be opened and ``OSError`` if an address
    cannot be bound. A federated node first compares its database with the city's log
    and refuses one that is behind it (``ConfigError``); if the log cannot be read then,
    it serves, makes that check once its link comes up, and if the database is behind,
    stops and raises the same ``ConfigError``.
    """
    configure_logging(config.log_level, config.log_format,
                      bind={"service": "node", "node_id": config.node_id,
                            "district": config.district})
    tls = config.server_tls()  # refuses to serve without TLS unless insecure
    try:  # every node holds its key (it signs statements too): refuse an exposed one
        keyfiles.read_seed(config.signing_key_file)
    except keyfiles.KeyFileError as e:
        raise ConfigError(str(e)) from None
    app = open_app(config, clock)
    stop = stop or threading.Event()
    later: _StartCheckLater | None = None
    if config.federated:
        divergence = _compared_with_the_log(app, config)
        if divergence is None:
            later = _StartCheckLater(app, config, stop)
        elif not divergence.ok:
            app.db.dispose()
            raise _not_serving(divergence)
    # it was just reached: up before health first says SERVING (the probe keeps it after)
    metrics.RPCS.database_up.set(1)

    def start(parts: ExitStack) -> tuple[int, Mapping[str, object]]:
        link: ClearingLink | None = None
        if config.federated:
            link = open_link(app, config)
            if later is not None:
                link.on_state.append(later.link_state)
                checker = threading.Thread(target=later.run, name="timebank-start-check",
                                           daemon=True)
                checker.start()
                parts.callback(checker.join, grace_seconds)
                parts.callback(later.wake)
            link.start()
            parts.callback(link.stop, grace_seconds)
        running = start_server(app, config.listen, max_message_bytes=config.max_message_bytes,
                               workers=config.workers, link=link, tls=tls)
        parts.callback(running.stop, grace_seconds)
        probe = server.watch_database(running, app.db.url, metrics.RPCS.database_up)
        parts.callback(probe.stop, grace_seconds)
        loop = RecordingLoop(app, recording_interval,
                             on_recorded=None if link is None else link.wake)
        loop.start()
        parts.callback(loop.stop, grace_seconds)
        return running.port, {"node_id": config.node_id, "district": config.district,
                              "policy_digest": app.policy.digest}

    try:
        server.serve_forever("node", config.listen, config.metrics_listen, start,
                             tls=tls is not None, stop=stop, on_ready=on_ready,
                             collectors=(metrics.StatusCollector(app),))
    finally:
        app.db.dispose()
    if later is not None and later.refusal is not None:
        raise later.refusal
