"""Helpers for gRPC tests: a client on a real server, snapshots, and refusal checks.

Every call is authenticated (ADR 0016). ``Api.stub`` logs in as whoever the request
names as its actor, so that tests written before logins keep saying what they mean:
a request naming staff 3 is made by staff 3's account, one naming person 5 (or a
volunteer's own step, or a donation of their hours) by person 5's member account, and
anything else by the district's operator. ``Api.login`` makes an account of any role
and ``Api.stub_as`` a stub that sends one token, for the tests of access itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import select

from node.api.server import start_server
from node.cli.client import authorized
from node.domain.access import PUBLIC, Role
from node.domain.clock import ManualClock
from node.storage.schema import Base
from node.usecases import logins
from node.usecases.app import NodeApp, Tx
from runtime.errors import Refusal
from runtime.rpcstatus import ERROR_DOMAIN
from runtime.server import channel_options
from tests.helpers import credit_code, id_card
from timebank.v1 import node_pb2 as pb
from timebank.v1 import node_pb2_grpc

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
UINT64_MAX = 2**64 - 1
TIMEOUT = 10.0


def key() -> str:
    return uuid.uuid4().hex


PASSWORD = "correct horse battery staple"
#: The request fields that name an actor.
ACTOR_FIELDS = ("requested_by", "verifier", "raised_by", "cancelled_by", "granted_by", "revoked_by")
#: Calls a volunteer makes themself (their account, by the order's volunteer).
VOLUNTEER_STEPS = ("CheckIn", "CheckOut", "RateOrder")


def staff(staff_id: int) -> pb.Actor:
    return pb.Actor(staff_id=staff_id)


def person(person_id: int) -> pb.Actor:
    return pb.Actor(person_id=person_id)


@dataclass
class Api:
    """A NodeApp served on 127.0.0.1 and a stub on a real channel to it."""

    app: NodeApp
    clock: ManualClock
    server: grpc.Server
    port: int
    channel: grpc.Channel
    stub: node_pb2_grpc.NodeServiceStub
    ids: dict[str, int] = field(default_factory=dict)
    #: (role, bound) → the session token, when it expires, the account's login
    tokens: dict[tuple[Role, int], tuple[str, datetime, str]] = field(default_factory=dict)
    raw_channel: grpc.Channel | None = None

    # -------------------------------------------------------- who calls

    def login(self, role: Role, bound: int = 0, *, login: str = "") -> str:
        """A session token of an account of ``role`` (staff: bound to staff ``bound``;
        member: to person ``bound``), made directly in the node's database (local
        access is the root of trust) and logged in through the API."""
        cached = self.tokens.get((role, bound))
        if cached is not None and not login and cached[1] > self.clock.now():
            return cached[0]
        if cached is not None and not login:  # the session expired: a new one
            self.app.execute(logins.set_password, cached[2], PASSWORD)
            return self._session(role, bound, cached[2])
        name = login or f"{role.value}-{bound}-{uuid.uuid4().hex[:6]}"
        self.app.execute(logins.add_account, name, role,
                         staff_id=bound if role is Role.STAFF else 0,
                         person_id=bound if role is Role.MEMBER else 0)
        self.app.execute(logins.set_password, name, PASSWORD)
        if login:
            return self._session(role, bound, name, keep=False)
        return self._session(role, bound, name)

    def _session(self, role: Role, bound: int, name: str, *, keep: bool = True) -> str:
        assert self.raw_channel is not None
        session: pb.LoginResponse = node_pb2_grpc.NodeServiceStub(self.raw_channel).Login(
            pb.LoginRequest(login=name, password=PASSWORD), timeout=TIMEOUT)
        if keep:
            self.tokens[(role, bound)] = (session.token,
                                          session.expires_at.ToDatetime(tzinfo=UTC), name)
        return session.token

    def stub_as(self, token: str) -> node_pb2_grpc.NodeServiceStub:
        """A stub on the same server sending ``token`` ("" none) with every call."""
        assert self.raw_channel is not None
        channel = authorized(self.raw_channel, token) if token else self.raw_channel
        return node_pb2_grpc.NodeServiceStub(channel)

    def token_for(self, method: str, request: Any) -> str:
        """The token of whoever ``request`` names as its actor (see the module)."""
        name = method.rpartition("/")[2]
        if name in PUBLIC:
            return ""
        if not isinstance(request, Message):  # raw bytes: the operator sends them
            return self.login(Role.OPERATOR)
        role, bound = self._named(name, request)
        if role is not Role.OPERATOR and bound <= INT32_MAX:
            try:
                return self.login(role, bound)
            except Refusal:  # no such staff member or person: the operator asks
                pass
        return self.login(Role.OPERATOR)

    def _named(self, name: str, request: Any) -> tuple[Role, int]:
        return named_actor(name, request,
                           lambda order_id: self.app.query(_volunteer_of, order_id))

    def prepare(self, method: str, request: Any) -> None:
        """Log in whoever ``request`` will be sent by, before a snapshot is taken."""
        self.token_for(f"/{method}", request)

    def call(self, method: str, request: Any) -> Any:
        rpc: Callable[..., Any] = getattr(self.stub, method)
        return rpc(request, timeout=TIMEOUT)

    # -------------------------------------------------------- builders through the API

    def enrol(self, name: str, birth_year: int = 1960, *, priority: bool = False,
              group: bool = False, point: int = 0) -> pb.Person:
        kind = pb.PERSON_KIND_GROUP if group else pb.PERSON_KIND_INDIVIDUAL
        number = credit_code() if group else id_card(birth_year)
        person: pb.Person = self.stub.EnrolPerson(pb.EnrolPersonRequest(
            idempotency_key=key(), kind=kind, name=name, id_number=number,
            phone="" if group else "13800000000", priority=priority, service_point_id=point),
            timeout=TIMEOUT).person
        return person

    def link(self, person_id: int, other_id: int, kind: pb.LinkKind.ValueType,
             staff_id: int = 0) -> pb.Link:
        link: pb.Link = self.stub.LinkPeople(pb.LinkPeopleRequest(
            idempotency_key=key(), person_id=person_id, other_id=other_id, kind=kind,
            staff_id=staff_id), timeout=TIMEOUT).link
        return link

    def request(self, recipient: int, *, by: pb.Actor, minutes: int = 60,
                source: pb.PaymentSource.ValueType = pb.PAYMENT_SOURCE_CITY_GRANT,
                payer: int = 0, category: str = "cleaning", note: str = "") -> pb.Order:
        order: pb.Order = self.stub.RequestOrder(pb.RequestOrderRequest(
            idempotency_key=key(), recipient_id=recipient, category=category,
            planned_minutes=minutes, payment_source=source, payer_id=payer, requested_by=by,
            note=note), timeout=TIMEOUT).order
        return order

    def accept(self, order_id: int, volunteer: int) -> pb.Order:
        order: pb.Order = self.stub.AcceptOrder(pb.AcceptOrderRequest(
            idempotency_key=key(), order_id=order_id, volunteer_id=volunteer),
            timeout=TIMEOUT).order
        return order

    def check_in(self, order_id: int) -> pb.Order:
        order: pb.Order = self.stub.CheckIn(pb.CheckInRequest(
            idempotency_key=key(), order_id=order_id), timeout=TIMEOUT).order
        return order

    def check_out(self, order_id: int, after_minutes: int = 60) -> pb.Order:
        self.clock.advance(timedelta(minutes=after_minutes))
        order: pb.Order = self.stub.CheckOut(pb.CheckOutRequest(
            idempotency_key=key(), order_id=order_id), timeout=TIMEOUT).order
        return order

    def verify(self, order_id: int, by: pb.Actor, rating: int = 5,
               comment: str = "") -> pb.Order:
        order: pb.Order = self.stub.VerifyOrder(pb.VerifyOrderRequest(
            idempotency_key=key(), order_id=order_id, verifier=by, rating=rating,
            comment=comment), timeout=TIMEOUT).order
        return order

    def record(self, order_id: int) -> pb.Order:
        order: pb.Order = self.stub.RecordOrder(pb.RecordOrderRequest(
            idempotency_key=key(), order_id=order_id), timeout=TIMEOUT).order
        return order

    def balance(self, person_id: int) -> pb.GetBalanceResponse:
        balance: pb.GetBalanceResponse = self.stub.GetBalance(
            pb.GetBalanceRequest(person_id=person_id), timeout=TIMEOUT)
        return balance

    def order(self, order_id: int) -> pb.Order:
        order: pb.Order = self.stub.GetOrder(pb.GetOrderRequest(order_id=order_id),
                                             timeout=TIMEOUT).order
        return order

    def ledger(self) -> pb.CheckLedgerResponse:
        report: pb.CheckLedgerResponse = self.stub.CheckLedger(pb.CheckLedgerRequest(),
                                                        timeout=TIMEOUT)
        return report

    # -------------------------------------------------------- "nothing changed"

    def tables(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table, in primary-key order."""
        out: dict[str, list[tuple[Any, ...]]] = {}
        with self.app.db.read() as conn:
            for table in Base.metadata.sorted_tables:
                rows = conn.execute(select(table).order_by(*table.primary_key.columns))
                out[table.name] = [tuple(r) for r in rows]
        return out

    def snapshot(self) -> tuple[bytes, dict[str, list[tuple[Any, ...]]]]:
        """The ledger report as the API gives it, and the whole database."""
        report = self.ledger()
        assert report.ok, report.problems
        return report.SerializeToString(deterministic=True), self.tables()

    @contextmanager
    def unchanged(self, *, ignore: tuple[str, ...] = ()) -> Iterator[None]:
        """Assert the block changes nothing (but the tables named in ``ignore``)."""
        before = self.snapshot()
        yield
        after = self.snapshot()
        assert after[0] == before[0], "the ledger report changed"
        for name, rows in before[1].items():
            if name not in ignore:
                assert after[1][name] == rows, f"table {name} changed"

    def refused(self, method: str, request: Any, code: grpc.StatusCode, *,
                reason: str | None = None, says: tuple[str, ...] = ()) -> Any:
        """Assert the call fails with ``code`` (and reason/message), changing nothing."""
        self.prepare(method, request)
        with self.unchanged(), pytest.raises(grpc.RpcError) as caught:
            self.call(method, request)
        error = caught.value
        assert_status(error, code, reason=reason, says=says)
        return error


def error_info(error: Any) -> error_details_pb2.ErrorInfo | None:
    status = rpc_status.from_call(error)
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def assert_status(error: Any, code: grpc.StatusCode, *, reason: str | None = None,
                  says: tuple[str, ...] = ()) -> None:
    got_code = error.code()
    details: str = error.details() or ""
    assert got_code is code, f"expected {code.name}, got {got_code.name}: {details}"
    assert len(details) >= 10, f"the message is not meaningful: {details!r}"
    assert "Traceback" not in details
    for fragment in says:
        assert fragment in details, f"{fragment!r} not in {details!r}"
    if reason is not None:
        info = error_info(error)
        assert info is not None, "no google.rpc.ErrorInfo detail"
        assert info.domain == ERROR_DOMAIN
        assert info.reason == reason, f"reason {info.reason}, expected {reason}: {details}"


@contextmanager
def serving(app: NodeApp, clock: ManualClock, *, workers: int = 4,
            max_message_bytes: int = 65536) -> Iterator[Api]:
    running = start_server(app, "127.0.0.1:0", workers=workers,
                           max_message_bytes=max_message_bytes)
    raw = grpc.insecure_channel(f"127.0.0.1:{running.port}", options=channel_options())
    try:
        grpc.channel_ready_future(raw).result(timeout=TIMEOUT)
        tokens: dict[str, Api] = {}
        channel = authorized(raw, lambda method, request: tokens["api"].token_for(
            method, request))
        api = Api(app, clock, running.server, running.port, channel,
                  node_pb2_grpc.NodeServiceStub(channel), raw_channel=raw)
        tokens["api"] = api
        yield api
    finally:
        raw.close()
        running.stop(None)


def named_actor(name: str, request: Any,
                volunteer_of: Callable[[int], int]) -> tuple[Role, int]:
    """Who a request to rpc ``name`` says acts: (STAFF, id) for a staff id it names,
    (MEMBER, id) for a person it names as actor, as the volunteer accepting, as the
    volunteer of the order checked in or out (``volunteer_of``), or as the donor; else
    (OPERATOR, 0)."""
    fields = request.DESCRIPTOR.fields_by_name
    for f in ACTOR_FIELDS:
        if f in fields and request.HasField(f):
            actor = getattr(request, f)
            if actor.staff_id:
                return Role.STAFF, int(actor.staff_id)
            if actor.person_id:
                return Role.MEMBER, int(actor.person_id)
    if "staff_id" in fields and request.staff_id:
        return Role.STAFF, int(request.staff_id)
    if name == "AcceptOrder" and request.volunteer_id:
        return Role.MEMBER, int(request.volunteer_id)
    if name == "Donate" and request.person_id:
        return Role.MEMBER, int(request.person_id)
    if name in VOLUNTEER_STEPS and request.order_id:
        volunteer = volunteer_of(int(request.order_id))
        if volunteer:
            return Role.MEMBER, volunteer
    return Role.OPERATOR, 0


def authenticated(app: NodeApp, channel: grpc.Channel, role: Role = Role.OPERATOR,
                  bound: int = 0) -> node_pb2_grpc.NodeServiceStub:
    """A stub on ``channel`` sending the session of a new account of ``role`` (staff:
    bound to staff ``bound``; member: to person ``bound``), minted on the node's own
    database as `timebank node account` does."""
    token = app.execute(logins.local_session, f"{role.value}-{bound}-{uuid.uuid4().hex[:8]}",
                        role, logins.MAX_TOKEN_DAYS,
                        staff_id=bound if role is Role.STAFF else 0,
                        person_id=bound if role is Role.MEMBER else 0)
    return node_pb2_grpc.NodeServiceStub(authorized(channel, token))


def _volunteer_of(tx: Tx, order_id: int) -> int:
    try:
        return tx.repo.orders.get(order_id).volunteer_id or 0
    except Refusal:
        return 0
