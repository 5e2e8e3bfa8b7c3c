"""CSV files: UTF-8 with a byte-order mark (Excel reads Chinese right), one per table."""

from __future__ import annotations

import csv
from pathlib import Path

from city.reports import blocks
from city.reports.csv_files import write_csv
from tests.city.reports.sample import report


def test_csv_starts_with_a_bom_and_reads_back(tmp_path: Path) -> None:
    data = report()
    written = write_csv(tmp_path, blocks.statement_blocks(data))
    assert [p.name for p in written] == ["matrix.csv", "positions.csv", "transfers.csv",
                                         "money.csv", "payments.csv"]
    raw = (tmp_path / "positions.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    assert "区 district".encode() in raw  # UTF-8, not a legacy code page
    with (tmp_path / "positions.csv").open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][0] == "节点编号 node id"
    assert data.statement is not None
    lines = data.statement.sheet.lines
    assert [r[0] for r in rows[1:]] == [x.node_id for x in lines]
    assert sum(int(r[5]) for r in rows[1:]) == 0  # the nets sum to zero


def test_matrix_rows_and_columns_total_to_owed_and_owing(tmp_path: Path) -> None:
    data = report(5)
    write_csv(tmp_path, [blocks.matrix(data)])
    with (tmp_path / "matrix.csv").open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    assert data.statement is not None
    lines = data.statement.sheet.lines
    body = rows[1:-1]
    assert [int(r[-1]) for r in body] == [x.owed_minutes for x in lines]
    assert [int(v) for v in rows[-1][1:-1]] == [x.owing_minutes for x in lines]
    assert all(int(body[i][i + 1]) == 0 for i in range(len(lines)))  # no self-flow


def test_money_csv_sums_to_zero_with_the_residue(tmp_path: Path) -> None:
    data = report(5, n_claims=8, rate=101)
    write_csv(tmp_path, [blocks.money(data)])
    with (tmp_path / "money.csv").open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))[1:]
    assert rows[-1][0] == "residue" and int(rows[-1][3]) != 0
    assert sum(int(r[3]) for r in rows) == 0
    for r in rows:
        fen = int(r[3])
        assert r[4] == f"{'-' if fen < 0 else ''}{abs(fen) // 100}.{abs(fen) % 100:02d}"
