"""Minutes: the one unit of time in the whole system.

Hours are stored and moved as integer minutes, never floats. They are shown as
hours with two decimals (20 minutes is "0.33 h") only at the edges.
"""

from __future__ import annotations

#: Largest amount any single value may carry: far above any real balance, far below int64.
MAX_MINUTES = 10**12
MINUTES_PER_HOUR = 60
MINUTES_PER_DAY = 24 * MINUTES_PER_HOUR
#: The largest stored-hours cap a city's policy may set (``cap_hours`` up to 100,000). No
#: person's balance is ever larger, so no move is either: a move hands over a whole
#: balance, and both the node and the clearinghouse bound it by this (ADR 0012).
MAX_CAP_MINUTES = 100_000 * MINUTES_PER_HOUR


def format_hours(minutes: int) -> str:
    """Render minutes as hours with two decimals, rounding half away from zero."""
    sign = "-" if minutes < 0 else ""
    hundredths = (abs(minutes) * 100 * 2 + MINUTES_PER_HOUR) // (2 * MINUTES_PER_HOUR)
    return f"{sign}{hundredths // 100}.{hundredths % 100:02d} h"


def format_hours_and_minutes(minutes: int) -> str:
    """Hours with two decimals and the exact minutes: '1.25 h (75 min)'."""
    return f"{format_hours(minutes)} ({minutes} min)"


def hours(h: int) -> int:
    """Whole hours as minutes (for settings written in hours)."""
    return h * MINUTES_PER_HOUR
