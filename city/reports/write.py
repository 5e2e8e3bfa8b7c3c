"""``write_report``: the one entry point that turns a report's data into its files."""

from __future__ import annotations

from pathlib import Path

from . import blocks as b
from .charts import write_charts
from .csv_files import write_csv
from .fonts import FONT
from .pdf import write_pdf
from .tables import ReportData
from .xlsx import write_xlsx


def report_stem(data: ReportData) -> str:
    """``settlement-2026-11`` for the bureau, ``node-320115-2026-11`` for a district."""
    who = "settlement" if data.scope == "clearinghouse" else f"node-{data.scope}"
    return f"{who}-{data.period}"


def write_report(out_dir: Path, data: ReportData, *, font: Path = FONT) -> list[Path]:
    """Write the CSV files, the workbook, the PDF and the charts of ``data`` into
    ``out_dir`` (made if missing; files of the same names are replaced). The paths
    written, CSV first, then the workbook, the PDF and the charts."""
    out_dir.mkdir(parents=True, exist_ok=True)
    blocks = [*b.statement_blocks(data), b.activity(data)]
    if data.history:
        blocks.append(b.history(data))
    stem = report_stem(data)
    written = write_csv(out_dir, blocks)
    written.append(write_xlsx(out_dir / f"{stem}.xlsx", data))
    written.append(write_pdf(out_dir / f"{stem}.pdf", data, font))
    written += write_charts(out_dir, data, font)
    return written
