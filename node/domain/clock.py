"""The node's clock: the shared one (``runtime.clock``)."""

from runtime.clock import Clock, ManualClock, SystemClock

__all__ = ["Clock", "ManualClock", "SystemClock"]
