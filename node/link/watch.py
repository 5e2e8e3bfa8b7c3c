"""The log watch (issue 14): this district compares the log its clearinghouse shows it
with the tree heads other districts hold, and watches that what it verified becomes
final.

A clearinghouse that holds its key can show two groups of districts two histories;
each group's view passes every check on its own, and the witness of each district
cosigns its own group's heads. Nothing but comparing heads across districts shows it,
and nothing but a head that never becomes final warns a district in the smaller group.
So every ``interval`` seconds the watch:

1. asks each peer district's node (``[peers] nodes``) for the heads it holds
   (``GetLogHeads``: verified, cosigned, final) and asks this node's clearinghouse
   whether each is of its log (``logcheck.locate``), and does the same for this node's
   own verified head;
2. asks the clearinghouse for its latest head cosigned by a quorum, counts the valid
   cosignatures under the districts' admitted keys, and keeps it as this node's final
   head if it is of the same log;
3. raises the finality alarm when a head this node verified has not been covered by a
   final head within ``finality_seconds``.

A fork found is kept with its evidence (``node.usecases.log_watch``), logged as an
error, counted (``timebank_node_log_forks``) and reported by ``GetLogHeads``, the
``timebank.log`` health service and ``timebank node check``. Everything is bounded:
at most ``MAX_PEERS`` peers (the configuration's limit), three heads each, one call
timeout per call, at most ``MAX_FORKS`` evidence documents kept, ``FINALITY_PENDING``
heads remembered while they wait. A peer that is away or answers nonsense is logged
and skipped; it never stops the round.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
import structlog

from node import metrics
from node.link.city import CityView
from node.link.connection import CALL_TIMEOUT_SECONDS, Connection
from node.link.logcheck import locate
from node.usecases import log_watch, tree_heads
from node.usecases.app import NodeApp
from runtime.tls import ClientTls
from runtime.tls import channel as tls_channel
from timebank import checkpoint as notes
from timebank import forks, transparency
from timebank import roster as rosters
from timebank.v1 import clearing_pb2 as pb
from timebank.v1 import node_pb2, node_pb2_grpc

log = structlog.get_logger("node.log_watch")

#: How often the watch compares heads, and the default bound on finality.
WATCH_SECONDS = 15.0
FINALITY_SECONDS = 300.0
#: How long a peer node may take to answer.
PEER_TIMEOUT_SECONDS = 5.0
#: A peer that was away is tried again within seconds, not gRPC's two minutes.
PEER_CHANNEL_OPTIONS = [("grpc.max_reconnect_backoff_ms", 5_000)]
#: Heads remembered while they wait to become final (the oldest is always kept).
FINALITY_PENDING = 64
#: The gRPC health service that reports the log watch: NOT_SERVING while a fork is
#: held or the finality alarm is on (the node itself keeps serving its district).
HEALTH_SERVICE = "timebank.log"


class Finality:
    """The heads this node verified that no final head covers yet, oldest first, each
    with when it was first seen (monotonic seconds, and UNIX seconds for people)."""

    def __init__(self, bound: float, *, keep: int = FINALITY_PENDING) -> None:
        if bound <= 0 or keep < 2:
            raise ValueError("finality needs a positive bound and room for two heads")
        self.bound = bound
        self._keep = keep
        self._pending: list[tuple[int, float, int]] = []

    def observe(self, verified: int, final: int, now: float, wall: int) -> float:
        """Note the verified and final sizes seen at ``now``; the seconds the oldest
        head not covered has waited (0 if every head is final)."""
        self._pending = [p for p in self._pending if p[0] > final]
        if verified > final and (not self._pending or verified > self._pending[-1][0]):
            self._pending.append((verified, now, wall))
            if len(self._pending) > self._keep:
                del self._pending[1]  # the oldest is the one that counts
        return now - self._pending[0][1] if self._pending else 0.0

    def alarm(self, final: int, now: float) -> log_watch.FinalityAlarm | None:
        """The alarm, if the oldest head not covered has waited beyond the bound."""
        if not self._pending or now - self._pending[0][1] <= self.bound:
            return None
        size, _, wall = self._pending[0]
        return log_watch.FinalityAlarm(size, final, wall, round(self.bound))


@dataclass(slots=True)
class Round:
    """What one round found (for tests and logs)."""

    checked: int = 0
    forks: list[forks.Evidence] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    bad_heads: list[str] = field(default_factory=list)
    final_size: int = 0
    lag_seconds: float = 0.0
    finality: log_watch.FinalityAlarm | None = None


class LogWatch:
    """Compares heads every ``interval`` seconds until ``stop``. ``on_status(ok)`` is
    called after every round (the server sets the health service with it)."""

    def __init__(self, app: NodeApp, connection: Connection, stop: threading.Event,
                 city: CityView, *,
                 peers: Sequence[str] = (), interval: float = WATCH_SECONDS,
                 finality_seconds: float = FINALITY_SECONDS,
                 channel_options: list[tuple[str, int]] | None = None,
                 tls: ClientTls | None = None) -> None:
        if interval <= 0:
            raise ValueError("the log watch's interval must be positive")
        self._app = app
        self._conn = connection
        self._city = city
        self._key = connection.clearinghouse_key
        self._stop = stop
        self.interval = interval
        self.finality = Finality(finality_seconds)
        options = [*(channel_options or []), *PEER_CHANNEL_OPTIONS]
        self._peers = {address: tls_channel(address, tls, options=options)
                       for address in dict.fromkeys(peers)}
        self.on_status: Callable[[bool], None] | None = None
        self._round = threading.Lock()  # one round at a time (its thread, or a test's call)

    @property
    def peers(self) -> tuple[str, ...]:
        return tuple(self._peers)

    def run(self) -> None:
        self.check_once()
        while not self._stop.wait(self.interval):
            self.check_once()

    def close(self) -> None:
        for channel in self._peers.values():
            channel.close()

    # ------------------------------------------------------------ one round

    def check_once(self) -> Round:
        """Compare every head once and update the finality alarm."""
        with self._round:
            return self._check_round()

    def _check_round(self) -> Round:
        found = Round()
        held = self._app.query(log_watch.status, self._conn.log_keys)
        if held.verified is not None:
            self._check(held.verified.note, f"node {self._app.node.node_id} (this node, "
                        "verified)", found)
        final = self._final(found)
        for address, channel in self._peers.items():
            if self._stop.is_set():
                break
            self._check_peer(address, channel, found)
        verified = self._app.query(tree_heads.verified, self._conn.log_keys)
        found.final_size = max(final, 0 if held.final is None else held.final.size)
        now, wall = time.monotonic(), int(self._app.clock.now().timestamp())
        found.lag_seconds = self.finality.observe(0 if verified is None else verified.size,
                                                  found.final_size, now, wall)
        found.finality = self.finality.alarm(found.final_size, now)
        self._report(found)
        return found

    def _check(self, note: str, seen: str, found: Round) -> None:
        """Whether ``note`` is of the log the clearinghouse serves; a fork is kept."""
        try:
            located = locate(self._conn.stub, self._conn.log_keys, note, seen=seen,
                             log_seen=f"the clearinghouse at {self._conn.address} (latest)",
                             timeout=CALL_TIMEOUT_SECONDS)
        except transparency.LogError as e:
            metrics.PEER_HEAD_CHECKS.labels("bad_head").inc()
            found.bad_heads.append(seen)
            log.warning("a tree head is not the clearinghouse's; not compared", seen=seen,
                        problem=str(e))
            return
        found.checked += 1
        if located.evidence is None:
            metrics.PEER_HEAD_CHECKS.labels("consistent").inc()
            return
        metrics.PEER_HEAD_CHECKS.labels("fork").inc()
        found.forks.append(located.evidence)
        self._keep(located.evidence)

    def _keep(self, evidence: forks.Evidence) -> None:
        at = int(self._app.clock.now().timestamp())
        try:
            new = self._app.execute(log_watch.record_fork, evidence, at)
        except forks.EvidenceError as e:  # larger than an evidence document may be
            log.error("the clearinghouse's log is forked; the evidence is too large to keep",
                      summary=evidence.summary(), problem=str(e))
            return
        if new:
            log.error("the clearinghouse's log is forked: two tree heads it signed cannot "
                      "both be true (a split view); kept the evidence",
                      evidence_id=evidence.id, kind=evidence.kind.value,
                      strength=evidence.strength.value, summary=evidence.summary(),
                      seen=list(evidence.seen),
                      evidence=evidence.to_json(found_at=at))

    def _check_peer(self, address: str, channel: grpc.Channel, found: Round) -> None:
        stub = node_pb2_grpc.NodeServiceStub(channel)
        try:
            heads: node_pb2.GetLogHeadsResponse = stub.GetLogHeads(node_pb2.GetLogHeadsRequest(),
                                                         timeout=PEER_TIMEOUT_SECONDS)
        except grpc.RpcError as e:
            metrics.PEER_HEAD_CHECKS.labels("unreachable").inc()
            found.unreachable.append(address)
            log.warning("a peer district's node did not answer; its heads were not compared",
                        peer=address, code=e.code().name if isinstance(e, grpc.Call) else "")
            return
        if heads.clearinghouse_key and heads.clearinghouse_key != self._key.hex():
            metrics.PEER_HEAD_CHECKS.labels("bad_head").inc()
            found.bad_heads.append(address)
            log.warning("a peer district's node trusts another clearinghouse key; its heads "
                        "were not compared", peer=address, peer_node_id=heads.node_id[:16],
                        its_key=heads.clearinghouse_key[:64])
            return
        who = f"node {heads.node_id[:16]} at {address}"
        seen: set[str] = set()
        for which, note in (("verified", heads.verified), ("cosigned", heads.cosigned),
                            ("final", heads.final)):
            if note and note not in seen:
                seen.add(note)
                self._check(note, f"{who} ({which})", found)

    def _final(self, found: Round) -> int:
        """The size of the clearinghouse's latest head cosigned by a quorum, once this
        node has counted the cosignatures and found it of the same log (and kept it);
        0 if there is none."""
        try:
            head = self._conn.stub.GetTreeHead(pb.GetTreeHeadRequest(cosigned=True),
                                               timeout=CALL_TIMEOUT_SECONDS).head
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return 0
            raise
        try:
            checked = transparency.check_head(head.note, self._conn.log_keys)
        except transparency.LogError as e:
            log.error("the clearinghouse's cosigned head is not signed by it", problem=str(e))
            return 0
        try:
            roster_of, cosigners = self._final_under_roster(checked)
        except (rosters.RosterError, notes.CheckpointError) as e:
            log.warning("the clearinghouse's cosigned head is not final under a roster the "
                        "city signed", size=checked.size, problem=str(e))
            return 0
        if len(cosigners) < roster_of.quorum:
            log.warning("the clearinghouse's cosigned head is not cosigned by a quorum of "
                        "districts", size=checked.size, districts=len(roster_of.members),
                        valid_cosigners=cosigners)
            return 0
        before = len(found.forks)
        self._check(head.note, f"the clearinghouse at {self._conn.address} (final)", found)
        if len(found.forks) > before:
            return 0
        self._app.execute(tree_heads.store_final, checked)
        return checked.size

    def _final_under_roster(self, head: transparency.Head,
                            ) -> tuple[rosters.Roster, list[str]]:
        """The city-signed roster the head names and its districts whose cosignature on
        it verifies under the keys that roster lists (the rosters the city view verified
        under the city key from this node's configuration)."""
        named = None if head.roster is None else head.roster[1]
        return rosters.cosigned_by(head, self._city.rosters(named))

    def _report(self, found: Round) -> None:
        """Store and say what changed: the finality alarm, the metrics, the health."""
        alarm = found.finality
        if self._app.execute(log_watch.set_finality, alarm):
            if alarm is not None:
                log.error("a tree head this node verified has not become final in time",
                          size=alarm.size, final_size=alarm.final_size,
                          bound_seconds=alarm.bound, detail=alarm.detail())
            else:
                log.info("every tree head this node verified is final again",
                         final_size=found.final_size)
        held = self._app.query(log_watch.status, self._conn.log_keys)
        metrics.LOG_FORKS.set(len(held.forks))
        metrics.LOG_FINALITY_LAG.set(found.lag_seconds)
        metrics.LOG_FINALITY_ALARM.set(0 if alarm is None else 1)
        if self.on_status is not None:
            self.on_status(held.ok)


__all__ = ["FINALITY_PENDING", "FINALITY_SECONDS", "HEALTH_SERVICE", "PEER_TIMEOUT_SECONDS",
           "WATCH_SECONDS", "Finality", "LogWatch", "Round"]
