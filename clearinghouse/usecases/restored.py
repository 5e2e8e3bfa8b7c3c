"""What a clearinghouse can tell about its own log at start (issue 17).

A clearinghouse restored from an older backup cannot know it: on start it can ask
nobody, and its database is consistent in itself. The districts can: each holds the
largest head it verified, and a head this log no longer reaches raises every node's
fork alarm (``node.link.logcheck``). What the clearinghouse can do is say, at start,
how large its log is and when its latest head was signed, and warn when that head is
older than a running city leaves it (heads are signed on every write and every few
seconds of cosigning), so that the bureau's operator who restored a backup reads the
recovery procedure (docs/operations.md) before the districts' alarms ring.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from clearinghouse.usecases import log
from clearinghouse.usecases.app import Tx
from timebank import transparency

#: A latest head older than this at start is worth a warning.
STALE_HEAD = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class LogAtStart:
    size: int
    latest_at: datetime | None  # when the latest head was signed (None: no head yet)

    def stale(self, now: datetime) -> bool:
        return self.latest_at is not None and now - self.latest_at > STALE_HEAD


def at_start(tx: Tx) -> LogAtStart:
    latest = log.log_of(tx).latest_tree_head()
    if latest is None:
        return LogAtStart(0, None)
    size, _, note = latest
    signed = transparency.read_head(note).at
    return LogAtStart(size, None if signed is None else datetime.fromtimestamp(signed, UTC))
