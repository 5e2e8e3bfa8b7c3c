"""``write_report``: the one entry point that turns a report's data into its files;
``download``: one of its formats as bytes, for a page that hands a report to a browser."""

from __future__ import annotations

import io
import tempfile
import zipfile
from dataclasses import dataclass
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


def _blocks(data: ReportData) -> list[b.Block]:
    """The tables, one CSV file each."""
    blocks = [*b.statement_blocks(data), b.activity(data)]
    if data.history:
        blocks.append(b.history(data))
    return blocks


def write_report(out_dir: Path, data: ReportData, *, font: Path = FONT) -> list[Path]:
    """Write the CSV files, the workbook, the PDF and the charts of ``data`` into
    ``out_dir`` (made if missing; files of the same names are replaced). The paths
    written, CSV first, then the workbook, the PDF and the charts."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = report_stem(data)
    written = write_csv(out_dir, _blocks(data))
    written.append(write_xlsx(out_dir / f"{stem}.xlsx", data))
    written.append(write_pdf(out_dir / f"{stem}.pdf", data, font))
    written += write_charts(out_dir, data, font)
    return written


#: The formats ``download`` makes: the statement as PDF, the workbook, the CSV files
#: (zipped: one file a table) and everything ``write_report`` writes (zipped).
FORMATS = {"pdf": "application/pdf",
           "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
           "csv.zip": "application/zip", "zip": "application/zip"}


@dataclass(frozen=True, slots=True)
class Download:
    filename: str
    media_type: str
    content: bytes


def _zipped(paths: list[Path]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for path in paths:
            z.write(path, path.name)
    return out.getvalue()


def download(data: ReportData, fmt: str, *, font: Path = FONT) -> Download:
    """``data`` rendered as ``fmt`` (a key of ``FORMATS``), made by the same renderers as
    ``write_report``, so a downloaded file and a written one are the same."""
    if fmt not in FORMATS:
        raise ValueError(f"no report format {fmt!r}")
    stem = report_stem(data)
    with tempfile.TemporaryDirectory(prefix="timebank-report-") as tmp:
        out = Path(tmp)
        if fmt == "pdf":
            content = write_pdf(out / f"{stem}.pdf", data, font).read_bytes()
        elif fmt == "xlsx":
            content = write_xlsx(out / f"{stem}.xlsx", data).read_bytes()
        elif fmt == "csv.zip":
            content = _zipped(write_csv(out, _blocks(data)))
        else:
            content = _zipped(write_report(out, data, font=font))
    return Download(f"{stem}.{fmt}", FORMATS[fmt], content)
