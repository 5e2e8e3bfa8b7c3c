"""The bureau's overview of the city: each district's net position against its limit,
the services between districts, and the city's log in words a civil servant reads.

Read from the clearinghouse's API with the console's observer certificate (mutual TLS,
ADR 0015): only what the city publishes about districts, never a person. Served when the
console is started with ``--clearinghouse``; a district's console has no such page.

With ``--monitor-status FILE`` the page also says what the city's outside monitor
(``timebank monitor check --follow``) found: its status file (``timebank.monitorstatus``),
read on every request, bounded; a file that is missing, unreadable, malformed or old is
said plainly on the page, never an error page.
"""

from __future__ import annotations

import stat
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runtime.tls import ClientTls
from timebank import monitorstatus
from timebank.ids import is_node_id
from timebank.v1 import clearing_pb2, clearing_pb2_grpc, node_pb2
from web.app import Pages
from web.nodes import Api, Failure, NodeError


@dataclass(frozen=True, slots=True)
class DistrictRow:
    node_id: str
    district: str
    net_minutes: int  # owed to it (+) or by it (-)
    limit_minutes: int
    used_percent: int  # of its net debit limit, 0 when it is owed or even


@dataclass(frozen=True, slots=True)
class Flow:
    served_in: str  # the creditor district's name
    paid_by: str  # the debtor district's name
    minutes: int


@dataclass(frozen=True, slots=True)
class Witness:
    """When a district last confirmed (cosigned) the log, as far as the two newest heads
    tell: the latest one, or the latest one a quorum cosigned; None: neither."""

    node_id: str
    district: str
    size: int
    at: datetime | None


@dataclass(frozen=True, slots=True)
class Alarm:
    kind: str  # "fork" or "finality" (GetLogHeads)
    since: datetime | None


@dataclass(frozen=True, slots=True)
class LogHealth:
    size: int  # entries in the latest head
    cosigned_size: int  # entries in the latest head a quorum of districts cosigned
    cosigners: int
    districts: int
    confirmed_at: datetime | None
    signed_at: datetime | None = None  # when the latest head was signed
    witnesses: tuple[Witness, ...] = ()


@dataclass(frozen=True, slots=True)
class FlowBar:
    """One bar of the flows chart: where the service was given, whose hours paid, and
    the bar's length in the chart's units (the largest flow is ``CHART_UNITS``)."""

    flow: Flow
    length: int
    row: int


#: The flows chart: at most this many bars (the largest), each up to this long.
MAX_CHART_BARS = 30
CHART_UNITS = 600


def flow_bars(flows: list[Flow]) -> list[FlowBar]:
    """The largest flows as bars, longest first; a flow too small to see still shows."""
    chosen = sorted(flows, key=lambda f: (-f.minutes, f.served_in, f.paid_by))[:MAX_CHART_BARS]
    top = max((f.minutes for f in chosen), default=0)
    assert all(f.minutes > 0 for f in chosen), "a flow of no minutes is not drawn"
    return [FlowBar(f, max(2, f.minutes * CHART_UNITS // top), i)
            for i, f in enumerate(chosen)]


def witnesses(districts: dict[str, str], latest: clearing_pb2.TreeHead,
              final: clearing_pb2.TreeHead) -> tuple[Witness, ...]:
    """Each district's latest confirmation the two newest heads show."""
    def at(head: clearing_pb2.TreeHead) -> datetime | None:
        return head.at.ToDatetime(tzinfo=UTC) if head.HasField("at") else None

    out = []
    for node_id, name in sorted(districts.items()):
        if node_id in latest.cosigners:
            out.append(Witness(node_id, name, latest.size, at(latest)))
        elif node_id in final.cosigners:
            out.append(Witness(node_id, name, final.size, at(final)))
        else:
            out.append(Witness(node_id, name, 0, None))
    return tuple(out)


def used_percent(net_minutes: int, limit_minutes: int) -> int:
    """How much of its net debit limit a district uses (0..100, or more if over)."""
    if net_minutes >= 0 or limit_minutes <= 0:
        return 0 if net_minutes >= 0 else 100
    return -net_minutes * 100 // limit_minutes


def ago(at: datetime, now: datetime) -> tuple[str, int]:
    """How long ago ``at`` was, as a catalogue key and its number."""
    seconds = max(0, int((now - at).total_seconds()))
    if seconds < 60:
        return "ago_seconds", 0
    if seconds < 3600:
        return "ago_minutes", seconds // 60
    if seconds < 86400:
        return "ago_hours", seconds // 3600
    return "ago_days", seconds // 86400


log = structlog.get_logger("console")

#: A monitor's status older than this is said on the page: the monitor may have stopped
#: (it reports every round, 30 s apart unless told otherwise).
MONITOR_STALE_SECONDS = 10 * 60
#: A status dated further ahead of the console's clock than this: a clock is wrong.
MONITOR_AHEAD_SECONDS = 5 * 60
#: The kinds of the monitor's alarms the page says in its own words (others: the detail).
MONITOR_KINDS = (monitorstatus.FORK, monitorstatus.ANCHORS, monitorstatus.FINALITY)


@dataclass(frozen=True, slots=True)
class MonitorView:
    """What the bureau's page says of the city's monitor: its latest status (None: none
    could be read) and, if something is amiss with it, ``problem``: "missing",
    "unreadable", "malformed", "stale" (not reported for ``minutes``) or "ahead" (dated
    ``minutes`` ahead of this console's clock)."""

    status: monitorstatus.MonitorStatus | None
    problem: str = ""
    minutes: int = 0
    ago: tuple[str, int] | None = None  # when it checked, in words (``ago``)

    def said(self, finding: monitorstatus.Finding) -> str:
        """The catalogue key that says ``finding`` in words."""
        if not finding.alarm:
            return "monitor_warning"
        return f"monitor_alarm_{finding.kind if finding.kind in MONITOR_KINDS else 'other'}"


def read_monitor(file: Path, now: datetime) -> MonitorView:
    """The monitor's status file as the page says it, read with a bound on its size;
    whatever is wrong with it is a ``problem`` the page says, never an exception."""
    try:
        if not stat.S_ISREG(file.stat().st_mode):
            raise IsADirectoryError(f"{file} is not a regular file")
        with file.open("rb") as f:
            data = f.read(monitorstatus.MAX_BYTES + 1)
    except FileNotFoundError:
        return MonitorView(None, "missing")
    except OSError as e:
        log.warning("monitor status unreadable", file=str(file), error=str(e))
        return MonitorView(None, "unreadable")
    try:
        status = monitorstatus.parse(data)
    except monitorstatus.StatusError as e:
        log.warning("monitor status malformed", file=str(file), error=str(e))
        return MonitorView(None, "malformed")
    age = int((now - status.checked_at).total_seconds())
    when = ago(status.checked_at, now)
    if age > MONITOR_STALE_SECONDS:
        return MonitorView(status, "stale", age // 60, when)
    if -age > MONITOR_AHEAD_SECONDS:
        return MonitorView(status, "ahead", -age // 60, when)
    return MonitorView(status, ago=when)


class Clearinghouse(Api):
    """The clearinghouse's API, as the console's certificate reads it: an observer's
    (reads only) or a bureau operator's (``closes_periods``: it may also close a
    settlement period, ADR 0015); and, if given, the city monitor's status file."""

    def __init__(self, address: str, tls: ClientTls | None, *,
                 closes_periods: bool = False, monitor_status: Path | None = None) -> None:
        super().__init__(address, tls, clearing_pb2_grpc.ClearinghouseServiceStub)
        self.closes_periods = closes_periods
        self.monitor_status = monitor_status

    def monitor(self, now: datetime) -> MonitorView | None:
        """What the city's monitor last said (None: the console was not told where)."""
        return None if self.monitor_status is None else read_monitor(self.monitor_status,
                                                                     now)

    def names(self) -> dict[str, str]:
        """Each admitted district's name, by node id."""
        positions = self.call("GetPositions", clearing_pb2.GetPositionsRequest())
        return {n.node_id: n.district for n in positions.nodes}

    def overview(self) -> tuple[list[DistrictRow], list[Flow], LogHealth]:
        positions = self.call("GetPositions", clearing_pb2.GetPositionsRequest())
        latest = self.call("GetTreeHead", clearing_pb2.GetTreeHeadRequest())
        try:
            final = self.call("GetTreeHead", clearing_pb2.GetTreeHeadRequest(cosigned=True))
        except NodeError as e:  # no head a quorum cosigned yet: a young city
            if e.failure is not Failure.NOT_FOUND:
                raise
            final = clearing_pb2.GetTreeHeadResponse()
        names = {n.node_id: n.district for n in positions.nodes}
        rows = [DistrictRow(n.node_id, n.district, n.net_minutes, n.net_debit_limit_minutes,
                            used_percent(n.net_minutes, n.net_debit_limit_minutes))
                for n in sorted(positions.nodes, key=lambda n: n.node_id)]
        flows = [Flow(names.get(g.creditor_node_id, g.creditor_node_id),
                      names.get(g.debtor_node_id, g.debtor_node_id), g.minutes)
                 for g in positions.gross if g.minutes]
        head = final.head
        health = LogHealth(
            latest.head.size, head.size, len(head.cosigners), len(rows),
            head.at.ToDatetime(tzinfo=UTC) if head.HasField("at") and head.size else None,
            latest.head.at.ToDatetime(tzinfo=UTC) if latest.head.HasField("at") else None,
            witnesses(names, latest.head, head))
        return rows, flows, health



def routes(pages: Pages, clearinghouse: Clearinghouse) -> list[Route]:
    async def overview(request: Request) -> Response:
        rows, flows, health = await run_in_threadpool(clearinghouse.overview)
        heads = await run_in_threadpool(pages.node.call, "GetLogHeads",
                                        node_pb2.GetLogHeadsRequest())
        now = datetime.now(UTC)
        monitor = await run_in_threadpool(clearinghouse.monitor, now)
        alarms = [Alarm(a.kind, a.since.ToDatetime(tzinfo=UTC) if a.HasField("since")
                        else None) for a in heads.alarms]
        when = ago(health.confirmed_at, now) if health.confirmed_at else None
        return pages.render(request, "bureau.html", districts=rows, flows=flows,
                            bars=flow_bars(flows), units=CHART_UNITS, health=health,
                            ago=when, alarms=alarms, watcher=heads.node_id,
                            since=lambda at: ago(at, now), monitor=monitor)

    async def claim_search(request: Request) -> Response:
        search = ClaimSearch.of(request.query_params)
        names = await run_in_threadpool(clearinghouse.names)
        found, more = await run_in_threadpool(claims, clearinghouse, search, names)
        return pages.render(request, "claims.html", claims=found, more=more, search=search,
                            states=list(CLAIM_STATES), districts=sorted(names.items()))

    from web import settlements

    return [Route("/bureau", overview, methods=["GET"]),
            Route("/bureau/claims", claim_search, methods=["GET"]),
            *settlements.routes(pages, clearinghouse)]


# ---------------------------------------------------------------- claims, searched

#: The claim states a search may name, as the catalogue's keys say them.
CLAIM_STATES = {"proposed": clearing_pb2.CLAIM_STATE_PROPOSED,
                "accepted": clearing_pb2.CLAIM_STATE_ACCEPTED,
                "completed": clearing_pb2.CLAIM_STATE_COMPLETED,
                "voided": clearing_pb2.CLAIM_STATE_VOIDED,
                "rejected": clearing_pb2.CLAIM_STATE_REJECTED,
                "expired": clearing_pb2.CLAIM_STATE_EXPIRED}
_STATE_NAMES = {v: k for k, v in CLAIM_STATES.items()}
CLAIMS_PER_PAGE = 50


@dataclass(frozen=True, slots=True)
class ClaimRow:
    claim_id: str
    move: bool  # a person moved (else: a service paid across districts)
    served_in: str  # creditor
    paid_by: str  # debtor
    minutes: int
    state: str  # a key of CLAIM_STATES
    reason: str  # ClaimReason's name without its prefix, "" for none
    state_at: datetime | None
    settled_serial: int  # 0: not settled yet


@dataclass(frozen=True, slots=True)
class ClaimSearch:
    """What the bureau asked for: a state (a key of CLAIM_STATES, "" any), a district
    (a node id, "" any) and where the page starts ("": the newest)."""

    state: str = ""
    district: str = ""
    before: str = ""

    @classmethod
    def of(cls, query: Mapping[str, str]) -> ClaimSearch:
        """From a page's query; what is not one of the choices is refused (400)."""
        state, district = query.get("state", ""), query.get("district", "")
        before = query.get("before", "")
        if state and state not in CLAIM_STATES:
            raise NodeError(Failure.BAD_REQUEST, f"state {state[:20]!r}")
        if district and not is_node_id(district):
            raise NodeError(Failure.BAD_REQUEST, f"district {district[:20]!r}")
        if len(before) > 64:
            raise NodeError(Failure.BAD_REQUEST, "before")
        return cls(state, district, before)


def claims(house: Clearinghouse, search: ClaimSearch,
           names: Mapping[str, str]) -> tuple[list[ClaimRow], str]:
    """A page of claims, newest first, and where the next page starts ("": no more)."""
    found = house.call("ListClaims", clearing_pb2.ClearinghouseServiceListClaimsRequest(
        state=CLAIM_STATES.get(search.state, clearing_pb2.CLAIM_STATE_UNSPECIFIED),
        node_id=search.district, before_claim_id=search.before, page_size=CLAIMS_PER_PAGE))
    rows = [ClaimRow(
        c.claim_id, c.kind == clearing_pb2.CLAIM_KIND_MOVE,
        names.get(c.creditor_node_id, c.creditor_node_id),
        names.get(c.debtor_node_id, c.debtor_node_id),
        c.posted_minutes or c.minutes, _STATE_NAMES.get(c.state, "proposed"),
        "" if not c.reason else clearing_pb2.ClaimReason.Name(c.reason).removeprefix(
            "CLAIM_REASON_"),
        c.state_at.ToDatetime(tzinfo=UTC) if c.HasField("state_at") else None,
        c.settled_serial if c.HasField("settled_serial") else 0) for c in found.claims]
    return rows, found.next_before_claim_id
