"""The node's link to the city clearinghouse: one channel and the workers that use it,
each a thread beside the gRPC server (ADR 0005, 0006, 0007, 0013, 0014).

The node opens every connection itself; it needs no inbound port. Each is mutual TLS
with the node's certificate (``tls``; None: plaintext, ``--insecure`` or in-process
tests); the clearinghouse lets it act only for the district its certificate names. The
client certificate is read at start: a renewed one is used after the node restarts.

``start()`` starts the sender, the subscriber, the witness, the checkpointer, the
refresher of the city's acts (``city.CityView``, which the subscriber checks relayed
envelopes against), the log watch (which also calls the peer districts' nodes it is
given), the rehomer (which asks the city directory where a payer who moved keeps their
hours now: ``directory``), the settler (which checks, answers and posts settlement
statements: ``settlement``) and, when the node knows the city public key, the policy
fetcher; ``stop()`` ends them and closes the channels. Each worker survives any
failure: it logs, waits and starts again (``supervise``).

The link is **up** while its channel is connected (gRPC's connectivity state READY;
the subscriber keeps a stream open, so a connected channel does not go idle) and down
otherwise. Each change is logged, sets ``timebank_node_link_up`` and calls each of
``on_state`` (the server reports the ``timebank.v1.ClearinghouseLink`` health service
with one, and a node that started without reaching the city's log checks its database
against it with another).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import structlog
from nacl.signing import SigningKey

from node import metrics
from node.domain.directory import HomeLookup
from node.link.checkpointer import CHECKPOINT_SECONDS, Checkpointer
from node.link.city import ADMISSIONS_SECONDS, CityView
from node.link.connection import Connection, LogKeyRing
from node.link.directory import REHOME_SECONDS, Directory, Rehomer
from node.link.policies import POLICY_SECONDS, PolicyFetcher
from node.link.sender import Sender
from node.link.settlement import SETTLEMENT_SECONDS, Settler
from node.link.settlement import Round as SettlementRound
from node.link.statement import RPC_SECONDS, Fetched, fetch_from
from node.link.subscriber import BACKLOG_ITEMS, Subscriber
from node.link.supervise import supervised
from node.link.verified_log import VerifiedLog
from node.link.watch import FINALITY_SECONDS, WATCH_SECONDS, LogWatch, Round
from node.link.witness import WITNESS_SECONDS, Witness
from node.usecases import checkpoints
from node.usecases.app import NodeApp
from runtime.tls import ClientTls, channel
from timebank import keys, passbook
from timebank.transparency import LogKeys
from timebank.v1 import clearing_pb2_grpc

log = structlog.get_logger("node.clearing")


class ClearingLink:
    """The link of one node. ``start()``; ``stop()`` on shutdown (a stopped link does not
    start again: make a new one)."""

    def __init__(self, app: NodeApp, address: str, clearinghouse_key: bytes,
                 signing_key: SigningKey, *,
                 channel_options: list[tuple[str, int]] | None = None,
                 tls: ClientTls | None = None,
                 witness_seconds: float = WITNESS_SECONDS,
                 checkpoint_seconds: float = CHECKPOINT_SECONDS,
                 admissions_seconds: float = ADMISSIONS_SECONDS,
                 backlog_items: int = BACKLOG_ITEMS,
                 peers: Sequence[str] = (), watch_seconds: float = WATCH_SECONDS,
                 finality_seconds: float = FINALITY_SECONDS,
                 city_public_key: bytes | None = None,
                 policy_seconds: float = POLICY_SECONDS,
                 rehome_seconds: float = REHOME_SECONDS,
                 settlement_seconds: float = SETTLEMENT_SECONDS) -> None:
        self.app = app
        self.address = address
        self.clearinghouse_key = clearinghouse_key
        self._channel = channel(address, tls, options=channel_options or [])
        ring = self._ring = LogKeyRing(clearinghouse_key)
        connection = Connection(clearing_pb2_grpc.ClearinghouseServiceStub(self._channel),
                                address, app.node.node_id, signing_key, clearinghouse_key,
                                ring)
        self._connection = connection
        self._stop = threading.Event()
        self._wake = threading.Event()
        verified = VerifiedLog(app, clearinghouse_key, ring)
        self.city = CityView(app, connection, self._stop, interval=admissions_seconds)
        self.sender = Sender(app, connection, verified, self._stop, self._wake)
        self.subscriber = Subscriber(app, connection, self._stop, self._wake,
                                     backlog_items=backlog_items, city=self.city)
        self.witness = Witness(app, connection, verified, self._stop, self.city,
                               interval=witness_seconds)
        self.checkpointer = Checkpointer(app, keys.key_id(keys.public_key(signing_key)),
                                         self._stop, self._wake, interval=checkpoint_seconds)
        self.watch = LogWatch(app, connection, self._stop, self.city, peers=peers,
                              interval=watch_seconds,
                              finality_seconds=finality_seconds,
                              channel_options=channel_options, tls=tls)
        #: None when the node is not configured with the city public key: it cannot
        #: tell a city-signed policy from another, so it runs its local file.
        self.policies = (None if city_public_key is None else PolicyFetcher(
            app, self.city, city_public_key, self._stop, interval=policy_seconds))
        self.directory = Directory(connection)
        self.rehomer = Rehomer(app, self.directory, self._stop, self._wake,
                               interval=rehome_seconds)
        self.settler = Settler(app, connection, self._stop, self.city,
                               interval=settlement_seconds)
        self._threads: list[threading.Thread] = []
        self._up = False
        #: Each called with True or False each time the link goes up or down (on the
        #: channel's thread: quick, and never blocking).
        self.on_state: list[Callable[[bool], None]] = []

    @property
    def up(self) -> bool:
        """Whether the channel to the clearinghouse is connected now."""
        return self._up

    def _connectivity(self, state: grpc.ChannelConnectivity) -> None:
        up = state is grpc.ChannelConnectivity.READY
        if up == self._up:
            return
        self._up = up
        metrics.LINK_UP.set(1 if up else 0)
        if up:
            log.info("已连接市清算中心 / link to the clearinghouse up", address=self.address)
        else:
            log.warning("与市清算中心的连接已断开 / link to the clearinghouse down",
                        address=self.address, state=state.name)
        for listener in self.on_state:
            listener(up)

    @property
    def log_keys(self) -> LogKeys:
        """The clearinghouse keys this node trusts now: the configured one, and each the
        city's signed rotations named (ADR 0018)."""
        return self._ring.current

    def start(self) -> None:
        if self._threads or self._stop.is_set():
            raise RuntimeError("a clearing link starts once")
        workers: dict[str, Callable[[], None]] = {
            "sender": self.sender.run, "subscriber": self.subscriber.run,
            "witness": self.witness.run, "checkpointer": self.checkpointer.run,
            "admissions": self.city.run, "log-watch": self.watch.run,
            "rehomer": self.rehomer.run, "settlement": self.settler.run}
        if self.policies is not None:
            workers["policies"] = self.policies.run
        metrics.LINK_UP.set(0)
        self._channel.subscribe(self._connectivity, try_to_connect=True)
        for name, loop in workers.items():
            thread = threading.Thread(target=supervised(loop, self._stop, self.address),
                                      name=f"timebank-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self.subscriber.cancel()
        for thread in self._threads:
            thread.join(timeout)
        self.watch.close()
        self._channel.unsubscribe(self._connectivity)
        self._channel.close()

    def wake(self) -> None:
        """Something was written to the outbox: send it now rather than at the next poll."""
        self._wake.set()

    def send_pending(self) -> int:
        """Send every message due now, once each (for tests and one-shot tools)."""
        return self.sender.send_pending()

    def witness_once(self) -> int:
        """Cosign the latest tree head if it extends the last verified (``Witness``)."""
        return self.witness.witness_once()

    def watch_once(self) -> Round:
        """Compare the heads once (``LogWatch``)."""
        return self.watch.check_once()

    def fetch_policies(self) -> int:
        """Fetch the city-signed policies now; return how many were new (0 without the
        city key)."""
        return 0 if self.policies is None else self.policies.fetch_once()

    def look_up(self, person_ref: str) -> HomeLookup:
        """Where the city directory says a PersonRef's hours are kept (``Directory``)."""
        return self.directory.look_up(person_ref)

    def rehome_once(self) -> int:
        """Ask the directory about every order whose payer moved (``Rehomer``)."""
        return self.rehomer.rehome_once()

    def settle_once(self) -> SettlementRound:
        """Check, answer and post the next settlement statement as far as it can go now
        (``Settler``)."""
        return self.settler.settle_once()

    def checkpoint_now(self) -> checkpoints.Requested:
        """Queue a checkpoint of the ledger (if it grew, or this key has not anchored it)
        and send it."""
        return self.checkpointer.checkpoint_now()

    def passbook_proofs(self, index: int, seconds: float = RPC_SECONDS) -> Fetched:
        """What a passbook of the anchor at log leaf ``index`` needs from the
        clearinghouse, asked over this link's channel within ``seconds``
        (``node.link.statement``)."""
        c = self._connection
        return fetch_from(c.stub, self.address, c.log_keys, index, seconds)

    def sign_statement(self, statement: dict[str, Any]) -> dict[str, Any]:
        """The passbook file of ``statement``, signed with the key this node signs its
        checkpoints with (held in memory since the link started)."""
        return passbook.sign_statement(statement, self._connection.node_id,
                                       self._connection.key)

    def refresh_admissions(self) -> int:
        """Ask the clearinghouse for the city's acts now; store those the city signed
        (``CityView.refresh``). Returns how many were new."""
        return self.city.refresh()
