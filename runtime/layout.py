"""Tables that stay readable in a narrow terminal.

A rich table wider than the terminal is squeezed: cells that may not wrap are cut to
"…", so at 80 columns ``node order list`` lost its id column and Chinese names were cut.
``fit`` shows a table as it is when it fits, and otherwise as records: one block per
row, one line per field, ``字段 field: value``, each value folded, never cut. The
operator can force either (``--layout table|records``); a forced table folds its cells
instead of cutting them.

Widths are terminal cells, as rich counts them: a Chinese character takes two.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text


class Layout(StrEnum):
    """How a table is shown: ``auto`` picks ``records`` when the table does not fit."""

    AUTO = "auto"
    TABLE = "table"
    RECORDS = "records"


def needed_width(table: Table, console: Console) -> int:
    """The fewest cells ``table`` takes without cutting anything: a column that may not
    wrap needs its widest cell, one that may wrap its longest word; plus padding and
    borders."""
    options = console.options.update_width(10**6)
    _, right, _, left = table.padding
    total = 0
    for index, column in enumerate(table.columns):
        renderables = [column.header, *column.cells]
        widths = [Measurement.get(console, options, r) for r in renderables]
        need = max(m.maximum for m in widths) if column.no_wrap else \
            max(m.minimum for m in widths)
        total += max(need, column.min_width or 0)
        first, last = index == 0, index == len(table.columns) - 1
        total += (left if table.pad_edge or not first else 0) + \
            (right if table.pad_edge or not last else 0)
    if table.box is not None:
        total += len(table.columns) - 1 + (2 if table.show_edge else 0)
    return total


def _label(header: Any, zh: Mapping[str, str]) -> str:
    en = header.plain if isinstance(header, Text) else str(header)
    return f"{zh[en]} {en}" if en in zh else en


def records(table: Table, zh: Mapping[str, str] | None = None) -> Group:
    """``table`` as one block per row: ``字段 field: value`` lines (``zh`` gives the
    Chinese for each English header). Empty cells are left out; a column without a
    header heads its row's block."""
    zh = zh or {}
    columns = table.columns
    rows = list(zip(*(list(c.cells) for c in columns), strict=True)) if columns else []
    blocks: list[RenderableType] = []
    if table.title:
        blocks.append(Text.from_markup(table.title, style="bold")
                      if isinstance(table.title, str) else table.title)
    for row in rows:
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True, style="bold")
        grid.add_column(overflow="fold")
        for column, cell in zip(columns, row, strict=True):
            if isinstance(cell, str) and not cell.strip():
                continue
            header = _label(column.header, zh)
            if header:
                grid.add_row(f"{header}:", cell)
            else:
                grid.add_row(cell, "")
        blocks += ["", grid]
    return Group(*blocks)


def _folding(table: Table) -> Table:
    """``table`` with every column allowed to fold: squeezed, it wraps, never cuts."""
    for column in table.columns:
        column.no_wrap = False
        column.overflow = "fold"
    return table


def fit(table: Table, console: Console, layout: Layout = Layout.AUTO,
        zh: Mapping[str, str] | None = None) -> RenderableType:
    """``table`` as the operator will read it on ``console``: as a table when it fits
    (or is asked for), else as records."""
    if layout is Layout.RECORDS or (layout is Layout.AUTO
                                    and needed_width(table, console) > console.width):
        return records(table, zh)
    return _folding(table) if needed_width(table, console) > console.width else table


__all__ = ["Layout", "fit", "needed_width", "records"]
