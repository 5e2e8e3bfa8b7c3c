"""The bureau's overview of the city: each district's net position against its limit,
the services between districts, and the city's log in words a civil servant reads.

Read from the clearinghouse's API with the console's observer certificate (mutual TLS,
ADR 0015): only what the city publishes about districts, never a person. Served when the
console is started with ``--clearinghouse``; a district's console has no such page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runtime.tls import ClientTls
from timebank.v1 import clearing_pb2, clearing_pb2_grpc
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
class LogHealth:
    size: int  # entries in the latest head
    cosigned_size: int  # entries in the latest head a quorum of districts cosigned
    cosigners: int
    districts: int
    confirmed_at: datetime | None


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


class Clearinghouse(Api):
    """The clearinghouse's API, as the console's observer reads it."""

    def __init__(self, address: str, tls: ClientTls | None) -> None:
        super().__init__(address, tls, clearing_pb2_grpc.ClearinghouseServiceStub)

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
            head.at.ToDatetime(tzinfo=UTC) if head.HasField("at") and head.size else None)
        return rows, flows, health



def routes(pages: Pages, clearinghouse: Clearinghouse) -> list[Route]:
    async def overview(request: Request) -> Response:
        rows, flows, health = await run_in_threadpool(clearinghouse.overview)
        when = ago(health.confirmed_at, datetime.now(UTC)) if health.confirmed_at else None
        return pages.render(request, "bureau.html", districts=rows, flows=flows,
                            health=health, ago=when)

    return [Route("/bureau", overview, methods=["GET"])]
