"""A member's own pages: their hours by origin, their history and orders, requests
waiting for a volunteer to take (志愿接单), and a dispute raised from the public page.

Every page is about the person the session is bound to: no page takes a person's id
from its address, so no member can reach another's records by changing one. The node
checks again what each call may touch (ADR 0016).
"""

from __future__ import annotations

import uuid
from collections import deque

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from timebank.v1 import node_pb2 as pb
from web.app import Pages, page_id
from web.desk import MAX_TEXT_CHARS, ORDER_STATES, ORIGINS, form_key, form_text
from web.nodes import Failure, NodeError
from web.sessions import Session

#: Ledger entry kinds (``node.domain.ledger.EntryKind``) as a person's history says
#: them; a service says whether it was given or received by the sign of the change.
KINDS = frozenset({"donation", "grant", "reversal", "claim"})
HISTORY_SIZE = 30
#: A history is read in pages of the node's largest size, at most this many.
HISTORY_PAGE = 1000
MAX_HISTORY_PAGES = 100
REQUESTS_SIZE = 50


def _kind(entry: pb.HistoryEntry) -> str:
    """The catalogue's key for what a history entry was."""
    kind = entry.transaction.kind
    if kind == "service":
        return "kind_service_earned" if entry.delta_minutes >= 0 else "kind_service_paid"
    return f"kind_{kind}" if kind in KINDS else "kind_other"


class Member:
    def __init__(self, pages: Pages) -> None:
        self.pages = pages

    def _member(self, request: Request) -> Session:
        session = self.pages.logged_in(request)
        if not session.caller.person_id:
            raise NodeError(Failure.FORBIDDEN, session.caller.actor)
        return session

    async def me(self, request: Request) -> Response:
        session = self.pages.logged_in(request)
        if session.caller.at_a_desk:
            return RedirectResponse("/desk", status_code=303)
        session = self._member(request)
        me = session.caller.person_id
        ask = self.pages.ask
        person = (await ask("GetPerson", pb.GetPersonRequest(person_id=me), session)).person
        balance = None
        history: list[tuple[pb.HistoryEntry, str]] = []
        if not person.home_node_id:
            balance = await ask("GetBalance", pb.GetBalanceRequest(person_id=me), session)
            history = [(e, _kind(e)) for e in await self._latest_history(me, session)]
        orders = (await ask("ListOrders", pb.ListOrdersRequest(person_id=me, limit=50),
                            session)).orders
        taken = request.query_params.get("taken", "")
        return self.pages.render(
            request, "me.html", session=session, person=person, balance=balance,
            history=list(reversed(history)), orders=list(reversed(orders)),
            origins=ORIGINS, states=ORDER_STATES,
            taken=int(taken) if taken.isdigit() and len(taken) < 19 else 0)

    async def _latest_history(self, person_id: int, session: Session
                              ) -> list[pb.HistoryEntry]:
        """The person's ``HISTORY_SIZE`` latest entries, oldest first. The node pages a
        history from its start, so the pages are read to the end (at most
        ``MAX_HISTORY_PAGES`` of them: a person's whole life of services)."""
        latest: deque[pb.HistoryEntry] = deque(maxlen=HISTORY_SIZE)
        after = 0
        for _ in range(MAX_HISTORY_PAGES):
            found = await self.pages.ask("GetHistory", pb.GetHistoryRequest(
                person_id=person_id, limit=HISTORY_PAGE, after_seq=after), session)
            latest.extend(found.entries)
            if len(found.entries) < HISTORY_PAGE:
                break
            after = found.entries[-1].transaction.seq
        return list(latest)

    async def requests(self, request: Request, problem: str = "", detail: str = "",
                       status: int = 200) -> Response:
        session = self._member(request)
        found = await self.pages.ask("ListOpenRequests", pb.ListOpenRequestsRequest(
            limit=REQUESTS_SIZE), session)
        return self.pages.render(
            request, "requests.html", status=status, session=session,
            requests=list(found.requests), problem=problem,
            problem_fields={"detail": detail} if detail else {}, key=str(uuid.uuid4()))

    async def take(self, request: Request) -> Response:
        session = self._member(request)
        order_id = page_id(request.path_params["order_id"])
        form = await self.pages.form(request, session)
        try:
            await self.pages.ask("AcceptOrder", pb.AcceptOrderRequest(
                idempotency_key=form_key(form), order_id=order_id,
                volunteer_id=session.caller.person_id), session)
        except NodeError as e:
            if e.failure in (Failure.REFUSED, Failure.BAD_REQUEST):
                return await self.requests(request, "action_refused", e.detail, 409)
            raise
        return RedirectResponse(f"/me?taken={order_id}", status_code=303)

    async def dispute(self, request: Request) -> Response:
        session = self._member(request)
        order_id = page_id(request.path_params["order_id"])
        form = await self.pages.form(request, session)
        reason = form_text(form, "reason", MAX_TEXT_CHARS)
        try:
            await self.pages.ask("DisputeOrder", pb.DisputeOrderRequest(
                idempotency_key=form_key(form), order_id=order_id, reason=reason), session)
        except NodeError as e:
            if e.failure in (Failure.REFUSED, Failure.BAD_REQUEST):
                return self.pages.error(request, 409, "action_refused", detail=e.detail)
            raise
        return RedirectResponse(f"/public?disputed={order_id}", status_code=303)


def routes(pages: Pages) -> list[Route]:
    member = Member(pages)
    return [
        Route("/me", member.me, methods=["GET"]),
        Route("/me/requests", member.requests, methods=["GET"]),
        Route("/me/requests/{order_id}/take", member.take, methods=["POST"]),
        Route("/public/{order_id}/dispute", member.dispute, methods=["POST"]),
    ]
