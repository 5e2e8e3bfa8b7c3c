"""A member's own pages: their hours by origin, their history and orders, requests
waiting for a volunteer to take (志愿接单), and a dispute raised from the public page.

Every page is about the person the session is bound to: no page takes a person's id
from its address, so no member can reach another's records by changing one. The node
checks again what each call may touch (ADR 0016).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from timebank.v1 import node_pb2 as pb
from web import history as history_
from web.app import Pages, page_id
from web.desk import MAX_TEXT_CHARS, ORDER_STATES, ORIGINS, form_key, form_text
from web.nodes import Failure, NodeError
from web.sessions import Session

REQUESTS_SIZE = 50


def _member(pages: Pages, request: Request) -> Session:
    """The session of a member (bound to a person); anyone else is refused."""
    session = pages.logged_in(request)
    if not session.caller.person_id:
        raise NodeError(Failure.FORBIDDEN, session.caller.actor)
    return session


#: Where the volunteer may still rate the person served, and where the person served
#: confirms and rates the service (the node's states, as ``ORDER_STATES`` names them).
VOLUNTEER_RATES = frozenset({"checked_out", "verified", "disputed", "recorded"})
RECIPIENT_RATES = frozenset({"checked_out"})


def _notice_id(text: str) -> int:
    """The order a notice on /me names (``?taken=``, ``?rated=``); 0 for anything else:
    a notice is a courtesy, never a reason to refuse the page."""
    return int(text) if text.isascii() and text.isdigit() and len(text) < 19 else 0


def to_rate(orders: Iterable[pb.Order], me: int) -> list[tuple[pb.Order, str]]:
    """The orders ``me`` may rate now, each with who rates: "volunteer" (rates the
    person served, once) or "recipient" (confirms the service with a rating)."""
    out = []
    for o in orders:
        state = ORDER_STATES.get(o.state, "")
        if o.volunteer_id == me and state in VOLUNTEER_RATES and not o.rating_by_volunteer:
            out.append((o, "volunteer"))
        elif o.recipient_id == me and state in RECIPIENT_RATES:
            out.append((o, "recipient"))
    return out


class Member:
    def __init__(self, pages: Pages) -> None:
        self.pages = pages

    def _member(self, request: Request) -> Session:
        return _member(self.pages, request)

    async def me(self, request: Request, problem: str = "", detail: str = "",
                 status: int = 200) -> Response:
        session = self.pages.logged_in(request)
        if session.caller.at_a_desk:
            return RedirectResponse("/desk", status_code=303)
        session = self._member(request)
        me = session.caller.person_id
        ask = self.pages.ask
        person = (await ask("GetPerson", pb.GetPersonRequest(person_id=me), session)).person
        balance = None
        history: list[history_.Entry] = []
        if not person.home_node_id:
            balance = await ask("GetBalance", pb.GetBalanceRequest(person_id=me), session)
            history = await history_.latest(self.pages, me, session)
        orders = (await ask("ListOrders", pb.ListOrdersRequest(person_id=me, limit=50),
                            session)).orders
        notice = request.query_params
        return self.pages.render(
            request, "me.html", session=session, person=person, balance=balance,
            history=history, orders=list(reversed(orders)),
            origins=ORIGINS, states=ORDER_STATES, to_rate=to_rate(orders, me),
            taken=_notice_id(notice.get("taken", "")),
            rated=_notice_id(notice.get("rated", "")),
            problem=problem, problem_fields={"detail": detail} if detail else {},
            key=str(uuid.uuid4()))

    async def rate(self, request: Request) -> Response:
        """The member rates a service they took part in: as its volunteer, the person
        served (RateOrder); as the person served, the service, which confirms it
        (VerifyOrder). Which one is the node's order, not the form's, to say."""
        session = self._member(request)
        order_id = page_id(request.path_params["order_id"])
        form = await self.pages.form(request, session)
        stars = form_text(form, "rating", 1)
        rating = int(stars) if stars.isdigit() else 0
        comment = form_text(form, "comment", MAX_TEXT_CHARS)
        me = session.caller.person_id
        order = (await self.pages.ask("GetOrder", pb.GetOrderRequest(order_id=order_id),
                                      session)).order
        try:
            if order.volunteer_id == me:
                await self.pages.ask("RateOrder", pb.RateOrderRequest(
                    idempotency_key=form_key(form), order_id=order_id, rating=rating,
                    comment=comment), session)
            else:
                await self.pages.ask("VerifyOrder", pb.VerifyOrderRequest(
                    idempotency_key=form_key(form), order_id=order_id, rating=rating,
                    comment=comment), session)
        except NodeError as e:
            if e.refuses_the_form:
                return await self.me(request, "action_refused", e.detail, 409)
            raise
        return RedirectResponse(f"/me?rated={order_id}", status_code=303)

    async def requests(self, request: Request, problem: str = "", detail: str = "",
                       status: int = 200) -> Response:
        session = self._member(request)
        me = (await self.pages.ask("GetPerson", pb.GetPersonRequest(
            person_id=session.caller.person_id), session)).person
        # near her: her own service point's requests first; every point's when she asks
        point = 0 if request.query_params.get("all") == "1" else me.service_point_id
        found = await self.pages.ask("ListOpenRequests", pb.ListOpenRequestsRequest(
            service_point_id=point, limit=REQUESTS_SIZE), session)
        return self.pages.render(
            request, "requests.html", status=status, session=session,
            requests=list(found.requests), near=bool(point), problem=problem,
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
            if e.refuses_the_form:
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
            if e.refuses_the_form:
                return self.pages.error(request, 409, "action_refused", detail=e.detail)
            raise
        return RedirectResponse(f"/public?disputed={order_id}", status_code=303)


CONSENT_STATES: dict[pb.ConsentState.ValueType, str] = {
    pb.CONSENT_STATE_ACTIVE: "consent_state_active",
    pb.CONSENT_STATE_USED: "consent_state_used",
    pb.CONSENT_STATE_REVOKED: "consent_state_revoked",
}
#: The largest bound a consent form takes (the node and the city's policy bound it too).
MAX_CONSENT_MINUTES = 1_000_000


def _bound(form: Any, name: str) -> int | None:
    """A consent's bound in minutes (0: none), or None when it is not a number."""
    text = form_text(form, name, 8)
    if not text:
        return 0
    if not text.isdigit() or int(text) > MAX_CONSENT_MINUTES:
        return None
    return int(text)


class Consents:
    """A member's consents that their hours pay for a relative's services (ADR 0017)."""

    def __init__(self, pages: Pages) -> None:
        self.pages = pages

    async def page(self, request: Request, problem: str = "", detail: str = "",
                   status: int = 200) -> Response:
        session = _member(self.pages, request)
        me = session.caller.person_id
        found = await self.pages.ask("ListConsents", pb.ListConsentsRequest(
            payer_id=me, limit=100), session)
        named = []
        for c in found.consents:
            name = ""
            if c.grantee_id:
                try:
                    name = (await self.pages.ask("GetPerson", pb.GetPersonRequest(
                        person_id=c.grantee_id), session)).person.name
                except NodeError as e:
                    if e.failure is not Failure.FORBIDDEN:
                        raise
            named.append((c, name))
        done = request.query_params.get("done", "")
        done_id = request.query_params.get("id", "")
        return self.pages.render(
            request, "consents.html", status=status, session=session, consents=named,
            states=CONSENT_STATES, active=pb.CONSENT_STATE_ACTIVE, problem=problem,
            problem_fields={"detail": detail} if detail else {},
            done=done if done in ("consent_granted", "consent_revoked") else "",
            done_id=page_id(done_id) if done_id else 0, key=str(uuid.uuid4()))

    async def grant(self, request: Request) -> Response:
        session = _member(self.pages, request)
        form = await self.pages.form(request, session)
        most, total = _bound(form, "max_minutes"), _bound(form, "total_minutes")
        if most is None or total is None:
            return await self.page(request, "consent_bad_minutes", status=400)
        try:
            made = await self.pages.ask("GrantConsent", pb.GrantConsentRequest(
                idempotency_key=form_key(form), payer_id=session.caller.person_id,
                grantee_id_number=form_text(form, "id_number", 18),
                kind=pb.CONSENT_KIND_STANDING, max_minutes=most, total_minutes=total),
                session)
        except NodeError as e:
            if e.refuses_the_form:
                return await self.page(request, "action_refused", e.detail, 409)
            raise
        return RedirectResponse(f"/me/consents?done=consent_granted&id={made.consent.id}",
                                status_code=303)

    async def revoke(self, request: Request) -> Response:
        session = _member(self.pages, request)
        consent_id = page_id(request.path_params["consent_id"])
        form = await self.pages.form(request, session)
        try:
            await self.pages.ask("RevokeConsent", pb.RevokeConsentRequest(
                idempotency_key=form_key(form), consent_id=consent_id), session)
        except NodeError as e:
            if e.refuses_the_form:
                return await self.page(request, "action_refused", e.detail, 409)
            raise
        return RedirectResponse(f"/me/consents?done=consent_revoked&id={consent_id}",
                                status_code=303)


def routes(pages: Pages) -> list[Route]:
    member = Member(pages)
    consents = Consents(pages)
    return [
        Route("/me/consents", consents.page, methods=["GET"]),
        Route("/me/consents", consents.grant, methods=["POST"]),
        Route("/me/consents/{consent_id}/revoke", consents.revoke, methods=["POST"]),
        Route("/me", member.me, methods=["GET"]),
        Route("/me/requests", member.requests, methods=["GET"]),
        Route("/me/requests/{order_id}/take", member.take, methods=["POST"]),
        Route("/me/orders/{order_id}/rate", member.rate, methods=["POST"]),
        Route("/public/{order_id}/dispute", member.dispute, methods=["POST"]),
    ]
