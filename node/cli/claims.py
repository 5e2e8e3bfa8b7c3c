"""Claims with other districts (通存通兑): move a person, list and show claims, and the
node's clearing position side by side with the clearinghouse's.

The node never imports the clearinghouse: it reads the clearinghouse's positions over
gRPC like any client, and the warning threshold below mirrors the clearinghouse's
``NEAR_LIMIT_PERCENT``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
from rich import box
from rich.console import Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from node.cli.client import (
    CALL_TIMEOUT_SECONDS,
    DEFAULT_NODE_ADDRESS,
    NodeClient,
    cli_tls,
    connect,
    new_key,
)
from node.cli.common import (
    AsJson,
    CliError,
    IdempotencyKey,
    Layout,
    NodeAddress,
    PersonId,
    TableLayout,
    echo,
    fail,
    guarded,
    print_json,
)
from node.cli.render import enum_short, fmt_time, hm, laid_out, short_who, to_json, who
from node.config import load_config
from node.domain.claims import waiting_reason
from runtime.console import label_grid
from runtime.rpcerrors import error_reason
from runtime.tls import ClientTls
from runtime.tls import channel as tls_channel
from timebank.minutes import format_hours
from timebank.v1 import clearing_pb2, clearing_pb2_grpc, node_pb2

#: The share of its net debit limit at which a district is warned (the clearinghouse's
#: ``clearinghouse.domain.positions.NEAR_LIMIT_PERCENT``).
NEAR_LIMIT_PERCENT = 80
#: How long a look-up of district names may take before the table shows codes only.
NAMES_TIMEOUT_SECONDS = 3.0
#: The clearinghouse's refusal of a claim made under a policy not in force.
POLICY_NOT_CURRENT = "POLICY_NOT_CURRENT"
CLAIM_STATES = ("proposed", "accepted", "finishing", "completed", "voided", "rejected",
                "expired")


def role_name(value: int) -> str:
    return enum_short(node_pb2.ClaimRole.DESCRIPTOR, value)


def _role_text(claim: node_pb2.Claim) -> str:
    role = role_name(claim.role)
    if claim.kind == "move":
        return {"creditor": "creditor (the new home)",
                "debtor": "debtor (the old home)"}.get(role, role)
    return {"creditor": "creditor (served the person)",
            "debtor": "debtor (keeps the hours)"}.get(role, role)


def _state_text(state: str) -> str:
    style = {"completed": "green", "rejected": "red", "expired": "red", "voided": "red",
             "proposed": "yellow", "accepted": "yellow", "finishing": "yellow"}.get(state)
    return f"[{style}]{escape(state)}[/]" if style else escape(state)


def _district(node_id: str, names: dict[str, str]) -> str:
    name = names.get(node_id, "")
    return f"{escape(name)} ({node_id})" if name else escape(node_id)


def render_claim(claim: node_pb2.Claim, client: NodeClient | None = None,
                 names: dict[str, str] | None = None, title: str = "") -> Panel:
    names = names or {}
    grid = label_grid()
    grid.add_row("claim id", claim.claim_id)
    grid.add_row("kind", escape(claim.kind))
    grid.add_row("state", f"[bold]{_state_text(claim.state)}[/]")
    grid.add_row("this district is", _role_text(claim))
    grid.add_row("other district", _district(claim.counterparty_node_id, names))
    grid.add_row("minutes", hm(claim.minutes))
    if claim.posted_minutes:
        grid.add_row("posted", hm(claim.posted_minutes))
    if claim.reason:
        grid.add_row("reason", f"[red]{escape(claim.reason)}[/] " + (
            "(temporary: a new claim may succeed later)" if claim.temporary
            else "(final: a new claim cannot succeed as things stand)"))
    if claim.detail:
        grid.add_row("detail", escape(claim.detail))
    if claim.reason == POLICY_NOT_CURRENT or POLICY_NOT_CURRENT in claim.detail:
        grid.add_row("what to do", escape(
            "this node made it under a city policy that was not the one in force: check "
            "`timebank node policy` (the city-signed policy and from when it applies) and "
            "that node.toml's [city] public_key is the city root key, then make it again"))
    if claim.waiting_reason:
        grid.add_row("waiting", waiting_text(claim))
        grid.add_row("", escape(waiting_reason(claim.waiting_reason,
                                               claim.counterparty_node_id)))
        if claim.waiting_detail:
            grid.add_row("", f"[dim]{escape(claim.waiting_detail)}[/]")
    if claim.order_id:
        grid.add_row("order", str(claim.order_id))
    if claim.person_id:
        grid.add_row("person", who(client, claim.person_id))
    for label, ts in (("expires", claim.expires_at), ("updated", claim.updated_at)):
        text = fmt_time(ts)
        if text:
            grid.add_row(label, text)
    return Panel(grid, title=title or f"{claim.kind} claim", title_align="left",
                 expand=False)


def waiting_text(claim: node_pb2.Claim) -> str:
    """Why an open claim's message is not taken yet and when it is tried again."""
    again = fmt_time(claim.next_attempt_at, seconds=True)
    tries = f"{claim.attempts} {'try' if claim.attempts == 1 else 'tries'}"
    return (f"[yellow]{escape(claim.waiting_reason)}[/] (temporary: not taken yet, "
            f"{tries}; next try {again})")


def claims_table(claims: Iterable[node_pb2.Claim], client: NodeClient | None = None,
                 names: dict[str, str] | None = None) -> Table:
    names = names or {}
    table = Table(title="claims with other districts (minutes; times in Asia/Shanghai)",
                  title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
    for col in ("claim id", "kind", "role"):
        table.add_column(col, no_wrap=True)
    table.add_column("other district", min_width=6)
    table.add_column("minutes", justify="right", no_wrap=True)
    table.add_column("posted", justify="right", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("reason", overflow="fold")
    table.add_column("order / person", min_width=6)
    for c in claims:
        if c.order_id:
            subject = f"order {c.order_id}"
            if c.person_id:
                subject += f" · {short_who(client, c.person_id)}"
        else:
            subject = short_who(client, c.person_id) if c.person_id else "—"
        reason = escape(c.reason) + (" (T)" if c.temporary else " (F)" if c.reason else "")
        if c.waiting_reason:
            reason = (f"等待 waiting: {escape(c.waiting_reason)} (T), next try "
                      f"{fmt_time(c.next_attempt_at, seconds=True)[11:]}")
        table.add_row(c.claim_id, escape(c.kind), role_name(c.role),
                      _district(c.counterparty_node_id, names), str(c.minutes),
                      str(c.posted_minutes) if c.posted_minutes else "",
                      _state_text(c.state), reason, subject)
    return table


# ------------------------------------------------------------------ the clearinghouse


def _clearinghouse_error(e: grpc.RpcError, address: str) -> str:
    if not isinstance(e, grpc.Call):
        return f"the call to the clearinghouse at {address} failed: {e}"
    code = e.code()
    name = code.name if code is not None else "UNKNOWN"
    details = " ".join((e.details() or "").split())
    if code is grpc.StatusCode.UNAVAILABLE:
        return (f"UNAVAILABLE: cannot reach the clearinghouse at {address} (is `timebank "
                f"clearinghouse serve` running there? set --clearinghouse): {details}")
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return (f"DEADLINE_EXCEEDED: the clearinghouse at {address} did not answer within "
                f"{CALL_TIMEOUT_SECONDS:g} s")
    message = f"{name}: {details or 'no details'}"
    reason = error_reason(e)
    if reason and reason != name:
        message += f" [{reason}]"
    return message


def clearinghouse_positions(address: str, tls: ClientTls | None,
                            timeout: float = CALL_TIMEOUT_SECONDS,
                            ) -> clearing_pb2.GetPositionsResponse:
    """The clearinghouse's positions (GetPositions), over mutual TLS as ``tls`` says; a
    failure is one-line CliError."""
    with tls_channel(address, tls) as channel:
        stub = clearing_pb2_grpc.ClearinghouseServiceStub(channel)
        try:
            return stub.GetPositions(clearing_pb2.GetPositionsRequest(), timeout=timeout)
        except grpc.RpcError as e:
            hint = ("" if tls is None or tls.cert is not None else
                    " — 结算中心要求节点证书，请用 --config 指定节点配置 / the clearinghouse asks "
                    "for the node's certificate: give --config (the node's node.toml)")
            fail(_clearinghouse_error(e, address) + hint)


def district_names(client: NodeClient) -> dict[str, str]:
    """Node id → district name, from the node's clearinghouse; empty if it cannot be
    reached quickly (the table then shows codes only)."""
    try:
        clearing = client.stub.GetClearing(node_pb2.GetClearingRequest(),
                                           timeout=client.timeout)
    except grpc.RpcError:
        return {}
    if not clearing.clearinghouse:
        return {}
    try:
        tls = cli_tls()
    except CliError:
        return {}
    # The clearinghouse asks for a client certificate this command line does not have:
    # the names are left out, as when it cannot be reached.
    with tls_channel(clearing.clearinghouse, tls) as channel:
        stub = clearing_pb2_grpc.ClearinghouseServiceStub(channel)
        try:
            found = stub.GetPositions(clearing_pb2.GetPositionsRequest(),
                                      timeout=NAMES_TIMEOUT_SECONDS)
        except grpc.RpcError:
            return {}
    return {n.node_id: n.district for n in found.nodes}


def used_percent(net_minutes: int, limit_minutes: int) -> int | None:
    """The whole percentage of the net debit limit used (0 when owing nothing); None
    when the limit is 0 and the district owes something."""
    owed = max(0, -net_minutes)
    if limit_minutes <= 0:
        return 0 if owed == 0 else None
    return owed * 100 // limit_minutes


def near_limit(net_minutes: int, limit_minutes: int,
               percent: int = NEAR_LIMIT_PERCENT) -> bool:
    """Whether a district owing ``-net_minutes`` has used ``percent``% of its limit or
    more (integers only); a district that owes nothing never is."""
    return net_minutes < 0 and -net_minutes * 100 >= limit_minutes * percent


# ------------------------------------------------------------------ commands


@guarded
def move(
    person_id: PersonId,
    to: Annotated[str, typer.Option(
        "--to", metavar="CODE",
        help="The new home district's 6-digit code, e.g. 320106.")],
    node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
    as_json: AsJson = False,
) -> None:
    """Move a person's hours to a new home district (迁移): proposes a move claim.

    The hours leave this district once the new home accepts and the clearinghouse
    completes the claim; follow it with `timebank node claims`.
    """
    key = key or new_key()
    with connect(node) as client:
        claim = client.call(client.stub.MovePerson, node_pb2.MovePersonRequest(
            idempotency_key=key, person_id=person_id, to_node_id=to.strip()), key).claim
        if as_json:
            print_json(to_json(claim))
            return
        names = district_names(client)
        echo(render_claim(claim, client, names,
                          f"move of {who(client, person_id)} to "
                          f"{_district(claim.counterparty_node_id, names)}"))
    echo("The person's hours stay here until the clearinghouse completes the claim; "
         f"follow it with [bold]timebank node claim {claim.claim_id}[/].")


@guarded
def claim_show(
    claim_id: Annotated[str, typer.Argument(metavar="CLAIM_ID",
                                            help="The claim's id (a UUID).")],
    node: NodeAddress = DEFAULT_NODE_ADDRESS, as_json: AsJson = False,
) -> None:
    """Show one claim with another district, as this node sees it."""
    with connect(node) as client:
        claim = client.call(client.stub.GetClaim,
                            node_pb2.GetClaimRequest(claim_id=claim_id.strip().lower())).claim
        if as_json:
            print_json(to_json(claim))
            return
        echo(render_claim(claim, client, district_names(client)))


@guarded
def claims_list(
    state: Annotated[str, typer.Option(
        "--state", metavar="STATE",
        help="Only claims in this state: " + ", ".join(CLAIM_STATES) + ".")] = "",
    limit: Annotated[int, typer.Option("--limit", min=0, max=1000,
                                       help="At most this many claims (0: 100).")] = 0,
    after: Annotated[str, typer.Option("--after", metavar="CLAIM_ID",
                                       help="Page on from this claim id.")] = "",
    node: NodeAddress = DEFAULT_NODE_ADDRESS, as_json: AsJson = False,
    layout: TableLayout = Layout.AUTO,
) -> None:
    """Claims with other districts: redemptions for visitors and moves, oldest first."""
    with connect(node) as client:
        result = client.call(client.stub.ListClaims, node_pb2.ListClaimsRequest(
            state=state.strip().lower(), after_claim_id=after.strip().lower(), limit=limit))
        if as_json:
            print_json(to_json(result))
            return
        if not result.claims:
            echo(f"No {state.strip().lower() + ' ' if state else ''}claims with other "
                 "districts.")
            return
        echo(laid_out(claims_table(result.claims, client, district_names(client)), layout))


@dataclass(frozen=True, slots=True)
class _Comparison:
    node_id: str
    district: str
    clearinghouse: str
    clearing: node_pb2.GetClearingResponse
    position: clearing_pb2.NodePosition

    @property
    def agree(self) -> bool:
        return self.clearing.net_minutes == self.position.net_minutes

    @property
    def in_flight(self) -> bool:
        return bool(self.clearing.unsent_messages or self.clearing.open_claims)

    @property
    def percent(self) -> int | None:
        return used_percent(self.position.net_minutes,
                            self.position.net_debit_limit_minutes)

    @property
    def near(self) -> bool:
        return self.percent is None or near_limit(self.position.net_minutes,
                                                  self.position.net_debit_limit_minutes)

    @property
    def explanation(self) -> str:
        if self.agree:
            return "the node's ledger and the clearinghouse agree"
        if self.in_flight:
            return (f"messages in flight: this node has {self.clearing.unsent_messages} "
                    f"unsent message(s) and {self.clearing.open_claims} open claim(s); "
                    "they agree once these are delivered and completed")
        return ("nothing is in flight, yet they disagree: check the ledger (`timebank "
                "node check`) and the node's clearing link")

    def json(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id, "district": self.district,
            "agree": self.agree, "in_flight": self.in_flight,
            "explanation": self.explanation,
            "node": to_json(self.clearing),
            "clearinghouse": {
                "address": self.clearinghouse,
                "net_minutes": self.position.net_minutes,
                "net_debit_limit_minutes": self.position.net_debit_limit_minutes,
                "used_percent": self.percent, "near_limit": self.near,
            },
            "difference_minutes": self.clearing.net_minutes - self.position.net_minutes,
        }


def _net(minutes: int) -> str:
    if minutes > 0:
        return f"[green]owed {hm(minutes)}[/]"
    if minutes < 0:
        return f"[red]owes {hm(-minutes)}[/]"
    return "even (0 min)"


def _render_comparison(c: _Comparison, layout: Layout = Layout.AUTO) -> Group:
    table = Table(title=f"{c.node_id} {escape(c.district)} toward the rest of the city",
                  title_justify="left")
    table.add_column("", style="bold", no_wrap=True)
    table.add_column("this node's ledger", no_wrap=True)
    table.add_column(f"the clearinghouse ({escape(c.clearinghouse)})", no_wrap=True)
    table.add_row("net position", _net(c.clearing.net_minutes), _net(c.position.net_minutes))
    limit = c.position.net_debit_limit_minutes
    percent = "no room" if c.percent is None else f"{c.percent}% used"
    limit_text = f"{format_hours(limit)} ({limit} min), {percent}"
    table.add_row("net debit limit", "—",
                  f"[bold yellow]{limit_text}[/]" if c.near else limit_text)
    table.add_row("open claims", str(c.clearing.open_claims), "—")
    table.add_row("unsent messages", str(c.clearing.unsent_messages), "—")
    table.add_row("last delivery applied", str(c.clearing.last_delivery_seq or "none"), "—")
    if c.clearing.orders_awaiting_home:
        table.add_row("orders awaiting a payer's new home",
                      str(c.clearing.orders_awaiting_home), "—")
    parts: list[Any] = [laid_out(table, layout)]
    if c.agree:
        parts.append(f"[bold green]AGREE[/]: {c.explanation}.")
    else:
        diff = c.clearing.net_minutes - c.position.net_minutes
        style = "yellow" if c.in_flight else "red"
        parts.append(f"[bold {style}]DISAGREE[/] by {hm(abs(diff))}: {c.explanation}.")
    if c.near:
        parts.append(f"[yellow]warning: {c.node_id} {escape(c.district)} is near its net "
                     f"debit limit ({percent}; the warning starts at {NEAR_LIMIT_PERCENT}%): "
                     "new redemptions and moves it would owe are refused past it, until "
                     "settlement or the bureau raises the limit.[/]")
    return Group(*parts)


@guarded
def positions(
    config_file: Annotated[Path | None, typer.Option(
        "--config", "-c", metavar="FILE",
        help="The node's configuration: its node id, its address ([server] listen) and "
             "the clearinghouse's ([clearinghouse] address).")] = None,
    node: Annotated[str, typer.Option(
        "--node", envvar="TIMEBANK_NODE_ADDRESS", metavar="HOST:PORT",
        help="The node's gRPC address (env TIMEBANK_NODE_ADDRESS). Default: the "
             f"configuration's [server] listen, else {DEFAULT_NODE_ADDRESS}.")] = "",
    clearinghouse: Annotated[str, typer.Option(
        "--clearinghouse", metavar="ADDRESS",
        help="The clearinghouse's gRPC address (HOST:PORT, or its replicas' "
             "ipv4:HOST:PORT,HOST:PORT or dns:///NAME:PORT). Default: the configuration's, "
             "else the one the node reports.")] = "",
    node_id: Annotated[str, typer.Option(
        "--node-id", metavar="CODE",
        help="This district's 6-digit code. Default: the configuration's, else the one "
             "the node reports.")] = "",
    check: Annotated[bool, typer.Option(
        "--check", help="Exit 1 when the node and the clearinghouse disagree.")] = False,
    as_json: AsJson = False, layout: TableLayout = Layout.AUTO,
) -> None:
    """This node's clearing position beside the clearinghouse's: do they AGREE?

    The node's ledger counts what it has posted; the clearinghouse counts completed
    claims. They differ while messages are in flight (unsent messages or open claims).
    Shows the net debit limit and warns from 80% used. Exit 0 either way, unless --check.
    """
    config = load_config(config_file) if config_file is not None else None
    if config is not None:
        node_id = node_id or config.node_id
        clearinghouse = clearinghouse or config.clearinghouse_address
        if not node:
            host, _, port = config.listen.rpartition(":")
            node = f"{'127.0.0.1' if host in ('0.0.0.0', '', '[::]') else host}:{port}"
    node = node or DEFAULT_NODE_ADDRESS
    with connect(node, None if config is None else config.tls) as client:
        clearing = client.call(client.stub.GetClearing, node_pb2.GetClearingRequest())
        # the node knows which district it is: its address is enough
        node_id = node_id or client.call(client.stub.GetLogHeads,
                                         node_pb2.GetLogHeadsRequest()).node_id
    clearinghouse = clearinghouse or clearing.clearinghouse
    if not clearinghouse:
        fail(f"FAILED_PRECONDITION: the node at {node} is not connected to a city "
             "clearinghouse and none was given; use --clearinghouse HOST:PORT "
             "[NOT_FEDERATED]")
    # The clearinghouse asks for a client certificate: the node's, named by its
    # configuration; without one a city serving TLS cannot be asked.
    found = clearinghouse_positions(clearinghouse, cli_tls() if config is None
                                    else config.client_tls())
    position = next((p for p in found.nodes if p.node_id == node_id), None)
    if position is None:
        fail(f"NOT_FOUND: district {node_id} is not admitted to the clearinghouse at "
             f"{clearinghouse} [UNKNOWN_NODE]")
    district = position.district or (config.district if config is not None else "")
    comparison = _Comparison(node_id, district, clearinghouse, clearing, position)
    if as_json:
        print_json(comparison.json())
    else:
        echo(_render_comparison(comparison, layout))
    if check and not comparison.agree:
        raise typer.Exit(1)
