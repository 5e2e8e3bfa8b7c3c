"""A person's passbook (存折) in the console: a page to print on paper for an elder, and
the signed statement file it stands for.

The node makes and signs the statement (``GetPassbook``, as the person logged in: who
may read someone's balance and history may have their passbook; ADR 0016). The page
shows what the statement says: the name, the balance by origin, the latest entries, the
anchor in the city's log, and the code to check it by, the digest the node signed, as
groups of hex (``timebank.passbook.paper_code``) and as a QR code drawn here as SVG
shapes (no script, no inline style: the page's Content-Security-Policy forbids both).
The QR code holds the same digest and the node's id, never an address: whoever checks
the paper reads the file they were given, with ``timebank verify-statement``, which
prints the same code. Nothing here is trusted for that: a page can lie, the code on
paper is checked against the file, and the file against the city's keys.

A member's own passbook is ``/me/passbook``: no id in the address, as every member page.
Staff and operators reach a person's at ``/people/{id}/passbook``, and the node refuses
them a person outside their service point.

Every page shows a new statement, and the node keeps each one it made. The page's link
to the file names its code (``?code=<64 hex>``), so the file downloaded is the one the
paper prints, however much later; and staff open a passbook issued before by the code on
its paper (``/people/{id}/passbook?code=…``, spaces allowed), to give its owner the file
that matches it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import segno
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from timebank.passbook import code_text, paper_code
from timebank.v1 import node_pb2 as pb
from web.app import Pages, page_id
from web.history import KIND_KEYS, Entry, kind_key
from web.nodes import Failure, NodeError
from web.sessions import Session

#: How long a passbook page waits for the node, which itself waits up to 10 seconds
#: for the city's clearinghouse (``node.link.statement.RPC_SECONDS``).
PASSBOOK_WAIT_SECONDS = 15.0
#: The latest entries a printed page lists (the file holds them all).
PAGE_ENTRIES = 30
#: The largest statement the console reads (the node sends at most 3 MiB).
MAX_STATEMENT_BYTES = 4 * 1024 * 1024
#: Groups of the code on one printed line (16 groups of 4 hex characters: 4 lines).
GROUPS_A_LINE = 4
#: Modules of white around a QR code, as its standard asks.
QR_BORDER = 4
#: What the origins of hours are called (``timebank.accounts`` origins).
ORIGIN_KEYS = {"individual": "origin_individual", "group": "origin_group",
               "donated": "origin_donated", "granted": "origin_granted"}
#: A code as an address carries it, or as typed from paper: hex, spaces allowed.
MAX_CODE_CHARS = 128
_HEX64 = re.compile(r"[0-9a-f]{64}")
_BAD_CODE = ("核对码是 64 个十六进制字符（0-9、a-f），可带空格 / a passbook's code is 64 hex "
             "characters")
#: Every key this module chooses at run time (the catalogue test checks them).
KEYS_CHOSEN = frozenset({*ORIGIN_KEYS.values(), *KIND_KEYS, "passbook_unavailable",
                         "passbook_origin_other"})


@dataclass(frozen=True, slots=True)
class Qr:
    """A QR code as SVG shapes: ``size`` modules square, ``path`` the dark ones."""

    size: int
    path: str


@dataclass(frozen=True, slots=True)
class Shown:
    """What a passbook page shows, read from the signed statement the node sent."""

    name: str
    node_id: str
    district: str
    total: int
    by_origin: list[tuple[str, int]]  # (catalogue key, minutes), nonzero only
    entries: list[Entry]  # the latest PAGE_ENTRIES, oldest first
    entry_count: int  # all of theirs the statement carries
    anchor_entry_count: int
    log_index: int
    made_at: datetime
    cosigned: bool
    warning: str
    code: str  # "3f9a 07c2 …", as `timebank verify-statement` prints it
    code_lines: list[str]
    qr: Qr


def _when(text: Any) -> datetime:
    if not isinstance(text, str) or len(text) > 40:
        raise ValueError("a time in a statement is a short string")
    at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError("a number in a statement is a whole number")
    return value


def _entries(statement: dict[str, Any]) -> list[Entry]:
    """The person's entries with the change each made to their balance: the sum of
    their postings (to accounts ``person/<PersonRef>/<origin>``)."""
    prefix = f"person/{statement['person']['person_ref']}/"
    out = []
    for e in statement["entries"]:
        delta = sum(_int(minutes) for code, minutes in e["postings"]
                    if isinstance(code, str) and code.startswith(prefix))
        out.append(Entry(_int(e["seq"]), _when(e["at"]), kind_key(str(e["kind"]), delta),
                         delta))
    return out


def qr_of(text: str) -> Qr:
    """``text`` as a QR code (error correction M), its dark modules one SVG path: a
    row's run of dark modules is one rectangle, drawn with the path's fill."""
    code = segno.make(text, error="m", micro=False)
    parts = []
    rows = [list(row) for row in code.matrix_iter(scale=1, border=QR_BORDER)]
    for y, row in enumerate(rows):
        x = 0
        while x < len(row):
            if not row[x]:
                x += 1
                continue
            start = x
            while x < len(row) and row[x]:
                x += 1
            parts.append(f"M{start} {y}h{x - start}v1h-{x - start}z")
    return Qr(len(rows), "".join(parts))


def read(answer: pb.GetPassbookResponse) -> Shown:
    """The page's view of the node's answer; ValueError (or KeyError, TypeError) if the
    statement is not one this console can read."""
    data = answer.statement_json
    if len(data) > MAX_STATEMENT_BYTES:
        raise ValueError("the statement is larger than a node sends")
    statement = json.loads(data.decode("utf-8"))["statement"]
    node = statement["node"]
    origins = statement["balance"]["by_origin"]
    entries = _entries(statement)
    code = paper_code(answer.statement_digest)
    groups = code.split(" ")
    return Shown(
        name=answer.person_name, node_id=str(node["node_id"]), district=str(node["district"]),
        total=answer.balance_total_minutes,
        by_origin=[(ORIGIN_KEYS.get(k, "passbook_origin_other"), _int(v))
                   for k, v in sorted(origins.items()) if v],
        entries=entries[-PAGE_ENTRIES:], entry_count=answer.entry_count,
        anchor_entry_count=answer.anchor_entry_count, log_index=answer.log_index,
        made_at=_when(statement["made_at"]), cosigned=answer.cosigned,
        warning=answer.warning, code=code,
        code_lines=[" ".join(groups[i:i + GROUPS_A_LINE])
                    for i in range(0, len(groups), GROUPS_A_LINE)],
        qr=qr_of(code_text(str(node["node_id"]), answer.statement_digest)))


def code_of(request: Request) -> bytes:
    """The code an address asks for (``?code=``: a statement digest as 64 hex characters,
    spaces allowed, as printed); b"" when none (a new passbook). 400 if malformed."""
    text = request.query_params.get("code", "")
    compact = "".join(text.split()).lower() if len(text) <= MAX_CODE_CHARS else "-"
    if not compact:
        return b""
    if not _HEX64.fullmatch(compact):
        raise HTTPException(400, _BAD_CODE)
    return bytes.fromhex(compact)


def _file_name(person_id: int, answer: pb.GetPassbookResponse) -> str:
    return f"passbook-{person_id}-{answer.statement_digest.hex()[:8]}.json"


class Passbooks:
    def __init__(self, pages: Pages) -> None:
        self.pages = pages

    def _member(self, request: Request) -> Session:
        session = self.pages.logged_in(request)
        if not session.caller.person_id:
            raise NodeError(Failure.FORBIDDEN, session.caller.actor)
        return session

    async def _ask(self, person_id: int, session: Session,
                   code: bytes = b"") -> pb.GetPassbookResponse:
        """A new passbook of ``person_id``, or the one the node issued with ``code``."""
        answer: pb.GetPassbookResponse = await run_in_threadpool(
            self.pages.node.call, "GetPassbook",
            pb.GetPassbookRequest(person_id=person_id, code=code),
            session.token, timeout=PASSBOOK_WAIT_SECONDS)
        return answer

    async def _page(self, request: Request, session: Session, person_id: int,
                    download: str, code: bytes = b"", reopen: str = "") -> Response:
        """The page of a passbook; its link to the file names the code of the statement
        it shows, so the file is that statement however much later it is fetched.
        ``reopen``: where staff type a code from paper to open that passbook again."""
        try:
            answer = await self._ask(person_id, session, code)
        except NodeError as e:
            if e.failure is not Failure.REFUSED:
                raise
            return self.pages.render(request, "passbook.html", status=409, session=session,
                                     shown=None, detail=e.detail, download=download)
        link = f"{download}?code={answer.statement_digest.hex()}"
        return self.pages.render(request, "passbook.html", session=session,
                                 shown=read(answer), detail="", download=link,
                                 reopen=reopen)

    async def _file(self, request: Request, session: Session, person_id: int) -> Response:
        answer = await self._ask(person_id, session, code_of(request))
        return Response(answer.statement_json, media_type="application/json; charset=utf-8",
                        headers={"content-disposition": "attachment; filename="
                                 f'"{_file_name(person_id, answer)}"'})

    async def mine(self, request: Request) -> Response:
        session = self._member(request)
        return await self._page(request, session, session.caller.person_id,
                                "/me/passbook.json")

    async def mine_file(self, request: Request) -> Response:
        session = self._member(request)
        return await self._file(request, session, session.caller.person_id)

    async def theirs(self, request: Request) -> Response:
        session = self.pages.logged_in(request, desk=True)
        person_id = page_id(request.path_params["person_id"])
        return await self._page(request, session, person_id,
                                f"/people/{person_id}/passbook.json", code_of(request),
                                f"/people/{person_id}/passbook")

    async def theirs_file(self, request: Request) -> Response:
        session = self.pages.logged_in(request, desk=True)
        return await self._file(request, session, page_id(request.path_params["person_id"]))


def routes(pages: Pages) -> list[Route]:
    passbooks = Passbooks(pages)
    return [
        Route("/me/passbook", passbooks.mine, methods=["GET"]),
        Route("/me/passbook.json", passbooks.mine_file, methods=["GET"]),
        Route("/people/{person_id}/passbook", passbooks.theirs, methods=["GET"]),
        Route("/people/{person_id}/passbook.json", passbooks.theirs_file, methods=["GET"]),
    ]
