"""Who is logged in to the console: sessions kept in the console's memory, never in a
cookie's content.

A browser holds only a random session id (``SESSION_COOKIE``: HttpOnly, Secure,
SameSite=Strict); the node's bearer token it stands for stays on the server, so a
stolen page or a script cannot carry it away. A session ends when its person logs out,
after ``IDLE_SECONDS`` without a request, after ``MAX_SECONDS`` in all, or when the
node's token expires, whichever is first. Each has its own CSRF token, which every form
that changes something must send back (``Session.accepts``). The store is bounded
(``MAX_SESSIONS``): the oldest session is dropped to make room, never the new one.
A console that restarts forgets every session: its people log in again.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

#: The cookie that holds the session id.
SESSION_COOKIE = "timebank_session"
#: The cookie that holds the login form's CSRF token before anyone is logged in.
LOGIN_CSRF_COOKIE = "timebank_login_csrf"
IDLE_SECONDS = 30 * 60
MAX_SECONDS = 12 * 3600
MAX_SESSIONS = 10_000
#: Random bytes in a session id and a CSRF token.
TOKEN_BYTES = 32


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a session is, as the node said at login (``timebank.v1.Caller``)."""

    role: str  # operator, staff, member, auditor
    actor: str  # "staff:3", "person:5" ...
    staff_id: int = 0
    service_point_id: int = 0
    person_id: int = 0

    @property
    def at_a_desk(self) -> bool:
        """Whether the caller works the service points' desks (staff, operators)."""
        return self.role in ("staff", "operator")


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    token: str  # the node's bearer token: never sent to the browser
    csrf: str
    caller: Caller
    login: str
    started: float  # on the store's clock
    seen: float
    token_expires_at: datetime

    def accepts(self, csrf: str | None) -> bool:
        """Whether a form's CSRF token is this session's."""
        return csrf is not None and hmac.compare_digest(csrf.encode(), self.csrf.encode())

    @staticmethod
    def accepts_login(sent: str, cookie: str) -> bool:
        """Whether the login form's CSRF token is the one its cookie holds (before
        anyone is logged in, the token is the browser's own: a double-submit check)."""
        return bool(cookie) and hmac.compare_digest(sent.encode(), cookie.encode())


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


class Sessions:
    """The console's sessions, by id (thread-safe; bounded)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] | None = None,
                 idle_seconds: float = IDLE_SECONDS, max_seconds: float = MAX_SECONDS,
                 max_sessions: int = MAX_SESSIONS) -> None:
        if not (0 < idle_seconds <= max_seconds and max_sessions > 0):
            raise ValueError("a session lasts a positive time, idle no longer than in all")
        self._clock = clock
        self._wall = wall
        self._idle = idle_seconds
        self._max = max_seconds
        self._limit = max_sessions
        self._by_id: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, token: str, caller: Caller, login: str,
             token_expires_at: datetime) -> Session:
        now = self._clock()
        session = Session(new_token(), token, new_token(), caller, login, now, now,
                          token_expires_at)
        with self._lock:
            while len(self._by_id) >= self._limit:
                self._by_id.popitem(last=False)
            self._by_id[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session ``session_id`` names, its idle time reset; None if there is
        none (never was, logged out, or expired: then it is forgotten)."""
        if not session_id or len(session_id) > 2 * TOKEN_BYTES:
            return None
        now = self._clock()
        with self._lock:
            found = self._by_id.get(session_id)
            if found is None:
                return None
            wall = self._wall() if self._wall is not None else None
            if (now - found.seen > self._idle or now - found.started > self._max
                    or (wall is not None and wall >= found.token_expires_at)):
                del self._by_id[session_id]
                return None
            found = replace(found, seen=now)
            self._by_id[session_id] = found
            self._by_id.move_to_end(session_id)
            return found

    def close(self, session_id: str) -> Session | None:
        with self._lock:
            return self._by_id.pop(session_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_id)
