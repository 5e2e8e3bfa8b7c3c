"""The console's calls to a district node, over its gRPC API (no database, ever).

Each call has a deadline, and an answer the node could not give becomes a
``NodeError`` that says which of the catalogue's messages to show: the page never
waits for ever, and never shows a gRPC status or a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from runtime.rpcerrors import error_reason
from runtime.tls import ClientTls, channel
from timebank.v1 import node_pb2, node_pb2_grpc
from web.sessions import Caller

#: How long a page waits for the node before saying it cannot be reached.
CALL_TIMEOUT_SECONDS = 5.0
#: The longest any one call may be given.
MAX_CALL_SECONDS = 30.0
#: The most public orders a page asks for (the node's own limit is 200).
PUBLIC_PAGE_SIZE = 50
#: The longest detail of a refusal a page repeats.
MAX_DETAIL_CHARS = 300


class Failure(StrEnum):
    """What went wrong, as the catalogue's message key says it."""

    UNAVAILABLE = "error_node_unavailable"
    BAD_REQUEST = "error_bad_request"
    REFUSED = "error_node_refused"
    SIGNED_OUT = "error_signed_out"
    FORBIDDEN = "error_forbidden"
    NOT_FOUND = "error_not_found"


class Detail(str):
    """A refusal's words as the service said them, and its stable ErrorInfo ``reason``
    ("" when none): a page says a reason the catalogue knows (``refusal_<reason>``) in
    the reader's language, and the service's own words otherwise."""

    reason: str

    def __new__(cls, text: str, reason: str = "") -> Detail:
        made = super().__new__(cls, text)
        made.reason = reason
        return made


class NodeError(Exception):
    """The node did not answer, or refused: ``failure`` names the message to show and
    ``detail`` the node's own words (bilingual, as the node's refusals are) with the
    refusal's reason."""

    def __init__(self, failure: Failure, detail: str = "", reason: str = "") -> None:
        super().__init__(f"{failure.value}: {detail}")
        self.failure = failure
        self.detail = Detail(detail[:MAX_DETAIL_CHARS], reason[:64])

    @property
    def refuses_the_form(self) -> bool:
        """Whether the service refused what a form asked (bad input, a rule): the page
        shows it beside the form; any other failure is an error page of its own."""
        return self.failure in (Failure.REFUSED, Failure.BAD_REQUEST)

    @classmethod
    def of(cls, e: grpc.RpcError) -> NodeError:
        code = e.code() if callable(getattr(e, "code", None)) else None
        detail = (e.details() if callable(getattr(e, "details", None)) else "") or ""
        reason = error_reason(e)
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return cls(Failure.UNAVAILABLE)
        if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE):
            return cls(Failure.BAD_REQUEST, detail, reason)
        if code is grpc.StatusCode.UNAUTHENTICATED:
            return cls(Failure.SIGNED_OUT, detail, reason)
        if code is grpc.StatusCode.PERMISSION_DENIED:
            return cls(Failure.FORBIDDEN, detail, reason)
        if code is grpc.StatusCode.NOT_FOUND:
            return cls(Failure.NOT_FOUND, detail, reason)
        return cls(Failure.REFUSED, detail, reason)


@dataclass(frozen=True, slots=True)
class PublicOrder:
    """An order on public display, as the node gave it (names masked by the node)."""

    id: int
    category: str
    category_name: str
    service_point: str
    minutes: int
    recipient: str
    volunteer: str
    served_at: datetime | None
    public_until: datetime | None
    disputed: bool


def _when(stamp: Timestamp, present: bool) -> datetime | None:
    return stamp.ToDatetime(UTC) if present else None


def public_order(message: node_pb2.PublicOrder) -> PublicOrder:
    return PublicOrder(
        id=message.id, category=message.category, category_name=message.category_name,
        service_point=message.service_point, minutes=message.minutes,
        recipient=message.recipient, volunteer=message.volunteer,
        served_at=_when(message.served_at, message.HasField("served_at")),
        public_until=_when(message.public_until, message.HasField("public_until")),
        disputed=message.disputed)


class Api:
    """One service's gRPC API as the console calls it: every call with the console's
    deadline, and a failure as a ``NodeError`` (the page to show), never a status."""

    def __init__(self, address: str, tls: ClientTls | None,
                 stub: Callable[[grpc.Channel], Any]) -> None:
        self.address = address
        self._channel = channel(address, tls)
        self._stub = stub(self._channel)

    def call(self, rpc: str, request: Message, token: str = "", *,
             timeout: float = CALL_TIMEOUT_SECONDS) -> Any:
        """``rpc`` with ``request``, as the person whose session token is ``token`` ("":
        nobody), waiting at most ``timeout`` seconds (the console's deadline, unless a
        call is known to wait on something further, as a passbook does)."""
        if not 0 < timeout <= MAX_CALL_SECONDS:
            raise ValueError(f"a call waits at most {MAX_CALL_SECONDS} seconds")
        method = getattr(self._stub, rpc)
        metadata = (("authorization", f"Bearer {token}"),) if token else None
        try:
            return method(request, timeout=timeout, metadata=metadata)
        except grpc.RpcError as e:
            raise NodeError.of(e) from None

    def close(self) -> None:
        self._channel.close()


class Node(Api):
    """One district node's API."""

    def __init__(self, address: str, tls: ClientTls | None) -> None:
        super().__init__(address, tls, node_pb2_grpc.NodeServiceStub)

    def public_orders(self, after_id: int = 0,
                      limit: int = PUBLIC_PAGE_SIZE) -> list[PublicOrder]:
        """The orders on public display after ``after_id``, in id order (no credential:
        the node masks what it gives)."""
        found = self.call("ListPublicOrders", node_pb2.ListPublicOrdersRequest(
            after_id=after_id, limit=limit))
        return [public_order(o) for o in found.orders]

    def login(self, login: str, password: str) -> tuple[str, Caller, datetime]:
        """A session on the node: its token, who it is, and when it expires."""
        found = self.call("Login", node_pb2.LoginRequest(login=login, password=password))
        c = found.caller
        caller = Caller(role=c.role, actor=c.actor, staff_id=c.staff_id,
                        service_point_id=c.service_point_id, person_id=c.person_id)
        return found.token, caller, found.expires_at.ToDatetime(UTC)
