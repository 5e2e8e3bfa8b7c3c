"""The operator's command line for a district node: ``timebank node ...``.

Two kinds of command live here:

* commands on the node's own files and database (``init``, ``migrate``, ``serve``,
  ``check``), given the node's configuration file;
* operator commands that talk gRPC to a running node (``--node HOST:PORT``), exactly as
  the district's app or a service point would: enrol people, walk orders through the
  service loop, read balances and history.

Every mutating call sends an idempotency key (a fresh UUID unless ``--idempotency-key``
is given), so a command retried with the same key never does the work twice.

An operator's mistake or a refusal by the node is one line on stderr (the gRPC status
name and the node's message) and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, ParamSpec, TypeVar
from zoneinfo import ZoneInfo

import grpc
import typer
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich import box
from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from node.config import ConfigError, NodeConfig, load_config
from node.domain.errors import NodeError
from node.domain.policy import PolicyError
from timebank.minutes import format_hours
from timebank.v1 import node_pb2, node_pb2_grpc

if TYPE_CHECKING:
    from node.usecases.views import LedgerReport as LedgerReportView

P = ParamSpec("P")
R = TypeVar("R")
Req = TypeVar("Req")
Resp = TypeVar("Resp")

CITY_TZ = ZoneInfo("Asia/Shanghai")
DEFAULT_NODE_ADDRESS = "127.0.0.1:7443"
#: How long one call may take before the CLI gives up (the node answers in milliseconds).
CALL_TIMEOUT_SECONDS = 30.0
INT64_MAX = 2**63 - 1
#: Output width when stdout is not a terminal (and COLUMNS is not set).
PIPE_WIDTH = 120


# ------------------------------------------------------------------ output and errors


class CliError(Exception):
    """An operator's mistake or a refusal: shown as one red line, exit code 1."""


_consoles: dict[tuple[int, bool], Console] = {}


def console(stderr: bool = False) -> Console:
    """A rich console on the current stdout/stderr (which tests may have replaced)."""
    stream = sys.stderr if stderr else sys.stdout
    key = (id(stream), stderr)
    found = _consoles.get(key)
    if found is None:
        found = _consoles[key] = Console(stderr=stderr, highlight=False)
        if not found.is_terminal and "COLUMNS" not in os.environ:
            found.width = PIPE_WIDTH  # a file or a pipe: no need to wrap at 80
    return found


def echo(*renderables: Any) -> None:
    console().print(*renderables)


def print_error(message: str) -> None:
    """One line, red, on stderr. ``message`` is plain text, not rich markup."""
    line = " ".join(message.split())
    console(stderr=True).print(f"[bold red]error:[/] [red]{escape(line)}[/]", soft_wrap=True)


def print_json(value: Any, *, indent: int | None = 2) -> None:
    """JSON on stdout, bypassing rich so that nothing is wrapped or coloured."""
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=indent) + "\n")
    sys.stdout.flush()


def fail(message: str) -> NoReturn:
    raise CliError(message)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def describe_error(e: BaseException) -> str | None:
    """The one-line message for an error an operator can act on; None for a bug."""
    if isinstance(e, CliError):
        return str(e)
    if isinstance(e, ConfigError | PolicyError):
        return str(e)
    if isinstance(e, NodeError):
        return f"{e.status}: {e.message}"
    if isinstance(e, PermissionError):
        return f"permission denied: {e.filename or e}"
    if isinstance(e, FileNotFoundError):
        return f"no such file or directory: {e.filename or e}"
    if isinstance(e, OSError):
        return f"{e.strerror or e}: {e.filename}" if e.filename else str(e)
    try:
        from sqlalchemy.exc import SQLAlchemyError
    except ImportError:  # pragma: no cover - sqlalchemy is a dependency
        return None
    if isinstance(e, SQLAlchemyError):
        orig = getattr(e, "orig", None)
        return f"the database cannot be used: {_first_line(str(orig or e))}"
    return None


def guarded(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn every error an operator can act on into one red line and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as e:
            message = describe_error(e)
            if message is None:
                raise
            print_error(message)
            raise typer.Exit(1) from None

    return wrapper


def new_key() -> str:
    return str(uuid.uuid4())


# ------------------------------------------------------------------ the gRPC client

_RETRYABLE = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "UNKNOWN", "INTERNAL", "CANCELLED"}


def error_reason(e: grpc.RpcError) -> str:
    """The google.rpc.ErrorInfo reason the node attached, if any."""
    try:
        from google.rpc import error_details_pb2
        from grpc_status import rpc_status

        status = rpc_status.from_call(e)
    except Exception:  # details are optional; the status code suffices
        return ""
    if status is None:
        return ""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return ""


def describe_rpc_error(e: grpc.RpcError, address: str, idempotency_key: str = "") -> str:
    """One line: the status code's name, the node's message, and what to do."""
    if not isinstance(e, grpc.Call):
        return f"the call to the node at {address} failed: {e}"
    code = e.code()
    name = code.name if code is not None else "UNKNOWN"
    details = " ".join((e.details() or "").split())
    if code is grpc.StatusCode.UNAVAILABLE and ("connect" in details.lower()
                                                 or "dns" in details.lower()):
        message = (f"UNAVAILABLE: cannot reach the node at {address} (is `timebank node serve` "
                   f"running there? set --node or TIMEBANK_NODE_ADDRESS): {details}")
    elif code is grpc.StatusCode.DEADLINE_EXCEEDED:
        message = (f"DEADLINE_EXCEEDED: the node at {address} did not answer within "
                   f"{CALL_TIMEOUT_SECONDS:g} s")
    else:
        message = f"{name}: {details or 'no details'}"
        reason = error_reason(e)
        if reason and reason != name:
            message += f" [{reason}]"
    if idempotency_key and name in _RETRYABLE:
        message += (f" — it is safe to retry: repeat the command with "
                    f"--idempotency-key {idempotency_key}")
    return message


class NodeClient:
    """A plaintext gRPC connection to one node's NodeService."""

    def __init__(self, address: str, timeout: float = CALL_TIMEOUT_SECONDS) -> None:
        if not address.strip():
            fail("the node address is empty; use --node HOST:PORT")
        self.address = address
        self.timeout = timeout
        self._channel = grpc.insecure_channel(address)
        self.stub = node_pb2_grpc.NodeServiceStub(self._channel)
        self._names: dict[int, str] = {}

    def call(self, method: grpc.UnaryUnaryMultiCallable[Req, Resp], request: Req,
             idempotency_key: str = "") -> Resp:
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise CliError(describe_rpc_error(e, self.address, idempotency_key)) from None

    def name_of(self, person_id: int) -> str:
        """A person's name for display; empty if it cannot be read."""
        if not person_id:
            return ""
        if person_id not in self._names:
            try:
                person = self.stub.GetPerson(node_pb2.GetPersonRequest(person_id=person_id),
                                             timeout=self.timeout)
                self._names[person_id] = person.name
            except grpc.RpcError:
                return ""
        return self._names[person_id]

    def remember(self, person: node_pb2.Person) -> None:
        self._names[person.id] = person.name

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def connect(address: str) -> Iterator[NodeClient]:
    client = NodeClient(address)
    try:
        yield client
    finally:
        client.close()


# ------------------------------------------------------------------ messages to JSON and text


def to_local(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=CITY_TZ)


def fmt_time(ts: Timestamp, *, seconds: bool = False) -> str:
    """A timestamp in the city's time (Asia/Shanghai); '' if unset."""
    if ts.seconds == 0 and ts.nanos == 0:
        return ""
    return to_local(ts).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def enum_short(enum_type: Any, value: int) -> str:
    """ORDER_STATE_CHECKED_OUT → checked_out."""
    try:
        name: str = enum_type.values_by_number[value].name
    except KeyError:
        return str(value)
    prefix = _enum_prefix(enum_type)
    short = name[len(prefix):] if name.startswith(prefix) else name
    return short.lower()


def _enum_prefix(enum_type: Any) -> str:
    names = [v.name for v in enum_type.values]
    unspecified = next((n for n in names if n.endswith("_UNSPECIFIED")), "")
    return unspecified[: -len("UNSPECIFIED")] if unspecified else ""


def state_name(value: int) -> str:
    return enum_short(node_pb2.OrderState.DESCRIPTOR, value).replace("_", " ")


def source_name(value: int) -> str:
    return enum_short(node_pb2.PaymentSource.DESCRIPTOR, value).replace("_", " ")


def origin_name(value: int) -> str:
    return enum_short(node_pb2.Origin.DESCRIPTOR, value)


def kind_name(value: int) -> str:
    return enum_short(node_pb2.PersonKind.DESCRIPTOR, value)


def link_name(value: int) -> str:
    return enum_short(node_pb2.LinkKind.DESCRIPTOR, value)


def to_json(msg: Message) -> dict[str, Any]:
    """A message as plain JSON: integers stay integers (minutes), enums are short lowercase
    names, timestamps ISO 8601 in the city's time, bytes hex; unset messages are null."""
    out: dict[str, Any] = {}
    for field in msg.DESCRIPTOR.fields:
        value = getattr(msg, field.name)
        if field.is_repeated:
            out[field.name] = [_json_value(field, v) for v in value]
        elif (field.message_type is not None or field.containing_oneof is not None) \
                and not msg.HasField(field.name):
            out[field.name] = None
        else:
            out[field.name] = _json_value(field, value)
    return out


def _json_value(field: Any, value: Any) -> Any:
    if field.message_type is not None:
        if field.message_type.full_name == "google.protobuf.Timestamp":
            return to_local(value).isoformat()
        return to_json(value)
    if field.enum_type is not None:
        return enum_short(field.enum_type, value)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return bytes(value).hex()
    return value


def hm(minutes: int) -> str:
    """Hours with two decimals and the exact minutes: '1.25 h (75 min)'."""
    return f"{format_hours(minutes)} ({minutes} min)"


def short_account(code: str) -> str:
    """person/<64 hex>/individual → person/1a2b3c4d…/individual."""
    parts = code.split("/")
    if parts[0] == "person" and len(parts) == 3 and len(parts[1]) > 12:
        return f"person/{parts[1][:8]}…/{parts[2]}"
    return code


def _grid() -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    return grid


def who(client: NodeClient | None, person_id: int) -> str:
    if not person_id:
        return "—"
    name = client.name_of(person_id) if client is not None else ""
    return f"{escape(name)} (person {person_id})" if name else f"person {person_id}"


def render_person(person: node_pb2.Person, title: str = "") -> Panel:
    grid = _grid()
    grid.add_row("name", escape(person.name))
    grid.add_row("kind", kind_name(person.kind))
    if person.kind == node_pb2.PERSON_KIND_INDIVIDUAL:
        grid.add_row("age", str(person.age))
    grid.add_row("priority elder", "yes (重点老人)" if person.priority else "no")
    if person.service_point_id:
        grid.add_row("service point", str(person.service_point_id))
    grid.add_row("enrolled", fmt_time(person.enrolled_at))
    grid.add_row("PersonRef", person.person_ref)
    return Panel(grid, title=title or f"person {person.id}", title_align="left", expand=False)


def render_order(order: node_pb2.Order, client: NodeClient | None = None,
                 title: str = "") -> Panel:
    grid = _grid()
    grid.add_row("state", f"[bold]{state_name(order.state)}[/]")
    grid.add_row("service", f"{escape(order.category_name)} ({escape(order.category)})")
    grid.add_row("recipient", who(client, order.recipient_id))
    grid.add_row("volunteer", who(client, order.volunteer_id))
    paid = source_name(order.payment_source)
    if order.payer_id:
        paid += f": {who(client, order.payer_id)}"
    grid.add_row("paid from", paid)
    grid.add_row("planned", hm(order.planned_minutes))
    for label, minutes in (("held", order.held_minutes), ("measured", order.measured_minutes),
                           ("recorded", order.recorded_minutes),
                           ("banked", order.banked_minutes),
                           ("over cap → pool", order.excess_to_pool_minutes),
                           ("over daily cap", order.unbanked_minutes),
                           ("charged", order.charged_minutes)):
        if minutes:
            grid.add_row(label, hm(minutes))
    if order.rating:
        stars = "★" * order.rating + "☆" * (5 - order.rating)
        comment = f" “{escape(order.comment)}”" if order.comment else ""
        grid.add_row("rating", f"{stars}{comment}")
    if order.dispute_reason:
        grid.add_row("disputed", escape(order.dispute_reason))
    if order.resolution:
        grid.add_row("resolution", escape(order.resolution))
    if order.note:
        grid.add_row("note", escape(order.note))
    for label, ts in (("requested", order.requested_at), ("checked in", order.checked_in_at),
                      ("checked out", order.checked_out_at), ("verified", order.verified_at),
                      ("public until", order.public_until), ("recorded", order.recorded_at)):
        text = fmt_time(ts)
        if text:
            grid.add_row(label, text)
    parts: list[Any] = [grid]
    for notice in order.notices:
        parts.append(f"[yellow]notice:[/] {escape(notice)}")
    return Panel(Group(*parts), title=title or f"order {order.id}", title_align="left",
                 expand=False)


def short_who(client: NodeClient | None, person_id: int) -> str:
    if not person_id:
        return "—"
    name = client.name_of(person_id) if client is not None else ""
    return f"{escape(name)} ({person_id})" if name else str(person_id)


def orders_table(orders: Iterable[node_pb2.Order], client: NodeClient | None = None) -> Table:
    table = Table(title="orders (people by name and id)", title_justify="left",
                  box=box.SIMPLE_HEAD, padding=(0, 1))
    for col in ("id", "state", "service", "recipient", "volunteer", "paid from"):
        table.add_column(col, no_wrap=True, justify="right" if col == "id" else "left")
    for col in ("planned", "measured", "recorded"):
        table.add_column(col, justify="right", no_wrap=True)
    for o in orders:
        paid = source_name(o.payment_source)
        if o.payer_id:
            paid += f" {short_who(client, o.payer_id)}"
        table.add_row(str(o.id), state_name(o.state), escape(o.category_name),
                      short_who(client, o.recipient_id), short_who(client, o.volunteer_id),
                      paid,
                      format_hours(o.planned_minutes),
                      format_hours(o.measured_minutes) if o.measured_minutes else "",
                      format_hours(o.recorded_minutes) if o.recorded_minutes else "")
    return table


def render_transaction(tx: node_pb2.LedgerTransaction, title: str = "") -> Panel:
    grid = _grid()
    grid.add_row("entry", f"{tx.seq} ({tx.kind})")
    grid.add_row("time", fmt_time(tx.at, seconds=True))
    if tx.memo:
        grid.add_row("memo", escape(tx.memo))
    if tx.order_id:
        grid.add_row("order", str(tx.order_id))
    if tx.reverses_seq:
        grid.add_row("reverses entry", str(tx.reverses_seq))
    grid.add_row("hash", tx.hash.hex())
    postings = Table(box=None, padding=(0, 2), show_header=True)
    postings.add_column("account")
    postings.add_column("hours", justify="right")
    postings.add_column("minutes", justify="right")
    for p in tx.postings:
        postings.add_row(short_account(p.account), format_hours(p.minutes), f"{p.minutes:+d}")
    return Panel(Group(grid, postings), title=title or f"ledger entry {tx.seq}",
                 title_align="left", expand=False)


def render_balance(balance: node_pb2.Balance, name: str = "") -> Panel:
    summary = Table(box=None, padding=(0, 2))
    summary.add_column("")
    summary.add_column("hours", justify="right")
    summary.add_column("minutes", justify="right")
    summary.add_row("[bold]total[/]", format_hours(balance.total_minutes),
                    str(balance.total_minutes))
    summary.add_row("held", format_hours(balance.held_minutes), str(balance.held_minutes))
    summary.add_row("[bold]available[/]", f"[bold]{format_hours(balance.available_minutes)}[/]",
                    str(balance.available_minutes))
    by_origin = Table(box=None, padding=(0, 2), title="by origin", title_justify="left")
    by_origin.add_column("origin")
    by_origin.add_column("total", justify="right")
    by_origin.add_column("minutes", justify="right")
    by_origin.add_column("held", justify="right")
    shown = [o for o in balance.by_origin if o.total_minutes or o.held_minutes]
    for o in shown:
        by_origin.add_row(origin_name(o.origin), format_hours(o.total_minutes),
                          str(o.total_minutes), format_hours(o.held_minutes))
    parts: list[Any] = [summary]
    if shown:
        parts.append(by_origin)
    parts.append(f"[dim]stored-hours cap {format_hours(balance.cap_minutes)} · "
                 f"PersonRef {balance.person_ref[:16]}…[/]")
    label = f"{escape(name)} (person {balance.person_id})" if name else \
        f"person {balance.person_id}"
    return Panel(Group(*parts), title=f"balance of {label}", title_align="left", expand=False)


def history_table(history: node_pb2.History, name: str = "") -> Table:
    label = f"{escape(name)} (person {history.person_id})" if name else \
        f"person {history.person_id}"
    table = Table(title=f"history of {label} (times in Asia/Shanghai)", title_justify="left")
    table.add_column("seq", justify="right", no_wrap=True)
    table.add_column("time", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("memo")
    table.add_column("change", justify="right", no_wrap=True)
    table.add_column("min", justify="right", no_wrap=True)
    for e in history.entries:
        t = e.transaction
        delta = e.delta_minutes
        style = "green" if delta > 0 else "red" if delta < 0 else ""
        sign = "+" if delta > 0 else ""
        table.add_row(str(t.seq), fmt_time(t.at), t.kind, escape(t.memo),
                      f"[{style}]{sign}{format_hours(delta)}[/]" if style else format_hours(delta),
                      f"{delta:+d}")
    return table


def render_policy(policy: node_pb2.Policy) -> Panel:
    grid = _grid()
    grid.add_row("digest (sha256)", policy.digest)
    grid.add_row("rounding unit", f"{policy.rounding_unit_minutes} min (applied once, when "
                                   "service is recorded)")
    grid.add_row("stored-hours cap", f"{format_hours(policy.cap_minutes)} per person "
                                      "(the excess goes to the donation pool)")
    grid.add_row("daily earning cap", f"{policy.daily_cap_minutes} min"
                 if policy.daily_cap_minutes else "none")
    grid.add_row("publicity period", f"{policy.publicity_days} days (公示期)")
    grid.add_row("group hours", "donate only" if policy.group_hours_donate_only
                 else "may be spent")
    grid.add_row("own hours from age", str(policy.own_min_age))
    grid.add_row("relatives", ", ".join(link_name(k) for k in policy.relative_kinds)
                 + f"; served from age {policy.relative_min_age}")
    categories = Table(box=None, padding=(0, 2), title="service categories",
                       title_justify="left")
    categories.add_column("code")
    categories.add_column("name")
    for c in policy.categories:
        categories.add_row(c.code, escape(c.name))
    return Panel(Group(grid, categories), title="city policy", title_align="left", expand=False)


def render_report(report: node_pb2.LedgerReport, title: str = "ledger check") -> Panel:
    grid = _grid()
    grid.add_row("result", "[bold green]ok: every invariant holds[/]" if report.ok
                 else f"[bold red]{len(report.problems)} problem(s)[/]")
    grid.add_row("transactions", str(report.transactions))
    grid.add_row("accounts", str(report.accounts))
    grid.add_row("chain head", report.head_hash.hex())
    grid.add_row("issued for service", hm(report.issued_minutes))
    grid.add_row("granted by the city", hm(report.granted_minutes))
    grid.add_row("held by people", hm(report.held_by_people_minutes))
    grid.add_row("donation pool", hm(report.donation_pool_minutes))
    grid.add_row("consumed by service", hm(report.consumed_minutes))
    parts: list[Any] = [grid]
    parts.extend(f"[red]✗ {escape(p)}[/]" for p in report.problems)
    return Panel(Group(*parts), title=title, title_align="left", expand=False,
                 border_style="green" if report.ok else "red")


def report_from_view(view: LedgerReportView) -> node_pb2.LedgerReport:
    return node_pb2.LedgerReport(
        ok=view.ok, transactions=view.transactions, accounts=view.accounts,
        head_hash=view.head_hash, problems=list(view.problems), issued_minutes=view.issued,
        held_by_people_minutes=view.held_by_people, donation_pool_minutes=view.donation_pool,
        consumed_minutes=view.consumed, granted_minutes=view.granted)


# ------------------------------------------------------------------ choices


class Kind(StrEnum):
    individual = "individual"
    group = "group"


class Relation(StrEnum):
    spouse = "spouse"
    parent = "parent"
    child = "child"
    sibling = "sibling"
    grandparent = "grandparent"
    grandchild = "grandchild"
    proxy = "proxy"


class PaidBy(StrEnum):
    own = "own"
    relative = "relative"
    donation_pool = "donation-pool"
    city_grant = "city-grant"


class Outcome(StrEnum):
    uphold = "uphold"
    void = "void"


class State(StrEnum):
    requested = "requested"
    accepted = "accepted"
    checked_in = "checked-in"
    checked_out = "checked-out"
    verified = "verified"
    disputed = "disputed"
    recorded = "recorded"
    cancelled = "cancelled"


PERSON_KINDS = {Kind.individual: node_pb2.PERSON_KIND_INDIVIDUAL,
                Kind.group: node_pb2.PERSON_KIND_GROUP}
LINK_KINDS = {Relation.spouse: node_pb2.LINK_KIND_SPOUSE,
              Relation.parent: node_pb2.LINK_KIND_PARENT,
              Relation.child: node_pb2.LINK_KIND_CHILD,
              Relation.sibling: node_pb2.LINK_KIND_SIBLING,
              Relation.grandparent: node_pb2.LINK_KIND_GRANDPARENT,
              Relation.grandchild: node_pb2.LINK_KIND_GRANDCHILD,
              Relation.proxy: node_pb2.LINK_KIND_PROXY}
PAYMENT_SOURCES = {PaidBy.own: node_pb2.PAYMENT_SOURCE_OWN,
                   PaidBy.relative: node_pb2.PAYMENT_SOURCE_RELATIVE,
                   PaidBy.donation_pool: node_pb2.PAYMENT_SOURCE_DONATION_POOL,
                   PaidBy.city_grant: node_pb2.PAYMENT_SOURCE_CITY_GRANT}
ORDER_STATES = {State.requested: node_pb2.ORDER_STATE_REQUESTED,
                State.accepted: node_pb2.ORDER_STATE_ACCEPTED,
                State.checked_in: node_pb2.ORDER_STATE_CHECKED_IN,
                State.checked_out: node_pb2.ORDER_STATE_CHECKED_OUT,
                State.verified: node_pb2.ORDER_STATE_VERIFIED,
                State.disputed: node_pb2.ORDER_STATE_DISPUTED,
                State.recorded: node_pb2.ORDER_STATE_RECORDED,
                State.cancelled: node_pb2.ORDER_STATE_CANCELLED}


def parse_time(text: str) -> Timestamp:
    """ISO 8601; without a UTC offset the time is taken as Asia/Shanghai."""
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        fail(f"cannot read the time {text!r}: write it like 2026-03-02T09:30 "
             "(Asia/Shanghai) or 2026-03-02T09:30+08:00")
    if at.tzinfo is None:
        at = at.replace(tzinfo=CITY_TZ)
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


def make_actor(person_id: int, staff_id: int, doing: str) -> node_pb2.Actor:
    if bool(person_id) == bool(staff_id):
        fail(f"say who {doing}: give exactly one of --by-person ID or --by-staff ID")
    return node_pb2.Actor(person_id=person_id) if person_id else node_pb2.Actor(staff_id=staff_id)


# ------------------------------------------------------------------ options

NodeAddress = Annotated[str, typer.Option(
    "--node", envvar="TIMEBANK_NODE_ADDRESS", metavar="HOST:PORT",
    help="The node's gRPC address (env TIMEBANK_NODE_ADDRESS).")]
IdempotencyKey = Annotated[str, typer.Option(
    "--idempotency-key", metavar="KEY",
    help="Repeat a call safely: the same key returns the first result. Default: a new UUID.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ConfigFile = Annotated[Path, typer.Option(
    "--config", "-c", metavar="FILE", help="The node's configuration (node.toml).")]
PersonId = Annotated[int, typer.Argument(min=1, max=INT64_MAX, metavar="PERSON_ID",
                                         help="The person's id on this node.")]
OrderId = Annotated[int, typer.Argument(min=1, max=INT64_MAX, metavar="ORDER_ID")]
ByPerson = Annotated[int, typer.Option("--by-person", metavar="ID", min=0, max=INT64_MAX,
                                       help="The person acting (recipient, family, proxy).")]
ByStaff = Annotated[int, typer.Option("--by-staff", metavar="ID", min=0, max=INT64_MAX,
                                      help="The staff member acting.")]
Minutes = Annotated[int, typer.Option("--minutes", "-m", min=-INT64_MAX - 1, max=INT64_MAX,
                                      help="Whole minutes (60 = 1 h).")]

app = typer.Typer(
    name="node",
    help="Run a district node and operate it: init, migrate, serve, check, and the service "
         "loop by hand (enrol, order, verify, balance, history).",
    no_args_is_help=True,
    add_completion=False,
)
service_point_app = typer.Typer(help="Service points (社区服务点).", no_args_is_help=True)
staff_app = typer.Typer(help="Service-point staff (服务点工作人员).", no_args_is_help=True)
order_app = typer.Typer(
    help="The service loop: request → accept → check-in → check-out → verify → "
         "(publicity period) → record; dispute, resolve, cancel.",
    no_args_is_help=True)
app.add_typer(service_point_app, name="service-point")
app.add_typer(staff_app, name="staff")
app.add_typer(order_app, name="order")


# ------------------------------------------------------------------ files and database


def _load(config_file: Path) -> NodeConfig:
    return load_config(config_file)


def _masked(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # only for display
        return url


def _schema_revision(url: str) -> str | None:
    from node.storage import migrate
    from node.storage.db import Database

    db = Database(url)
    try:
        return migrate.current_revision(db.writer)
    finally:
        db.dispose()


@app.command("init")
@guarded
def init_command(
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", metavar="DIR",
        help="Create the node here: node.toml, policy.toml, city-secret and the SQLite "
             "database (unless --database-url).")] = None,
    node_id: Annotated[str, typer.Option(
        "--node-id", metavar="CODE",
        help="The district's 6-digit administrative division code, e.g. 320115.")] = "",
    district: Annotated[str, typer.Option(
        "--district", metavar="NAME", help="The district's name, e.g. 江宁区.")] = "",
    database_url: Annotated[str, typer.Option(
        "--database-url", metavar="URL",
        help="PostgreSQL instead of SQLite, e.g. postgresql+psycopg://timebank@/tb_320115.")
    ] = "",
    listen: Annotated[str, typer.Option(
        "--listen", metavar="HOST:PORT", help="Where `node serve` listens.")
    ] = "127.0.0.1:7443",
    policy: Annotated[Path | None, typer.Option(
        "--policy", metavar="FILE",
        help="The city policy published by the bureau (default: Nanjing's published "
             "values).")] = None,
    config_file: Annotated[Path | None, typer.Option(
        "--config", "-c", metavar="FILE",
        help="Instead of --data-dir: initialise the node an existing configuration "
             "describes (e.g. /etc/timebank/node.toml).")] = None,
) -> None:
    """Create a node once: its data directory, configuration, policy, secret and database."""
    from node.bootstrap import CONFIG_NAME, init_data_dir, migrate_and_initialise, read_policy

    if config_file is not None:
        if data_dir is not None or node_id or district or database_url or policy is not None:
            fail("with --config, the configuration says everything: drop --data-dir, "
                 "--node-id, --district, --database-url and --policy")
        config = _load(config_file)
        config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        migrate_and_initialise(config)
        _print_initialised(config, config_file, created=set())
        return
    if data_dir is None:
        fail("say where the node lives: --data-dir DIR (with --node-id and --district), "
             "or --config FILE")
    if not node_id or not district:
        fail("a new node needs --node-id (the 6-digit division code, e.g. 320115) and "
             "--district (e.g. 江宁区)")
    policy_text = None
    if policy is not None:
        policy_text = policy.read_text(encoding="utf-8")
        try:
            from node.domain.policy import load_policy

            load_policy(policy_text)
        except PolicyError as e:
            fail(f"{policy}: {e}")
    names = {CONFIG_NAME: "config", "policy.toml": "policy", "city-secret": "secret"}
    created = {label for name, label in names.items() if not (data_dir / name).exists()}
    try:
        config_path = init_data_dir(data_dir, node_id, district, database_url=database_url,
                                    listen=listen, policy_text=policy_text)
    except ValueError as e:
        if isinstance(e, ConfigError | PolicyError):
            raise
        fail(str(e))
    config = _load(config_path)
    read_policy(config.policy_file)
    _print_initialised(config, config_path, created)


def _print_initialised(config: NodeConfig, config_path: Path, created: set[str]) -> None:
    from node.bootstrap import read_policy

    policy = read_policy(config.policy_file)

    def state(label: str) -> str:
        return "[green]created[/]" if label in created else "[dim]kept (already there)[/]"

    grid = _grid()
    grid.add_row("node", f"{config.node_id} {escape(config.district)}")
    grid.add_row("data directory", str(config.data_dir))
    grid.add_row("configuration", f"{config_path}  {state('config')}")
    grid.add_row("policy", f"{config.policy_file}  {state('policy')}")
    grid.add_row("policy sha256", policy.digest)
    grid.add_row("city secret", f"{config.city_secret_file}  {state('secret')} (mode 0600)")
    grid.add_row("database", _masked(config.effective_database_url))
    grid.add_row("schema", str(_schema_revision(config.effective_database_url)))
    grid.add_row("listen", config.listen)
    echo(Panel(grid, title="node initialised", title_align="left", expand=False))
    if "secret" in created:
        echo("[yellow]The city secret above was generated at random for this node alone.[/] "
             "In a real city, replace it with the secret issued by the civil-affairs bureau "
             "before enrolling anyone: every node must hold the same secret, or the same person "
             "gets different PersonRefs in different districts.")
    echo(f"Next: [bold]timebank node serve --config {config_path}[/]")


@app.command("migrate")
@guarded
def migrate_command(config_file: ConfigFile) -> None:
    """Bring the database schema up to this version (run after every upgrade)."""
    from node.bootstrap import migrate_and_initialise
    from node.storage import migrate

    config = _load(config_file)
    url = config.effective_database_url
    before = _schema_revision(url)
    migrate_and_initialise(config)
    after = _schema_revision(url)
    echo(f"database  {_masked(url)}")
    echo(f"schema    {before or 'empty'} → {after} "
         f"({'already current' if before == after else 'migrated'}; "
         f"this software needs {migrate.head_revision()})")


@app.command("serve")
@guarded
def serve_command(config_file: ConfigFile) -> None:
    """Serve the node's gRPC API until SIGTERM or Ctrl-C."""
    config = _load(config_file)
    try:
        from node.api.server import serve_forever
    except ImportError as e:
        fail(f"the gRPC server cannot be loaded: {e}")
    try:
        serve_forever(config)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@app.command("check")
@guarded
def check_command(
    config_file: Annotated[Path | None, typer.Option(
        "--config", "-c", metavar="FILE",
        help="Check directly on the database this configuration names (the node may be "
             "running or stopped).")] = None,
    node: Annotated[str, typer.Option(
        "--node", envvar="TIMEBANK_NODE_ADDRESS", metavar="HOST:PORT",
        help="Without --config: ask the running node at this address.")
    ] = DEFAULT_NODE_ADDRESS,
    as_json: AsJson = False,
) -> None:
    """Verify every ledger invariant (sums, hash chain, balances, holds, cap).

    Exit code 1 if any fails.
    """
    if config_file is not None:
        from node.bootstrap import open_app
        from node.usecases.ledger import check_ledger

        config = _load(config_file)
        node_app = open_app(config)
        try:
            report = report_from_view(node_app.query(check_ledger))
        finally:
            node_app.db.dispose()
        title = f"ledger check · {config.node_id} {escape(config.district)}"
        extra: dict[str, Any] = {"node_id": config.node_id, "district": config.district}
    else:
        with connect(node) as client:
            report = client.call(client.stub.CheckLedger, node_pb2.CheckLedgerRequest())
        title, extra = f"ledger check · node at {node}", {}
    if as_json:
        print_json({**extra, **to_json(report)})
    else:
        echo(render_report(report, title))
    if not report.ok:
        raise typer.Exit(1)


# ------------------------------------------------------------------ people


@service_point_app.command("add")
@guarded
def service_point_add(
    code: Annotated[str, typer.Option("--code", help="A short ASCII code, e.g. JN-DS-01.")],
    name: Annotated[str, typer.Option("--name", help="e.g. 东山街道佛城西路社区服务点")],
    street: Annotated[str, typer.Option("--street", help="The street (街道).")] = "",
    node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
    as_json: AsJson = False,
) -> None:
    """Register a service point."""
    key = key or new_key()
    with connect(node) as client:
        point = client.call(client.stub.RegisterServicePoint, node_pb2.RegisterServicePointRequest(
            idempotency_key=key, code=code, name=name, street=street), key)
    if as_json:
        print_json(to_json(point))
        return
    street_text = f" ({escape(point.street)})" if point.street else ""
    echo(f"Registered service point [bold]{point.id}[/]: {escape(point.code)} "
         f"{escape(point.name)}{street_text}")


@staff_app.command("add")
@guarded
def staff_add(
    name: Annotated[str, typer.Option("--name")],
    service_point: Annotated[int, typer.Option("--service-point", metavar="ID", min=1,
                                               max=INT64_MAX)],
    node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
    as_json: AsJson = False,
) -> None:
    """Register a staff member of a service point."""
    key = key or new_key()
    with connect(node) as client:
        staff = client.call(client.stub.RegisterStaff, node_pb2.RegisterStaffRequest(
            idempotency_key=key, name=name, service_point_id=service_point), key)
    if as_json:
        print_json(to_json(staff))
        return
    echo(f"Registered staff member [bold]{staff.id}[/]: {escape(staff.name)} at service point "
         f"{staff.service_point_id}")


@app.command("enrol")
@guarded
def enrol(
    name: Annotated[str, typer.Option("--name", help="The person's or group's name.")],
    id_number: Annotated[str, typer.Option(
        "--id-number", metavar="NUMBER",
        help="Individuals: the 18-character ID card number. Groups: the unified social "
             "credit code. Stays on this node.")],
    kind: Annotated[Kind, typer.Option("--kind", help="individual (个人) or group (团体).")
                    ] = Kind.individual,
    priority: Annotated[bool, typer.Option(
        "--priority", help="A priority elder (重点空巢独居老人).")] = False,
    phone: Annotated[str, typer.Option("--phone")] = "",
    service_point: Annotated[int, typer.Option("--service-point", metavar="ID", min=0,
                                               max=INT64_MAX)] = 0,
    node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
    as_json: AsJson = False,
) -> None:
    """Enrol a volunteer, an elder or a group (one account per person)."""
    key = key or new_key()
    with connect(node) as client:
        person = client.call(client.stub.EnrolPerson, node_pb2.EnrolPersonRequest(
            idempotency_key=key, kind=PERSON_KINDS[kind],
            name=name, id_number=id_number, phone=phone, priority=priority,
            service_point_id=service_point), key)
    if as_json:
        print_json(to_json(person))
        return
    echo(render_person(person, f"enrolled person {person.id}"))


@app.command("person")
@guarded
def person_show(person_id: PersonId, node: NodeAddress = DEFAULT_NODE_ADDRESS,
                as_json: AsJson = False) -> None:
    """Show one person."""
    with connect(node) as client:
        person = client.call(client.stub.GetPerson, node_pb2.GetPersonRequest(person_id=person_id))
    if as_json:
        print_json(to_json(person))
    else:
        echo(render_person(person))


@app.command("link")
@guarded
def link(
    person_id: PersonId,
    other_id: Annotated[int, typer.Argument(min=1, max=INT64_MAX, metavar="OTHER_ID")],
    relation: Annotated[Relation, typer.Option(
        "--as", help="What OTHER is to PERSON: `link 1 2 --as parent` records that person 2 "
                     "is person 1's parent (and 1 is 2's child).")],
    staff: Annotated[int, typer.Option("--staff", metavar="ID", min=0, max=INT64_MAX,
                                       help="The staff member recording the link.")] = 0,
    node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
    as_json: AsJson = False,
) -> None:
    """Link two people as family or proxy (委托人)."""
    key = key or new_key()
    with connect(node) as client:
        result = client.call(client.stub.LinkPeople, node_pb2.LinkPeopleRequest(
            idempotency_key=key, person_id=person_id, other_id=other_id,
            kind=LINK_KINDS[relation], staff_id=staff), key)
        if as_json:
            print_json(to_json(result))
            return
        echo(f"Linked: {who(client, result.other_id)} is {who(client, result.person_id)}'s "
             f"[bold]{link_name(result.kind)}[/]")


# ------------------------------------------------------------------ orders


def _show_order(client: NodeClient, order: node_pb2.Order, as_json: bool, title: str) -> None:
    if as_json:
        print_json(to_json(order))
    else:
        echo(render_order(order, client, title))


@order_app.command("request")
@guarded
def order_request(
    recipient: Annotated[int, typer.Option("--recipient", metavar="ID", min=1, max=INT64_MAX,
                                           help="Who receives the service.")],
    category: Annotated[str, typer.Option(
        "--category", help="A policy category, by code or name: cleaning or 助洁 "
                           "(see `timebank node policy`).")],
    minutes: Annotated[int, typer.Option("--minutes", "-m", min=-INT64_MAX - 1, max=INT64_MAX,
                                         help="Planned service time in minutes.")],
    paid_by: Annotated[PaidBy, typer.Option(
        "--paid-by", help="Whose hours pay: the recipient's own, a linked relative's "
                          "(with --payer), the donation pool, or the city grant.")],
    payer: Annotated[int, typer.Option("--payer", metavar="ID", min=0, max=INT64_MAX,
                                       help="The relative paying (with --paid-by relative).")
                     ] = 0,
    by_person: ByPerson = 0, by_staff: ByStaff = 0,
    note: Annotated[str, typer.Option("--note")] = "",
    node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
    as_json: AsJson = False,
) -> None:
    """Request a service for an elder (需求提交)."""
    actor = make_actor(by_person, by_staff, "requests the service")
    key = key or new_key()
    with connect(node) as client:
        order = client.call(client.stub.RequestOrder, node_pb2.RequestOrderRequest(
            idempotency_key=key, recipient_id=recipient, category=category,
            planned_minutes=minutes,
            payment_source=PAYMENT_SOURCES[paid_by],
            payer_id=payer, requested_by=actor, note=note), key)
        _show_order(client, order, as_json, f"order {order.id} requested")


@order_app.command("accept")
@guarded
def order_accept(
    order_id: OrderId,
    volunteer: Annotated[int, typer.Option("--volunteer", metavar="ID", min=1, max=INT64_MAX)],
    node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
    as_json: AsJson = False,
) -> None:
    """A volunteer takes the order (志愿接单); the payment is held."""
    key = key or new_key()
    with connect(node) as client:
        order = client.call(client.stub.AcceptOrder, node_pb2.AcceptOrderRequest(
            idempotency_key=key, order_id=order_id, volunteer_id=volunteer), key)
        _show_order(client, order, as_json, f"order {order.id} accepted")


AtTime = Annotated[str, typer.Option(
    "--at", metavar="TIME",
    help="When it happened, e.g. 2026-03-02T09:30 (Asia/Shanghai). Default: now.")]


@order_app.command("check-in")
@guarded
def order_check_in(order_id: OrderId, at: AtTime = "",
                   node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
                   as_json: AsJson = False) -> None:
    """The volunteer arrives at the elder's home."""
    key = key or new_key()
    request = node_pb2.CheckInRequest(idempotency_key=key, order_id=order_id)
    if at:
        request.at.CopyFrom(parse_time(at))
    with connect(node) as client:
        order = client.call(client.stub.CheckIn, request, key)
        _show_order(client, order, as_json, f"order {order.id} checked in")


@order_app.command("check-out")
@guarded
def order_check_out(order_id: OrderId, at: AtTime = "",
                    node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
                    as_json: AsJson = False) -> None:
    """The volunteer leaves; the service time is measured."""
    key = key or new_key()
    request = node_pb2.CheckOutRequest(idempotency_key=key, order_id=order_id)
    if at:
        request.at.CopyFrom(parse_time(at))
    with connect(node) as client:
        order = client.call(client.stub.CheckOut, request, key)
        _show_order(client, order, as_json, f"order {order.id} checked out")


@order_app.command("verify")
@guarded
def order_verify(
    order_id: OrderId,
    rating: Annotated[int, typer.Option("--rating", min=-2**31, max=2**31 - 1,
                                        help="1 to 5 stars.")],
    comment: Annotated[str, typer.Option("--comment")] = "",
    by_person: ByPerson = 0, by_staff: ByStaff = 0,
    node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
    as_json: AsJson = False,
) -> None:
    """The recipient, their proxy or family, or staff confirm and rate the service."""
    actor = make_actor(by_person, by_staff, "verifies the service")
    key = key or new_key()
    with connect(node) as client:
        order = client.call(client.stub.VerifyOrder, node_pb2.VerifyOrderRequest(
            idempotency_key=key, order_id=order_id, verifier=actor, rating=rating,
            comment=comment), key)
        _show_order(client, order, as_json, f"order {order.id} verified")


@order_app.command("dispute")
@guarded
def order_dispute(
    order_id: OrderId,
    reason: Annotated[str, typer.Option("--reason")],
    by_person: ByPerson = 0, by_staff: ByStaff = 0,
    node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
    as_json: AsJson = False,
) -> None:
    """Dispute a verified order during its publicity period (社会监督)."""
    actor = make_actor(by_person, by_staff, "raises the dispute")
    key = key or new_key()
    with connect(node) as client:
        order = client.call(client.stub.DisputeOrder, node_pb2.DisputeOrderRequest(
            idempotency_key=key, order_id=order_id, raised_by=actor, reason=reason), key)
        _show_order(client, order, as_json, f"order {order.id} disputed")


@order_app.command("resolve")
@guarded
def order_resolve(
    order_id: OrderId,
    staff: Annotated[int, typer.Option("--staff", metavar="ID", min=1, max=INT64_MAX)],
    outcome: Annotated[Outcome, typer.Option(
        "--outcome", help="uphold: the service stands; void: it is cancelled.")],
    resolution: Annotated[str, typer.Option("--resolution", help="How it was resolved.")],
    corrected_minutes: Annotated[int, typer.Option(
        "--corrected-minutes", min=-INT64_MAX - 1, max=INT64_MAX,
        help="With uphold: the corrected service time (0 keeps the measured time).")] = 0,
    node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
    as_json: AsJson = False,
) -> None:
    """Staff settle a dispute."""
    key = key or new_key()
    with connect(node) as client:
        order = client.call(client.stub.ResolveDispute, node_pb2.ResolveDisputeRequest(
            idempotency_key=key, order_id=order_id, staff_id=staff,
            outcome=(node_pb2.DISPUTE_OUTCOME_UPHOLD_SERVICE if outcome is Outcome.uphold
                     else node_pb2.DISPUTE_OUTCOME_VOID_SERVICE),
            corrected_minutes=corrected_minutes, resolution=resolution), key)
        _show_order(client, order, as_json, f"order {order.id}: dispute resolved")


@order_app.command("cancel")
@guarded
def order_cancel(
    order_id: OrderId,
    reason: Annotated[str, typer.Option("--reason")] = "",
    by_person: ByPerson = 0, by_staff: ByStaff = 0,
    node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
    as_json: AsJson = False,
) -> None:
    """Cancel an order before check-out; any held payment is released."""
    actor = make_actor(by_person, by_staff, "cancels the order")
    key = key or new_key()
    with connect(node) as client:
        order = client.call(client.stub.CancelOrder, node_pb2.CancelOrderRequest(
            idempotency_key=key, order_id=order_id, cancelled_by=actor, reason=reason), key)
        _show_order(client, order, as_json, f"order {order.id} cancelled")


@order_app.command("record")
@guarded
def order_record(order_id: OrderId, node: NodeAddress = DEFAULT_NODE_ADDRESS,
                 key: IdempotencyKey = "", as_json: AsJson = False) -> None:
    """Record a verified order after its publicity period: the hours are stored."""
    key = key or new_key()
    with connect(node) as client:
        order = client.call(client.stub.RecordOrder, node_pb2.RecordOrderRequest(
            idempotency_key=key, order_id=order_id), key)
        _show_order(client, order, as_json, f"order {order.id} recorded")


@order_app.command("record-due")
@guarded
def order_record_due(
    limit: Annotated[int, typer.Option("--limit", min=0, max=2**31 - 1,
                                       help="At most this many (0: the node's default).")] = 0,
    node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
    as_json: AsJson = False,
) -> None:
    """Record every verified order whose publicity period is over."""
    key = key or new_key()
    with connect(node) as client:
        response = client.call(client.stub.RecordDueOrders, node_pb2.RecordDueOrdersRequest(
            idempotency_key=key, limit=limit), key)
        if as_json:
            print_json(to_json(response))
            return
        if not response.recorded:
            echo("No order is due: none has finished its publicity period.")
            return
        echo(orders_table(response.recorded, client))
        for o in response.recorded:
            for notice in o.notices:
                echo(f"[yellow]order {o.id}:[/] {escape(notice)}")


@order_app.command("show")
@guarded
def order_show(order_id: OrderId, node: NodeAddress = DEFAULT_NODE_ADDRESS,
               as_json: AsJson = False) -> None:
    """Show one order."""
    with connect(node) as client:
        order = client.call(client.stub.GetOrder, node_pb2.GetOrderRequest(order_id=order_id))
        _show_order(client, order, as_json, "")


@order_app.command("list")
@guarded
def order_list(
    person: Annotated[int, typer.Option("--person", metavar="ID", min=0, max=INT64_MAX,
                                        help="Only orders this person receives or serves.")
                      ] = 0,
    state: Annotated[State | None, typer.Option("--state")] = None,
    limit: Annotated[int, typer.Option("--limit", min=0, max=2**31 - 1)] = 0,
    after: Annotated[int, typer.Option("--after", metavar="ORDER_ID", min=0, max=INT64_MAX,
                                       help="Page on from this order id.")] = 0,
    node: NodeAddress = DEFAULT_NODE_ADDRESS, as_json: AsJson = False,
) -> None:
    """List orders (newest last)."""
    request = node_pb2.ListOrdersRequest(person_id=person, limit=limit, after_id=after)
    if state is not None:
        request.state = ORDER_STATES[state]
    with connect(node) as client:
        response = client.call(client.stub.ListOrders, request)
        if as_json:
            print_json(to_json(response))
        elif not response.orders:
            echo("No orders.")
        else:
            echo(orders_table(response.orders, client))


# ------------------------------------------------------------------ hours


@app.command("donate")
@guarded
def donate(person_id: PersonId, minutes: Minutes,
           node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
           as_json: AsJson = False) -> None:
    """Give stored hours to the donation pool (it serves priority elders first)."""
    key = key or new_key()
    with connect(node) as client:
        tx = client.call(client.stub.Donate, node_pb2.DonateRequest(
            idempotency_key=key, person_id=person_id, minutes=minutes), key)
    if as_json:
        print_json(to_json(tx))
    else:
        echo(render_transaction(tx, f"donated {format_hours(minutes)} · ledger entry {tx.seq}"))


@app.command("grant")
@guarded
def grant(person_id: PersonId, minutes: Minutes,
          staff: Annotated[int, typer.Option("--staff", metavar="ID", min=1, max=INT64_MAX)],
          memo: Annotated[str, typer.Option("--memo")] = "",
          node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
          as_json: AsJson = False) -> None:
    """Grant city-fund hours to a priority elder."""
    key = key or new_key()
    with connect(node) as client:
        tx = client.call(client.stub.Grant, node_pb2.GrantRequest(
            idempotency_key=key, person_id=person_id, minutes=minutes, staff_id=staff,
            memo=memo), key)
    if as_json:
        print_json(to_json(tx))
    else:
        echo(render_transaction(tx, f"granted {format_hours(minutes)} · ledger entry {tx.seq}"))


@app.command("reverse")
@guarded
def reverse(seq: Annotated[int, typer.Argument(min=1, max=INT64_MAX, metavar="SEQ",
                                               help="The ledger entry to correct.")],
            staff: Annotated[int, typer.Option("--staff", metavar="ID", min=1, max=INT64_MAX)],
            reason: Annotated[str, typer.Option("--reason")],
            node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
            as_json: AsJson = False) -> None:
    """Correct a mistake by appending the entry that undoes it (history is never edited)."""
    key = key or new_key()
    with connect(node) as client:
        tx = client.call(client.stub.ReverseTransaction, node_pb2.ReverseTransactionRequest(
            idempotency_key=key, seq=seq, staff_id=staff, reason=reason), key)
    if as_json:
        print_json(to_json(tx))
    else:
        echo(render_transaction(tx, f"entry {seq} reversed by ledger entry {tx.seq}"))


@app.command("balance")
@guarded
def balance(person_id: PersonId, node: NodeAddress = DEFAULT_NODE_ADDRESS,
            as_json: AsJson = False) -> None:
    """A person's stored hours: total, held, available, and by origin."""
    with connect(node) as client:
        result = client.call(client.stub.GetBalance,
                             node_pb2.GetBalanceRequest(person_id=person_id))
        if as_json:
            print_json(to_json(result))
        else:
            echo(render_balance(result, client.name_of(person_id)))


@app.command("history")
@guarded
def history(
    person_id: PersonId,
    limit: Annotated[int, typer.Option("--limit", min=0, max=2**31 - 1,
                                       help="At most this many entries (0: 100).")] = 0,
    after: Annotated[int, typer.Option("--after", metavar="SEQ", min=0, max=INT64_MAX,
                                       help="Page on from this ledger entry.")] = 0,
    node: NodeAddress = DEFAULT_NODE_ADDRESS, as_json: AsJson = False,
) -> None:
    """A person's ledger entries, oldest first."""
    with connect(node) as client:
        result = client.call(client.stub.GetHistory, node_pb2.GetHistoryRequest(
            person_id=person_id, limit=limit, after_seq=after))
        if as_json:
            print_json(to_json(result))
        elif not result.entries:
            echo(f"{who(client, person_id)} has no ledger entries yet.")
        else:
            echo(history_table(result, client.name_of(person_id)))


@app.command("policy")
@guarded
def policy_show(node: NodeAddress = DEFAULT_NODE_ADDRESS, as_json: AsJson = False,
                source: Annotated[bool, typer.Option(
                    "--source", help="Print the policy file exactly as published.")] = False,
                ) -> None:
    """The city policy this node applies."""
    with connect(node) as client:
        result = client.call(client.stub.GetPolicy, node_pb2.GetPolicyRequest())
    if source:
        sys.stdout.write(result.source_toml)
    elif as_json:
        print_json(to_json(result))
    else:
        echo(render_policy(result))
