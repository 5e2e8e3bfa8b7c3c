"""The checkpointer (ADR 0007): anchors this node's ledger in the city's log.

Every ``interval`` seconds (and on demand, ``checkpoint_now``) it queues a
checkpoint of the ledger if the ledger grew since the last, or if the key the node runs
with has not anchored it (after a rotation), and wakes the sender, which
submits it like any outbox message and records the anchor from its proven receipt. Only
the node's own database is touched here, so it keeps its schedule while the
clearinghouse is away.
"""

from __future__ import annotations

import threading

from node.usecases import checkpoints
from node.usecases.app import NodeApp

#: How often the node anchors its ledger.
CHECKPOINT_SECONDS = 600.0


class Checkpointer:
    def __init__(self, app: NodeApp, key_id: str, stop: threading.Event,
                 wake: threading.Event, *, interval: float = CHECKPOINT_SECONDS) -> None:
        if interval <= 0:
            raise ValueError("the checkpoint interval must be positive")
        self._app = app
        self._key_id = key_id  # the key the sender signs with
        self._stop = stop
        self._wake = wake
        self.interval = interval

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            self.checkpoint_now()

    def checkpoint_now(self) -> checkpoints.Requested:
        """Queue a checkpoint of the ledger (if it grew, or this key has not anchored
        it) and have the sender send it."""
        requested = self._app.execute(checkpoints.request, self._key_id)
        if requested.queued:
            self._wake.set()
        return requested
