"""Work a serving process does on a timer, beside its calls: the node's recording loop,
the clearinghouse's expiry sweep.

A ``Periodic`` runs its ``round`` every ``interval`` seconds in one daemon thread until
``stop()``. A round that fails is logged with its traceback and the next one runs on
time: the work is retried, never abandoned, and the thread never dies of an error.
"""

from __future__ import annotations

import threading

import structlog

log = structlog.get_logger("runtime.periodic")


class Periodic:
    """A round of work every ``interval`` seconds, in a daemon thread named
    ``thread_name``. Subclasses say what a round does, and what it is (``what``, for the
    log line of a failed round)."""

    thread_name = "timebank-periodic"
    what = "a periodic round"
    #: Whether the first round runs as soon as the thread starts, or after one interval.
    round_at_start = False

    def __init__(self, interval: float) -> None:
        if interval <= 0:
            raise ValueError(f"the interval of {self.what} must be positive, not {interval}")
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def round(self) -> None:
        """One round of the work."""
        raise NotImplementedError

    @property
    def stopping(self) -> bool:
        """Whether ``stop()`` was called: a long round should end early."""
        return self._stop.is_set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.what} is already running")
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop after the round under way; wait for it at most ``timeout`` seconds."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _guarded_round(self) -> None:
        try:
            self.round()
        except Exception:  # the thread must survive any failure
            log.exception(f"{self.what} failed; will try again",
                          retry_in_seconds=self.interval)

    def _run(self) -> None:
        if self.round_at_start:
            self._guarded_round()
        while not self._stop.wait(self.interval):
            self._guarded_round()


__all__ = ["Periodic"]
