"""``write_report``: every format of one report into a directory, safely rerun."""

from __future__ import annotations

from pathlib import Path

from city.reports.write import write_report
from tests.city.reports.sample import report


def test_every_format_is_written_and_a_rerun_replaces_them(tmp_path: Path) -> None:
    data = report(3, n_claims=20)
    out = tmp_path / "new" / "dir"
    first = write_report(out, data)
    names = [p.name for p in first]
    assert names == ["matrix.csv", "positions.csv", "transfers.csv", "money.csv",
                     "payments.csv", "activity.csv", "history.csv",
                     "settlement-2026-11.xlsx", "settlement-2026-11.pdf",
                     "flows.png", "flows.svg", "positions.png", "positions.svg",
                     "history.png", "history.svg"]
    assert all(p.parent == out and p.stat().st_size > 0 for p in first)
    again = write_report(out, data)
    assert again == first
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    assert (out / "settlement-2026-11.pdf").read_bytes().startswith(b"%PDF-")


def test_a_node_report_is_named_for_the_node(tmp_path: Path) -> None:
    names = [p.name for p in write_report(tmp_path, report(3, scope="320104"))]
    assert "node-320104-2026-11.pdf" in names and "node-320104-2026-11.xlsx" in names
