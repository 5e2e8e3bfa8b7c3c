"""The words a report prints, Chinese first with English beside it: column headers,
status names and the sentences that say in plain words what the figures mean. One copy
for every format, so the CSV, the workbook and the PDF say the same thing.
"""

from __future__ import annotations

from timebank.settlement import RESERVE, RESERVE_NAME, Sheet, Statement
from timebank.settlement import format_yuan as yuan

from .tables import COUNTERSIGNED, DISPUTED, ORDERS, OVERRULED, PENDING, UNKNOWN, ReportData

STATUS = {
    COUNTERSIGNED: "已会签 countersigned",
    DISPUTED: "有异议 disputed",
    PENDING: "待会签 pending",
    OVERRULED: "裁定维持 upheld by decision",
    UNKNOWN: "本区不掌握 not known here",
}

DISTRICT = "区 district"
NODE_ID = "节点编号 node id"
OPENING = "期初结转(分钟) opening (min)"
OWED = "应收(分钟) owed to it (min)"
OWING = "应付(分钟) it owes (min)"
NET = "本期净额(分钟) net (min)"
CLOSING = "期末头寸(分钟) closing (min)"
HOURS = "小时:分 h:mm"
CLAIMS = "笔数 claims"
FEN = "金额(分) fen"
YUAN = "金额(元) yuan"
SIGNOFF = "会签状态 countersignature"
PAYER = "付款方 payer"
PAYEE = "收款方 payee"
MINUTES = "分钟 minutes"
CREDITOR_BY_DEBTOR = "提供服务区＼时间所属区 creditor (served) \\ debtor (hours of)"
TOTAL_OWED = "应收合计 owed"
TOTAL_OWING = "应付合计 owing"
DIMENSION = "维度 dimension"
KEY = "项目 item"
PERIOD = "期间 period"

#: What the bureau's activity rows count.
CLAIMS_NOTE = ("明细按应收区（提供服务或迁入的区）、账目类型和完成月份统计。 / Counts are by "
               "the district owed (where the service was given, or the person moved to), "
               "claim kind and month of completion.")

DIMENSIONS = {
    "category": "服务类别 service category",
    "district": "区 district",
    "street": "街道 street",
    "month": "月份 month",
}

NO_MONEY_MOVES = ("本系统内不发生任何资金划转：本结算单是财务部门办理结算的依据。 / "
                  "No money moves inside this system: this statement is the finance "
                  "office's input.")


def activity_count_header(kind: str) -> str:
    return "订单数 orders" if kind == ORDERS else "跨区债权笔数 claims"


def hours(minutes: int) -> str:
    """Minutes as signed hours and minutes, ``-1:15``."""
    sign = "-" if minutes < 0 else ""
    h, m = divmod(abs(minutes), 60)
    return f"{sign}{h}:{m:02d}"




def money_sentence(sheet: Sheet) -> str:
    """The rate, and the rounding residue and who bears it."""
    if not sheet.rate_fen_per_hour:
        return ("本市政策未设费率：本结算单只结算时间，不涉及金额。 / The city policy sets no "
                "rate: this statement settles hours only, no money.")
    r = sheet.residue_fen
    if r > 0:
        residue = (f"按分取整的舍入差额 {r} 分由市储备金支付 / the rounding residue of {r} fen "
                   "is paid by the city reserve")
    elif r < 0:
        residue = (f"按分取整的舍入差额 {-r} 分归市储备金 / the rounding residue of {-r} fen "
                   "is kept by the city reserve")
    else:
        residue = "按分取整无舍入差额 / rounding to whole fen leaves no residue"
    return (f"费率每小时 {yuan(sheet.rate_fen_per_hour)} 元（{sheet.rate_fen_per_hour} 分），"
            f"各方金额按分四舍五入；{residue}。 / Rate {yuan(sheet.rate_fen_per_hour)} yuan "
            f"an hour; each party's money is rounded to whole fen.")


def signoff_sentence(data: ReportData) -> str:
    """How many districts have countersigned, and whether the statement is final."""
    nodes = data.matrix_nodes()
    if not data.final and data.scope != "clearinghouse":
        own = STATUS[data.status(data.scope)]
        return (f"本区：{own}；各区会签情况见结算中心报告，结算单尚未终局。 / This district: "
                f"{own}; the statement is not final yet (every district's standing is in "
                "the bureau's report).")
    signed = sum(1 for n in nodes if data.status(n) in (COUNTERSIGNED, OVERRULED))
    disputed = sum(1 for n in nodes if data.status(n) == DISPUTED)
    state = ("已终局：每个区均已会签（或经局方裁定）。 / final: every district has "
             "countersigned (or was overruled by a bureau decision)." if data.final else
             "尚未终局。 / not final yet.")
    return (f"{len(nodes)} 个区中 {signed} 个已会签，{disputed} 个有异议；{state} / "
            f"{signed} of {len(nodes)} districts countersigned, {disputed} disputed.")


def party(data: ReportData, node_id: str) -> str:
    return data.name(node_id) if node_id != RESERVE else RESERVE_NAME


def default_verify_steps(statement: Statement, scope: str = "clearinghouse"
                         ) -> tuple[str, ...]:
    """How anyone checks the statement, without this report's word for it: a district
    with its node, the bureau with its clearinghouse, anyone from the public log."""
    n = statement.serial
    district = () if scope == "clearinghouse" else (
        f"本区：运行 timebank node settlement show --config node.toml --serial {n}，其显示的"
        f"“核验哈希 / sha256”应与本页校验值相同。 / This district: run `timebank node "
        f"settlement show --config node.toml --serial {n}`; the sha256 it prints equals "
        "this hash.",)
    return (*district,
        f"结算中心：运行 timebank clearinghouse settle show --config clearinghouse.toml "
        f"--serial {n}，其显示的“结算单标识 statement identity (sha256)”应与本页校验值相同。"
        f" / The bureau: run `timebank clearinghouse settle show --config clearinghouse.toml "
        f"--serial {n}`; the statement identity (sha256) it prints equals this hash.",
        f"任何人：在透明日志中找到类型为 settlement 的叶子（结算单 {n}），其信封标识"
        "（对类型、正文、签名方和密钥编号的 SHA-256）应等于本页校验值，"
        "且其签名可用结算中心公钥验证。"
        f" / Anyone: in the transparency log, the leaf of kind `settlement` (statement {n}) "
        "has this envelope identity (SHA-256 over its kind, body, signer and key id), and "
        "its signature verifies under the clearinghouse's public key.",
    )


def title(data: ReportData) -> str:
    if data.scope == "clearinghouse":
        return f"时间银行跨区结算单 {data.period} / Time bank settlement statement {data.period}"
    return (f"{data.name(data.scope)} 结算报告 {data.period} / district settlement report "
            f"{data.period}")
