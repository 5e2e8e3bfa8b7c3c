"""The node's link to the city clearinghouse: one channel and the five workers that use
it, each a thread beside the gRPC server (ADR 0005, 0006, 0007, 0013).

The node opens every connection itself; it needs no inbound port. ``start()`` starts
the sender, the subscriber, the witness, the checkpointer and the rehomer (which asks
the city directory where a payer who moved keeps their hours now: ``directory``);
``stop()`` ends them and closes the channel. Each worker survives any failure: it logs,
waits and starts again (``supervise``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import grpc
from nacl.signing import SigningKey

from node.domain.directory import HomeLookup
from node.link.checkpointer import CHECKPOINT_SECONDS, Checkpointer
from node.link.connection import Connection
from node.link.directory import REHOME_SECONDS, Directory, Rehomer
from node.link.sender import Sender
from node.link.subscriber import BACKLOG_ITEMS, Subscriber
from node.link.supervise import supervised
from node.link.verified_log import VerifiedLog
from node.link.witness import WITNESS_SECONDS, Witness
from node.usecases import checkpoints
from node.usecases.app import NodeApp
from timebank.v1 import clearing_pb2_grpc


class ClearingLink:
    """The link of one node. ``start()``; ``stop()`` on shutdown (a stopped link does not
    start again: make a new one)."""

    def __init__(self, app: NodeApp, address: str, clearinghouse_key: bytes,
                 signing_key: SigningKey, *,
                 channel_options: list[tuple[str, int]] | None = None,
                 witness_seconds: float = WITNESS_SECONDS,
                 checkpoint_seconds: float = CHECKPOINT_SECONDS,
                 rehome_seconds: float = REHOME_SECONDS,
                 backlog_items: int = BACKLOG_ITEMS) -> None:
        self.address = address
        self._channel = grpc.insecure_channel(address, options=channel_options or [])
        connection = Connection(clearing_pb2_grpc.ClearinghouseServiceStub(self._channel),
                                address, app.node.node_id, signing_key, clearinghouse_key)
        self._stop = threading.Event()
        self._wake = threading.Event()
        verified = VerifiedLog(app, clearinghouse_key)
        self.sender = Sender(app, connection, verified, self._stop, self._wake)
        self.subscriber = Subscriber(app, connection, self._stop, self._wake,
                                     backlog_items=backlog_items)
        self.witness = Witness(app, connection, verified, self._stop,
                               interval=witness_seconds)
        self.checkpointer = Checkpointer(app, self._stop, self._wake,
                                         interval=checkpoint_seconds)
        self.directory = Directory(connection)
        self.rehomer = Rehomer(app, self.directory, self._stop, self._wake,
                               interval=rehome_seconds)
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        if self._threads or self._stop.is_set():
            raise RuntimeError("a clearing link starts once")
        workers: dict[str, Callable[[], None]] = {
            "sender": self.sender.run, "subscriber": self.subscriber.run,
            "witness": self.witness.run, "checkpointer": self.checkpointer.run,
            "rehomer": self.rehomer.run}
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

    def look_up(self, person_ref: str) -> HomeLookup:
        """Where the city directory says a PersonRef's hours are kept (``Directory``)."""
        return self.directory.look_up(person_ref)

    def rehome_once(self) -> int:
        """Ask the directory about every order whose payer moved (``Rehomer``)."""
        return self.rehomer.rehome_once()

    def checkpoint_now(self) -> checkpoints.Requested:
        """Queue a checkpoint of the ledger (if it grew) and send it."""
        return self.checkpointer.checkpoint_now()
