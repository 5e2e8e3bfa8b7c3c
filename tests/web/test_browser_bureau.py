"""The bureau in a real browser over a real city (a clearinghouse and two district nodes
as processes, and `timebank console serve` as a process holding the bureau operator's
certificate): an operator logs in, closes last month, reads its statement, downloads the
PDF and the workbook, and searches the claims. The city overview's pages are kept as
screenshots in both languages."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from city.launcher import CityProcesses, District, console_serving, layout
from node.cli.accounts import PASSWORD_ENV
from runtime import devclock
from tests.city.workload import CityClient, enrol_elder, record_due, redeem, setup_desk, wait_claim
from tests.web.conftest import OFFICE, PASSWORD, PHONE, log_in_browser, shot
from timebank.citytime import CITY_TZ
from web.bureau import Clearinghouse

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

JN, GL = "320115", "320106"
TWO = (District(JN, "江宁区"), District(GL, "鼓楼区"))
OPERATOR = "bureau-li"
CONFIRM_SECONDS = 90


@dataclass(frozen=True)
class BureauCity:
    console: str  # the bureau's console (bureau certificate)
    reader: str  # a district's console (observer certificate): reads only
    month: str  # the month the cross-district service was completed in
    claim_id: str


def _account(config: Path, login: str, role: str) -> None:
    made = subprocess.run(
        [sys.executable, "-m", "city.cli", "node", "account", "add", "--config", str(config),
         "--role", role, "--login", login, "--password"],
        env={**os.environ, PASSWORD_ENV: PASSWORD}, capture_output=True, text=True,
        timeout=60)
    assert made.returncode == 0, made.stderr


def _all_confirmed(house: Clearinghouse) -> bool:
    """Whether a quorum of districts cosigned the whole log as it stands: a month that
    ended since can then be closed (its statement cites such a head)."""
    health = house.overview()[2]
    return health.confirmed_at is not None and health.cosigned_size >= health.size


@pytest.fixture(scope="module")
def bureau_city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BureauCity]:
    city = layout(tmp_path_factory.mktemp("city") / "city", TWO)
    logs = tmp_path_factory.mktemp("consoles")
    with CityProcesses(city, dev_clock=True) as processes:
        processes.start_all()
        client = CityClient(city)
        try:
            desks = {n: setup_desk(client, n, 1) for n in (JN, GL)}
            elder = enrol_elder(client, desks, JN, [GL], grant=600)
            served = redeem(client, desks[GL], elder, desks[GL].volunteers[0])
            assert served.verified and served.claim_id
            devclock.advance(city.clock_file, timedelta(days=8))  # past publicity
            assert record_due(client, GL) == 1
            assert wait_claim(client, GL, served.claim_id, {"completed"}, 60) == "completed"
            now = datetime.now(UTC) + devclock.read_offset(city.clock_file)
            month = now.astimezone(CITY_TZ).strftime("%Y-%m")
            # into the next month, city time, so the month can be closed
            local = now.astimezone(CITY_TZ)
            first = (local.replace(day=1) + timedelta(days=32)).replace(day=1, hour=10)
            devclock.advance(city.clock_file, first - local)
            tls = city.client_tls(bureau=True)
            assert tls is not None
            house = Clearinghouse(city.clearinghouse_address, city.client_tls())
            try:
                deadline = time.monotonic() + CONFIRM_SECONDS
                while not _all_confirmed(house):
                    assert time.monotonic() < deadline, "the districts never cosigned"
                    time.sleep(0.5)
            finally:
                house.close()
            _account(city.node(JN).config_file, OPERATOR, "operator")
            _account(city.node(JN).config_file, "jn-member-reader", "auditor")
            options = ["--ca", str(tls.ca), "--clearinghouse", city.clearinghouse_address]
            observer = city.client_tls()
            assert observer is not None
            with console_serving(city.node(JN).address,
                                 [*options, "--cert", str(tls.cert), "--key", str(tls.key)],
                                 logs / "bureau.log") as (url, _), \
                    console_serving(city.node(GL).address,
                                    [*options, "--cert", str(observer.cert),
                                     "--key", str(observer.key)],
                                    logs / "reader.log") as (reader, _):
                yield BureauCity(url, reader, month, served.claim_id)
        finally:
            client.close()
    for log in logs.iterdir():
        assert "Traceback" not in log.read_text(), log.read_text()


def test_the_bureau_closes_a_period_and_downloads_its_statement(
        chromium: Any, bureau_city: BureauCity) -> None:
    console = bureau_city.console
    dialogs: list[str] = []
    context = chromium.new_context(viewport=OFFICE, locale="zh-CN", accept_downloads=True)
    page = context.new_page()
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    page.goto(f"{console}/bureau/settlements")
    assert "还没有结算过任何期间" in page.locator("main").inner_text()
    assert page.locator("#close-period").count() == 0  # nobody logged in: no form
    log_in_browser(page, console, OPERATOR)
    page.goto(f"{console}/bureau/settlements")
    page.get_by_label("月份").fill("2026-13")  # not a month: refused, nothing closed
    page.get_by_label("原因").fill("月末例行结算")
    page.get_by_role("button", name="结算并签发结算单").click()
    page.wait_for_load_state()
    assert "月份要写成 年-月" in page.locator("#problem").inner_text()
    shot(page, "settlements-zh-office")

    page.get_by_label("月份").fill(bureau_city.month)
    page.get_by_label("原因").fill("月末例行结算")
    page.get_by_role("button", name="结算并签发结算单").click()
    page.wait_for_url(f"{console}/bureau/settlements/1")
    text = page.locator("main").inner_text()
    assert f"{bureau_city.month} 期（第 1 号结算单）" in text
    lines = page.locator("#lines")
    assert "应付 1小时" in lines.locator(f'tr[data-node="{JN}"]').inner_text()
    assert "应收 1小时" in lines.locator(f'tr[data-node="{GL}"]').inner_text()
    assert "江宁区 (320115) 向 鼓楼区 (320106) 结算 1小时" in page.locator(
        "#transfers").inner_text()
    identity = page.locator("#statement-identity").inner_text().strip()
    assert len(identity) == 64
    shot(page, "settlement-zh-office")

    with page.expect_download() as pdf:
        page.get_by_role("link", name="结算单（PDF，可打印）").click()
    pdf_bytes = Path(pdf.value.path()).read_bytes()
    assert pdf.value.suggested_filename == f"settlement-{bureau_city.month}.pdf"
    assert pdf_bytes.startswith(b"%PDF-")
    with page.expect_download() as xlsx:
        page.get_by_role("link", name="Excel 工作簿").click()
    assert Path(xlsx.value.path()).read_bytes().startswith(b"PK")

    again = page.goto(f"{console}/bureau/settlements")
    assert again is not None and again.status == 200
    page.get_by_label("月份").fill(bureau_city.month)
    page.get_by_label("原因").fill("再结算一次")
    page.get_by_role("button", name="结算并签发结算单").click()
    page.wait_for_load_state()
    assert "结算中心没有结算这个期间" in page.locator("#problem").inner_text()

    page.goto(f"{console}/bureau/settlements/1?lang=en")
    assert "Each district's position" in page.locator("main").inner_text()
    shot(page, "settlement-en-office")
    page.goto(f"{console}/bureau/claims?state=completed&district={JN}&lang=zh-CN")
    row = page.locator(f'#claims tr[data-claim="{bureau_city.claim_id}"]')
    assert "已完成" in row.inner_text() and "已在第 1 号结算单结算" in row.inner_text()
    shot(page, "claims-zh-office")
    page.goto(f"{console}/bureau/claims?lang=en")
    assert "Claims between districts" in page.locator("h1").inner_text()
    shot(page, "claims-en-office")
    page.goto(f"{console}/bureau/settlements")
    assert "Close it and sign the statement" in page.locator("main").inner_text()
    shot(page, "settlements-en-office")
    page.goto(f"{console}/bureau?lang=zh-CN")
    shot(page, "bureau-zh-office")
    page.set_viewport_size(PHONE)
    page.goto(f"{console}/bureau?lang=en")
    shot(page, "bureau-en-phone")
    context.close()
    assert dialogs == []


def test_a_districts_console_or_another_role_cannot_close(
        chromium: Any, bureau_city: BureauCity) -> None:
    page = chromium.new_page(viewport=OFFICE, locale="zh-CN")
    page.goto(f"{bureau_city.reader}/bureau/settlements")
    assert page.locator("#close-period").count() == 0
    log_in_browser(page, bureau_city.console, "jn-member-reader")  # an auditor, not an operator
    page.goto(f"{bureau_city.console}/bureau/settlements")
    assert page.locator("#close-period").count() == 0
    page.close()
