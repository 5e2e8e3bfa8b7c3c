"""The charts: PNG with real Chinese glyphs, SVG with the text as outlines (renders
without the font), one file per chart and format."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from city.reports import charts
from city.reports.fonts import FONT
from city.reports.tables import ReportData
from tests.city.reports import glyphs
from tests.city.reports.sample import report
from tests.city.reports.test_pdf import LATIN_ONLY

#: Labels of three hanzi each: tofu would draw them all as the same three boxes.
LABELS = ("玄武区", "秦淮区", "建邺区", "鼓楼区", "江宁区")


@pytest.fixture(scope="module")
def data() -> ReportData:
    return report()


def label_problems(tmp_path: Path, data: ReportData, font: Path) -> list[str]:
    """Write flows.png as the report does, then crop it where the y-axis labels were
    drawn (the same figure laid out again gives their places) and check the glyphs."""
    with charts._style(font):
        [png, _svg] = charts._save(charts.flows_figure(data, font), tmp_path, "flows")
        fig: Figure = charts.flows_figure(data, font)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
    image = Image.open(png)
    assert image.size == canvas.get_width_height()
    height = image.size[1]
    boxes = []
    for label in fig.axes[0].get_yticklabels():
        if label.get_text() in LABELS:
            e = label.get_window_extent()
            boxes.append((label.get_text(), (int(e.x0), int(height - e.y1),
                                             int(e.x1) + 1, int(height - e.y0) + 1)))
    assert len(boxes) == len(LABELS)
    return glyphs.problems(image, boxes)


def test_the_png_shows_real_chinese_glyphs(tmp_path: Path, data: ReportData) -> None:
    assert label_problems(tmp_path, data, FONT) == []


def test_without_a_cjk_font_the_png_check_finds_tofu(tmp_path: Path, data: ReportData) -> None:
    with pytest.warns(UserWarning, match="missing from font"):
        found = label_problems(tmp_path, data, LATIN_ONLY)
    assert any("render alike" in p for p in found)


def test_svg_text_is_outlines_of_the_shipped_font(tmp_path: Path, data: ReportData) -> None:
    written = charts.write_charts(tmp_path, data)
    svg = (tmp_path / "flows.svg").read_text(encoding="utf-8")
    assert "<text" not in svg  # no text that needs a font to render
    glyph_ids = set(re.findall(r'id="WenQuanYiMicroHei-([0-9a-f]+)"', svg))
    assert len(glyph_ids) > 20  # each distinct glyph drawn once as a path
    assert "<path" in svg
    assert {p.name for p in written} == {f"{c}.{f}" for c in ("flows", "positions", "history")
                                         for f in ("png", "svg")}
    for p in written:
        if p.suffix == ".png":
            assert Image.open(p).format == "PNG"


def test_the_same_data_makes_the_same_svg(tmp_path: Path) -> None:
    data = report(4)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    charts.write_charts(tmp_path / "a", data)
    charts.write_charts(tmp_path / "b", data)
    for name in ("flows.svg", "positions.svg", "history.svg"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_no_statement_and_no_history_makes_no_chart(tmp_path: Path, data: ReportData) -> None:
    bare = ReportData(scope="320115", period="2026-11", generated_at=data.generated_at)
    assert charts.write_charts(tmp_path, bare) == []
