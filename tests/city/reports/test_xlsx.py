"""The Excel workbook: the named sheets, numbers as numbers, Chinese headers first."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from openpyxl import load_workbook

from city.reports.xlsx import write_xlsx
from tests.city.reports.sample import report


def test_the_workbook_has_the_sheets_and_exact_money(tmp_path: Path) -> None:
    data = report(5, n_claims=8, rate=101)
    path = write_xlsx(tmp_path / "r.xlsx", data)
    book = load_workbook(path)
    assert book.sheetnames == ["矩阵 matrix", "净头寸 positions", "轧差 netting",
                               "资金 money", "明细 counts", "历期 history"]
    ws = book["净头寸 positions"]
    assert ws.cell(2, 1).value == "节点编号 node id" and ws.cell(2, 2).value == "区 district"
    assert data.statement is not None
    lines = data.statement.sheet.lines
    nets = [ws.cell(3 + i, 6).value for i in range(len(lines))]
    assert nets == [x.net_minutes for x in lines] and all(isinstance(v, int) for v in nets)
    money = book["资金 money"]
    rows = [[c.value for c in r] for r in money.iter_rows(min_row=3, max_row=3 + len(lines) + 1)]
    assert [r[3] for r in rows[: len(lines)]] == [x.fen for x in lines]
    yuan = rows[0][4]
    assert isinstance(yuan, (int, float, Decimal))
    assert Decimal(str(yuan)) * 100 == lines[0].fen
    assert money.cell(3, 5).number_format == "0.00"
    notes = [c.value for c in money["A"] if isinstance(c.value, str)]
    assert any("舍入差额" in n for n in notes)
    assert any("本系统内不发生任何资金划转" in n for n in notes)
    assert any("经多边轧差为" in str(c.value) for c in book["轧差 netting"]["A"])


def test_activity_is_summed_by_each_dimension(tmp_path: Path) -> None:
    data = report(4, scope="320102")
    book = load_workbook(write_xlsx(tmp_path / "r.xlsx", data))
    rows = [[c.value for c in r] for r in book["明细 counts"].iter_rows(min_row=3)]
    by = {}
    for dim, key, count, minutes in rows:
        by.setdefault(dim, {})[key] = (count, minutes)
    total = (sum(r.count for r in data.activity), sum(r.minutes for r in data.activity))
    for dim in ("服务类别 service category", "区 district", "街道 street", "月份 month"):
        assert (sum(c for c, _ in by[dim].values()), sum(m for _, m in by[dim].values())) \
            == total
    assert list(by["月份 month"]) == ["2026-10", "2026-11"]


def test_no_statement_has_only_the_counts(tmp_path: Path) -> None:
    from city.reports.tables import ReportData

    full = report(3)
    data = ReportData(scope="clearinghouse", period="2026-11", generated_at=full.generated_at,
                      activity=full.activity)
    assert load_workbook(write_xlsx(tmp_path / "r.xlsx", data)).sheetnames == ["明细 counts"]
