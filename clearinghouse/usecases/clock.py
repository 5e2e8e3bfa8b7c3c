"""The clearinghouse's clock: the shared one (``runtime.clock``); its time orders every
transition (ADR 0004)."""

from runtime.clock import Clock, ManualClock, SystemClock

__all__ = ["Clock", "ManualClock", "SystemClock"]
