"""The report's data model: bounded, consistent inputs; one copy of every derived figure."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import pytest

from city.reports import words
from city.reports.tables import (
    ActivityRow,
    District,
    ReportInputError,
    Signoff,
)
from tests.city.reports.sample import report


def test_the_matrix_is_the_statements_flows() -> None:
    data = report(4)
    assert data.statement is not None
    nodes = data.matrix_nodes()
    cells = data.matrix()
    for f in data.statement.sheet.flows:
        assert cells[nodes.index(f.creditor)][nodes.index(f.debtor)] == f.minutes
    assert sum(map(sum, cells)) == sum(f.minutes for f in data.statement.sheet.flows)


def test_names_and_statuses() -> None:
    data = report(3)
    assert data.name("320102") == "玄武区 320102"
    assert data.name("999999") == "999999"
    assert data.name("reserve") == "市储备金 city reserve"
    assert [data.status(n) for n in data.matrix_nodes()] == \
        ["countersigned", "disputed", "pending"]


@pytest.mark.parametrize("change", [
    {"envelope_sha256": b"\x00" * 31},
    {"period": "2026-10"},
    {"signoffs": (Signoff("999999", "countersigned"),)},
    {"districts": (District("320102", "a"), District("320102", "b"))},
    {"generated_at": datetime(2026, 12, 1)},
    {"scope": "district"},
    {"activity_kind": "hours"},
    {"statement": None},
])
def test_inconsistent_data_is_refused(change: dict[str, object]) -> None:
    with pytest.raises(ReportInputError):
        replace(report(3), **change)


@pytest.mark.parametrize("row", [
    ("2026-1", "", "", "", 1, 1), ("2026-11", "x" * 65, "", "", 1, 1),
    ("2026-11", "", "a\nb", "", 1, 1), ("2026-11", "", "", "", -1, 1),
    ("2026-11", "", "", "", True, 1), ("2026-11", "", "", "", 1, 2**63),
])
def test_bad_activity_rows_are_refused(row: tuple[object, ...]) -> None:
    with pytest.raises(ReportInputError):
        ActivityRow(*row)  # type: ignore[arg-type]


def test_totals_skip_unknown_dimensions_and_order_months() -> None:
    data = replace(report(3, scope="320102"), activity=(
        ActivityRow("2026-11", "320102", "", "助餐", 2, 90),
        ActivityRow("2026-10", "320102", "东山街道", "助餐", 1, 30),
        ActivityRow("2026-11", "320104", "东山街道", "保洁", 5, 300)))
    assert [(t.key, t.count, t.minutes) for t in data.totals("month")] == \
        [("2026-10", 1, 30), ("2026-11", 7, 390)]
    assert [t.key for t in data.totals("category")] == ["保洁", "助餐"]  # most minutes first
    assert [(t.key, t.count) for t in data.totals("street")] == [("东山街道", 6)]
    with pytest.raises(ReportInputError):
        data.totals("colour")


def test_words_format_money_and_hours_exactly() -> None:
    assert words.yuan(-1205) == "-12.05" and words.yuan(7) == "0.07" and words.yuan(0) == "0.00"
    assert words.hours(-75) == "-1:15" and words.hours(600) == "10:00"


def test_a_node_report_does_not_guess_the_others_standing() -> None:
    data = replace(report(3, scope="320104"), signoffs=(Signoff("320104", "disputed"),))
    assert [data.status(n) for n in data.matrix_nodes()] == ["unknown", "disputed", "unknown"]
    sentence = words.signoff_sentence(data)
    assert sentence.startswith("本区：有异议 disputed") and "not final" in sentence
    assert words.STATUS["unknown"] == "本区不掌握 not known here"
