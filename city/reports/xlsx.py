"""The report as one Excel workbook (openpyxl): sheets 矩阵 matrix, 净头寸 positions,
轧差 netting, 资金 money (and payments), 明细 counts (by category, district, street and
month) and, where there is a history, 历期 history (positions over periods). Numbers are
numbers (yuan as exact decimals shown with two places), so the office can sum them.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from openpyxl import Workbook
from openpyxl.styles import Alignment, Font
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from . import blocks as b
from .tables import ReportData

_BOLD = Font(bold=True)


def _put(ws: Worksheet, block: b.Block, first_row: int) -> int:
    """Lay ``block`` out from ``first_row``; the next free row."""
    ws.cell(first_row, 1, block.title).font = _BOLD
    row = first_row + 1
    for col, text in enumerate(block.header, 1):
        cell = ws.cell(row, col, text)
        cell.font = _BOLD
        cell.alignment = Alignment(wrap_text=True, vertical="top")
    for values in block.rows:
        row += 1
        for col, value in enumerate(values, 1):
            cell = ws.cell(row, col, value)
            if isinstance(value, Decimal):
                cell.number_format = "0.00"
    for note in block.notes:
        row += 1
        ws.cell(row, 1, note)
    return row + 2


def _widths(ws: Worksheet) -> None:
    for col in range(1, ws.max_column + 1):
        ws.column_dimensions[get_column_letter(col)].width = 18 if col > 1 else 30


def write_xlsx(path: Path, data: ReportData) -> Path:
    book = Workbook()
    default = book.active
    assert default is not None
    book.remove(default)
    groups: list[tuple[str, tuple[b.Block, ...]]] = []
    if data.statement is not None:
        groups += [("矩阵 matrix", (b.matrix(data),)),
                   ("净头寸 positions", (b.positions(data),)),
                   ("轧差 netting", (b.transfers(data),)),
                   ("资金 money", (b.money(data), b.payments(data)))]
    groups.append(("明细 counts", (b.activity(data),)))
    if data.history:
        groups.append(("历期 history", (b.history(data),)))
    for name, group in groups:
        ws = book.create_sheet(name)
        row = 1
        for block in group:
            row = _put(ws, block, row)
        _widths(ws)
        ws.freeze_panes = "B3" if name.startswith("矩阵") else "A3"
    book.properties.title = data.period
    book.properties.creator = "timebank"
    book.save(path)
    return path
