"""The console's web application: routes, the page's language, sessions, safe headers,
errors.

``build(node)`` makes the ASGI application (Starlette) over one district node's API.
Every page is rendered on the server from the catalogue's messages with Jinja2, which
escapes everything it is given (a person named ``<script>`` is shown, not run). Every
response carries a strict Content-Security-Policy (no inline script, nothing from
another origin) and is never cached; an error is a page in the reader's language with
no traceback, logged with an incident id.

A form that changes something is accepted only with its session's CSRF token and, when
the browser says where it comes from, from this console's own origin (``Pages.form``).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import structlog
from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from timebank.v1 import node_pb2
from web.catalogue import (
    Catalogue,
    Language,
    category_text,
    choose_language,
    date_text,
    datetime_text,
    minutes_text,
    packaged,
)
from web.nodes import PUBLIC_PAGE_SIZE, Detail, Failure, Node, NodeError
from web.sessions import LOGIN_CSRF_COOKIE, SESSION_COOKIE, Session, Sessions, new_token

if TYPE_CHECKING:
    from web.bureau import Clearinghouse

log = structlog.get_logger("console")

#: The cookie that remembers the reader's choice of language (nothing else is in it).
LANGUAGE_COOKIE = "timebank_lang"
LANGUAGE_COOKIE_SECONDS = 365 * 24 * 3600
#: The largest id a page's address may name.
MAX_ID = 2**63 - 1
#: The most bytes a form may send (the longest form is a few short fields).
MAX_FORM_BYTES = 16 * 1024

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy",
     b"default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; "
     b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # same-origin, not no-referrer: under no-referrer a browser sends "Origin: null" with
    # this console's own forms, and the origin check could not tell them from a forgery
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
)

_STATUS_OF: dict[Failure, int] = {
    Failure.UNAVAILABLE: 503, Failure.BAD_REQUEST: 400, Failure.REFUSED: 409,
    Failure.SIGNED_OUT: 401, Failure.FORBIDDEN: 403, Failure.NOT_FOUND: 404,
}

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]


class _SafeHeaders:
    """Adds ``SECURITY_HEADERS`` to every HTTP response, pages and files alike."""

    def __init__(self, app: Asgi) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        answered = False

        async def with_headers(message: MutableMapping[str, Any]) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *SECURITY_HEADERS]
                answered = True
            await send(message)

        try:
            await self._app(scope, receive, with_headers)
        except Exception:
            # Starlette raises a failure again once its handler has answered (with the
            # error page, logged with an incident id): the server would log it once more,
            # as a traceback. Only a failure nobody answered goes on.
            if not answered:
                raise


class LoginNeeded(Exception):
    """The page needs someone logged in, and nobody is."""


class ExpiredForm(Exception):
    """A form without its session's CSRF token, or from another origin."""


class Pages:
    """What every page of one node's console shares: the node, the catalogue, the
    sessions, rendering and the checks of a form."""

    def __init__(self, node: Node, catalogue: Catalogue, sessions: Sessions, *,
                 bureau: bool = False,
                 district_names: Callable[[], dict[str, str]] | None = None) -> None:
        self.node = node
        self.bureau = bureau  # the city's overview is served (``--clearinghouse``)
        #: Each district's name by node id, from the clearinghouse (None: not reached)
        self.district_names = district_names
        self.catalogue = catalogue
        self.sessions = sessions
        self.templates = Environment(
            loader=PackageLoader("web", "templates"), autoescape=True,
            undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)

    # ---------------------------------------------------------------- the reader

    def language(self, request: Request) -> Language:
        return choose_language(request.query_params.get("lang"),
                               request.cookies.get(LANGUAGE_COOKIE),
                               request.headers.get("accept-language"))

    def session(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(SESSION_COOKIE))

    def logged_in(self, request: Request, *, desk: bool = False) -> Session:
        """The reader's session, or ``LoginNeeded``; with ``desk``, staff or operators
        only (anyone else: 403, as the node would answer)."""
        session = self.session(request)
        if session is None:
            raise LoginNeeded()
        if desk and not session.caller.at_a_desk:
            raise NodeError(Failure.FORBIDDEN, session.caller.actor)
        return session

    async def form(self, request: Request, session: Session | None,
                   login_csrf: str | None = None) -> FormData:
        """The form a request sends, once it has shown it is this console's: its CSRF
        token is the session's (or, before login, the login cookie's), and its origin,
        when the browser names one, is this console's."""
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != request.url.netloc:
            raise ExpiredForm()
        if int(request.headers.get("content-length") or 0) > MAX_FORM_BYTES:
            raise HTTPException(413, "a form is a few short fields")
        form = await request.form(max_files=0, max_fields=32, max_part_size=MAX_FORM_BYTES)
        token = form.get("csrf")
        sent = token if isinstance(token, str) else None
        if session is not None:
            if not session.accepts(sent):
                raise ExpiredForm()
        elif login_csrf is None or sent is None or not Session.accepts_login(sent,
                                                                             login_csrf):
            raise ExpiredForm()
        return form

    async def ask(self, rpc: str, request_message: Any, session: Session | None) -> Any:
        """``rpc`` on the node as the session's person, off the event loop."""
        token = session.token if session is not None else ""
        return await run_in_threadpool(self.node.call, rpc, request_message, token)

    # ---------------------------------------------------------------- rendering

    def render(self, request: Request, template: str, status: int = 200,
               **context: Any) -> HTMLResponse:
        language = self.language(request)
        other = Language.EN if language is Language.ZH else Language.ZH
        catalogue = self.catalogue
        session = context.pop("session", None) or self.session(request)

        def t(key: str, **fields: object) -> str:
            return catalogue.text(key, language, **{
                name: said(value, language, catalogue) if isinstance(value, Detail)
                else value for name, value in fields.items()})

        page = self.templates.get_template(template).render(
            t=t, lang=language.value, other_lang=other.value, path=request.url.path,
            minutes=lambda m: minutes_text(m, language, catalogue),
            category=lambda o: category_text(o.category, o.category_name, language,
                                             catalogue),
            date=lambda at: "" if at is None else date_text(at, language),
            datetime=lambda at: "" if at is None else datetime_text(at, language),
            stamp=lambda ts: datetime_text(ts.ToDatetime(tzinfo=UTC), language),
            session=session, csrf=session.csrf if session is not None else "",
            bureau=self.bureau,
            **context)
        response = HTMLResponse(page, status_code=status)
        if request.query_params.get("lang") is not None:
            response.set_cookie(LANGUAGE_COOKIE, language.value,
                                max_age=LANGUAGE_COOKIE_SECONDS, httponly=True,
                                samesite="lax", secure=request.url.scheme == "https")
        return response

    def error(self, request: Request, status: int, key: str, **fields: object) -> Response:
        return self.render(request, "error.html", status=status, message_key=key,
                           fields=fields)

    # ---------------------------------------------------------------- pages

    async def home(self, request: Request) -> Response:
        return self.render(request, "home.html")

    async def public(self, request: Request) -> Response:
        after = page_id(request.query_params.get("after", "0"))
        # the node's answer is a blocking call: off the event loop
        orders = await run_in_threadpool(self.node.public_orders, after, PUBLIC_PAGE_SIZE)
        more = orders[-1].id if len(orders) == PUBLIC_PAGE_SIZE else 0
        session = self.session(request)
        disputed = request.query_params.get("disputed", "")
        return self.render(request, "public.html", orders=orders, more=more,
                           after=after, session=session,
                           member=session is not None and bool(session.caller.person_id),
                           disputed=page_id(disputed) if disputed else 0,
                           key=str(uuid.uuid4()))

    async def login_page(self, request: Request, status: int = 200,
                         problem: str = "") -> Response:
        csrf = request.cookies.get(LOGIN_CSRF_COOKIE) or new_token()
        response = self.render(request, "login.html", status=status, login_csrf=csrf,
                               problem=problem)
        set_cookie(response, request, LOGIN_CSRF_COOKIE, csrf, max_age=3600)
        return response

    async def login(self, request: Request) -> Response:
        form = await self.form(request, None, request.cookies.get(LOGIN_CSRF_COOKIE))
        login, password = str(form.get("login", "")).strip(), str(form.get("password", ""))
        if not login or not password or len(login) > 64 or len(password) > 256:
            return await self.login_page(request, 400, "login_missing")
        try:
            token, caller, expires = await run_in_threadpool(self.node.login, login,
                                                             password)
        except NodeError as e:
            if e.failure is Failure.SIGNED_OUT:
                log.info("login refused", login_length=len(login))
                return await self.login_page(request, 401, "login_failed")
            raise
        earlier = self.session(request)
        if earlier is not None:  # a new login replaces the browser's session, never joins it
            self.sessions.close(earlier.id)
        session = self.sessions.open(token, caller, login, expires)
        log.info("logged in", actor=caller.actor)
        response = RedirectResponse("/desk" if caller.at_a_desk else "/me", status_code=303)
        set_cookie(response, request, SESSION_COOKIE, session.id, max_age=None)
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
        return response

    async def logout(self, request: Request) -> Response:
        session = self.session(request)
        if session is not None:
            await self.form(request, session)
            self.sessions.close(session.id)
            try:
                await self.ask("Logout", node_pb2.LogoutRequest(), session)
            except NodeError as e:  # the console forgot it: the node's expires alone
                log.warning("logout not told to the node", failure=e.failure.value)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response


def said(detail: Detail, language: Language, catalogue: Catalogue) -> str:
    """A service's refusal as a page says it: the catalogue's words for its reason, in
    the reader's language, where the catalogue has them; else the service's own."""
    key = f"refusal_{detail.reason.lower()}"
    if detail.reason and key.isidentifier() and key in catalogue.messages:
        return catalogue.text(key, language)
    return str(detail)


def set_cookie(response: Response, request: Request, name: str, value: str, *,
               max_age: int | None) -> None:
    """A cookie only this console's pages send back: HttpOnly, Secure, SameSite=Strict."""
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True,
                        secure=True, samesite="strict")


def page_id(text: str) -> int:
    """An id in a page's address (0 allowed: "from the start")."""
    if not text.isdigit() or len(text) > 19 or int(text) > MAX_ID:
        raise HTTPException(400, "an id is a whole number")
    return int(text)


def build(node: Node, catalogue: Catalogue | None = None,
          sessions: Sessions | None = None, clearinghouse: Clearinghouse | None = None
          ) -> Asgi:
    """The console's ASGI application over ``node`` (and, for the bureau's overview, the
    city's ``clearinghouse``)."""
    from web import bureau, desk, member, passbook

    pages = Pages(node, packaged() if catalogue is None else catalogue,
                  Sessions() if sessions is None else sessions,
                  bureau=clearinghouse is not None,
                  district_names=None if clearinghouse is None else clearinghouse.names)

    async def not_found(request: Request, exc: Exception) -> Response:
        return pages.error(request, 404, "error_not_found")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return await not_found(request, exc)
        if exc.status_code in (400, 413):
            return pages.error(request, exc.status_code, "error_bad_request",
                               detail=str(exc.detail))
        if exc.status_code == 405:
            return pages.error(request, 405, "error_not_found")
        return pages.error(request, exc.status_code, "error_internal")

    async def node_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, NodeError)
        log.warning("node call failed", path=request.url.path, failure=exc.failure.value,
                    detail=exc.detail)
        if exc.failure is Failure.SIGNED_OUT:
            return await login_needed(request, exc)
        fields = ({} if exc.failure in (Failure.UNAVAILABLE, Failure.SIGNED_OUT,
                                        Failure.NOT_FOUND) else {"detail": exc.detail})
        return pages.error(request, _STATUS_OF[exc.failure], exc.failure.value, **fields)

    async def login_needed(request: Request, exc: Exception) -> Response:
        session = pages.session(request)
        if session is not None:  # the node ended it: so does the console
            pages.sessions.close(session.id)
        return await pages.login_page(request, 401, "error_signed_out")

    async def expired_form(request: Request, exc: Exception) -> Response:
        log.warning("form refused", path=request.url.path)
        return pages.error(request, 403, "error_expired_form")

    async def internal_error(request: Request, exc: Exception) -> Response:
        incident = uuid.uuid4().hex[:12]
        log.error("page failed", path=request.url.path, incident=incident,
                  error=f"{type(exc).__name__}: {exc}")
        return pages.error(request, 500, "error_internal")

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[
            Route("/", pages.home),
            Route("/public", pages.public),
            Route("/login", pages.login_page, methods=["GET"]),
            Route("/login", pages.login, methods=["POST"]),
            Route("/logout", pages.logout, methods=["POST"]),
            *desk.routes(pages),
            *member.routes(pages),
            *passbook.routes(pages),
            *(bureau.routes(pages, clearinghouse) if clearinghouse is not None else ()),
            Route("/healthz", health),
            Mount("/static", StaticFiles(packages=[("web", "static")]), name="static"),
        ],
        exception_handlers={404: not_found, HTTPException: http_error,
                            NodeError: node_error, LoginNeeded: login_needed,
                            ExpiredForm: expired_form, Exception: internal_error},
    )
    return _SafeHeaders(app)
