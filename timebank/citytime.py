"""The city's time zone. Everything is stored, signed and sent in UTC; a person reads
times, and a day (for "today's" limits and a person's age) begins, in the city's time.

The city is Nanjing, so Asia/Shanghai (UTC+8, no daylight saving). Nodes, the command
line and the offline verifier must all draw the day line at the same place.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

CITY_TZ_NAME = "Asia/Shanghai"
CITY_TZ = ZoneInfo(CITY_TZ_NAME)


def city_time(at: datetime) -> str:
    """A time as operators read it: the city's local time, to the second, zone named."""
    return at.astimezone(CITY_TZ).strftime(f"%Y-%m-%d %H:%M:%S ({CITY_TZ_NAME})")


__all__ = ["CITY_TZ", "CITY_TZ_NAME", "city_time"]
