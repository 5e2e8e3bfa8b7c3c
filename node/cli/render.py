"""Messages as text and JSON: rich panels and tables, times in the city's time zone."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich import box
from rich.console import Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from node.cli.client import NodeClient
from runtime.console import console, label_grid
from runtime.layout import Layout, fit
from timebank import transparency
from timebank.citytime import CITY_TZ
from timebank.minutes import format_hours, format_hours_and_minutes
from timebank.v1 import node_pb2

if TYPE_CHECKING:
    from node.usecases.views import LedgerReport as LedgerReportView

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


#: The Chinese beside each English column header, for the record layout (字段 field).
COLUMN_ZH = {
    "id": "编号", "state": "状态", "service": "服务", "recipient": "受助人",
    "volunteer": "志愿者", "paid from": "支付方式", "planned": "计划时长",
    "measured": "实际时长", "recorded": "记录时长", "seq": "序号", "time": "时间",
    "kind": "类型", "memo": "摘要", "change": "变动", "min": "分钟", "claim id": "结算单号",
    "role": "本区角色", "other district": "对方区", "minutes": "分钟", "posted": "已记账",
    "reason": "原因", "order / person": "订单 / 人员", "this node's ledger": "本节点账本",
}


def laid_out(table: Table, layout: Layout = Layout.AUTO) -> Any:
    """A list table as the terminal can show it: records when it does not fit."""
    return fit(table, console(), layout, COLUMN_ZH)


#: Hours with two decimals and the exact minutes: '1.25 h (75 min)'.
hm = format_hours_and_minutes


def short_account(code: str) -> str:
    """person/<64 hex>/individual → person/1a2b3c4d…/individual."""
    parts = code.split("/")
    if parts[0] == "person" and len(parts) == 3 and len(parts[1]) > 12:
        return f"person/{parts[1][:8]}…/{parts[2]}"
    return code


def who(client: NodeClient | None, person_id: int) -> str:
    if not person_id:
        return "—"
    name = client.name_of(person_id) if client is not None else ""
    return f"{escape(name)} (person {person_id})" if name else f"person {person_id}"


def render_person(person: node_pb2.Person, title: str = "") -> Panel:
    grid = label_grid()
    grid.add_row("name", escape(person.name))
    grid.add_row("kind", kind_name(person.kind))
    if person.kind == node_pb2.PERSON_KIND_INDIVIDUAL:
        grid.add_row("age", str(person.age))
    grid.add_row("priority elder", "yes (重点老人)" if person.priority else "no")
    if person.service_point_id:
        grid.add_row("service point", str(person.service_point_id))
    if person.phone:
        grid.add_row("phone", escape(person.phone))
    grid.add_row("home district", home_text(person.home_node_id))
    grid.add_row("enrolled", fmt_time(person.enrolled_at))
    grid.add_row("PersonRef", person.person_ref)
    parts: list[Any] = [grid]
    if person.changes:
        changes = Table(box=None, padding=(0, 2), title="changes (times in Asia/Shanghai)",
                        title_justify="left")
        for col in ("time", "by", "what"):
            changes.add_column(col, overflow="fold", no_wrap=col != "what")
        for c in person.changes:
            changes.add_row(fmt_time(c.at), escape(c.actor), escape(c.detail))
        parts.append(changes)
    return Panel(Group(*parts), title=title or f"person {person.id}", title_align="left",
                 expand=False)


def home_text(home_node_id: str) -> str:
    """Where a person's hours are kept: 'here', or the home district of a visitor."""
    if not home_node_id:
        return "here (this district keeps the hours)"
    return f"[bold]hours kept in {escape(home_node_id)}[/] (a visitor here: what they " \
           "receive is paid by their home district)"


def render_order(order: node_pb2.Order, client: NodeClient | None = None,
                 title: str = "") -> Panel:
    grid = label_grid()
    grid.add_row("state", f"[bold]{state_name(order.state)}[/]")
    if order.cancel_reason:
        grid.add_row("why cancelled", f"[red]{escape(order.cancel_reason)}[/]")
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
    if order.rating_by_volunteer:
        stars = "★" * order.rating_by_volunteer + "☆" * (5 - order.rating_by_volunteer)
        comment = (f" “{escape(order.comment_by_volunteer)}”"
                   if order.comment_by_volunteer else "")
        grid.add_row("rated by volunteer", f"{stars}{comment}")
    if order.dispute_reason:
        grid.add_row("disputed", escape(order.dispute_reason))
    if order.resolution:
        grid.add_row("resolution", escape(order.resolution))
    if order.note:
        grid.add_row("note", escape(order.note))
    for label, ts in (("requested", order.requested_at), ("checked in", order.checked_in_at),
                      ("checked out", order.checked_out_at), ("verified", order.verified_at),
                      ("public until", order.public_until), ("recorded", order.recorded_at),
                      ("cancelled", order.cancelled_at),
                      ("volunteer rated", order.rated_by_volunteer_at)):
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
    grid = label_grid()
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


def render_balance(balance: node_pb2.GetBalanceResponse, name: str = "") -> Panel:
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


def history_table(history: node_pb2.GetHistoryResponse, name: str = "") -> Table:
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


def render_policy(policy: node_pb2.GetPolicyResponse) -> Panel:
    grid = label_grid()
    grid.add_row("digest (sha256)", policy.digest)
    if policy.city_serial:
        grid.add_row("signed by", f"the city: serial {policy.city_serial}, in force since "
                                  f"{fmt_time(policy.effective_at, seconds=True)}")
    else:
        grid.add_row("signed by", "[yellow]nobody: the node's local policy file (no city-signed "
                                  "policy is in force yet)[/]")
    if policy.next_serial:
        grid.add_row("next", f"[yellow]serial {policy.next_serial} from "
                             f"{fmt_time(policy.next_effective_at, seconds=True)}[/] "
                             f"(sha256 {policy.next_digest})")
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


def render_report(report: node_pb2.CheckLedgerResponse, title: str = "ledger check") -> Panel:
    grid = label_grid()
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
    if report.clearing_minutes:
        owed = report.clearing_minutes
        grid.add_row("clearing", f"{hm(abs(owed))} "
                     f"{'owed to other districts' if owed > 0 else 'owed by other districts'}")
    if report.refused_deliveries:
        grid.add_row("refused deliveries",
                     f"[bold yellow]{report.refused_deliveries}[/] (nothing of them was "
                     "applied; tell the bureau)")
    parts: list[Any] = [grid]
    parts.extend(f"[red]✗ {escape(p)}[/]" for p in report.problems)
    parts.extend(f"[yellow]! refused {escape(r)}[/]" for r in report.refusals)
    return Panel(Group(*parts), title=title, title_align="left", expand=False,
                 border_style="green" if report.ok else "red")


def report_from_view(view: LedgerReportView) -> node_pb2.CheckLedgerResponse:
    return node_pb2.CheckLedgerResponse(
        ok=view.ok, transactions=view.transactions, accounts=view.accounts,
        head_hash=view.head_hash, problems=list(view.problems), issued_minutes=view.issued,
        held_by_people_minutes=view.held_by_people, donation_pool_minutes=view.donation_pool,
        consumed_minutes=view.consumed, granted_minutes=view.granted,
        clearing_minutes=view.clearing, refused_deliveries=view.refused_deliveries,
        refusals=list(view.refusals))


def _head_size(note: str) -> str:
    if not note:
        return "none yet"
    try:
        head = transparency.read_head(note)
    except transparency.LogError:
        return "unreadable"
    return f"{head.size} leaves"


def log_summary(heads: node_pb2.GetLogHeadsResponse) -> dict[str, Any]:
    """What ``node check`` says about the city's log, as JSON."""
    def size(note: str) -> int | None:
        try:
            return transparency.read_head(note).size if note else None
        except transparency.LogError:
            return None

    return {"ok": not heads.alarms, "verified_size": size(heads.verified),
            "cosigned_size": size(heads.cosigned), "final_size": size(heads.final),
            "alarms": [{"kind": a.kind, "detail": a.detail} for a in heads.alarms],
            "evidence": len(heads.evidence)}


def render_log(heads: node_pb2.GetLogHeadsResponse, title: str = "the city's log") -> Panel:
    """The heads a node holds and its alarms (fork, finality)."""
    grid = label_grid()
    grid.add_row("result", "[bold green]ok: no fork seen, every head final in time[/]"
                 if not heads.alarms else f"[bold red]{len(heads.alarms)} alarm(s)[/]")
    grid.add_row("verified head", _head_size(heads.verified))
    grid.add_row("cosigned head", _head_size(heads.cosigned))
    grid.add_row("final head", _head_size(heads.final))
    if heads.evidence:
        grid.add_row("fork evidence", f"{len(heads.evidence)} document(s): "
                     "`timebank node check --evidence-dir DIR` writes them out")
    parts: list[Any] = [grid]
    parts.extend(f"[red]✗ {escape(a.kind)}: {escape(a.detail)}[/]" for a in heads.alarms)
    return Panel(Group(*parts), title=title, title_align="left", expand=False,
                 border_style="red" if heads.alarms else "green")
