"""The settlement statement as a PDF a finance office files (fpdf2): what period and log
range it settles, the head it cites, each district's line, the matrix, the netting in
plain words, the money with its rounding residue, who has countersigned, the
verification hash and how to check it, and that no money moves inside this system.

The shipped CJK font is embedded (subset to the characters used) with its Unicode map,
so the file prints the same anywhere and its text can be searched and copied.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fpdf import FPDF
from fpdf.enums import WrapMode, XPos, YPos
from fpdf.fonts import FontFace

from timebank.citytime import CITY_TZ

from . import blocks as b
from . import words as w
from .fonts import FONT, missing_glyphs
from .tables import ReportData

_FAMILY = "report-cjk"
_HEADINGS = FontFace(emphasis="", fill_color=(225, 230, 240))
#: The most rows of each activity dimension the PDF lists (the workbook has them all).
_MAX_ACTIVITY_ROWS = 25


class _Document(FPDF):
    footer_text = ""

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(_FAMILY, size=7)
        self.cell(0, 5, f"{self.footer_text}   第 {self.page_no()} 页 / page {self.page_no()}",
                  align="C")


def _heading(pdf: FPDF, text: str) -> None:
    pdf.ln(3)
    pdf.set_font(_FAMILY, size=12)
    pdf.multi_cell(0, 7, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(_FAMILY, size=9)


def _para(pdf: FPDF, text: str, size: float = 9) -> None:
    pdf.set_font(_FAMILY, size=size)
    pdf.multi_cell(0, size * 0.5, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT,
                   wrapmode=WrapMode.CHAR)
    pdf.set_font(_FAMILY, size=9)


def _fields(pdf: FPDF, pairs: Sequence[tuple[str, str]]) -> None:
    pdf.set_font(_FAMILY, size=9)
    with pdf.table(col_widths=(45, 145), text_align="LEFT", first_row_as_headings=False,
                   wrapmode=WrapMode.CHAR, line_height=4.5) as table:
        for label, value in pairs:
            row = table.row()
            row.cell(label)
            row.cell(value)


def _table(pdf: FPDF, block: b.Block, *, size: float = 8,
           widths: Sequence[float] | None = None, max_rows: int | None = None) -> None:
    _heading(pdf, block.title)
    rows = block.rows if max_rows is None else block.rows[:max_rows]
    if rows:
        pdf.set_font(_FAMILY, size=size)
        with pdf.table(col_widths=widths, text_align="LEFT", headings_style=_HEADINGS,
                       wrapmode=WrapMode.WORD, line_height=size * 0.5) as table:
            heading = table.row()
            for text in block.header:
                heading.cell(text)
            for values in rows:
                row = table.row()
                for value in values:
                    row.cell(str(value))
    else:
        _para(pdf, "（无 / none）")
    if max_rows is not None and len(block.rows) > max_rows:
        _para(pdf, f"……另有 {len(block.rows) - max_rows} 行见工作簿 / {len(block.rows) - max_rows} "
                   "more rows in the workbook", size=7)
    for note in block.notes:
        _para(pdf, note, size=8)


def _statement_pages(pdf: _Document, data: ReportData) -> None:
    statement = data.statement
    assert statement is not None
    sheet = statement.sheet
    closed = statement.closed_at.astimezone(CITY_TZ)
    _fields(pdf, [
        ("结算单 statement", f"第 {statement.serial} 号，第 {statement.revision} 版 / serial "
                            f"{statement.serial}, revision {statement.revision}"),
        ("期间 period", statement.period),
        ("日志范围 log range", f"叶子 [{statement.start}, {statement.end}) / log leaves "
                               f"{statement.start} to {statement.end - 1}"),
        ("结算时间 closed at", closed.strftime("%Y-%m-%d %H:%M:%S") + " (北京时间 city time)"),
        ("结算笔数 claims", f"{sheet.claims}"),
        ("上一结算单 previous", statement.previous_sha256.hex() or "（无，首张 / none: the first)"),
        ("政策 policy sha256", statement.policy_sha256.hex() or "（未记录 / none)"),
        ("违约处理 on default", {"carry": "结转 carry", "reserve": "储备金支付 reserve pays"}
         .get(statement.on_default, statement.on_default)),
        ("校验值 verification hash", data.envelope_sha256.hex()),
    ])
    _para(pdf, w.NO_MONEY_MOVES, size=9)
    _heading(pdf, "引用的树头 cited tree head (cosigned by a quorum of districts)")
    _para(pdf, statement.head_note.rstrip("\n") or "（无 / none）", size=7.5)
    pdf.set_font(_FAMILY, size=7)
    _table(pdf, b.positions(data), size=7,
           widths=(13, 15, 16, 16, 16, 16, 16, 11, 10, 27))
    _heading(pdf, "会签 countersignatures")
    _para(pdf, w.signoff_sentence(data))
    _table(pdf, b.transfers(data), widths=(70, 70, 25, 25))
    if sheet.rate_fen_per_hour:
        _table(pdf, b.money(data), widths=(25, 60, 35, 35, 35))
        _table(pdf, b.payments(data), widths=(70, 70, 25, 25))
    else:  # hours only: the sentences say so, a table of zeros would not
        money = b.money(data)
        _heading(pdf, money.title)
        for note in money.notes:
            _para(pdf, note, size=8)
    _heading(pdf, "如何核验 how to verify")
    steps = data.verify_steps or w.default_verify_steps(statement, data.scope)
    for i, step in enumerate(steps, 1):
        _para(pdf, f"{i}. {step}")
    n = len(data.matrix_nodes())
    pdf.add_page(orientation="L" if n > 6 else "P")
    for part in _matrix_parts(b.matrix(data), n):
        columns = len(part.header) - 1
        first = 42.0
        _table(pdf, part, size=7.0 if columns > 9 else 8.0,
               widths=(first, *([(pdf.epw - first) / columns] * columns)))


#: The most district columns one printed matrix table holds (landscape A4, 7 pt).
_MATRIX_COLUMNS = 12


def _matrix_parts(matrix: b.Block, n: int) -> list[b.Block]:
    """The matrix in tables of at most ``_MATRIX_COLUMNS`` debtor columns (every row in
    each): a city of many districts prints legibly over several tables."""
    if n <= _MATRIX_COLUMNS:
        return [matrix]
    parts = []
    for lo in range(0, n, _MATRIX_COLUMNS):
        hi = min(lo + _MATRIX_COLUMNS, n)
        cols = [0, *range(1 + lo, 1 + hi)] + ([n + 1] if hi == n else [])
        parts.append(b.Block(
            matrix.stem, f"{matrix.title}：第 {lo + 1}–{hi} 列 / columns {lo + 1}-{hi}",
            tuple(matrix.header[c] for c in cols),
            tuple(tuple(row[c] for c in cols) for row in matrix.rows),
            matrix.notes if hi == n else ()))
    return parts


def _names(data: ReportData) -> str:
    """Every name the data brings in (the fixed words are checked by the tests)."""
    return "".join([*(d.name for d in data.districts),
                    *(f"{r.street}{r.category}" for r in data.activity), data.note])


def write_pdf(path: Path, data: ReportData, font: Path = FONT) -> Path:
    pdf = _Document(orientation="P", unit="mm", format="A4")
    pdf.set_creator("timebank")
    pdf.set_title(w.title(data))
    pdf.set_lang("zh-CN")
    pdf.add_font(_FAMILY, "", str(font))
    pdf.footer_text = (f"{data.period} · 生成于 generated "
                       f"{data.generated_at.astimezone(CITY_TZ):%Y-%m-%d %H:%M} (北京时间)")
    pdf.set_auto_page_break(True, margin=15)
    pdf.add_page()
    pdf.set_font(_FAMILY, size=15)
    pdf.multi_cell(0, 8, w.title(data), new_x=XPos.LMARGIN, new_y=YPos.NEXT,
                   wrapmode=WrapMode.CHAR)
    pdf.set_font(_FAMILY, size=9)
    if data.note:
        _para(pdf, data.note)
    lacking = missing_glyphs(_names(data), font)
    if lacking:
        codes = " ".join(f"U+{ord(ch):04X}" for ch in lacking)
        _para(pdf, f"注意：字体缺少以下字符，相关名称显示不全：{codes} / note: the report's font "
                   f"lacks these characters, so names with them print incompletely: {codes}")
    if data.statement is not None:
        _statement_pages(pdf, data)
        pdf.add_page()
    elif data.scope == "clearinghouse":
        _para(pdf, "本期间尚无结算单。 / There is no statement for this period yet.")
    activity = b.activity(data)
    _heading(pdf, activity.title)
    for label in w.DIMENSIONS.values():
        rows = tuple(r for r in activity.rows if r[0] == label)
        if rows:
            _table(pdf, b.Block(activity.stem, label, activity.header[1:],
                                tuple(r[1:] for r in rows)),
                   widths=(100, 45, 45), max_rows=_MAX_ACTIVITY_ROWS)
    if not activity.rows:
        _para(pdf, "（本期无记录 / nothing recorded in this period）")
    pdf.output(str(path))
    return path
