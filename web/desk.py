"""The service point's desk: find a person, read their hours and orders, take a request
by phone and carry it through the service loop; correct a person's name, phone, service
point and priority status, and link them to their family and proxies (staff and
operators).

Every act is the node's rpc, called as the person logged in, with an idempotency key the
page made when it showed the form: a form sent twice (a double click, a reload) is done
once. A refusal is shown on the order's page in the node's own words (Chinese first,
English beside), and nothing changes.
"""

from __future__ import annotations

import unicodedata
import uuid
from dataclasses import dataclass
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from timebank.v1 import node_pb2 as pb
from web import history
from web.app import Pages, page_id
from web.nodes import Failure, NodeError

#: The longest query, note, reason or comment a form may send (the node's own limits
#: are the rule; this only keeps nonsense out of the call).
MAX_TEXT_CHARS = 500
MAX_QUERY_CHARS = 64
MAX_PLANNED_MINUTES = 24 * 60
#: People listed at once at the desk.
DESK_PAGE_SIZE = 50
#: A phone number as the node keeps one (UpdatePerson): at most this many of these.
MAX_PHONE_CHARS = 20
PHONE_CHARS = frozenset("0123456789+- ")
#: A resident ID-card number: 17 digits and a check digit (0-9 or X).
ID_NUMBER_CHARS = 18
#: A person's name as the node keeps one (EnrolPerson, UpdatePerson): at most this many
#: characters, none of these Unicode categories (control, invisible formatting, line
#: and paragraph separators).
MAX_NAME_CHARS = 64
NAME_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})
#: The service points the edit form offers are read in pages of this many
#: (ListServicePoints' largest), at most this many pages.
POINTS_PAGE = 500
MAX_POINT_PAGES = 4

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
#: The node's refusals of an edit said on the person's page (with the HTTP status), beyond
#: the requests it refuses as malformed or in conflict: a move the caller may not make,
#: and a service point the district does not have (a form shown before it changed).
EDIT_REFUSALS = {"MOVE_NOT_ALLOWED": 403, "UNKNOWN_SERVICE_POINT": 409}
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
#: Where the volunteer's rating of the person served may be given (RateOrder).
RATED_STATES = frozenset({"checked_out", "verified", "disputed", "recorded"})
#: A cross-district claim's states as the node names them (``Claim.state``).
CLAIM_STATES = frozenset({"proposed", "accepted", "finishing", "completed", "voided",
                          "rejected", "expired"})
#: The relations LinkPeople records, as the link form names them: how the other person
#: stands to this one (``LinkKind``), and the label of the choice.
LINK_KINDS: dict[str, tuple[pb.LinkKind.ValueType, str]] = {
    "spouse": (pb.LINK_KIND_SPOUSE, "link_kind_spouse"),
    "parent": (pb.LINK_KIND_PARENT, "link_kind_parent"),
    "child": (pb.LINK_KIND_CHILD, "link_kind_child"),
    "sibling": (pb.LINK_KIND_SIBLING, "link_kind_sibling"),
    "grandparent": (pb.LINK_KIND_GRANDPARENT, "link_kind_grandparent"),
    "grandchild": (pb.LINK_KIND_GRANDCHILD, "link_kind_grandchild"),
    "proxy": (pb.LINK_KIND_PROXY, "link_kind_proxy"),
}
#: A link as a person's page lists it: how the other person stands to this one, in the
#: words of the link form. GetPerson returns each of a person's links from that person's
#: side (a daughter's record lists her mother as LINK_KIND_PARENT), so the words are
#: true on both people's pages.
LINK_STANDINGS: dict[pb.LinkKind.ValueType, str] = {
    value: label for value, label in LINK_KINDS.values()}
#: A proxy link on the proxy's own page: the other person is the one they act for.
LINK_REPRESENTED = "link_seen_represented"
#: What the person page may say went wrong with an edit or a link, or was done.
PEOPLE_PROBLEMS = ("edit_bad_phone", "edit_bad_reason", "edit_nothing_changed",
                   "edit_group_priority", "edit_bad_name", "edit_name_needs_reason",
                   "link_bad_id_number", "link_bad_kind",
                   "link_not_found", "link_several", "link_self", "link_group",
                   "action_refused")
PEOPLE_DONE = ("edit_done", "link_done")


def _service_point(text: str, session: Any) -> int:
    """The service point whose people the desk lists: "mine" is the staff member's own
    (an operator's: none), a number names one (the node refuses staff another's)."""
    if text == "mine":
        return int(session.caller.service_point_id)
    return page_id(text) if text else 0


@dataclass(frozen=True, slots=True)
class LinkShown:
    """A link on a person's page: the other person, their name ("": staff may not read
    their record), how they stand to this person (a catalogue key), and when the link
    was made."""

    other_id: int
    name: str
    standing: str
    at: Timestamp


def standing_of(link: pb.PersonLink) -> str | None:
    """The catalogue key of how ``link``'s other person stands to the person whose
    record it is; None for a kind this console does not know (the node sends none)."""
    if link.kind == pb.LINK_KIND_PROXY and link.acts_for_other:
        return LINK_REPRESENTED
    return LINK_STANDINGS.get(link.kind)


def form_text(form: Any, name: str, limit: int = MAX_TEXT_CHARS) -> str:
    value = form.get(name, "")
    return value.strip()[:limit] if isinstance(value, str) else ""


def form_field(form: Any, name: str, limit: int) -> str | None:
    """A field's stripped text, as the node's ``check_text`` takes it; None when it is
    longer than ``limit`` or holds a control character. Refused, never cut short: what
    the node keeps is what was typed."""
    value = form.get(name, "")
    text = value.strip() if isinstance(value, str) else ""
    if len(text) > limit or any(ord(c) < 32 and c not in "\n\t" for c in text):
        return None
    return text


def person_name(text: str) -> bool:
    """Whether ``text`` (stripped) is a name the node keeps: not empty, at most
    ``MAX_NAME_CHARS`` characters, nothing invisible or a control character (the node's
    rule; checked here so the form says so before any call)."""
    return (0 < len(text) <= MAX_NAME_CHARS
            and not any(unicodedata.category(c) in NAME_REFUSED_CATEGORIES for c in text))


@dataclass(frozen=True, slots=True)
class PointChoice:
    """A service point the edit form offers for a person: its id (0: none), name and
    code ("" for none)."""

    id: int
    name: str = ""
    code: str = ""


def phone_number(text: str) -> bool:
    """Whether ``text`` (stripped) is a phone number the node keeps ("": none)."""
    return len(text) <= MAX_PHONE_CHARS and all(c in PHONE_CHARS for c in text)


def id_number(text: str) -> str | None:
    """A whole resident ID-card number, as the node's search reads one (spaces aside,
    a final x as X); None when ``text`` is not one (then the search would take it for
    part of a name, and a link needs the one person the number names)."""
    number = "".join(text.split()).upper()
    if (len(number) == ID_NUMBER_CHARS and number[:17].isascii() and number[:17].isdigit()
            and number[17] in "0123456789X"):
        return number
    return None


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
        point = _service_point(request.query_params.get("point", ""), session)
        after = request.query_params.get("after", "")
        people: list[pb.Person] = []
        if query or point:
            found = await self.pages.ask("FindPeople", pb.FindPeopleRequest(
                query=query, service_point_id=point, limit=DESK_PAGE_SIZE,
                after_id=page_id(after) if after else 0), session)
            people = list(found.people)
        more = people[-1].id if len(people) == DESK_PAGE_SIZE else 0
        return self.pages.render(request, "desk.html", session=session, query=query,
                                 point=point, people=people, more=more, problem="",
                                 problem_fields={}, key=str(uuid.uuid4()))

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
            if e.refuses_the_form:
                return self._desk_problem(request, session, "action_refused", e.detail, 409)
            raise
        return RedirectResponse(f"/people/{made.person.id}", status_code=303)

    def _desk_problem(self, request: Request, session: Any, problem: str, detail: str,
                      status: int) -> Response:
        return self.pages.render(request, "desk.html", status=status, session=session,
                                 query="", point=0, people=[], more=0, problem=problem,
                                 problem_fields={"detail": detail} if detail else {},
                                 key=str(uuid.uuid4()))

    async def person(self, request: Request, problem: str = "", detail: str = "",
                     status: int = 200, typed: dict[str, str] | None = None) -> Response:
        """A person's page. ``typed``: what a refused edit or link form held, shown in it
        again (the record itself is as it was)."""
        session = self.pages.logged_in(request, desk=True)
        person_id = page_id(request.path_params["person_id"])
        ask = self.pages.ask
        person = (await ask("GetPerson", pb.GetPersonRequest(person_id=person_id),
                            session)).person
        links = await self._links(person, session)
        points = await self._point_choices(person, session)
        balance = None
        if not person.home_node_id:
            balance = await ask("GetBalance", pb.GetBalanceRequest(person_id=person_id),
                                session)
        orders = (await ask("ListOrders", pb.ListOrdersRequest(person_id=person_id,
                                                               limit=50), session)).orders
        entries = ([] if balance is None
                   else await history.latest(self.pages, person_id, session))
        policy = await ask("GetPolicy", pb.GetPolicyRequest(), session)
        done = "" if problem else request.query_params.get("done", "")
        return self.pages.render(
            request, "person.html", status=status, session=session, person=person,
            balance=balance, orders=list(reversed(orders)), history=entries,
            categories=policy.categories,
            payments=PAYMENTS, origins=ORIGINS, states=ORDER_STATES, problem=problem,
            problem_fields={"detail": detail} if detail else {}, key=str(uuid.uuid4()),
            is_group=person.kind == pb.PERSON_KIND_GROUP, links=links,
            link_kinds=LINK_KINDS, typed=typed or {}, done=done if done in PEOPLE_DONE
            else "", edit_key=str(uuid.uuid4()), link_key=str(uuid.uuid4()),
            points=points, staff_desk=session.caller.role == "staff")

    async def _point_choices(self, person: pb.Person, session: Any) -> list[PointChoice]:
        """The service points the edit form offers for ``person``: the ones the caller may
        move them to (UpdatePerson's rule: an operator every point of the district, and
        none; staff their own point), with where the person is now always among them (so
        a form sent as shown moves no one)."""
        caller = session.caller
        anywhere = caller.role == "operator"
        here = int(person.service_point_id)
        wanted = {int(caller.service_point_id), here}
        choices = [PointChoice(0)] if anywhere or not here else []
        after = 0
        for _ in range(MAX_POINT_PAGES):
            page = (await self.pages.ask("ListServicePoints", pb.ListServicePointsRequest(
                after_id=after, limit=POINTS_PAGE), session)).service_points
            choices += [PointChoice(int(p.id), p.name, p.code) for p in page
                        if anywhere or p.id in wanted]
            if len(page) < POINTS_PAGE:
                break
            after = int(page[-1].id)
        if here and all(c.id != here for c in choices):
            choices.append(PointChoice(here))  # beyond the pages read: by its number
        return choices

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
            if e.refuses_the_form:
                return await self.person(request, "action_refused", e.detail, 409)
            raise
        return RedirectResponse(f"/orders/{made.order.id}", status_code=303)

    async def edit(self, request: Request) -> Response:
        """Correct a person's name (a typo at enrolment), phone, service point (they moved
        house) and priority status, as UpdatePerson does, with the reason kept on their
        record (a name is corrected only with one). Only what the staff member changed in
        the form is sent (the form holds the values it was shown with): a form shown
        before someone else's change does not undo it. The ID-card number is not on the
        form: it is who the person is (their one account, their city-wide pseudonym), so
        a wrong one is a new enrolment by the district's operator, never an edit."""
        session = self.pages.logged_in(request, desk=True)
        person_id = page_id(request.path_params["person_id"])
        form = await self.pages.form(request, session)
        typed = {"phone": form_text(form, "phone", 64), "reason": form_text(form, "reason"),
                 "name": form_text(form, "name", 2 * MAX_NAME_CHARS),
                 "point": form_text(form, "point", 20)}
        phone = form_field(form, "phone", MAX_PHONE_CHARS)
        if phone is None or not phone_number(phone):
            return await self.person(request, "edit_bad_phone", status=400, typed=typed)
        name: str | None = None  # a form without the field changes no name
        if "name" in form:
            name = form_field(form, "name", 2 * MAX_NAME_CHARS) or ""
            if not person_name(name):
                return await self.person(request, "edit_bad_name", status=400, typed=typed)
        reason = form_field(form, "reason", MAX_TEXT_CHARS)
        if reason is None:
            return await self.person(request, "edit_bad_reason", status=400, typed=typed)
        changes: dict[str, Any] = {}
        if name is not None and name != form_text(form, "name_was", MAX_NAME_CHARS):
            if not reason:
                return await self.person(request, "edit_name_needs_reason", status=400,
                                         typed=typed)
            changes["name"] = name
        if phone != form_text(form, "phone_was", MAX_PHONE_CHARS):
            changes["phone"] = phone
        was = form_text(form, "priority_was", 1)
        priority = form_text(form, "priority", 1) == "1"
        if was in ("0", "1") and priority != (was == "1"):
            changes["priority"] = priority
        point, point_was = form_text(form, "point", 20), form_text(form, "point_was", 20)
        if point and point_was and page_id(point) != page_id(point_was):
            changes["service_point_id"] = page_id(point)
        if not changes:
            return await self.person(request, "edit_nothing_changed", status=400,
                                     typed=typed)
        if priority and "priority" in changes:
            person = (await self.pages.ask("GetPerson", pb.GetPersonRequest(
                person_id=person_id), session)).person
            if person.kind == pb.PERSON_KIND_GROUP:
                return await self.person(request, "edit_group_priority", status=400,
                                         typed=typed)
        try:
            await self.pages.ask("UpdatePerson", pb.UpdatePersonRequest(
                idempotency_key=form_key(form), person_id=person_id, reason=reason,
                **changes), session)
        except NodeError as e:
            if e.refuses_the_form:
                return await self.person(request, "action_refused", e.detail, 409, typed)
            if e.detail.reason in EDIT_REFUSALS:
                return await self.person(request, "action_refused", e.detail,
                                         EDIT_REFUSALS[e.detail.reason], typed)
            raise
        return RedirectResponse(f"/people/{person_id}?done=edit_done", status_code=303)

    async def link(self, request: Request) -> Response:
        """Link another person to this one as LinkPeople does: the other person named by
        their whole ID-card number and found as the desk finds people (so only among the
        people this staff member serves), and how they stand to this person."""
        session = self.pages.logged_in(request, desk=True)
        person_id = page_id(request.path_params["person_id"])
        form = await self.pages.form(request, session)
        code = form_text(form, "kind", 16)
        typed = {"id_number": form_text(form, "id_number", MAX_QUERY_CHARS), "kind": code}
        number = id_number(typed["id_number"])
        if number is None:
            return await self.person(request, "link_bad_id_number", status=400, typed=typed)
        kind = LINK_KINDS.get(code)
        if kind is None:
            return await self.person(request, "link_bad_kind", status=400, typed=typed)
        other = await self._the_one(number, session)
        if isinstance(other, str):
            return await self.person(request, "link_not_found" if other == "none"
                                     else "link_several", status=409, typed=typed)
        if other.id == person_id:
            return await self.person(request, "link_self", status=400, typed=typed)
        person = (await self.pages.ask("GetPerson", pb.GetPersonRequest(
            person_id=person_id), session)).person
        if pb.PERSON_KIND_GROUP in (person.kind, other.kind):
            return await self.person(request, "link_group", status=400, typed=typed)
        try:
            await self.pages.ask("LinkPeople", pb.LinkPeopleRequest(
                idempotency_key=form_key(form), person_id=person_id, other_id=other.id,
                kind=kind[0]), session)
        except NodeError as e:
            if e.refuses_the_form:
                return await self.person(request, "action_refused", e.detail, 409, typed)
            raise
        return RedirectResponse(f"/people/{person_id}?done=link_done", status_code=303)

    async def _links(self, person: pb.Person, session: Any) -> list[LinkShown]:
        """``person``'s links as GetPerson returns them (from this person's side, in the
        order made), each other person named when the caller may read their record."""
        shown: list[LinkShown] = []
        names: dict[int, str] = {}
        for link in person.links:
            standing = standing_of(link)
            if standing is None:
                continue
            other = int(link.other_id)
            if other not in names:
                names[other] = await self._name_of(other, session)
            shown.append(LinkShown(other, names[other], standing, link.linked_at))
        return shown

    async def _name_of(self, person_id: int, session: Any) -> str:
        """``person_id``'s name, or "" when the caller may not read their record."""
        try:
            return str((await self.pages.ask("GetPerson", pb.GetPersonRequest(
                person_id=person_id), session)).person.name)
        except NodeError as e:
            if e.failure in (Failure.FORBIDDEN, Failure.NOT_FOUND):
                return ""
            raise

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
        claim, payer_district = None, ""
        if order.claim_id:  # paid across districts: which district pays, and how far
            claim = (await ask("GetClaim", pb.GetClaimRequest(claim_id=order.claim_id),
                               session)).claim
            payer_district = claim.counterparty_node_id
            if self.pages.district_names is not None:
                names = await run_in_threadpool(self.pages.district_names)
                if payer_district in names:
                    payer_district = f"{names[payer_district]} ({payer_district})"
        return self.pages.render(
            request, "order.html", status=status, session=session, order=order,
            state=state, recipient=recipient, volunteer=volunteer, elsewhere=elsewhere,
            claim=claim, payer_district=payer_district,
            claim_state=claim.state if claim and claim.state in CLAIM_STATES
            else "proposed", rate=state in RATED_STATES and not order.rating_by_volunteer
            and bool(order.volunteer_id), actions=ACTIONS.get(state, ()), problem=problem,
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
            elif action == "rate":
                rating = form_text(form, "rating", 1)
                await self.pages.ask("RateOrder", pb.RateOrderRequest(
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
            if e.refuses_the_form:
                return await self.order(request, "action_refused", e.detail, 409)
            raise
        return RedirectResponse(f"/orders/{order_id}", status_code=303)

    async def _one(self, query: str, session: Any) -> int | str:
        """The one person ``query`` names, or why not: "none" or "several"."""
        found = await self._the_one(query, session)
        return found if isinstance(found, str) else int(found.id)

    async def _the_one(self, query: str, session: Any) -> pb.Person | str:
        """The one person ``query`` finds at the desk, or why not: "none" or "several"."""
        if not query:
            return "none"
        found = (await self.pages.ask("FindPeople", pb.FindPeopleRequest(
            query=query, limit=2), session)).people
        if not found:
            return "none"
        return "several" if len(found) > 1 else found[0]


def routes(pages: Pages) -> list[Route]:
    desk = Desk(pages)
    return [
        Route("/desk", desk.find),
        Route("/people", desk.enrol, methods=["POST"]),
        Route("/people/{person_id}", desk.person, methods=["GET"]),
        Route("/people/{person_id}/orders", desk.request_order, methods=["POST"]),
        Route("/people/{person_id}/edit", desk.edit, methods=["POST"]),
        Route("/people/{person_id}/links", desk.link, methods=["POST"]),
        Route("/orders/{order_id}", desk.order, methods=["GET"]),
        Route("/orders/{order_id}/{action}", desk.act, methods=["POST"]),
    ]
