"""Charts readable without the tool, as PNG and SVG (matplotlib, no pyplot: a bare
``Figure`` draws with Agg for PNG and the SVG backend for SVG, no display, no global
state): the flows between districts as a heat map, each district's net position this
period, and the positions over periods.

The shipped CJK font is named explicitly for every text (no system font, no font cache
lookup by family), and SVG text is written as glyph outlines (``svg.fonttype = path``),
so the SVG renders on a machine without the font.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from matplotlib import colormaps, rc_context
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties, fontManager

from .fonts import FONT
from .tables import ReportData, history_periods

_FORMATS = ("png", "svg")
_DPI = 120
#: Up to this many districts the heat map writes every cell's minutes.
_LABELLED_CELLS = 16


@cache
def _register(font: str) -> str:
    """Add the font to matplotlib's list once, so ticks and numbers use it too (by its
    family name); its family name."""
    fontManager.addfont(font)
    return FontProperties(fname=font).get_name()


@contextmanager
def _style(font: Path) -> Iterator[FontProperties]:
    """The font every text of a chart uses, and the settings that keep it: glyphs as
    paths in SVG, the ASCII hyphen for minus (every font has it), no date stamp in SVG
    (the same data makes the same file). Figures are built and saved inside it: some
    settings are read when the artist is made, others only when the file is written."""
    family = _register(str(font))
    with rc_context({"svg.fonttype": "path", "axes.unicode_minus": False,
                     "svg.hashsalt": "timebank", "font.size": 9,
                     "font.family": [family]}):
        yield FontProperties(fname=str(font))


def _save(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    paths = []
    for fmt in _FORMATS:
        path = out_dir / f"{stem}.{fmt}"
        metadata = {"Date": None} if fmt == "svg" else {"Software": "timebank"}
        fig.savefig(path, format=fmt, dpi=_DPI, metadata=metadata)
        paths.append(path)
    return paths


def flows_figure(data: ReportData, font: Path = FONT) -> Figure:
    """The gross matrix as a heat map: row = the district whose people served, column =
    the district whose residents' hours were spent; each cell labelled in minutes."""
    nodes = data.matrix_nodes()
    cells = data.matrix()
    with _style(font) as prop:
        size = 3.0 + 0.55 * max(len(nodes), 2)
        fig = Figure(figsize=(size + 1.5, size), dpi=_DPI, layout="constrained")
        ax = fig.add_subplot()
        image = ax.imshow(cells or [[0]], cmap="Blues")
        names = [data.short_name(n) for n in nodes]
        ax.set_xticks(range(len(nodes)), names, fontproperties=prop, rotation=45, ha="right")
        ax.set_yticks(range(len(nodes)), names, fontproperties=prop)
        ax.set_xlabel("时间所属区（欠方） / debtor: whose residents' hours", fontproperties=prop)
        ax.set_ylabel("提供服务区（应收方） / creditor: whose people served", fontproperties=prop)
        ax.set_title(f"{data.period} 区间服务流量（分钟） / flows between districts (min)",
                     fontproperties=prop)
        peak = max((max(r) for r in cells), default=0)
        # each cell's minutes where they fit; a city of more districts reads the colours
        for i, row in enumerate(cells if len(nodes) <= _LABELLED_CELLS else ()):
            for j, minutes in enumerate(row):
                if minutes:
                    ax.text(j, i, str(minutes), ha="center", va="center", fontsize=7,
                            fontproperties=prop,
                            color="white" if minutes > peak * 0.6 else "black")
        bar = fig.colorbar(image, ax=ax, shrink=0.8)
        bar.set_label("分钟 minutes", fontproperties=prop)
    return fig


def positions_figure(data: ReportData, font: Path = FONT) -> Figure:
    """Each district's closing position this period: bars right for what it is owed,
    left for what it owes."""
    assert data.statement is not None
    lines = data.statement.sheet.lines
    with _style(font) as prop:
        fig = Figure(figsize=(7, 1.2 + 0.35 * max(len(lines), 2)), dpi=_DPI,
                     layout="constrained")
        ax = fig.add_subplot()
        values = [x.closing_minutes for x in lines]
        bars = ax.barh(range(len(lines)), values,
                       color=["#2e7d32" if v >= 0 else "#c62828" for v in values])
        ax.bar_label(bars, labels=[f"{v:+d}" for v in values], padding=3, fontsize=7)
        ax.margins(x=0.15)  # room for the labels
        ax.set_yticks(range(len(lines)), [data.short_name(x.node_id) for x in lines],
                      fontproperties=prop)
        ax.invert_yaxis()
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_xlabel("期末净头寸（分钟，正为应收） / closing position (min, + owed to it)",
                      fontproperties=prop)
        ax.set_title(f"{data.period} 各区净头寸 / net positions", fontproperties=prop)
        for tick in ax.get_xticklabels():
            tick.set_fontproperties(prop)
    return fig


def history_figure(data: ReportData, font: Path = FONT) -> Figure:
    """Each district's net position period by period, one line a district."""
    periods = history_periods(data.history)
    nodes = sorted({p.node_id for p in data.history})
    with _style(font) as prop:
        fig = Figure(figsize=(8, 4.5), dpi=_DPI, layout="constrained")
        ax = fig.add_subplot()
        at = {p: i for i, p in enumerate(periods)}
        palette = colormaps["tab20"]  # 20 distinct colours: one a district
        for k, node in enumerate(nodes):
            points = sorted((at[p.period], p.net_minutes) for p in data.history
                            if p.node_id == node)
            ax.plot([x for x, _ in points], [y for _, y in points], marker="o",
                    label=data.short_name(node), color=palette(k % 20))
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(periods)), periods, fontproperties=prop)
        ax.set_ylabel("净头寸（分钟） / net position (min)", fontproperties=prop)
        ax.set_title("各期净头寸 / positions over periods", fontproperties=prop)
        if nodes:
            ax.legend(prop=prop, fontsize=7, ncols=2 if len(nodes) > 6 else 1,
                      loc="center left", bbox_to_anchor=(1.0, 0.5))
    return fig


def write_charts(out_dir: Path, data: ReportData, font: Path = FONT) -> list[Path]:
    """flows.{png,svg} and positions.{png,svg} for a statement, history.{png,svg} when
    there is a history; the paths written."""
    written: list[Path] = []
    with _style(font):
        if data.statement is not None:
            written += _save(flows_figure(data, font), out_dir, "flows")
            written += _save(positions_figure(data, font), out_dir, "positions")
        if data.history:
            written += _save(history_figure(data, font), out_dir, "history")
    return written
