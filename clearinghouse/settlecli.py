"""``timebank clearinghouse settle ...``: the bureau closes settlement periods and reads,
decides and defaults on their statements (issue 16).

``close`` closes a calendar month (``--period 2026-11``) or the log up to a size
(``--up-to``) and signs the statement with the clearinghouse key; ``show`` prints a
statement as it stands: its lines, the netting in plain words, the money (the finance
office's input: no money moves inside this system), the countersignatures, disputes and
acts, and whether it is final or what it waits for. ``decide`` and ``default`` are the
bureau's city-signed acts with the city root key at hand (as ``admit`` is); with the
root key offline, ``prepare settle-decision`` / ``settle-default`` write the act file
for ``timebank city sign`` and ``import`` takes it back (``clearinghouse.cli``).
Chinese first, English beside it; a refusal is one red line (``runtime.console``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from clearinghouse.config import load_config
from runtime.console import echo, fail, guarded, print_json
from runtime.errors import FailedPrecondition, InvalidArgument
from timebank import settlement as st
from timebank.minutes import format_hours

if TYPE_CHECKING:
    from clearinghouse.config import ClearinghouseConfig
    from clearinghouse.usecases.app import ClearinghouseApp
    from clearinghouse.usecases.settlement import Sign
    from timebank.envelope import Signed
    from timebank.v1 import clearing_pb2 as pb

settle_app = typer.Typer(
    help="Settlement periods (结算): close a period, show its statement, decide a "
         "dispute, declare a default.", no_args_is_help=True)

ConfigFile = Annotated[Path, typer.Option(
    "--config", "-c", metavar="FILE", help="The clearinghouse's configuration "
    "(clearinghouse.toml, written by `timebank clearinghouse init`).")]
Serial = Annotated[int, typer.Option(
    "--serial", metavar="N", min=0, max=2**63 - 1,
    help="The statement's serial (0: the latest).")]
Reason = Annotated[str, typer.Option(
    "--reason", metavar="TEXT", help="Why, in words the districts read (logged).")]
MAX_SHOWN_DISPUTED = 20


def clearinghouse_signer(config: ClearinghouseConfig, app: ClearinghouseApp) -> Sign:
    """Signs a statement with the clearinghouse key this machine holds."""
    from clearinghouse.bootstrap import signing_key
    from timebank.envelope import CLEARINGHOUSE, sign

    key = signing_key(config, app)

    def signed(kind: str, body: bytes) -> Signed:
        return sign(kind, body, CLEARINGHOUSE, key)

    return signed


# ------------------------------------------------------------------ reading a statement

def _hm(minutes: int) -> str:
    return f"{format_hours(minutes)} ({minutes:+d} min)"


def _yuan(fen: int) -> str:
    return f"¥{st.format_yuan(fen)}"


def _party(node_id: str, names: dict[str, str]) -> str:
    if node_id == st.RESERVE:
        return st.RESERVE_NAME
    return f"{names.get(node_id, '')} ({node_id})".strip()


def settlement_json(found: pb.GetSettlementResponse) -> dict[str, Any]:
    """What ``show --json`` prints."""
    from timebank.envelope import decode, identity
    from timebank.v1 import clearing_pb2 as pb

    revisions = []
    for raw, index in zip(found.statements, found.log_indexes, strict=True):
        envelope = decode(raw)
        s = st.parse_statement(envelope.body)
        revisions.append({
            "serial": s.serial, "revision": s.revision, "period": s.period,
            "start": s.start, "end": s.end, "log_index": index,
            "statement_sha256": identity(envelope).hex(),
            "closed_at": s.closed_at.isoformat(), "on_default": s.on_default,
            "rate_fen_per_hour": s.sheet.rate_fen_per_hour, "claims": s.sheet.claims,
            "lines": [{"node_id": x.node_id, "opening_minutes": x.opening_minutes,
                       "net_minutes": x.net_minutes, "owed_minutes": x.owed_minutes,
                       "owing_minutes": x.owing_minutes,
                       "closing_minutes": x.closing_minutes, "claims": x.claims,
                       "fen": x.fen} for x in s.sheet.lines],
            "transfers": [{"from": t.payer, "to": t.payee, "minutes": t.amount}
                          for t in s.sheet.transfers],
            "payments": [{"from": t.payer, "to": t.payee, "fen": t.amount}
                         for t in s.sheet.payments],
            "residue_fen": s.sheet.residue_fen, "excluded": list(s.sheet.excluded),
            "netting": {"gross": s.sheet.netting.gross,
                        "bilateral": s.sheet.netting.bilateral,
                        "transfers": s.sheet.netting.transfers,
                        "possible": s.sheet.netting.possible}})

    def acts(items: Any, message: Any) -> list[dict[str, Any]]:
        from google.protobuf.json_format import MessageToDict

        return [{"signer": decode(e).signer,
                 **MessageToDict(message.FromString(decode(e).body),
                                 preserving_proto_field_name=True)} for e in items]

    return {"final": found.final, "revisions": revisions,
            "countersigns": acts(found.countersigns, pb.SettlementCountersign),
            "disputes": acts(found.disputes, pb.SettlementDispute),
            "decisions": acts(found.decisions, pb.SettlementDecision),
            "defaults": acts(found.defaults, pb.SettlementDefault)}


def print_settlement(found: pb.GetSettlementResponse, names: dict[str, str]) -> None:
    """A statement as it stands, for the bureau and the finance office."""
    from timebank.envelope import decode, identity
    from timebank.v1 import clearing_pb2 as pb

    envelope = decode(found.statements[-1])
    s = st.parse_statement(envelope.body)
    echo(f"[bold]结算单 statement {s.serial}[/] 第 {s.revision} 版 revision — 期间 period "
         f"{escape(s.period)}, 日志 log leaves [{s.start}, {s.end}), "
         f"{s.sheet.claims} 笔账目 claims settled")
    echo(f"结算单标识 statement identity (sha256): {identity(envelope).hex()}  "
         f"日志 log leaf {found.log_indexes[-1]}")
    table = Table(title="各区 lines (+ 应收 owed to it, − 应付 it owes)", title_justify="left")
    for column in ("区 district", "结转 opening", "本期净额 net", "应收 owed", "应付 owes",
                   "结算 closing", "账目 claims"):
        table.add_column(column, justify="left" if column.startswith("区") else "right",
                         no_wrap=True)
    if s.sheet.rate_fen_per_hour:
        table.add_column("金额 money", justify="right", no_wrap=True)
    for x in s.sheet.lines:
        row = [escape(_party(x.node_id, names)), str(x.opening_minutes),
               _hm(x.net_minutes), str(x.owed_minutes), str(x.owing_minutes),
               _hm(x.closing_minutes), str(x.claims)]
        if s.sheet.rate_fen_per_hour:
            row.append(_yuan(x.fen))
        table.add_row(*row)
    echo(table)
    echo(s.sheet.netting.words())
    for t in s.sheet.transfers:
        echo(f"  {escape(_party(t.payer, names))} → {escape(_party(t.payee, names))}: "
             f"{_hm(t.amount)}")
    if s.sheet.rate_fen_per_hour:
        echo(f"按每小时 {_yuan(s.sheet.rate_fen_per_hour)} 折算 / at "
             f"{_yuan(s.sheet.rate_fen_per_hour)} an hour (rounding residue "
             f"{_yuan(s.sheet.residue_fen)}, paid (+) or kept (−) by the city reserve):")
        for t in s.sheet.payments:
            echo(f"  {escape(_party(t.payer, names))} → {escape(_party(t.payee, names))}: "
                 f"{_yuan(t.amount)}")
        echo("本系统不转移资金：本结算单是财务部门的依据 / No money moves inside this system: "
             "this statement is the finance office's input.")
    if s.sheet.excluded:
        echo(f"裁决排除的账目 excluded by the bureau's decision: {len(s.sheet.excluded)} "
             "(they settle in the next period)")
    countersigned = {decode(e).signer for e in found.countersigns
                     if pb.SettlementCountersign.FromString(decode(e).body).revision
                     == s.revision}
    echo("会签 countersigned: " + (", ".join(_party(n, names) for n in sorted(countersigned))
                                  or "无 nobody yet"))
    for raw in found.disputes:
        d = pb.SettlementDispute.FromString(decode(raw).body)
        claims = ", ".join(f"{c.claim_id} {c.reason}" for c in d.claims[:MAX_SHOWN_DISPUTED])
        more = f" (+{len(d.claims) - MAX_SHOWN_DISPUTED})" if len(
            d.claims) > MAX_SHOWN_DISPUTED else ""
        echo(f"[yellow]争议 dispute[/] {escape(_party(d.node_id, names))} on revision "
             f"{d.revision}: {escape(claims)}{more} {escape(d.detail[:200])}")
    for raw in found.decisions:
        c = pb.SettlementDecision.FromString(decode(raw).body)
        what = (f"修订 revised, {len(c.excluded_claim_ids)} claims left out" if c.revise
                else "维持 upheld, overruling " + ", ".join(c.overruled_node_ids))
        echo(f"裁决 decision on revision {c.revision}: {what} — {escape(c.reason[:200])}")
    for raw in found.defaults:
        f = pb.SettlementDefault.FromString(decode(raw).body)
        echo(f"[red]违约 default[/] {escape(_party(f.node_id, names))}: unpaid "
             f"{_hm(f.unpaid_minutes)}, treatment {f.treatment} — {escape(f.reason[:200])}")
    if found.final:
        echo("[green]已定稿 final[/]: 各区均已会签或经裁决 / every district countersigned "
             "or was overruled by the bureau.")
    else:
        overruled = {n for raw in found.decisions
                     for c in [pb.SettlementDecision.FromString(decode(raw).body)]
                     if not c.revise and c.revision == s.revision
                     for n in c.overruled_node_ids}
        waiting = [x.node_id for x in s.sheet.lines
                   if x.node_id not in countersigned | overruled]
        echo("[yellow]未定稿 not final[/]: 等待会签 waiting for the countersignature of "
             + ", ".join(_party(n, names) for n in waiting)
             + (" (或裁决其争议 / or the bureau's decision on their disputes)"
                if found.disputes else ""))


def _names(app: ClearinghouseApp) -> dict[str, str]:
    from clearinghouse.usecases import admission

    return {a.node_id: a.district for a in app.query(admission.admissions)}


# ------------------------------------------------------------------ commands

@settle_app.command("close")
@guarded
def close_command(
    config_file: ConfigFile,
    period: Annotated[str | None, typer.Option(
        "--period", metavar="YYYY-MM",
        help="A calendar month in city time, e.g. 2026-11: it ends at the first log leaf "
             "stamped at or after the next month's first midnight.")] = None,
    up_to: Annotated[int | None, typer.Option(
        "--up-to", metavar="SIZE", min=0, max=2**63 - 1,
        help="Close the log up to this many leaves instead of a month.")] = None,
    label: Annotated[str | None, typer.Option(
        "--label", metavar="LABEL", help="The period's name with --up-to (default "
        "log-SIZE).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Close a settlement period (结算): settle every claim completed in it, sign the
    statement with the clearinghouse key and log it; all of it, or nothing."""
    from clearinghouse.bootstrap import open_app
    from clearinghouse.usecases import settlement

    if label is not None and up_to is None:
        fail("--label 只与 --up-to 一起用 / --label goes with --up-to (a month is named by "
             "itself)")
    config = load_config(config_file)
    app = open_app(config)
    try:
        sign = clearinghouse_signer(config, app)
        closed = app.execute(settlement.close, sign, period=period, up_to=up_to, label=label)
        found = app.query(settlement.get, closed.statement.serial)
        names = _names(app)
    finally:
        app.db.dispose()
    if as_json:
        print_json(settlement_json(found))
        return
    echo(f"[green]期间 {escape(closed.statement.period)} 已结算 / period "
         f"{escape(closed.statement.period)} closed[/]: statement {closed.statement.serial}, "
         f"log leaf {closed.log_index}. Each district now checks its line and countersigns.")
    print_settlement(found, names)


@settle_app.command("show")
@guarded
def show_command(
    config_file: ConfigFile,
    serial: Serial = 0,
    period: Annotated[str, typer.Option("--period", metavar="LABEL",
                                        help="The period's label, e.g. 2026-11.")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a statement as it stands (default: the latest): lines, netting, money,
    countersignatures, disputes, decisions, defaults, and what it waits for."""
    from clearinghouse.bootstrap import open_app
    from clearinghouse.usecases import settlement

    config = load_config(config_file)
    app = open_app(config)
    try:
        found = app.query(settlement.get, serial, period)
        names = _names(app)
    finally:
        app.db.dispose()
    if as_json:
        print_json(settlement_json(found))
    else:
        print_settlement(found, names)


def _statement_now(app: ClearinghouseApp, serial: int) -> tuple[st.Statement, bytes]:
    """The latest revision of a statement and its identity."""
    from clearinghouse.usecases import settlement
    from timebank.envelope import decode, identity

    found = app.query(settlement.get, serial)
    envelope = decode(found.statements[-1])
    return st.parse_statement(envelope.body), identity(envelope)


def decision_act(app: ClearinghouseApp, serial: int, *, overrule: list[str],
                 exclude: list[str], reason: str) -> tuple[str, bytes]:
    """The kind and body of a decision on the latest revision of ``serial``: revise if
    claims are excluded, else uphold overruling ``overrule``."""
    from clearinghouse.bureau import decision_body

    if bool(overrule) == bool(exclude):
        raise InvalidArgument("裁决或驳回区（--overrule），或排除账目（--exclude），二选一 / a "
                              "decision either overrules districts (--overrule) or leaves "
                              "claims out (--exclude), one of them", "BAD_DECISION")
    if not reason.strip():
        fail("写明理由 / say why: --reason TEXT")
    statement, ident = _statement_now(app, serial)
    return st.DECISION_KIND, decision_body(
        statement.serial, statement.revision, ident, revise=bool(exclude),
        overruled=overrule, excluded=exclude, reason=reason.strip(), at=app.clock.now())


def default_act(app: ClearinghouseApp, serial: int, node_id: str, minutes: int | None,
                reason: str) -> tuple[str, bytes]:
    """The kind and body of a default of ``node_id`` on statement ``serial``: its whole
    closing debit unless ``minutes``; the treatment the statement's policy set."""
    from clearinghouse.bureau import default_body

    if not reason.strip():
        fail("写明理由 / say why: --reason TEXT")
    statement, ident = _statement_now(app, serial)
    line = statement.sheet.line(node_id)
    if line is None or line.closing_minutes >= 0:
        raise FailedPrecondition(f"区 {node_id} 在结算单 {statement.serial} 上没有净欠 / "
                                 f"district {node_id} owes nothing net on statement "
                                 f"{statement.serial}", "NOT_A_DEBIT")
    unpaid = -line.closing_minutes if minutes is None else minutes
    rate = statement.sheet.rate_fen_per_hour
    return st.DEFAULT_KIND, default_body(
        statement.serial, ident, node_id, unpaid, st.fen_of(unpaid, rate) if rate else 0,
        statement.on_default, reason.strip(), app.clock.now())


def _import_online(config: ClearinghouseConfig, app: ClearinghouseApp, kind: str,
                   body: bytes) -> object:
    """Sign an act with the city root key at hand and import it."""
    from clearinghouse.bootstrap import city_key
    from clearinghouse.bureau import import_act, prepared
    from timebank.actfile import sign_act

    act = sign_act(prepared(app, kind, body), city_key(config, app))
    return import_act(app, act, sign=clearinghouse_signer(config, app))


Overrule = Annotated[list[str] | None, typer.Option(
    "--overrule", metavar="NODE_ID", help="Uphold the statement, overruling this "
    "district's dispute (repeat for several).")]
Exclude = Annotated[list[str] | None, typer.Option(
    "--exclude", metavar="CLAIM_ID", help="Revise the statement without this claim "
    "(repeat); it settles in the next period.")]
Minutes = Annotated[int | None, typer.Option(
    "--minutes", metavar="N", min=1, max=2**62,
    help="The unpaid minutes (default: the district's whole closing debit).")]
NodeId = Annotated[str, typer.Option("--node-id", metavar="CODE",
                                     help="The district, e.g. 320115.")]


@settle_app.command("decide")
@guarded
def decide_command(config_file: ConfigFile, serial: Serial, reason: Reason,
                   overrule: Overrule = None, exclude: Exclude = None) -> None:
    """Decide a disputed statement with the city root key at hand (裁决): uphold it,
    overruling the disputing districts, or revise it without the claims in dispute.
    With the root key offline: `prepare settle-decision`, then `import`."""
    from clearinghouse.bootstrap import open_app
    from clearinghouse.usecases import settlement

    config = load_config(config_file)
    app = open_app(config)
    try:
        kind, body = decision_act(app, serial, overrule=overrule or [],
                                  exclude=exclude or [], reason=reason)
        done = _import_online(config, app, kind, body)
        assert isinstance(done, settlement.Decided)
        found = app.query(settlement.get, serial)
        names = _names(app)
    finally:
        app.db.dispose()
    echo(f"裁决已记录 decision logged (leaf {done.log_index})"
         + (f"; 新版 revision {done.revised.statement.revision} issued (leaf "
            f"{done.revised.log_index})" if done.revised else ""))
    print_settlement(found, names)


@settle_app.command("default")
@guarded
def default_command(config_file: ConfigFile, serial: Serial, node_id: NodeId,
                    reason: Reason, minutes: Minutes = None) -> None:
    """Declare that a district did not settle the debit of a final statement (违约), with
    the city root key at hand; the city policy decided ahead of time what follows
    (carry into the next period, or the city reserve pays). With the root key offline:
    `prepare settle-default`, then `import`."""
    from clearinghouse.bootstrap import open_app
    from clearinghouse.usecases import settlement

    config = load_config(config_file)
    app = open_app(config)
    try:
        kind, body = default_act(app, serial, node_id, minutes, reason)
        index = _import_online(config, app, kind, body)
        found = app.query(settlement.get, serial)
        names = _names(app)
    finally:
        app.db.dispose()
    echo(f"违约已记录 default logged (leaf {index})")
    print_settlement(found, names)


__all__ = ["decision_act", "default_act", "print_settlement",
           "settle_app", "settlement_json"]
