"""The console's web application: routes, the page's language, safe headers, errors.

``build(node)`` makes the ASGI application (Starlette) over one district node's API.
Every page is rendered on the server from the catalogue's messages with Jinja2, which
escapes everything it is given (a person named ``<script>`` is shown, not run). Every
response carries a strict Content-Security-Policy (no inline script, nothing from
another origin) and is never cached; an error is a page in the reader's language with
no traceback, logged with its request id.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import structlog
from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from web.catalogue import (
    Catalogue,
    Language,
    choose_language,
    date_text,
    datetime_text,
    minutes_text,
    packaged,
)
from web.nodes import PUBLIC_PAGE_SIZE, Failure, Node, NodeError

log = structlog.get_logger("console")

#: The cookie that remembers the reader's choice of language (nothing else is in it).
LANGUAGE_COOKIE = "timebank_lang"
LANGUAGE_COOKIE_SECONDS = 365 * 24 * 3600
#: The largest order id a page's address may name.
MAX_ORDER_ID = 2**63 - 1

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy",
     b"default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; "
     b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
)

_STATUS_OF: dict[Failure, int] = {
    Failure.UNAVAILABLE: 503, Failure.BAD_REQUEST: 400, Failure.REFUSED: 502,
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

        async def with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *SECURITY_HEADERS]
            await send(message)

        await self._app(scope, receive, with_headers)


class Pages:
    """Renders the pages of one node's console."""

    def __init__(self, node: Node, catalogue: Catalogue) -> None:
        self.node = node
        self.catalogue = catalogue
        self.templates = Environment(
            loader=PackageLoader("web", "templates"), autoescape=True,
            undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)

    def language(self, request: Request) -> Language:
        return choose_language(request.query_params.get("lang"),
                               request.cookies.get(LANGUAGE_COOKIE),
                               request.headers.get("accept-language"))

    def render(self, request: Request, template: str, status: int = 200,
               **context: Any) -> HTMLResponse:
        language = self.language(request)
        other = Language.EN if language is Language.ZH else Language.ZH
        catalogue = self.catalogue

        def t(key: str, **fields: object) -> str:
            return catalogue.text(key, language, **fields)

        page = self.templates.get_template(template).render(
            t=t, lang=language.value, other_lang=other.value, path=request.url.path,
            minutes=lambda m: minutes_text(m, language, catalogue),
            date=lambda at: "" if at is None else date_text(at, language),
            datetime=lambda at: "" if at is None else datetime_text(at, language),
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

    async def home(self, request: Request) -> Response:
        return self.render(request, "home.html")

    async def public(self, request: Request) -> Response:
        after = _order_id(request.query_params.get("after", "0"))
        # the node's answer is a blocking call: off the event loop
        orders = await run_in_threadpool(self.node.public_orders, after, PUBLIC_PAGE_SIZE)
        more = orders[-1].id if len(orders) == PUBLIC_PAGE_SIZE else 0
        return self.render(request, "public.html", orders=orders, more=more,
                           after=after)


def _order_id(text: str) -> int:
    if not text.isdigit() or len(text) > 19 or int(text) > MAX_ORDER_ID:
        raise HTTPException(400, "an order number is a whole number")
    return int(text)


def build(node: Node, catalogue: Catalogue | None = None) -> Asgi:
    """The console's ASGI application over ``node``."""
    pages = Pages(node, catalogue or packaged())

    async def not_found(request: Request, exc: Exception) -> Response:
        return pages.error(request, 404, "error_not_found")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return await not_found(request, exc)
        if exc.status_code == 400:
            return pages.error(request, 400, "error_bad_request", detail=str(exc.detail))
        return pages.error(request, exc.status_code, "error_internal")

    async def node_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, NodeError)
        log.warning("node call failed", path=request.url.path, failure=exc.failure.value,
                    detail=exc.detail)
        fields = {"detail": exc.detail} if exc.failure is not Failure.UNAVAILABLE else {}
        return pages.error(request, _STATUS_OF[exc.failure], exc.failure.value, **fields)

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
            Route("/healthz", health),
            Mount("/static", StaticFiles(packages=[("web", "static")]), name="static"),
        ],
        exception_handlers={404: not_found, HTTPException: http_error,
                            NodeError: node_error, Exception: internal_error},
    )
    return _SafeHeaders(app)
