"""The node's clock: the shared one (``timebank.clock``)."""

from timebank.clock import Clock, ManualClock, SystemClock

__all__ = ["Clock", "ManualClock", "SystemClock"]
