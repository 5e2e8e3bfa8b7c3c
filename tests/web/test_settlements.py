"""The bureau's settlement pages, the parts that need no city: what the close form
takes, and that the console names the report formats the renderers make."""

from __future__ import annotations

from datetime import UTC, datetime

from web.settlements import FORMATS, ClosePeriod, previous_month


def test_the_console_offers_exactly_the_formats_the_renderers_make() -> None:
    from city.reports.write import FORMATS as MADE

    assert set(FORMATS) == set(MADE)


def test_the_close_form_takes_a_real_month_and_a_reason() -> None:
    assert ClosePeriod.of(" 2026-11 ", " 月末结算 ") == ClosePeriod("2026-11", "月末结算")
    assert ClosePeriod.of("2026-13", "x") == "settle_close_bad_period"
    assert ClosePeriod.of("2026-1", "x") == "settle_close_bad_period"
    assert ClosePeriod.of("log-5", "x") == "settle_close_bad_period"
    assert ClosePeriod.of("2026-11", "") == "settle_close_bad_reason"
    assert ClosePeriod.of("2026-11", "a\x00b") == "settle_close_bad_reason"
    assert ClosePeriod.of("2026-11", "长" * 801) == "settle_close_bad_reason"


def test_the_month_suggested_is_the_one_before_in_city_time() -> None:
    # 1 December 00:30 in Shanghai is still 30 November in UTC
    assert previous_month(datetime(2026, 11, 30, 16, 30, tzinfo=UTC)) == "2026-11"
    assert previous_month(datetime(2026, 1, 15, tzinfo=UTC)) == "2025-12"
