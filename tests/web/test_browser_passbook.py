"""An elder's paper passbook in a real browser (the system's Chromium through Playwright,
against `timebank console serve` as a real process, over a node anchored in a real
city's log): the member opens her passbook from her page, the printed page hides the
navigation and keeps the code and the QR code, and the file the page downloads is one
`timebank verify-statement` calls genuine, with the code the page printed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from city.launcher import console_serving
from tests.web.conftest import OFFICE, PASSWORD, shot
from tests.web.passbook_support import Anchored, anchored_district, printed_code, verify_cli


@pytest.fixture(scope="module")
def district(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Anchored]:
    with anchored_district(tmp_path_factory.mktemp("passbook")) as made:
        yield made


@pytest.fixture(scope="module")
def passbook_console(district: Anchored,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("console") / "console.log"
    with console_serving(district.address, ["--insecure"], log) as (url, process):
        yield url
    assert process.returncode == 0, log.read_text()
    assert "Traceback" not in log.read_text()


def test_a_member_prints_her_passbook_and_its_file_verifies(
        chromium: Any, passbook_console: str, district: Anchored, tmp_path: Path) -> None:
    console = passbook_console
    dialogs: list[str] = []
    context = chromium.new_context(viewport=OFFICE, locale="zh-CN", accept_downloads=True)
    page = context.new_page()
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{console}/login")
    page.get_by_label("账号").fill(district.member_login)
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录", exact=True).click()
    page.wait_for_url(f"{console}/me")
    page.get_by_role("link", name="存折（可打印）").click()
    page.wait_for_url(f"{console}/me/passbook")
    assert page.locator("h1").inner_text() == "时间银行存折 · 刘洋"
    code = page.locator("#passbook-code").get_attribute("data-code")
    assert code is not None and len(code.split(" ")) == 16
    assert page.locator("svg.qr").is_visible()
    shot(page, "passbook-zh-office")

    page.emulate_media(media="print")
    assert not page.locator("header.top").is_visible()  # no navigation on paper
    assert not page.get_by_role("link", name="下载存折文件").is_visible()
    assert page.locator("svg.qr").is_visible() and page.locator("#passbook-code").is_visible()
    shot(page, "passbook-zh-print")
    page.emulate_media(media="screen")
    page.goto(f"{console}/me/passbook?lang=en")
    assert page.locator("#passbook-code").get_attribute("data-code") == code
    shot(page, "passbook-en-office")
    page.goto(f"{console}/me/passbook?lang=zh-CN")

    with page.expect_download() as downloading:
        page.get_by_role("link", name="下载存折文件").click()
    file = tmp_path / downloading.value.suggested_filename
    downloading.value.save_as(file)
    checked = verify_cli(file)
    assert checked.returncode == 0, checked.stderr
    assert "genuine" in checked.stdout and "刘洋" in checked.stdout
    assert printed_code(checked.stdout) == code  # the paper and the file agree
    context.close()
    assert dialogs == []
