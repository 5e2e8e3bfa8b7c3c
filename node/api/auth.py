"""The one place a call to the node's API is authenticated (ADR 0016).

``Guarded`` stands between gRPC and the servicer: for every rpc of NodeService but the
public ones (``node.domain.access.PUBLIC``) it reads ``authorization: Bearer <token>``
from the call's metadata, resolves the token to a ``Principal`` (UNAUTHENTICATED if
there is none, or it is unknown, expired or revoked) and checks the rpc's rule
(PERMISSION_DENIED naming the role or scope missing), before the servicer sees the
request: an unauthenticated or refused call changes nothing. The servicer reads the
principal with ``caller()`` to check the people and orders the call touches and to
take its actors. Health and reflection are other services and need no token.

``LoginThrottle`` limits failed logins per client address (in this process's memory):
``[auth] address_max_failures`` within ``address_window_minutes`` and that address is
refused RESOURCE_EXHAUSTED until the window passes, whichever logins it tries.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import Any

import grpc

from node.domain.access import PUBLIC, Principal
from node.usecases import access, logins
from node.usecases.app import NodeApp, city_time
from runtime.errors import InvariantViolation, ResourceExhausted, Unauthenticated
from runtime.observe import note
from timebank.v1 import node_pb2 as pb

#: The metadata key of a token, and its scheme.
AUTHORIZATION = "authorization"
SCHEME = "Bearer "
MAX_ADDRESSES = 10_000

METHODS: tuple[str, ...] = tuple(
    m.name for m in pb.DESCRIPTOR.services_by_name["NodeService"].methods)

_CALLER: ContextVar[Principal | None] = ContextVar("timebank_node_caller", default=None)


def bearer(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    """The token of ``authorization: Bearer <token>`` ("" if there is none)."""
    for key, value in metadata or ():
        if key.lower() == AUTHORIZATION and isinstance(value, str) \
                and value.startswith(SCHEME):
            return value[len(SCHEME):].strip()
    return ""


def caller() -> Principal:
    """The principal of the call being served (set by ``Guarded``)."""
    found = _CALLER.get()
    if found is None:
        raise InvariantViolation("an authenticated rpc was served without a caller")
    return found


def _token(context: grpc.ServicerContext) -> str:
    return bearer(context.invocation_metadata())


class Guarded:
    """The servicer's rpcs, each authenticated and checked first (see the module)."""

    def __init__(self, servicer: object, app: NodeApp) -> None:
        self._app = app
        for name in METHODS:
            method = getattr(servicer, name)
            setattr(self, name, method if name in PUBLIC else self._guard(name, method))

    def _guard(self, rpc: str, method: Callable[[Any, grpc.ServicerContext], Any]
               ) -> Callable[[Any, grpc.ServicerContext], Any]:
        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            who = self._app.query(logins.resolve, _token(context))
            note(account_id=who.account_id, role=who.role.value)
            access.require_call(rpc, who)
            reset = _CALLER.set(who)
            try:
                return method(request, context)
            finally:
                _CALLER.reset(reset)

        guarded.__name__ = rpc
        return guarded


class LoginThrottle:
    """Failed logins per client address, in a sliding window (see the module)."""

    def __init__(self, limit: int, window: timedelta) -> None:
        self.limit = limit
        self.window = window
        self._lock = threading.Lock()
        self._failures: dict[str, deque[datetime]] = {}

    def _recent(self, address: str, now: datetime) -> deque[datetime]:
        found = self._failures.setdefault(address, deque())
        while found and found[0] <= now - self.window:
            found.popleft()
        return found

    def check(self, address: str, now: datetime) -> None:
        """RESOURCE_EXHAUSTED if ``address`` failed too often lately."""
        with self._lock:
            recent = self._recent(address, now)
            if len(recent) >= self.limit:
                until = recent[0] + self.window
                raise ResourceExhausted(
                    f"此地址登录失败次数过多，请于 {city_time(until)} 后再试 (too many failed "
                    f"logins from this address; try again after {city_time(until)})",
                    "TOO_MANY_FAILED_LOGINS")

    def failed(self, address: str, now: datetime) -> None:
        with self._lock:
            if len(self._failures) >= MAX_ADDRESSES and address not in self._failures:
                oldest = min(self._failures, key=lambda a: self._failures[a][-1]
                             if self._failures[a] else now - self.window)
                del self._failures[oldest]
            self._recent(address, now).append(now)


def client_address(context: grpc.ServicerContext) -> str:
    """The caller's address without its port ("ipv4:127.0.0.1:5555" → "ipv4:127.0.0.1")."""
    peer = context.peer() or ""
    return peer.rpartition(":")[0] or peer


def refuse_login(said: str) -> Unauthenticated:
    return Unauthenticated(said, "LOGIN_FAILED")


__all__ = ["AUTHORIZATION", "SCHEME", "Guarded", "LoginThrottle", "bearer", "caller",
           "client_address", "refuse_login"]
