"""Process settings for a long-running server (a node or the clearinghouse)."""

from __future__ import annotations

import gc

#: Allocations between young-generation collections. CPython's default (700) makes a
#: busy server stop for a collection every few requests; its objects are short-lived
#: and acyclic, so collections find little and only add latency to whoever waits.
GC_YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """Move what start-up allocated (modules, schemas, compiled statements) out of the
    collector's way, and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
