"""The report's tables as CSV files: UTF-8 with a byte-order mark, because Excel (the
finance office's tool) reads a CSV without one in the machine's legacy code page and
shows Chinese as mojibake. One file a table, the header Chinese first with English.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

from .blocks import Block


def write_csv(out_dir: Path, blocks: Iterable[Block]) -> list[Path]:
    """Write ``<stem>.csv`` for each block; the paths written, in order."""
    written: list[Path] = []
    for block in blocks:
        path = out_dir / f"{block.stem}.csv"
        # newline="": the csv module writes its own \r\n line ends, as Excel expects
        with path.open("w", encoding="utf-8-sig", newline="") as f:
            out = csv.writer(f)
            out.writerow(block.header)
            out.writerows([str(c) for c in row] for row in block.rows)
        written.append(path)
    return written
