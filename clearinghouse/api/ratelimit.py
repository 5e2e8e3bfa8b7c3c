"""Per-node rate limit on Submit: one token bucket per signing node, in this process.

Each node's bucket holds up to ``burst`` tokens and refills at ``per_second`` tokens a
second; every Submit by that node takes one. An empty bucket means RESOURCE_EXHAUSTED
``BUSY`` ("district 320115 sent more than 2000 messages per second; slow down"), and
the request changes nothing. The servicer charges a node only for new work in
envelopes whose signature checked out, never for a replay of an envelope that already
has a receipt (anyone can replay a logged one, in any encoding), so nobody can use up a
district's allowance by forging its node id or replaying its messages.

Arithmetic is in whole numbers: a bucket counts nano-tokens (1 token = 10⁹) against a
monotonic nanosecond clock, so refills are exact. Thread-safe (one lock; the critical
section is a few integer operations). Memory is bounded: at most ``max_nodes`` buckets,
the least recently used dropped first; a dropped bucket comes back full, which is what
an idle node's bucket would be anyway. The limit is per process: replicas sharing one
database each allow the full rate.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from clearinghouse.domain.claims import RejectReason
from runtime.errors import ResourceExhausted

NANO = 1_000_000_000
DEFAULT_MAX_NODES = 100_000


class RateLimiter:
    """Token buckets keyed by node id. ``take(node_id)`` or ResourceExhausted BUSY."""

    def __init__(self, per_second: int, burst: int, *, max_nodes: int = DEFAULT_MAX_NODES,
                 clock_ns: Callable[[], int] = time.monotonic_ns) -> None:
        for name, value in (("per_second", per_second), ("burst", burst),
                            ("max_nodes", max_nodes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive whole number, not {value!r}")
        self.per_second = per_second
        self.burst = burst
        self._max_nodes = max_nodes
        self._clock_ns = clock_ns
        self._capacity = burst * NANO
        self._lock = threading.Lock()
        #: node id → (nano-tokens left, clock reading when last refilled)
        self._buckets: OrderedDict[str, tuple[int, int]] = OrderedDict()

    def take(self, node_id: str) -> None:
        """Take one token from ``node_id``'s bucket, or refuse with BUSY (nothing taken)."""
        with self._lock:
            now = self._clock_ns()
            tokens, last = self._buckets.pop(node_id, (self._capacity, now))
            elapsed = max(0, now - last)  # a monotonic clock; guard anyway
            tokens = min(self._capacity, tokens + elapsed * self.per_second)
            allowed = tokens >= NANO
            if allowed:
                tokens -= NANO
            self._buckets[node_id] = (tokens, now)
            while len(self._buckets) > self._max_nodes:
                self._buckets.popitem(last=False)
            assert 0 <= tokens <= self._capacity
            assert len(self._buckets) <= self._max_nodes
        if not allowed:
            raise ResourceExhausted(
                f"district {node_id} sent more than {self.per_second} messages per second "
                f"(bursts of {self.burst}); slow down and retry with backoff",
                RejectReason.BUSY.value)

    def __len__(self) -> int:
        with self._lock:
            return len(self._buckets)


__all__ = ["RateLimiter"]
