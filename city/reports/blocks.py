"""The report's tables as header and rows of plain cells, built once from ``ReportData``
and laid out by each format: one CSV file a block, one workbook sheet a group of blocks,
one PDF section. Cells are ints (minutes, counts, fen), ``Decimal`` (yuan, exact) or
text.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from timebank.settlement import RESERVE, RESERVE_NAME

from . import words as w
from .tables import ReportData

Cell = int | str | Decimal


@dataclass(frozen=True, slots=True)
class Block:
    """One table: ``stem`` names its CSV file; ``notes`` are sentences printed under it
    in the workbook and the PDF (a CSV carries data only)."""

    stem: str
    title: str
    header: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        assert all(len(r) == len(self.header) for r in self.rows), "a ragged table"


def yuan(fen: int) -> Decimal:
    """Fen as an exact yuan amount (never a float)."""
    return Decimal(fen).scaleb(-2)


def matrix(data: ReportData) -> Block:
    nodes = data.matrix_nodes()
    cells = data.matrix()
    rows: list[tuple[Cell, ...]] = []
    for node, row in zip(nodes, cells, strict=True):
        rows.append((data.name(node), *row, sum(row)))
    column_totals = [sum(r[j] for r in cells) for j in range(len(nodes))]
    rows.append((w.TOTAL_OWING, *column_totals, sum(column_totals)))
    return Block("matrix", "矩阵 matrix (分钟 minutes)",
                 (w.CREDITOR_BY_DEBTOR, *(data.name(n) for n in nodes), w.TOTAL_OWED),
                 tuple(rows),
                 ("每格：行区的服务者为列区居民提供的服务分钟数（列区欠行区）。 / Each cell: "
                  "minutes the row district's people served residents of the column "
                  "district (the column district owes the row district).",))


def positions(data: ReportData) -> Block:
    assert data.statement is not None
    rows = tuple(
        (x.node_id, data.short_name(x.node_id), x.opening_minutes, x.owed_minutes,
         x.owing_minutes, x.net_minutes, x.closing_minutes, w.hours(x.closing_minutes),
         x.claims, w.STATUS[data.status(x.node_id)])
        for x in data.statement.sheet.lines)
    reserve = data.statement.sheet.reserve_opening_minutes
    notes: tuple[str, ...] = (
        "净头寸：正数为本区应收，负数为本区应付；各区净额之和为零。 / Net position: "
        "positive is owed to the district, negative it owes; the nets sum to zero.",)
    if reserve:
        notes += (f"市储备金承担期初结转的另一方：{reserve} 分钟。 / The city reserve holds "
                  f"the other side of the carried-in positions: {reserve} min.",)
    return Block("positions", "净头寸 positions",
                 (w.NODE_ID, w.DISTRICT, w.OPENING, w.OWED, w.OWING, w.NET, w.CLOSING,
                  w.HOURS, w.CLAIMS, w.SIGNOFF), rows, notes)


def transfers(data: ReportData) -> Block:
    assert data.statement is not None
    sheet = data.statement.sheet
    rows = tuple((w.party(data, t.payer), w.party(data, t.payee), t.amount, w.hours(t.amount))
                 for t in sheet.transfers)
    return Block("transfers", "轧差 netting", (w.PAYER, w.PAYEE, w.MINUTES, w.HOURS), rows,
                 (sheet.netting.words(),))


def money(data: ReportData) -> Block:
    assert data.statement is not None
    sheet = data.statement.sheet
    rows: list[tuple[Cell, ...]] = [
        (x.node_id, data.short_name(x.node_id), x.closing_minutes, x.fen, yuan(x.fen))
        for x in sheet.lines]
    if sheet.rate_fen_per_hour:
        reserve_fen = -sum(x.fen for x in sheet.lines) - sheet.residue_fen
        rows.append((RESERVE, RESERVE_NAME, sheet.reserve_opening_minutes,
                     reserve_fen, yuan(reserve_fen)))
        rows.append(("residue", "舍入差额 rounding residue", 0, sheet.residue_fen,
                     yuan(sheet.residue_fen)))
        assert sum(int(r[3]) for r in rows) == 0, "money plus residue does not sum to zero"
    return Block("money", "资金 money",
                 (w.NODE_ID, w.DISTRICT, w.CLOSING, w.FEN, w.YUAN), tuple(rows),
                 (w.money_sentence(sheet), w.NO_MONEY_MOVES))


def payments(data: ReportData) -> Block:
    assert data.statement is not None
    rows = tuple((w.party(data, t.payer), w.party(data, t.payee), t.amount, yuan(t.amount))
                 for t in data.statement.sheet.payments)
    return Block("payments", "付款 payments (轧差后 netted)",
                 (w.PAYER, w.PAYEE, w.FEN, w.YUAN), rows)


def activity(data: ReportData) -> Block:
    rows: list[tuple[Cell, ...]] = []
    for dimension, label in w.DIMENSIONS.items():
        for t in data.totals(dimension):
            key = data.name(t.key) if dimension == "district" else t.key
            rows.append((label, key, t.count, t.minutes))
    return Block("activity", "明细 counts",
                 (w.DIMENSION, w.KEY, w.activity_count_header(data.activity_kind), w.MINUTES),
                 tuple(rows))


def history(data: ReportData) -> Block:
    rows = tuple((p.period, p.node_id, data.short_name(p.node_id), p.net_minutes)
                 for p in data.history)
    return Block("history", "历期净头寸 positions over periods",
                 (w.PERIOD, w.NODE_ID, w.DISTRICT, w.NET), rows)


def statement_blocks(data: ReportData) -> tuple[Block, ...]:
    """The statement's tables, in the order the workbook and the PDF show them."""
    if data.statement is None:
        return ()
    return (matrix(data), positions(data), transfers(data), money(data), payments(data))
