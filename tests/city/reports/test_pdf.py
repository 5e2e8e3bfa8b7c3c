"""The statement PDF: real Chinese glyphs from the embedded font, searchable text, and
everything a finance office needs on it."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pypdfium2 as pdfium
import pytest

from city.reports import words
from city.reports.pdf import write_pdf
from city.reports.tables import ReportData
from tests.city.reports import glyphs
from tests.city.reports.sample import NANJING, report

#: Distinct hanzi the first page prints (title and field labels).
HANZI = "时银跨结算期日志范围"
#: A font without CJK: matplotlib's own DejaVu Sans.
LATIN_ONLY = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


def page_problems(path: Path, chars: str, scale: float = 3.0) -> list[str]:
    """Render page 1 and check the glyphs drawn where ``chars`` are."""
    pdf = pdfium.PdfDocument(path)
    try:
        page = pdf[0]
        text = page.get_textpage()
        content = text.get_text_range()
        image = page.render(scale=scale).to_pil()
        height = page.get_height()
        boxes = []
        missing = [ch for ch in chars if ch not in content]
        for ch in chars:
            if ch in missing:
                continue
            left, bottom, right, top = text.get_charbox(content.index(ch))
            boxes.append((ch, (int(left * scale), int((height - top) * scale),
                               int(right * scale) + 1, int((height - bottom) * scale) + 1)))
        return [f"{ch!r} is not in the page's text" for ch in missing] + \
            glyphs.problems(image, boxes)
    finally:
        pdf.close()


def text_of(path: Path) -> str:
    pdf = pdfium.PdfDocument(path)
    try:
        return "\n".join(pdf[i].get_textpage().get_text_range() for i in range(len(pdf)))
    finally:
        pdf.close()


@pytest.fixture(scope="module")
def data() -> ReportData:
    return report()


def test_chinese_renders_as_real_glyphs(tmp_path: Path, data: ReportData) -> None:
    path = write_pdf(tmp_path / "s.pdf", data)
    assert page_problems(path, HANZI) == []


def test_without_a_cjk_font_the_check_finds_tofu(tmp_path: Path, data: ReportData) -> None:
    """The check above can fail: the same report set in a Latin-only font loses its
    Chinese (fpdf2 drops glyphs the font lacks; a viewer would show boxes)."""
    path = write_pdf(tmp_path / "tofu.pdf", data, font=LATIN_ONLY)
    found = page_problems(path, HANZI)
    assert len(found) >= len(HANZI)


def test_the_font_is_embedded_and_the_text_extracts(tmp_path: Path, data: ReportData) -> None:
    path = write_pdf(tmp_path / "s.pdf", data)
    raw = path.read_bytes()
    assert b"/FontFile2" in raw and b"+WenQuanYiMicroHei" in raw and b"/ToUnicode" in raw
    text = text_of(path)
    assert data.statement is not None
    for name in NANJING.values():
        assert name in text
    assert data.statement.sheet.netting.words()[:20] in text
    assert "12 个区之间的" in text and "经多边轧差为 11 笔转账" in text
    assert data.envelope_sha256.hex() in text
    assert "timebank clearinghouse settle show --config clearinghouse.toml --serial 1" in text
    assert "本系统内不发生任何资金划转" in text
    assert "叶子 [0, 500)" in text  # the log range
    assert "q83mUQ8kG4cZ" in text  # the cited head
    assert "有异议 disputed" in text and "待会签 pending" in text


def test_money_shows_fen_yuan_and_the_residue(tmp_path: Path) -> None:
    """A rate of 1 yuan 1 fen an hour makes fractions of a fen: the residue is stated."""
    data = report(5, n_claims=8, rate=101)
    assert data.statement is not None
    sheet = data.statement.sheet
    assert sheet.residue_fen != 0
    text = text_of(write_pdf(tmp_path / "s.pdf", data))
    assert f"舍入差额 {abs(sheet.residue_fen)} 分" in text
    line = sheet.lines[0]
    assert f"{line.fen}" in text and words.yuan(line.fen) in text


def test_a_report_without_a_statement_says_so(tmp_path: Path) -> None:
    full = report()
    data = ReportData(scope="320115", period="2026-11", generated_at=full.generated_at,
                      districts=full.districts, activity=full.activity, activity_kind="orders",
                      note="本节点尚未收到结算单 / this node holds no statement yet")
    text = text_of(write_pdf(tmp_path / "n.pdf", data))
    assert "江宁区 320115 结算报告 2026-11" in text
    assert "本节点尚未收到结算单" in text and "订单数 orders" in text


def test_a_name_the_font_lacks_is_named_not_hidden(tmp_path: Path) -> None:
    """A hanzi outside the shipped subset would vanish silently; the PDF says which."""
    full = report(3)
    rare = "\u4e6b"  # a Korean-only hanja, in no Chinese character set the font keeps
    data = ReportData(scope="clearinghouse", period="2026-11", generated_at=full.generated_at,
                      districts=(*full.districts[:2],
                                 type(full.districts[0])(full.districts[2].node_id,
                                                         f"{rare}区")),
                      statement=full.statement, envelope_sha256=full.envelope_sha256)
    text = text_of(write_pdf(tmp_path / "r.pdf", data))
    assert "U+4E6B" in text and "字体缺少以下字符" in text


def test_a_matrix_of_many_districts_prints_in_parts(tmp_path: Path) -> None:
    """Over 12 districts the matrix is split by columns, every row in each part, the
    totals with the last (a 40-district matrix in one table would be illegible)."""
    from dataclasses import replace

    from city.reports.tables import District
    from tests.city.reports.sample import statement

    nodes = [f"{320200 + i:06d}" for i in range(20)]
    stmt, identity = statement(nodes, 300, 0)
    data = replace(report(3), districts=tuple(District(n, f"区{i}") for i, n in
                                              enumerate(nodes)),
                   statement=stmt, envelope_sha256=identity, signoffs=(), history=())
    text = text_of(write_pdf(tmp_path / "m.pdf", data))
    assert "第 1–12 列 / columns 1-12" in text and "第 13–20 列 / columns 13-20" in text
    first, last = text.split("第 13–20 列")
    assert "应收合计 owed" not in first.split("第 1–12 列")[1] and "应收合计 owed" in last
    assert first.count("应付合计 owing") >= 1 and last.count("应付合计 owing") >= 1


def test_without_a_rate_the_pdf_says_hours_only(tmp_path: Path) -> None:
    data = report(3, n_claims=10, rate=0)
    text = text_of(write_pdf(tmp_path / "h.pdf", data))
    assert "本市政策未设费率" in text and "本系统内不发生任何资金划转" in text
    assert "金额(分) fen" not in text  # no table of zeros
