"""The clearinghouse's clock: the shared one (``timebank.clock``); its time orders every
transition (ADR 0004)."""

from timebank.clock import Clock, ManualClock, SystemClock

__all__ = ["Clock", "ManualClock", "SystemClock"]
