"""The service point's desk: find a person, read their hours and orders, take a request
by phone and carry it through the service loop (staff and operators).

Every act is the node's rpc, called as the person logged in, with an idempotency key the
page made when it showed the form: a form sent twice (a double click, a reload) is done
once. A refusal is shown on the order's page in the node's own words (Chinese first,
English beside), and nothing changes.
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from timebank.v1 import node_pb2 as pb
from web.app import Pages, page_id
from web.nodes import Failure, NodeError

#: The longest query, note, reason or comment a form may send (the node's own limits
#: are the rule; this only keeps nonsense out of the call).
MAX_TEXT_CHARS = 500
MAX_QUERY_CHARS = 64
MAX_PLANNED_MINUTES = 24 * 60
#: People listed at once at the desk.
DESK_PAGE_SIZE = 50

ORDER_STATES: dict[pb.OrderState.ValueType, str] = {
    pb.ORDER_STATE_REQUESTED: "requested", pb.ORDER_STATE_ACCEPTED: "accepted",
    pb.ORDER_STATE_CHECKED_IN: "checked_in", pb.ORDER_STATE_CHECKED_OUT: "checked_out",
    pb.ORDER_STATE_VERIFIED: "verified", pb.ORDER_STATE_DISPUTED: "disputed",
    pb.ORDER_STATE_RECORDED: "recorded", pb.ORDER_STATE_CANCELLED: "cancelled",
}
ORIGINS: dict[pb.Origin.ValueType, str] = {
    pb.ORIGIN_INDIVIDUAL: "origin_individual", pb.ORIGIN_GROUP: "origin_group",
    pb.ORIGIN_DONATED: "origin_donated", pb.ORIGIN_GRANTED: "origin_granted",
}
PAYMENTS: dict[str, tuple[pb.PaymentSource.ValueType, str]] = {
    "own": (pb.PAYMENT_SOURCE_OWN, "pay_own"),
    "grant": (pb.PAYMENT_SOURCE_CITY_GRANT, "pay_grant"),
    "pool": (pb.PAYMENT_SOURCE_DONATION_POOL, "pay_pool"),
    "relative": (pb.PAYMENT_SOURCE_RELATIVE, "pay_relative"),
}
#: What may be done to an order in each state, in the order the page offers it.
ACTIONS: dict[str, tuple[str, ...]] = {
    "requested": ("accept", "cancel"),
    "accepted": ("check-in", "cancel"),
    "checked_in": ("check-out",),
    "checked_out": ("verify", "dispute"),
    "verified": ("record", "dispute"),
    "disputed": (),
    "recorded": (),
    "cancelled": (),
}


def form_text(form: Any, name: str, limit: int = MAX_TEXT_CHARS) -> str:
    value = form.get(name, "")
    return value.strip()[:limit] if isinstance(value, str) else ""


def form_key(form: Any) -> str:
    """The idempotency key the form was shown with (a fresh one if it has none)."""
    key = form_text(form, "key", 64)
    return key if key else str(uuid.uuid4())


class Desk:
    def __init__(self, pages: Pages) -> None:
        self.pages = pages

    async def find(self, request: Request) -> Response:
        session = self.pages.logged_in(request, desk=True)
        query = request.query_params.get("q", "").strip()[:MAX_QUERY_CHARS]
        people: list[pb.Person] = []
        if query:
            found = await self.pages.ask("FindPeople", pb.FindPeopleRequest(
                query=query, limit=DESK_PAGE_SIZE), session)
            people = list(found.people)
        return self.pages.render(request, "desk.html", session=session, query=query,
                                 people=people, problem="", problem_fields={},
                                 key=str(uuid.uuid4()))

    async def enrol(self, request: Request) -> Response:
        """Enrol an individual at the staff member's own service point (an operator's:
        at none), as the node's EnrolPerson does; then show their page."""
        session = self.pages.logged_in(request, desk=True)
        form = await self.pages.form(request, session)
        name, number = form_text(form, "name", 64), form_text(form, "id_number", 18)
        if not name or not number:
            return self._desk_problem(request, session, "enrol_missing", "", 400)
        try:
            made = await self.pages.ask("EnrolPerson", pb.EnrolPersonRequest(
                idempotency_key=form_key(form), kind=pb.PERSON_KIND_INDIVIDUAL, name=name,
                id_number=number, phone=form_text(form, "phone", 20),
                priority=form_text(form, "priority", 1) == "1",
                service_point_id=session.caller.service_point_id,
                home_node_id=form_text(form, "home_node_id", 6)), session)
        except NodeError as e:
            if e.failure in (Failure.REFUSED, Failure.BAD_REQUEST):
                return self._desk_problem(request, session, "action_refused", e.detail, 409)
            raise
        return RedirectResponse(f"/people/{made.person.id}", status_code=303)

    def _desk_problem(self, request: Request, session: Any, problem: str, detail: str,
                      status: int) -> Response:
        return self.pages.render(request, "desk.html", status=status, session=session,
                                 query="", people=[], problem=problem,
                                 problem_fields={"detail": detail} if detail else {},
                                 key=str(uuid.uuid4()))

    async def person(self, request: Request, problem: str = "", detail: str = "",
                     status: int = 200) -> Response:
        session = self.pages.logged_in(request, desk=True)
        person_id = page_id(request.path_params["person_id"])
        ask = self.pages.ask
        person = (await ask("GetPerson", pb.GetPersonRequest(person_id=person_id),
                            session)).person
        balance = None
        if not person.home_node_id:
            balance = await ask("GetBalance", pb.GetBalanceRequest(person_id=person_id),
                                session)
        orders = (await ask("ListOrders", pb.ListOrdersRequest(person_id=person_id,
                                                               limit=50), session)).orders
        policy = await ask("GetPolicy", pb.GetPolicyRequest(), session)
        return self.pages.render(
            request, "person.html", status=status, session=session, person=person,
            balance=balance, orders=list(reversed(orders)), categories=policy.categories,
            payments=PAYMENTS, origins=ORIGINS, states=ORDER_STATES, problem=problem,
            problem_fields={"detail": detail} if detail else {}, key=str(uuid.uuid4()))

    async def request_order(self, request: Request) -> Response:
        session = self.pages.logged_in(request, desk=True)
        person_id = page_id(request.path_params["person_id"])
        form = await self.pages.form(request, session)
        minutes = form_text(form, "minutes", 8)
        if not minutes.isdigit() or not 1 <= int(minutes) <= MAX_PLANNED_MINUTES:
            return await self.person(request, "request_bad_minutes", status=400)
        source = PAYMENTS.get(form_text(form, "payment", 16))
        if source is None:
            raise NodeError(Failure.BAD_REQUEST, "payment")
        payer = 0
        if source[0] == pb.PAYMENT_SOURCE_RELATIVE:
            found = await self._one(form_text(form, "payer", MAX_QUERY_CHARS), session)
            if isinstance(found, str):
                return await self.person(request, f"payer_{found}", status=409)
            payer = found
        try:
            made = await self.pages.ask("RequestOrder", pb.RequestOrderRequest(
                idempotency_key=form_key(form), recipient_id=person_id,
                category=form_text(form, "category", 32), planned_minutes=int(minutes),
                payment_source=source[0], payer_id=payer, note=form_text(form, "note")),
                session)
        except NodeError as e:
            if e.failure in (Failure.REFUSED, Failure.BAD_REQUEST):
                return await self.person(request, "action_refused", e.detail, 409)
            raise
        return RedirectResponse(f"/orders/{made.order.id}", status_code=303)

    async def order(self, request: Request, problem: str = "", detail: str = "",
                    status: int = 200) -> Response:
        session = self.pages.logged_in(request, desk=True)
        order_id = page_id(request.path_params["order_id"])
        ask = self.pages.ask
        order = (await ask("GetOrder", pb.GetOrderRequest(order_id=order_id),
                           session)).order
        recipient = (await ask("GetPerson", pb.GetPersonRequest(
            person_id=order.recipient_id), session)).person
        volunteer: pb.Person | None = None
        elsewhere = False
        if order.volunteer_id:
            try:
                volunteer = (await ask("GetPerson", pb.GetPersonRequest(
                    person_id=order.volunteer_id), session)).person
            except NodeError as e:  # enrolled at another service point: staff may not
                if e.failure is not Failure.FORBIDDEN:  # read their record, but the order
                    raise  # is theirs to carry on
                elsewhere = True
        state = ORDER_STATES.get(order.state, "requested")  # unspecified: never sent
        return self.pages.render(
            request, "order.html", status=status, session=session, order=order,
            state=state, recipient=recipient, volunteer=volunteer, elsewhere=elsewhere,
            actions=ACTIONS.get(state, ()), problem=problem,
            problem_fields={"detail": detail} if detail else {}, key=str(uuid.uuid4()))

    async def act(self, request: Request) -> Response:
        session = self.pages.logged_in(request, desk=True)
        order_id = page_id(request.path_params["order_id"])
        action = request.path_params["action"]
        form = await self.pages.form(request, session)
        key = form_key(form)
        try:
            if action == "accept":
                volunteer = await self._one(form_text(form, "volunteer", MAX_QUERY_CHARS),
                                            session)
                if isinstance(volunteer, str):
                    return await self.order(request, f"volunteer_{volunteer}", status=409)
                await self.pages.ask("AcceptOrder", pb.AcceptOrderRequest(
                    idempotency_key=key, order_id=order_id, volunteer_id=volunteer),
                    session)
            elif action == "check-in":
                await self.pages.ask("CheckIn", pb.CheckInRequest(
                    idempotency_key=key, order_id=order_id), session)
            elif action == "check-out":
                await self.pages.ask("CheckOut", pb.CheckOutRequest(
                    idempotency_key=key, order_id=order_id), session)
            elif action == "verify":
                rating = form_text(form, "rating", 1)
                await self.pages.ask("VerifyOrder", pb.VerifyOrderRequest(
                    idempotency_key=key, order_id=order_id,
                    rating=int(rating) if rating.isdigit() else 0,
                    comment=form_text(form, "comment")), session)
            elif action == "record":
                await self.pages.ask("RecordOrder", pb.RecordOrderRequest(
                    idempotency_key=key, order_id=order_id), session)
            elif action == "dispute":
                await self.pages.ask("DisputeOrder", pb.DisputeOrderRequest(
                    idempotency_key=key, order_id=order_id,
                    reason=form_text(form, "reason")), session)
            elif action == "cancel":
                await self.pages.ask("CancelOrder", pb.CancelOrderRequest(
                    idempotency_key=key, order_id=order_id,
                    reason=form_text(form, "reason")), session)
            else:
                raise NodeError(Failure.NOT_FOUND)
        except NodeError as e:
            if e.failure in (Failure.REFUSED, Failure.BAD_REQUEST):
                return await self.order(request, "action_refused", e.detail, 409)
            raise
        return RedirectResponse(f"/orders/{order_id}", status_code=303)

    async def _one(self, query: str, session: Any) -> int | str:
        """The one person ``query`` names, or why not: "none" or "several"."""
        if not query:
            return "none"
        found = (await self.pages.ask("FindPeople", pb.FindPeopleRequest(
            query=query, limit=2), session)).people
        if not found:
            return "none"
        return "several" if len(found) > 1 else int(found[0].id)


def routes(pages: Pages) -> list[Route]:
    desk = Desk(pages)
    return [
        Route("/desk", desk.find),
        Route("/people", desk.enrol, methods=["POST"]),
        Route("/people/{person_id}", desk.person, methods=["GET"]),
        Route("/people/{person_id}/orders", desk.request_order, methods=["POST"]),
        Route("/orders/{order_id}", desk.order, methods=["GET"]),
        Route("/orders/{order_id}/{action}", desk.act, methods=["POST"]),
    ]
