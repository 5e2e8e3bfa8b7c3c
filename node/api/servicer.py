"""The NodeService servicer: messages in, use-case calls, messages out. Nothing else.

Each mutating call runs through ``NodeApp.execute_once``: the idempotency key is
checked first, then a stored first response is looked up, and only then is the
request translated and the use-case run, all in one transaction. The stored
response is the serialized reply, so a retry gets exactly the first answer.
The request's fingerprint is SHA-256 over the method name and the request
serialized deterministically with its idempotency_key cleared.

Read calls run through ``NodeApp.query``. Errors become statuses where every call is
observed (``runtime.observe``); there are no business rules here.

A call that may open a claim with another district (AcceptOrder, MovePerson) and is
refused because the node does not know that district as admitted is tried once more
after the link has asked the clearinghouse for the city's acts again: the district may
have been admitted since the node last asked.
"""

# ruff: noqa: N802 - rpc method names are the contract's (CamelCase), not ours to choose

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf.message import Message

from node.api import convert
from node.api.auth import LoginThrottle, bearer, caller, client_address, refuse_login
from node.domain.access import Actor, Principal, Role
from node.domain.claims import Role as ClaimRole
from node.domain.directory import HomeLookup
from node.domain.orders import OrderState
from node.link.statement import RPC_SECONDS, Fetched, ProofRefused
from node.usecases import (
    access,
    claims,
    consent,
    ledger,
    log_watch,
    logins,
    orders,
    people,
    policies,
    statement,
)
from node.usecases.app import NodeApp, Tx
from node.usecases.views import HistoryView, OrderView
from runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    Refusal,
    ResourceExhausted,
    Unavailable,
)
from timebank import passbook
from timebank.transparency import LogKeys
from timebank.v1 import node_pb2 as pb
from timebank.v1 import node_pb2_grpc

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["NodeService"].full_name
DEFAULT_LIST_LIMIT = 100
DEFAULT_HISTORY_LIMIT = 100
DEFAULT_RECORD_LIMIT = 1000
DEFAULT_PUBLIC_LIMIT = 50
DEFAULT_FIND_LIMIT = 20
DEFAULT_OPEN_LIMIT = 20
DEFAULT_POINTS_LIMIT = 100

M = TypeVar("M", bound=Message)

#: Refusals after which the city's acts are asked for again, and the call tried once more.
_UNKNOWN_DISTRICT = frozenset({"DISTRICT_NOT_ADMITTED", "ADMISSIONS_UNKNOWN"})
#: What a passbook leaves of its caller's deadline for the rest of the call (reading
#: the ledger, signing, sending), and the least it gives the clearinghouse.
_PASSBOOK_MARGIN_SECONDS = 1.0
_PASSBOOK_LEAST_SECONDS = 0.5


class Passbooks(Protocol):
    """What the serving node makes passbooks with (its link to the clearinghouse,
    ``node.link.clearing_link.ClearingLink``): the city's proofs, and its own key."""

    def passbook_proofs(self, index: int, seconds: float = ...) -> Fetched: ...

    def sign_statement(self, statement: dict[str, Any]) -> dict[str, Any]: ...


def fingerprint(method: str, request: Message, account_id: int = 0) -> bytes:
    """SHA-256 over the method name, the caller's account and the request without its
    idempotency key: another caller's retry under the same key is a different request
    (ALREADY_EXISTS), never the first caller's answer."""
    stripped = type(request)()
    stripped.CopyFrom(request)
    stripped.ClearField("idempotency_key")
    body = stripped.SerializeToString(deterministic=True)
    who = f"{account_id}".encode("ascii")
    return hashlib.sha256(method.encode("ascii") + b"\x00" + who + b"\x00" + body).digest()


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


class NodeServicer(node_pb2_grpc.NodeServiceServicer):
    """Implements every rpc of ``timebank.v1.NodeService`` over one ``NodeApp``."""

    def __init__(self, app: NodeApp, clearinghouse: str = "",
                 wake_sender: Callable[[], None] | None = None,
                 clearinghouse_key: bytes | None = None,
                 refresh_admissions: Callable[[], object] | None = None,
                 look_up: Callable[[str], HomeLookup] | None = None,
                 log_keys: Callable[[], LogKeys] | None = None,
                 passbooks: Passbooks | None = None) -> None:
        self._app = app
        self._passbooks = passbooks  # None: the node runs alone and anchors nothing
        #: The clearinghouse keys trusted now (rotations the city signed, ADR 0018).
        self._log_keys = log_keys
        self._clearinghouse = clearinghouse
        self._wake = wake_sender
        self._clearinghouse_key = clearinghouse_key
        self._refresh_admissions = refresh_admissions
        self._look_up = look_up  # the city directory, through the node's link
        rules = app.node.logins
        self._throttle = LoginThrottle(rules.address_max_failures,
                                       timedelta(minutes=rules.address_window_minutes))

    def _once(self, name: str, key: str, request: Message, fn: Callable[[Tx], M],
              response: type[M]) -> M:
        method = f"{SERVICE_NAME}/{name}"
        raw = self._app.execute_once(key, method,
                                     fingerprint(method, request, caller().account_id), fn,
                                     _serialize)
        if self._wake is not None:  # the call may have queued a message for the city
            self._wake()
        return response.FromString(raw)

    def _once_admitted(self, name: str, key: str, request: Message, fn: Callable[[Tx], M],
                       response: type[M]) -> M:
        """``_once``; refused for a district this node does not know as admitted, once
        more after asking the clearinghouse for the city's acts (if it can be reached:
        otherwise the first refusal stands)."""
        try:
            return self._once(name, key, request, fn, response)
        except Refusal as e:
            if e.reason not in _UNKNOWN_DISTRICT or self._refresh_admissions is None:
                raise
            try:
                self._refresh_admissions()
            except Exception:  # unreachable or refused: the first answer stands
                raise e from None
        return self._once(name, key, request, fn, response)

    # ------------------------------------------------------------ sessions and accounts

    def Login(self, request: pb.LoginRequest, context: grpc.ServicerContext) -> pb.LoginResponse:
        address = client_address(context)
        now = self._app.clock.now()
        self._throttle.check(address, now)
        if bool(request.password) == bool(request.code):
            raise InvalidArgument("请提供密码或一次性验证码之一 (give a password or a one-time "
                                  "code, not both)", "MISSING_SECRET")
        outcome = self._app.execute(logins.login, request.login, request.password or
                                    request.code, with_code=bool(request.code))
        if outcome.principal is None:
            self._throttle.failed(address, now)
            raise refuse_login(outcome.refusal)
        return pb.LoginResponse(token=outcome.token,
                                expires_at=convert.timestamp(outcome.expires_at),
                                caller=_caller_pb(outcome.principal, outcome.expires_at))

    def Logout(self, request: pb.LogoutRequest,
               context: grpc.ServicerContext) -> pb.LogoutResponse:
        self._app.execute(logins.logout, bearer(context.invocation_metadata()))
        return pb.LogoutResponse()

    def WhoAmI(self, request: pb.WhoAmIRequest, context: grpc.ServicerContext) -> pb.WhoAmIResponse:
        expires = self._app.query(logins.session_expiry, bearer(context.invocation_metadata()))
        return pb.WhoAmIResponse(caller=_caller_pb(caller(), expires))

    # ------------------------------------------------------------ service points and staff

    def RegisterServicePoint(self, request: pb.RegisterServicePointRequest,
                             context: grpc.ServicerContext) -> pb.RegisterServicePointResponse:
        def run(tx: Tx) -> pb.ServicePoint:
            return convert.service_point_pb(people.register_service_point(
                tx, request.code, request.name, request.street))

        return pb.RegisterServicePointResponse(
            service_point=self._once("RegisterServicePoint", request.idempotency_key, request,
                                     run, pb.ServicePoint))

    def RegisterStaff(self, request: pb.RegisterStaffRequest,
                      context: grpc.ServicerContext) -> pb.RegisterStaffResponse:
        def run(tx: Tx) -> pb.Staff:
            point = convert.required_id(request.service_point_id, "service_point_id")
            return convert.staff_pb(people.register_staff(tx, request.name, point))

        return pb.RegisterStaffResponse(
            staff=self._once("RegisterStaff", request.idempotency_key, request, run, pb.Staff))

    # ------------------------------------------------------------ people

    def EnrolPerson(self, request: pb.EnrolPersonRequest,
                    context: grpc.ServicerContext) -> pb.EnrolPersonResponse:
        answer = self._directory_says(request)

        def run(tx: Tx) -> pb.Person:
            kind = convert.person_kind(request.kind)
            point = convert.optional_id(request.service_point_id, "service_point_id")
            who = caller()
            access.require_service_point(who, point)
            return convert.person_pb(people.enrol_person(
                tx, kind, request.name, request.id_number, request.phone, request.priority,
                point, request.home_node_id, answer, actor=access.actor(who)))

        return pb.EnrolPersonResponse(
            person=self._once("EnrolPerson", request.idempotency_key, request, run, pb.Person))

    def _directory_says(self, request: pb.EnrolPersonRequest) -> HomeLookup | None:
        """Where the city directory keeps the hours of the person to be enrolled, asked
        before the transaction (a call to the clearinghouse never holds the writer); None
        without a link, or when the request is malformed (the use-case refuses it)."""
        if self._look_up is None:
            return None
        try:
            ref = people.city_ref(self._app.node, convert.person_kind(request.kind),
                                  request.id_number)
        except Refusal:
            return None
        return self._look_up(ref)

    def GetPerson(self, request: pb.GetPersonRequest,
                  context: grpc.ServicerContext) -> pb.GetPersonResponse:
        person_id = convert.required_id(request.person_id, "person_id")
        return pb.GetPersonResponse(
            person=convert.person_pb(self._app.query(_read_person, caller(), people.get_person,
                                                     person_id)))

    def FindPeople(self, request: pb.FindPeopleRequest,
                   context: grpc.ServicerContext) -> pb.FindPeopleResponse:
        point = convert.optional_id(request.service_point_id, "service_point_id")
        after_id = convert.optional_id(request.after_id, "after_id")
        limit = convert.limit(request.limit, DEFAULT_FIND_LIMIT)
        found = self._app.query(people.find_people, caller(), request.query, point, after_id,
                                limit)
        return pb.FindPeopleResponse(people=convert.people_pb(found))

    def UpdatePerson(self, request: pb.UpdatePersonRequest,
                     context: grpc.ServicerContext) -> pb.UpdatePersonResponse:
        def run(tx: Tx) -> pb.Person:
            person_id = convert.required_id(request.person_id, "person_id")
            staff_id = convert.optional_id(request.staff_id, "staff_id")
            who = caller()
            actor = access.actor(who, staff_id=staff_id)
            access.require_person(tx, who, person_id)
            point: int | None = None
            if request.HasField("service_point_id"):
                point = convert.optional_id(request.service_point_id, "service_point_id")
                access.require_move(tx, who, person_id, point)
            priority = request.priority if request.HasField("priority") else None
            phone = request.phone if request.HasField("phone") else None
            name = request.name if request.HasField("name") else None
            return convert.person_pb(people.update_person(
                tx, person_id, 0, priority, phone, request.reason, name=name,
                service_point_id=point, actor=actor))

        return pb.UpdatePersonResponse(
            person=self._once("UpdatePerson", request.idempotency_key, request, run, pb.Person))

    def LinkPeople(self, request: pb.LinkPeopleRequest,
                   context: grpc.ServicerContext) -> pb.LinkPeopleResponse:
        def run(tx: Tx) -> pb.Link:
            person_id = convert.required_id(request.person_id, "person_id")
            other_id = convert.required_id(request.other_id, "other_id")
            relation = convert.relation(request.kind)
            staff_id = convert.optional_id(request.staff_id, "staff_id")
            who = caller()
            actor = access.actor(who, staff_id=staff_id)
            access.require_person(tx, who, person_id)
            access.require_person(tx, who, other_id)
            return convert.link_pb(people.link_people(tx, person_id, other_id, relation,
                                                      actor.staff_id, actor=actor))

        return pb.LinkPeopleResponse(
            link=self._once("LinkPeople", request.idempotency_key, request, run, pb.Link))

    def ListServicePoints(self, request: pb.ListServicePointsRequest,
                          context: grpc.ServicerContext) -> pb.ListServicePointsResponse:
        after_id = convert.optional_id(request.after_id, "after_id")
        limit = convert.limit(request.limit, DEFAULT_POINTS_LIMIT)
        found = self._app.query(people.list_service_points, after_id, limit)
        return pb.ListServicePointsResponse(
            service_points=[convert.service_point_pb(v) for v in found])

    # ------------------------------------------------------------ the service loop

    def RequestOrder(self, request: pb.RequestOrderRequest,
                     context: grpc.ServicerContext) -> pb.RequestOrderResponse:
        def run(tx: Tx) -> pb.Order:
            recipient_id = convert.required_id(request.recipient_id, "recipient_id")
            source = convert.payment_source(request.payment_source)
            payer_id = convert.optional_id(request.payer_id, "payer_id")
            requested_by = _actor(tx, request.HasField("requested_by"),
                                  request.requested_by, "requested_by")
            access.require_person(tx, caller(), recipient_id)
            return convert.order_pb(orders.request_order(
                tx, recipient_id, request.category, request.planned_minutes, source,
                payer_id, requested_by, request.note))

        return pb.RequestOrderResponse(
            order=self._once("RequestOrder", request.idempotency_key, request, run, pb.Order))

    def AcceptOrder(self, request: pb.AcceptOrderRequest,
                    context: grpc.ServicerContext) -> pb.AcceptOrderResponse:
        def run(tx: Tx) -> pb.Order:
            order_id = convert.required_id(request.order_id, "order_id")
            volunteer_id = convert.required_id(request.volunteer_id, "volunteer_id")
            who = caller()
            if who.role is not Role.MEMBER:  # a member takes any open order, as themself
                access.require_order(tx, who, order_id)
            actor = access.actor_for(tx, who, person_id=volunteer_id)
            return convert.order_pb(orders.accept_order(tx, order_id, volunteer_id,
                                                        actor=actor))

        return pb.AcceptOrderResponse(
            order=self._once_admitted("AcceptOrder", request.idempotency_key, request, run,
                                      pb.Order))

    def CheckIn(self, request: pb.CheckInRequest,
                context: grpc.ServicerContext) -> pb.CheckInResponse:
        def run(tx: Tx) -> pb.Order:
            order_id = convert.required_id(request.order_id, "order_id")
            at = convert.time_or_none(request.HasField("at"), request.at, "at")
            return convert.order_pb(orders.check_in(tx, order_id, at,
                                                    actor=_order_actor(tx, order_id)))

        return pb.CheckInResponse(
            order=self._once("CheckIn", request.idempotency_key, request, run, pb.Order))

    def CheckOut(self, request: pb.CheckOutRequest,
                 context: grpc.ServicerContext) -> pb.CheckOutResponse:
        def run(tx: Tx) -> pb.Order:
            order_id = convert.required_id(request.order_id, "order_id")
            at = convert.time_or_none(request.HasField("at"), request.at, "at")
            return convert.order_pb(orders.check_out(tx, order_id, at,
                                                     actor=_order_actor(tx, order_id)))

        return pb.CheckOutResponse(
            order=self._once("CheckOut", request.idempotency_key, request, run, pb.Order))

    def VerifyOrder(self, request: pb.VerifyOrderRequest,
                    context: grpc.ServicerContext) -> pb.VerifyOrderResponse:
        def run(tx: Tx) -> pb.Order:
            order_id = convert.required_id(request.order_id, "order_id")
            access.require_order(tx, caller(), order_id)
            verifier = _actor(tx, request.HasField("verifier"), request.verifier, "verifier")
            return convert.order_pb(orders.verify_order(tx, order_id, verifier,
                                                        request.rating, request.comment))

        return pb.VerifyOrderResponse(
            order=self._once("VerifyOrder", request.idempotency_key, request, run, pb.Order))

    def DisputeOrder(self, request: pb.DisputeOrderRequest,
                     context: grpc.ServicerContext) -> pb.DisputeOrderResponse:
        def run(tx: Tx) -> pb.Order:
            order_id = convert.required_id(request.order_id, "order_id")
            raised_by = _actor(tx, request.HasField("raised_by"), request.raised_by,
                               "raised_by")
            return convert.order_pb(orders.dispute_order(tx, order_id, raised_by,
                                                         request.reason))

        return pb.DisputeOrderResponse(
            order=self._once("DisputeOrder", request.idempotency_key, request, run, pb.Order))

    def ResolveDispute(self, request: pb.ResolveDisputeRequest,
                       context: grpc.ServicerContext) -> pb.ResolveDisputeResponse:
        def run(tx: Tx) -> pb.Order:
            order_id = convert.required_id(request.order_id, "order_id")
            staff_id = convert.optional_id(request.staff_id, "staff_id")
            who = caller()
            actor = access.actor(who, staff_id=staff_id)
            access.require_order(tx, who, order_id)
            upheld = convert.uphold(request.outcome)
            return convert.order_pb(orders.resolve_dispute(
                tx, order_id, 0, upheld, request.corrected_minutes, request.resolution,
                actor=actor))

        return pb.ResolveDisputeResponse(
            order=self._once("ResolveDispute", request.idempotency_key, request, run, pb.Order))

    def CancelOrder(self, request: pb.CancelOrderRequest,
                    context: grpc.ServicerContext) -> pb.CancelOrderResponse:
        def run(tx: Tx) -> pb.Order:
            order_id = convert.required_id(request.order_id, "order_id")
            access.require_order(tx, caller(), order_id)
            cancelled_by = _actor(tx, request.HasField("cancelled_by"), request.cancelled_by,
                                  "cancelled_by")
            return convert.order_pb(orders.cancel_order(tx, order_id, cancelled_by,
                                                        request.reason))

        return pb.CancelOrderResponse(
            order=self._once("CancelOrder", request.idempotency_key, request, run, pb.Order))

    def RecordOrder(self, request: pb.RecordOrderRequest,
                    context: grpc.ServicerContext) -> pb.RecordOrderResponse:
        def run(tx: Tx) -> pb.Order:
            order_id = convert.required_id(request.order_id, "order_id")
            access.require_order(tx, caller(), order_id)
            return convert.order_pb(orders.record_order(tx, order_id))

        return pb.RecordOrderResponse(
            order=self._once("RecordOrder", request.idempotency_key, request, run, pb.Order))

    def RecordDueOrders(self, request: pb.RecordDueOrdersRequest,
                        context: grpc.ServicerContext) -> pb.RecordDueOrdersResponse:
        def run(tx: Tx) -> pb.RecordDueOrdersResponse:
            limit = convert.limit(request.limit, DEFAULT_RECORD_LIMIT)
            return pb.RecordDueOrdersResponse(
                recorded=convert.orders_pb(orders.record_due_orders(tx, limit)))

        return self._once("RecordDueOrders", request.idempotency_key, request, run,
                          pb.RecordDueOrdersResponse)

    def RateOrder(self, request: pb.RateOrderRequest,
                  context: grpc.ServicerContext) -> pb.RateOrderResponse:
        def run(tx: Tx) -> pb.Order:
            order_id = convert.required_id(request.order_id, "order_id")
            return convert.order_pb(orders.rate_order(
                tx, order_id, request.rating, request.comment,
                actor=_order_actor(tx, order_id)))

        return pb.RateOrderResponse(
            order=self._once("RateOrder", request.idempotency_key, request, run, pb.Order))

    def GetOrder(self, request: pb.GetOrderRequest,
                 context: grpc.ServicerContext) -> pb.GetOrderResponse:
        order_id = convert.required_id(request.order_id, "order_id")
        return pb.GetOrderResponse(
            order=convert.order_pb(self._app.query(_read_order, caller(), order_id)))

    def ListOrders(self, request: pb.ListOrdersRequest,
                   context: grpc.ServicerContext) -> pb.ListOrdersResponse:
        person_id = convert.optional_id(request.person_id, "person_id")
        state = convert.order_state_filter(request.state)
        after_id = convert.optional_id(request.after_id, "after_id")
        limit = convert.limit(request.limit, DEFAULT_LIST_LIMIT)
        found = self._app.query(_list_orders, caller(), person_id, state, after_id, limit)
        return pb.ListOrdersResponse(orders=convert.orders_pb(found))

    def ListOpenRequests(self, request: pb.ListOpenRequestsRequest,
                         context: grpc.ServicerContext) -> pb.ListOpenRequestsResponse:
        point = convert.optional_id(request.service_point_id, "service_point_id")
        after_id = convert.optional_id(request.after_id, "after_id")
        limit = convert.limit(request.limit, DEFAULT_OPEN_LIMIT)
        found = self._app.query(orders.open_requests, caller(), point, after_id, limit)
        return pb.ListOpenRequestsResponse(requests=[convert.open_request_pb(v) for v in found])

    def ListPublicOrders(self, request: pb.ListPublicOrdersRequest,
                         context: grpc.ServicerContext) -> pb.ListPublicOrdersResponse:
        """Public (``node.domain.access.PUBLIC``): served without a caller, so it reads
        nothing of one; the use-case gives only what the public may see."""
        after_id = convert.optional_id(request.after_id, "after_id")
        limit = convert.limit(request.limit, DEFAULT_PUBLIC_LIMIT)
        found = self._app.query(orders.public_orders, after_id, limit)
        return pb.ListPublicOrdersResponse(orders=[convert.public_order_pb(v) for v in found])

    # ------------------------------------------------------------ hours outside the loop

    def Donate(self, request: pb.DonateRequest,
               context: grpc.ServicerContext) -> pb.DonateResponse:
        def run(tx: Tx) -> pb.LedgerTransaction:
            person_id = convert.required_id(request.person_id, "person_id")
            who = caller()
            access.require_person(tx, who, person_id)
            actor = access.actor(who, person_id=person_id)  # a member gives their own hours
            return convert.transaction_pb(ledger.donate(tx, person_id, request.minutes,
                                                        actor=actor))

        return pb.DonateResponse(
            transaction=self._once("Donate", request.idempotency_key, request, run,
                                   pb.LedgerTransaction))

    def Grant(self, request: pb.GrantRequest,
              context: grpc.ServicerContext) -> pb.GrantResponse:
        def run(tx: Tx) -> pb.LedgerTransaction:
            person_id = convert.required_id(request.person_id, "person_id")
            staff_id = convert.optional_id(request.staff_id, "staff_id")
            who = caller()
            actor = access.actor(who, staff_id=staff_id)
            access.require_person(tx, who, person_id)
            return convert.transaction_pb(ledger.grant(tx, person_id, request.minutes,
                                                       0, request.memo, actor=actor))

        return pb.GrantResponse(
            transaction=self._once("Grant", request.idempotency_key, request, run,
                                   pb.LedgerTransaction))

    def ReverseTransaction(self, request: pb.ReverseTransactionRequest,
                           context: grpc.ServicerContext) -> pb.ReverseTransactionResponse:
        def run(tx: Tx) -> pb.LedgerTransaction:
            seq = convert.required_id(request.seq, "seq", convert.MAX_SEQ)
            staff_id = convert.optional_id(request.staff_id, "staff_id")
            who = caller()
            actor = access.actor(who, staff_id=staff_id)
            access.require_entry(tx, who, seq)
            return convert.transaction_pb(ledger.reverse(tx, seq, 0, request.reason,
                                                         actor=actor))

        return pb.ReverseTransactionResponse(
            transaction=self._once("ReverseTransaction", request.idempotency_key, request,
                                   run, pb.LedgerTransaction))

    # ------------------------------------------------------------ reading

    def GetBalance(self, request: pb.GetBalanceRequest,
                   context: grpc.ServicerContext) -> pb.GetBalanceResponse:
        person_id = convert.required_id(request.person_id, "person_id")
        return convert.balance_pb(self._app.query(_read_person, caller(), ledger.balance,
                                                  person_id))

    def GetHistory(self, request: pb.GetHistoryRequest,
                   context: grpc.ServicerContext) -> pb.GetHistoryResponse:
        person_id = convert.required_id(request.person_id, "person_id")
        after_seq = convert.optional_id(request.after_seq, "after_seq", convert.MAX_SEQ)
        before_seq = convert.optional_id(request.before_seq, "before_seq", convert.MAX_SEQ)
        limit = convert.limit(request.limit, DEFAULT_HISTORY_LIMIT)
        return convert.history_pb(self._app.query(_history, caller(), person_id, after_seq,
                                                  limit, request.newest_first, before_seq))

    def GetPassbook(self, request: pb.GetPassbookRequest,
                    context: grpc.ServicerContext) -> pb.GetPassbookResponse:
        """The person's signed statement as of the latest anchor: who may read their
        balance and history is checked before the clearinghouse is asked for anything,
        and again as the statement is read. The wait for the clearinghouse is bounded
        by ``RPC_SECONDS`` and by the caller's own deadline. Each file sent is kept, by
        the digest signed (the code on paper): asked with ``code``, that file again,
        byte for byte, without asking the clearinghouse."""
        person_id = convert.required_id(request.person_id, "person_id")
        who = caller()
        if request.code:
            code = _passbook_code(request.code)
            kept = self._app.query(_read_person, who, lambda tx, person: statement.issued(
                tx, person, code), person_id)
            return _passbook_pb(kept.statement_file, passbook.load(kept.statement_file),
                                kept.warning)
        anchor = self._app.query(_read_person, who, statement.passbook_anchor, person_id)
        if self._passbooks is None:
            raise FailedPrecondition("本节点未连接市清算中心，不能出具存折 / this node is not "
                                     "connected to a city clearinghouse, so it cannot prove a "
                                     "passbook in the city's log", "NOT_FEDERATED")
        try:
            fetched = self._passbooks.passbook_proofs(int(anchor.log_index),
                                                      _wait_for_city(context))
        except ProofRefused as e:
            raise Unavailable(str(e), "LOG_PROOF_REFUSED") from None
        # made as of the newest thing it cites, not of this moment: asked again while
        # nothing changed, the node makes the same file (the same code), and keeps one
        made_at = anchor.anchored_at
        if fetched.proof is not None and fetched.proof.head.HasField("at"):
            made_at = max(made_at, fetched.proof.head.at.ToDatetime(tzinfo=UTC))
        doc = self._app.query(_read_person, who, lambda tx, person: statement.build_statement(
            tx, person, anchor, fetched.proof, rosters=fetched.rosters, made_at=made_at),
            person_id)
        signed = self._passbooks.sign_statement(doc)
        data = passbook.file_bytes(signed)
        if len(data) > statement.MAX_SERVED_BYTES:
            raise ResourceExhausted(
                "存折过长，无法在线发送，请区运维员用 timebank node statement 出具 / the "
                f"passbook is {len(data)} bytes, more than the API sends; the district's "
                "operator makes it with `timebank node statement`", "PASSBOOK_TOO_LARGE")
        self._app.execute(statement.keep_issued, person_id, data,
                          passbook.signed_digest(signed), fetched.warning, made_at)
        return _passbook_pb(data, signed, fetched.warning)

    def GetPolicy(self, request: pb.GetPolicyRequest,
                  context: grpc.ServicerContext) -> pb.GetPolicyResponse:
        return convert.policy_pb(policies.view(self._app.policies, self._app.clock.now()))

    def CheckLedger(self, request: pb.CheckLedgerRequest,
                    context: grpc.ServicerContext) -> pb.CheckLedgerResponse:
        return convert.ledger_report_pb(self._app.query(ledger.check_ledger))

    # ------------------------------------------------------------ claims with other districts

    def MovePerson(self, request: pb.MovePersonRequest,
                   context: grpc.ServicerContext) -> pb.MovePersonResponse:
        def run(tx: Tx) -> pb.Claim:
            person_id = convert.required_id(request.person_id, "person_id")
            self._require_federated()
            return convert.claim_pb(claims.start_move(tx, person_id, request.to_node_id))

        return pb.MovePersonResponse(
            claim=self._once_admitted("MovePerson", request.idempotency_key, request, run,
                                      pb.Claim))

    def GetClaim(self, request: pb.GetClaimRequest,
                 context: grpc.ServicerContext) -> pb.GetClaimResponse:
        claim_id = convert.claim_id(request.claim_id)
        who = caller()

        def read(tx: Tx) -> claims.ClaimView:
            found = claims.get_claim(tx, claim_id)
            order_id = found.order_id if found.role is ClaimRole.CREDITOR else 0
            access.require_claim(tx, who, order_id, found.person_id)
            return found

        return pb.GetClaimResponse(claim=convert.claim_pb(self._app.query(read)))

    def ListClaims(self, request: pb.ListClaimsRequest,
                   context: grpc.ServicerContext) -> pb.ListClaimsResponse:
        state = convert.claim_state_filter(request.state)
        limit = convert.limit(request.limit, DEFAULT_LIST_LIMIT)
        found = self._app.query(claims.list_claims, state, request.after_claim_id[:36], limit)
        return pb.ListClaimsResponse(claims=[convert.claim_pb(c) for c in found])

    def GetClearing(self, request: pb.GetClearingRequest,
                    context: grpc.ServicerContext) -> pb.GetClearingResponse:
        return convert.clearing_pb(self._app.query(claims.clearing_view),
                                   self._clearinghouse)

    # ------------------------------------------------------------ consent

    def GrantConsent(self, request: pb.GrantConsentRequest,
                     context: grpc.ServicerContext) -> pb.GrantConsentResponse:
        def run(tx: Tx) -> pb.Consent:
            payer_id = convert.required_id(request.payer_id, "payer_id")
            grantee_id = convert.optional_id(request.grantee_id, "grantee_id")
            kind = convert.consent_kind(request.kind)
            until = convert.time_or_none(request.HasField("expires_at"), request.expires_at,
                                         "expires_at")
            order_id = convert.optional_id(request.order_id, "order_id")
            access.require_person(tx, caller(), payer_id)
            by = _actor(tx, request.HasField("granted_by"), request.granted_by, "granted_by")
            return convert.consent_pb(consent.grant_consent(
                tx, payer_id, grantee_id, request.grantee_ref[:80], kind, request.max_minutes,
                request.total_minutes, until, order_id, by,
                grantee_id_number=request.grantee_id_number[:32]))

        return pb.GrantConsentResponse(
            consent=self._once("GrantConsent", request.idempotency_key, request, run, pb.Consent))

    def RevokeConsent(self, request: pb.RevokeConsentRequest,
                      context: grpc.ServicerContext) -> pb.RevokeConsentResponse:
        def run(tx: Tx) -> pb.Consent:
            consent_id = convert.required_id(request.consent_id, "consent_id")
            access.require_consent(tx, caller(), consent_id)
            by = _actor(tx, request.HasField("revoked_by"), request.revoked_by, "revoked_by")
            return convert.consent_pb(consent.revoke_consent(tx, consent_id, by))

        return pb.RevokeConsentResponse(
            consent=self._once("RevokeConsent", request.idempotency_key, request, run, pb.Consent))

    def ListConsents(self, request: pb.ListConsentsRequest,
                     context: grpc.ServicerContext) -> pb.ListConsentsResponse:
        payer_id = convert.required_id(request.payer_id, "payer_id")
        after_id = convert.optional_id(request.after_id, "after_id")
        limit = convert.limit(request.limit, consent.MAX_LIST)
        found = self._app.query(_read_person, caller(), lambda tx, person: consent.list_consents(
            tx, person, after_id, limit), payer_id)
        return pb.ListConsentsResponse(consents=[convert.consent_pb(v) for v in found])

    def GetLogHeads(self, request: pb.GetLogHeadsRequest,
                    context: grpc.ServicerContext) -> pb.GetLogHeadsResponse:
        answer = pb.GetLogHeadsResponse(node_id=self._app.node.node_id)
        if self._clearinghouse_key is None:  # a district alone holds no heads
            return answer
        keys = self._clearinghouse_key if self._log_keys is None else self._log_keys()
        return convert.log_heads_pb(self._app.query(log_watch.status, keys),
                                    answer, self._clearinghouse_key)

    def _require_federated(self) -> None:
        if not self._app.node.federated:
            raise FailedPrecondition("this node is not connected to a city clearinghouse "
                                     "([clearinghouse] address in its configuration)",
                                     "NOT_FEDERATED")


# ---------------------------------------------------------------- who, for whom


def _caller_pb(who: Principal, expires_at: datetime | None) -> pb.Caller:
    return pb.Caller(role=who.role.value, account_id=who.account_id, staff_id=who.staff_id,
                     service_point_id=who.service_point_id, person_id=who.person_id,
                     scopes=sorted(who.scopes), actor=who.label,
                     expires_at=convert.timestamp(expires_at))


def _actor(tx: Tx, has: bool, message: pb.Actor, field: str) -> Actor:
    """The actor of a call whose request may name one in ``field``: the caller, or the
    person staff act for; PERMISSION_DENIED if it names someone the caller is not."""
    named = convert.actor(has, message, field) if has else Actor()
    return access.actor_for(tx, caller(), named.person_id, named.staff_id)


def _order_actor(tx: Tx, order_id: int) -> Actor:
    """The caller, for a volunteer's step of an order they may touch."""
    who = caller()
    access.require_order(tx, who, order_id)
    return access.actor(who)


R = TypeVar("R")


def _read_person(tx: Tx, who: Principal, read: Callable[[Tx, int], R], person_id: int) -> R:
    access.require_person(tx, who, person_id)
    return read(tx, person_id)


def _passbook_code(code: bytes) -> bytes:
    """A passbook's code as asked for: the 32 bytes of the SHA-256 its node signed."""
    if len(code) != hashlib.sha256().digest_size:
        raise InvalidArgument("code 是存折核对码的 32 个字节 / code is the 32 bytes of a "
                              f"passbook's check code, not {len(code)}", "MALFORMED_CODE")
    return code


def _passbook_pb(data: bytes, signed: dict[str, Any], warning: str) -> pb.GetPassbookResponse:
    """The answer for the passbook file ``data`` (``signed``, as read or as made): what a
    page shows, read from the file itself."""
    doc = signed["statement"]
    return pb.GetPassbookResponse(
        statement_json=data, warning=warning, person_name=doc["person"]["name"],
        balance_total_minutes=doc["balance"]["total"], entry_count=len(doc["entries"]),
        anchor_entry_count=doc["anchor"]["entry_count"],
        log_index=doc["anchor"]["log_index"], cosigned=doc["cosigned"] is not None,
        statement_digest=passbook.signed_digest(signed))


def _wait_for_city(context: grpc.ServicerContext) -> float:
    """How long a passbook may wait for the clearinghouse: ``RPC_SECONDS``, and less
    when the caller's deadline is nearer (what is left of it, less a margin)."""
    left = context.time_remaining()
    if left is None:
        return RPC_SECONDS
    return max(_PASSBOOK_LEAST_SECONDS, min(RPC_SECONDS, left - _PASSBOOK_MARGIN_SECONDS))


def _history(tx: Tx, who: Principal, person_id: int, after_seq: int, limit: int,
             newest_first: bool, before_seq: int) -> HistoryView:
    access.require_person(tx, who, person_id)
    return ledger.history(tx, person_id, after_seq, limit, newest_first=newest_first,
                          before_seq=before_seq)


def _read_order(tx: Tx, who: Principal, order_id: int) -> OrderView:
    access.require_order(tx, who, order_id)
    return orders.get_order(tx, order_id)


def _list_orders(tx: Tx, who: Principal, person_id: int, state: OrderState | None,
                 after_id: int, limit: int) -> list[OrderView]:
    if person_id:
        access.require_person(tx, who, person_id)
    elif who.role is Role.MEMBER:
        raise PermissionDenied("成员只能查看本人及关联亲属的订单 (a member lists the orders of "
                               "one person: themself or someone linked to them; set "
                               "person_id)", "NOT_AUTHORISED")
    return orders.list_orders(tx, person_id, state, after_id, limit)
