"""The bureau's settlement periods (结算): each closed period's statement as it stands —
what each district is owed or owes, the transfers that settle it, which districts
countersigned, which disputed and why, the bureau's decisions — and its report to
download as the finance office files it (PDF, workbook, CSV).

Everything is read from the clearinghouse's API (GetSettlement, GetSettlementClaims,
GetPositions) with the console's certificate, and the report is made by the same
renderers as ``timebank clearinghouse report`` (``city.reports``), from the same signed
statement: a downloaded PDF and a written one say the same. The page shows the
statement's envelope identity and log leaf, so whoever doubts a figure can check it in
the city's log without trusting the console.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from city.reports.standing import signoffs
from city.reports.tables import (
    CLAIMS,
    HISTORY_STATEMENTS,
    District,
    PeriodPosition,
    ReportData,
    Signoff,
    claim_rows,
)
from city.reports.words import CLAIMS_NOTE
from timebank import settlement as st
from timebank.envelope import decode, identity
from timebank.v1 import clearing_pb2 as pb
from web.app import Pages
from web.bureau import Clearinghouse
from web.nodes import Failure, NodeError

log = structlog.get_logger("console")

#: Periods a page of the list shows.
PERIODS_PER_PAGE = 12
#: The report formats, as ``city.reports.write.FORMATS`` names them (a test holds the
#: two equal; that module is loaded only when a report is made).
FORMATS = ("pdf", "xlsx", "csv.zip", "zip")
#: The longest reason for closing a period (the API's limit, less the operator's name).
MAX_REASON_CHARS = 800
#: The node role whose people may close a period from a bureau's console.
OPERATOR = "operator"
#: The most pages of settled claims a report reads (5,000 claims a page).
MAX_CLAIM_PAGES = 200


@dataclass(frozen=True, slots=True)
class DisputeView:
    node_id: str
    revision: int
    detail: str
    claims: tuple[tuple[str, str], ...]  # (claim id, reason code)
    at: datetime | None


@dataclass(frozen=True, slots=True)
class DecisionView:
    revision: int
    revise: bool
    overruled: tuple[str, ...]
    excluded: int
    reason: str
    at: datetime | None


@dataclass(frozen=True, slots=True)
class Standing:
    """A closed period as it stands: its latest revision and every act on it."""

    statement: st.Statement
    envelope_sha256: bytes
    log_index: int
    revisions: int
    final: bool
    signoffs: tuple[Signoff, ...]
    disputes: tuple[DisputeView, ...]
    decisions: tuple[DecisionView, ...]
    defaults: tuple[pb.SettlementDefault, ...]

    def count(self, status: str) -> int:
        return sum(1 for s in self.signoffs if s.status == status)


def _at(stamp: object, present: bool) -> datetime | None:
    assert hasattr(stamp, "ToDatetime")
    return stamp.ToDatetime(tzinfo=UTC) if present else None


def standing_of(found: pb.GetSettlementResponse) -> Standing:
    """What GetSettlement answered, parsed: the signatures were checked by the
    clearinghouse when it stored them, and the statement's identity is shown so a reader
    can check it in the log."""
    if not found.statements:
        raise NodeError(Failure.NOT_FOUND, "no statement")
    envelope = decode(found.statements[-1])
    statement = st.parse_statement(envelope.body)
    disputes = tuple(
        DisputeView(d.node_id, d.revision, d.detail,
                    tuple((c.claim_id, c.reason) for c in d.claims), _at(d.at, d.HasField("at")))
        for d in (pb.SettlementDispute.FromString(decode(e).body) for e in found.disputes))
    decisions = tuple(
        DecisionView(d.revision, d.revise, tuple(d.overruled_node_ids),
                     len(d.excluded_claim_ids), d.reason, _at(d.at, d.HasField("at")))
        for d in (pb.SettlementDecision.FromString(decode(e).body) for e in found.decisions))
    return Standing(
        statement, identity(envelope),
        found.log_indexes[-1] if found.log_indexes else 0, len(found.statements),
        found.final, signoffs(found, statement), disputes, decisions,
        tuple(pb.SettlementDefault.FromString(decode(e).body) for e in found.defaults))


def settlement(house: Clearinghouse, serial: int) -> Standing:
    """Statement ``serial`` (0: the latest) as it stands."""
    return standing_of(house.call("GetSettlement", pb.GetSettlementRequest(serial=serial)))


def latest(house: Clearinghouse) -> Standing | None:
    """The newest statement as it stands; None when no period was closed yet."""
    try:
        return settlement(house, 0)
    except NodeError as e:
        if e.failure is not Failure.NOT_FOUND:
            raise
        return None


def periods(house: Clearinghouse, before: int = 0) -> tuple[list[Standing], int]:
    """Up to ``PERIODS_PER_PAGE`` statements, newest first, with serials below ``before``
    (0: from the newest); and the serial to page on from (0: no more)."""
    newest = latest(house)
    if newest is None:
        return [], 0
    top = newest.statement.serial if not before else min(newest.statement.serial,
                                                          before - 1)
    out = [newest if n == newest.statement.serial else settlement(house, n)
           for n in range(top, max(0, top - PERIODS_PER_PAGE), -1)]
    last = out[-1].statement.serial if out else 0
    return out, last if last > 1 else 0


def _settled(house: Clearinghouse, statement: st.Statement
             ) -> Iterator[tuple[datetime, str, str, int]]:
    """Each claim the statement settles: (completed at, creditor, kind, minutes); a
    clearinghouse too old to say when a claim completed puts it in the closing month."""
    after = ""
    for _ in range(MAX_CLAIM_PAGES):
        page = house.call("GetSettlementClaims", pb.GetSettlementClaimsRequest(
            serial=statement.serial, after_claim_id=after))
        for c in page.claims:
            at = (c.completed_at.ToDatetime(tzinfo=UTC) if c.HasField("completed_at")
                  else statement.closed_at)
            kind = "move" if c.kind == pb.CLAIM_KIND_MOVE else "redemption"
            yield at, c.creditor_node_id, kind, c.minutes
        if not page.more or not page.claims:
            return
        after = page.claims[-1].claim_id
    raise NodeError(Failure.REFUSED, f"结算单 {statement.serial} 的账目超过报表上限 / "
                                     f"statement {statement.serial} settles more claims "
                                     f"than a report reads ({MAX_CLAIM_PAGES} pages)")


def report(house: Clearinghouse, serial: int, now: datetime) -> ReportData:
    """The bureau's report of statement ``serial``, as ``timebank clearinghouse report``
    makes it from the clearinghouse's database, here from its API."""
    found = house.call("GetSettlement", pb.GetSettlementRequest(serial=serial))
    standing = standing_of(found)
    statement = standing.statement
    history: list[PeriodPosition] = []
    for n in range(max(1, statement.serial - HISTORY_STATEMENTS + 1), statement.serial + 1):
        earlier = statement if n == statement.serial else settlement(house, n).statement
        history += [PeriodPosition(earlier.period, x.node_id, x.net_minutes)
                    for x in earlier.sheet.lines]
    return ReportData(
        scope="clearinghouse", period=statement.period, generated_at=now,
        districts=tuple(District(k, v[:64]) for k, v in sorted(house.names().items())),
        statement=statement, envelope_sha256=standing.envelope_sha256,
        signoffs=standing.signoffs, final=standing.final,
        activity=claim_rows(_settled(house, statement)), activity_kind=CLAIMS,
        history=tuple(history), note=CLAIMS_NOTE)


def routes(pages: Pages, house: Clearinghouse) -> list[Route]:
    """The settlement pages and the report downloads."""

    async def listing(request: Request, problem: str = "", detail: str = "",
                      status: int = 200) -> Response:
        before = _number(request.query_params.get("before", "0"))
        found, more = await run_in_threadpool(periods, house, before)
        session = pages.session(request)
        return pages.render(
            request, "settlements.html", status=status, periods=found, more=more,
            may_close=house.closes_periods and session is not None
            and session.caller.role == OPERATOR, closes=house.closes_periods,
            problem=problem, detail=detail, month=previous_month(datetime.now(UTC)))

    async def one(request: Request) -> Response:
        serial = _number(request.path_params["serial"], low=1)
        standing, known = await run_in_threadpool(
            lambda: (settlement(house, serial), house.names()))
        return pages.render(request, "settlement.html", s=standing,
                            sheet=standing.statement.sheet, names=known,
                            formats=FORMATS, yuan=st.format_yuan, reserve=st.RESERVE)

    async def download(request: Request) -> Response:
        serial = _number(request.path_params["serial"], low=1)
        fmt = request.path_params["fmt"]
        if fmt not in FORMATS:
            return pages.error(request, 404, "error_not_found")
        # the renderers load matplotlib, fpdf2 and openpyxl: when a report is first
        # asked for, not when the console starts
        from city.reports.write import download as render

        data = await run_in_threadpool(report, house, serial, datetime.now(UTC))
        made = await run_in_threadpool(render, data, fmt)
        log.info("report downloaded", serial=serial, period=data.period, format=fmt,
                 bytes=len(made.content))
        return Response(made.content, media_type=made.media_type, headers={
            "content-disposition": f'attachment; filename="{made.filename}"'})

    async def close(request: Request) -> Response:
        """The bureau closes a period: only a node operator logged in to a console that
        holds the bureau's certificate (the clearinghouse checks the certificate; the
        console checks the person, and the close is logged under both)."""
        session = pages.logged_in(request)
        if not house.closes_periods or session.caller.role != OPERATOR:
            raise NodeError(Failure.FORBIDDEN, session.caller.actor)
        form = await pages.form(request, session)
        wanted = ClosePeriod.of(str(form.get("period", "")), str(form.get("reason", "")))
        if isinstance(wanted, str):
            return await listing(request, problem=wanted, status=400)
        try:
            closed = await run_in_threadpool(
                house.call, "CloseSettlement", pb.CloseSettlementRequest(
                    period=wanted.period,
                    reason=f"{wanted.reason} ({session.login}, {session.caller.actor})"))
        except NodeError as e:
            if e.failure in (Failure.UNAVAILABLE, Failure.SIGNED_OUT):
                raise
            return await listing(request, problem="settle_close_refused", detail=e.detail,
                                 status=409)
        log.info("settlement period closed", period=closed.period, serial=closed.serial,
                 actor=session.caller.actor)
        return RedirectResponse(f"/bureau/settlements/{closed.serial}", status_code=303)

    return [Route("/bureau/settlements", listing, methods=["GET"]),
            Route("/bureau/settlements/close", close, methods=["POST"]),
            Route("/bureau/settlements/{serial:int}", one, methods=["GET"]),
            Route("/bureau/settlements/{serial:int}/report.{fmt}", download, methods=["GET"])]


@dataclass(frozen=True, slots=True)
class ClosePeriod:
    """What the close form asks: a calendar month and why."""

    period: str
    reason: str

    @classmethod
    def of(cls, period: str, reason: str) -> ClosePeriod | str:
        """The request, or the catalogue key of what is wrong with it (the API's rules:
        a month YYYY-MM; a reason of 1 to 1,000 characters)."""
        period, reason = period.strip(), reason.strip()
        try:
            st.month_period(period)  # the API's own check: a real month
        except st.SettlementError:
            return "settle_close_bad_period"
        if not reason or len(reason) > MAX_REASON_CHARS or any(
                ord(ch) < 0x20 for ch in reason):
            return "settle_close_bad_reason"
        return cls(period, reason)


def previous_month(now: datetime) -> str:
    """The month before ``now``'s, in city time: the one a bureau usually closes."""
    return st.previous_month(now).label


def _number(text: str | int, low: int = 0) -> int:
    """A serial from a URL: a whole number from ``low``, else the page is not there."""
    try:
        value = int(text)
    except ValueError:
        raise NodeError(Failure.NOT_FOUND) from None
    if not low <= value < 2**63:
        raise NodeError(Failure.NOT_FOUND)
    return value
