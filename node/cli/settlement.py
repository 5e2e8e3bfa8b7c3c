"""``timebank node settlement show``: a settlement statement as this district holds it
(issue 16), read from the node's own database like ``timebank node check --config``:
the statement, this district's line, the netting in plain words, what this node
answered and whether the statement is final and posted here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from node.cli.common import AsJson, ConfigFile, echo, guarded, print_json
from node.config import load_config
from timebank.citytime import CITY_TZ
from timebank.minutes import format_hours_and_minutes as _hours
from timebank.settlement import RESERVE, RESERVE_NAME, Netting, format_yuan

if TYPE_CHECKING:
    from node.usecases.settlement import Shown

settlement_app = typer.Typer(
    name="settlement", no_args_is_help=True, add_completion=False,
    help="结算 / settlement: the statements of closed periods, as this district checked, "
         "answered and posted them.")

Serial = Annotated[int, typer.Option(
    "--serial", min=0, max=2**63 - 1, metavar="N",
    help="The statement's serial (default: the latest this node has seen).")]

NO_MONEY = ("本结算单仅是财务部门的核算依据，本系统内不发生任何资金划转 / no money moves inside "
            "this system: the statement is the finance office's input")


@settlement_app.command("show")
@guarded
def show_command(config_file: ConfigFile, serial: Serial = 0, as_json: AsJson = False) -> None:
    """显示结算单 / Show a settlement statement: this district's line, the netting, and
    whether it is countersigned, disputed, final or posted here."""
    from node.bootstrap import open_app
    from node.usecases import admissions, settlement

    config = load_config(config_file)
    app = open_app(config)
    try:
        shown = app.query(settlement.show, serial)
        names = {c.node_id: c.district for c in
                 (app.query(admissions.view).admitted(n) for n in
                  [x.node_id for x in shown.statement.sheet.lines]) if c is not None}
    finally:
        app.db.dispose()
    summary = summarise(shown, config.node_id, names)
    if as_json:
        print_json(summary)
        return
    echo(render(summary))


def _yuan(fen: int) -> str:
    return f"{format_yuan(fen)} 元"


def summarise(shown: Shown, node_id: str, names: dict[str, str]) -> dict[str, Any]:
    """Everything ``show`` prints, as plain values (the JSON output)."""
    from node.domain.settlement import SettlementState
    from timebank.envelope import decode
    from timebank.v1 import clearing_pb2 as pb

    s, r = shown.statement, shown.record
    sheet = s.sheet
    netting = sheet.netting
    line = sheet.line(node_id)
    countersigned: list[str] = []
    decisions: list[str] = []
    if shown.evidence is not None:
        for raw in shown.evidence.countersigns:
            try:
                countersigned.append(decode(raw).signer)
            except Exception:  # shown as stored; it was verified before it was kept
                continue
        for raw in shown.evidence.decisions:
            try:
                decisions.append(pb.SettlementDecision.FromString(decode(raw).body).reason)
            except Exception:
                continue
    return {
        "serial": s.serial, "revision": s.revision, "period": s.period,
        "state": r.state, "state_label": SettlementState(r.state).label,
        "log_leaves": [s.start, s.end],
        "closed_at": s.closed_at.astimezone(CITY_TZ).strftime("%Y-%m-%d %H:%M:%S"),
        "statement_sha256": r.statement_sha256.hex(),
        "node_id": node_id, "district": names.get(node_id, ""),
        "line": None if line is None else {
            "opening_minutes": line.opening_minutes, "net_minutes": line.net_minutes,
            "owed_minutes": line.owed_minutes, "owing_minutes": line.owing_minutes,
            "claims": line.claims, "fen": line.fen},
        "netting": {"districts": netting.districts, "gross": netting.gross,
                    "bilateral": netting.bilateral, "transfers": netting.transfers,
                    "possible": netting.possible, "claims": sheet.claims},
        "transfers": [{"from": t.payer, "to": t.payee, "minutes": t.amount}
                      for t in sheet.transfers],
        "rate_fen_per_hour": sheet.rate_fen_per_hour,
        "payments": [{"from": t.payer, "to": t.payee, "fen": t.amount}
                     for t in sheet.payments],
        "residue_fen": sheet.residue_fen,
        "answer": r.answer_kind, "differences": r.differences, "detail": r.detail,
        "countersigned_by": sorted(countersigned), "decisions": decisions,
        "ledger_seq": r.ledger_seq, "last_posted_serial": shown.last_posted,
        "clearing_minutes": shown.clearing,
        "carried_forward_minutes": shown.unsettled_net,
        "names": names, "note": NO_MONEY,
    }


def _who(node: str, names: dict[str, str]) -> str:
    if node == RESERVE:
        return RESERVE_NAME
    return f"{names.get(node, '')} {node}".strip()


def render(d: dict[str, Any]) -> Table:
    """The statement as an operator reads it, Chinese first."""
    names: dict[str, str] = d["names"]
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("结算单 / statement",
                 f"第 {d['serial']} 期 第 {d['revision']} 版 · {escape(d['period'])} / "
                 f"serial {d['serial']} revision {d['revision']}")
    grid.add_row("状态 / state", escape(d["state_label"]))
    grid.add_row("日志区间 / log leaves",
                 f"[{d['log_leaves'][0]}, {d['log_leaves'][1]})  结算于 / closed "
                 f"{d['closed_at']} (Asia/Shanghai)")
    grid.add_row("核验哈希 / sha256", d["statement_sha256"])
    line = d["line"]
    who = escape(_who(d["node_id"], names))
    if line is None:
        grid.add_row("本区 / this district", f"{who}: 不在本结算单上 / not on this statement")
    else:
        net = line["net_minutes"]
        side = ("其他区应付本区 / owed to this district" if net > 0 else
                "本区应付其他区 / owed by this district" if net < 0 else "持平 / even")
        grid.add_row("本区 / this district",
                     f"{who}: {line['claims']} 笔请求 / claims; 他区居民在本区消费 / spent "
                     f"here {_hours(line['owed_minutes'])}; 本区居民在他区消费 / spent "
                     f"elsewhere {_hours(line['owing_minutes'])}")
        grid.add_row("本期净额 / net", f"{_hours(abs(net))} {side}")
        if line["opening_minutes"]:
            grid.add_row("结转 / carried in", _hours(line["opening_minutes"]))
        if d["rate_fen_per_hour"]:
            grid.add_row("金额 / money", f"{_yuan(line['fen'])} (+ 收 / receives, - 付 / pays)")
    n = d["netting"]
    grid.add_row("轧差 / netting", Netting(n["gross"], n["bilateral"], n["transfers"],
                                          n["districts"]).words())
    for t in d["transfers"]:
        grid.add_row("", f"{escape(_who(t['from'], names))} → {escape(_who(t['to'], names))}:"
                         f" {_hours(t['minutes'])}")
    for t in d["payments"]:
        grid.add_row("付款 / payment", f"{escape(_who(t['from'], names))} → "
                     f"{escape(_who(t['to'], names))}: {_yuan(t['fen'])}")
    if d["rate_fen_per_hour"]:
        grid.add_row("尾差 / residue", f"{_yuan(d['residue_fen'])} (城市储备承担 / the reserve's)")
    if d["answer"]:
        answer = ("会签 / countersigned" if d["answer"].endswith("countersign")
                  else f"异议 / disputed: {d['differences']} 笔请求不符 / claims differ")
        grid.add_row("本区答复 / our answer", answer)
    if d["detail"]:
        grid.add_row("说明 / detail", escape(d["detail"]))
    if d["countersigned_by"]:
        grid.add_row("会签各区 / countersigned by",
                     ", ".join(escape(_who(x, names)) for x in d["countersigned_by"]))
    for reason in d["decisions"]:
        grid.add_row("市局决定 / city decision", escape(reason))
    if d["state"] == "posted":
        grid.add_row("入账 / posted", f"账本第 {d['ledger_seq']} 笔 / ledger entry "
                     f"{d['ledger_seq']}" if d["ledger_seq"] else
                     "净额为零，无需分录 / net zero: no entry needed")
    carried = d["carried_forward_minutes"]
    grid.add_row("结转下期 / carried forward",
                 f"{_hours(abs(carried))} " + ("应付本区 / owed to this district" if carried > 0
                                              else "本区应付 / owed by this district"
                                              if carried < 0 else "/ nothing")
                 + " (期末之后完成、尚未结算的请求 / claims completed after the period, not "
                   "yet settled)")
    grid.add_row("", escape(d["note"]))
    return grid


__all__ = ["render", "settlement_app", "show_command", "summarise"]
