"""Keeping a worker alive: each runs its loop until the link stops, and any failure is
logged, waited out (doubling from ``RECONNECT_FIRST`` to ``RECONNECT_MAX`` seconds) and
the loop started again. A worker that reaches the clearinghouse resets the wait."""

from __future__ import annotations

import threading
from collections.abc import Callable

import grpc
import structlog

log = structlog.get_logger("node.clearing")

RECONNECT_FIRST = 0.2
RECONNECT_MAX = 10.0


class ClearinghouseAway(Exception):
    """The clearinghouse could not be reached (or did not answer in time)."""


def supervised(loop: Callable[[], None], stop: threading.Event,
               address: str) -> Callable[[], None]:
    """A thread target that runs ``loop`` until ``stop`` is set, whatever it raises."""
    def run() -> None:
        delay = RECONNECT_FIRST
        while not stop.is_set():
            try:
                loop()
                delay = RECONNECT_FIRST
            except Exception as e:  # the link must outlive any failure
                if stop.is_set():
                    return
                if isinstance(e, grpc.RpcError | ClearinghouseAway):
                    code = e.code().name if isinstance(e, grpc.RpcError) else str(e)
                    log.warning("clearinghouse unreachable; will retry", address=address,
                                code=code, retry_in_seconds=round(delay, 1))
                else:
                    log.exception("clearing link failed; will retry",
                                  retry_in_seconds=round(delay, 1))
                stop.wait(delay)
                delay = min(RECONNECT_MAX, delay * 2)
    return run
