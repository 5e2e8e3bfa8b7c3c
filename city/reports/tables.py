"""What a settlement report shows, as plain values: the renderers (csv_files, xlsx, pdf,
charts) turn one :class:`ReportData` into files and know nothing of databases, gRPC or
the services. The commands gather it (``city.reports.gather``); tests build it from a
real ``timebank.settlement`` statement.

Every figure a report prints is here or computed from here by a pure function in this
module, so the CSV, the workbook, the PDF and the charts cannot disagree. Inputs are
bounded: a report is a document a person files, not a data dump.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from timebank.citytime import CITY_TZ
from timebank.ids import is_node_id
from timebank.settlement import RESERVE, RESERVE_NAME, Statement

#: The most activity rows and history points a report carries (each a line of a table).
MAX_ACTIVITY_ROWS = 100_000
MAX_HISTORY_POINTS = 40 * 240  # 40 districts, 20 years of monthly periods
#: The most statements the positions-over-periods chart reaches back.
HISTORY_STATEMENTS = 240
MAX_NAME_CHARS = 64
MAX_NOTE_CHARS = 2000
_MONTH = re.compile(r"\d{4}-\d{2}")

#: A district's countersignature status on a statement.
COUNTERSIGNED = "countersigned"
DISPUTED = "disputed"
PENDING = "pending"
OVERRULED = "overruled"
#: Not known where the report was made (a node knows only its own answer until final).
UNKNOWN = "unknown"
SIGNOFF_STATUSES = (COUNTERSIGNED, DISPUTED, PENDING, OVERRULED)

#: What the activity rows count: cross-district claims (the clearinghouse) or a
#: district's own orders (a node).
CLAIMS = "claims"
ORDERS = "orders"
#: A claim's kind, as the bureau's activity rows name it.
CLAIM_KINDS = {"redemption": "跨区兑换 redemption", "move": "随人迁移 move"}


class ReportInputError(ValueError):
    """Report data that does not hold together (a bug in whoever gathered it)."""


def _text(value: object, what: str, *, empty: bool = True) -> str:
    if not isinstance(value, str) or len(value) > MAX_NAME_CHARS or (not empty and not value):
        raise ReportInputError(f"{what}: up to {MAX_NAME_CHARS} characters, not {value!r:.60}")
    if any(ord(ch) < 0x20 for ch in value):
        raise ReportInputError(f"{what}: no control characters")
    return value


def _count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise ReportInputError(f"{what}: a count from 0, not {value!r:.60}")
    return value


@dataclass(frozen=True, slots=True)
class District:
    """A district's node id and its name (江宁区)."""

    node_id: str
    name: str

    def __post_init__(self) -> None:
        if not is_node_id(self.node_id):
            raise ReportInputError(f"not a node id: {self.node_id!r:.40}")
        _text(self.name, "a district's name")


@dataclass(frozen=True, slots=True)
class Signoff:
    """Where a district stands on the statement: countersigned, disputed, pending, or
    overruled by a bureau decision that upheld the statement."""

    node_id: str
    status: str

    def __post_init__(self) -> None:
        if not is_node_id(self.node_id) or self.status not in SIGNOFF_STATUSES:
            raise ReportInputError(f"a signoff is a node id and one of {SIGNOFF_STATUSES}")


@dataclass(frozen=True, slots=True, order=True)
class ActivityRow:
    """Counts and minutes of one month, district, street and category ("" where the
    source does not know the dimension: the clearinghouse knows no streets)."""

    month: str
    district: str
    street: str
    category: str
    count: int
    minutes: int

    def __post_init__(self) -> None:
        if not _MONTH.fullmatch(self.month):
            raise ReportInputError(f"a month is YYYY-MM, not {self.month!r:.40}")
        _text(self.district, "a district")
        _text(self.street, "a street")
        _text(self.category, "a category")
        _count(self.count, "a count")
        _count(self.minutes, "minutes")


@dataclass(frozen=True, slots=True)
class PeriodPosition:
    """A district's net position (minutes, + owed to it) in one closed period, for the
    positions-over-periods chart."""

    period: str
    node_id: str
    net_minutes: int

    def __post_init__(self) -> None:
        _text(self.period, "a period", empty=False)
        if not is_node_id(self.node_id) or isinstance(self.net_minutes, bool) \
                or not isinstance(self.net_minutes, int):
            raise ReportInputError("a history point is a period, a node id and minutes")


@dataclass(frozen=True, slots=True)
class Total:
    """One group of the activity rows: a dimension's value and its sums."""

    key: str
    count: int
    minutes: int


@dataclass(frozen=True, slots=True)
class ReportData:
    """Everything one report shows.

    ``scope``: "clearinghouse" for the bureau's report, else the node id of the district
    the report is for. ``statement``: the period's settlement statement (its latest
    revision), or None when there is none yet (a node report before settlement).
    ``envelope_sha256``: the statement envelope's identity, the hash a reader verifies.
    ``verify_steps``: how to verify it, one instruction a line (the command names what
    the services provide). ``note``: anything the gatherer must say (what is missing).
    """

    scope: str
    period: str
    generated_at: datetime
    districts: tuple[District, ...] = ()
    statement: Statement | None = None
    envelope_sha256: bytes = b""
    signoffs: tuple[Signoff, ...] = ()
    final: bool = False
    activity: tuple[ActivityRow, ...] = ()
    activity_kind: str = CLAIMS
    history: tuple[PeriodPosition, ...] = ()
    verify_steps: tuple[str, ...] = ()
    note: str = ""

    def __post_init__(self) -> None:
        if self.scope != "clearinghouse" and not is_node_id(self.scope):
            raise ReportInputError("a report is the clearinghouse's or a node's")
        _text(self.period, "a period", empty=False)
        if self.generated_at.tzinfo is None:
            raise ReportInputError("a report's time carries a zone")
        if len({d.node_id for d in self.districts}) != len(self.districts):
            raise ReportInputError("a district is named twice")
        if len(self.activity) > MAX_ACTIVITY_ROWS or len(self.history) > MAX_HISTORY_POINTS:
            raise ReportInputError("too many rows for one report")
        if self.activity_kind not in (CLAIMS, ORDERS):
            raise ReportInputError(f"activity counts {CLAIMS} or {ORDERS}")
        if len(self.note) > MAX_NOTE_CHARS or len(self.verify_steps) > 10 or any(
                len(s) > 400 for s in self.verify_steps):
            raise ReportInputError("a note or verification step is too long")
        if self.statement is None:
            if self.envelope_sha256 or self.signoffs or self.final:
                raise ReportInputError("no statement: no hash, countersignatures or finality")
            return
        if len(self.envelope_sha256) != 32:
            raise ReportInputError("a statement's envelope identity is 32 bytes")
        if self.statement.period != self.period:
            raise ReportInputError("the statement is of another period")
        on_it = {x.node_id for x in self.statement.sheet.lines}
        if not {s.node_id for s in self.signoffs} <= on_it or \
                len({s.node_id for s in self.signoffs}) != len(self.signoffs):
            raise ReportInputError("a countersignature names a district not on the statement")

    # derived views: one copy of each figure for every format --------------------------

    def name(self, node_id: str) -> str:
        """A party's label: 江宁区 320115, the city reserve, or the bare node id."""
        if node_id == RESERVE:
            return RESERVE_NAME
        found = next((d.name for d in self.districts if d.node_id == node_id), "")
        return f"{found} {node_id}" if found else node_id

    def short_name(self, node_id: str) -> str:
        """A party's name alone where space is short (chart axes)."""
        if node_id == RESERVE:
            return "储备金 reserve"
        return next((d.name for d in self.districts if d.node_id == node_id), node_id)

    def status(self, node_id: str) -> str:
        """A district's standing; one the report's maker cannot know is UNKNOWN (the
        bureau knows every district's; a node its own, and all once final)."""
        default = PENDING if self.scope == "clearinghouse" else UNKNOWN
        return next((s.status for s in self.signoffs if s.node_id == node_id), default)

    def matrix_nodes(self) -> tuple[str, ...]:
        """The districts on the statement, by node id."""
        if self.statement is None:
            return ()
        return tuple(x.node_id for x in self.statement.sheet.lines)

    def matrix(self) -> tuple[tuple[int, ...], ...]:
        """Gross minutes, row = creditor (its people served), column = debtor (whose
        residents' hours were spent), in ``matrix_nodes`` order; the diagonal is 0."""
        nodes = self.matrix_nodes()
        index = {n: i for i, n in enumerate(nodes)}
        cells = [[0] * len(nodes) for _ in nodes]
        if self.statement is not None:
            for f in self.statement.sheet.flows:
                cells[index[f.creditor]][index[f.debtor]] = f.minutes
        return tuple(tuple(row) for row in cells)

    def totals(self, dimension: str) -> tuple[Total, ...]:
        """The activity summed by ``month``, ``district``, ``street`` or ``category``,
        largest minutes first (ties by key); rows that do not know the dimension are
        left out."""
        if dimension not in ("month", "district", "street", "category"):
            raise ReportInputError(f"no dimension {dimension!r}")
        counts: Counter[str] = Counter()
        minutes: Counter[str] = Counter()
        for row in self.activity:
            key = getattr(row, dimension)
            if key:
                counts[key] += row.count
                minutes[key] += row.minutes
        if dimension == "month":
            order = sorted(counts)
        else:
            order = sorted(counts, key=lambda k: (-minutes[k], k))
        return tuple(Total(k, counts[k], minutes[k]) for k in order)


def history_periods(points: Iterable[PeriodPosition]) -> tuple[str, ...]:
    """The periods of a history in their first-seen order (the gatherer orders them)."""
    seen: dict[str, None] = {}
    for p in points:
        seen.setdefault(p.period, None)
    return tuple(seen)


def claim_rows(claims: Iterable[tuple[datetime, str, str, int]]) -> tuple[ActivityRow, ...]:
    """Completed claims, each (completed at, creditor node id, kind, posted minutes),
    counted by month of completion (city time), the district owed and the kind's words:
    the bureau's activity rows, however the claims were read."""
    counts: Counter[tuple[str, str, str]] = Counter()
    minutes: Counter[tuple[str, str, str]] = Counter()
    for at, creditor, kind, posted in claims:
        key = (at.astimezone(CITY_TZ).strftime("%Y-%m"), creditor,
               CLAIM_KINDS.get(kind, kind))
        counts[key] += 1
        minutes[key] += posted
    return tuple(ActivityRow(m, d, "", k, counts[(m, d, k)], minutes[(m, d, k)])
                 for m, d, k in sorted(counts))
