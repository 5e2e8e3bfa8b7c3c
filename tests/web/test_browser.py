"""The console in a real browser: the system's Chromium, headless, driven by Playwright,
against the console served by `timebank console serve` (a real process) over a real node.

Chromium comes from the system's packages (Debian: ``apt-get install chromium
fonts-noto-cjk``); nothing is downloaded. Where it is missing these tests are skipped with
how to run them, except under ``TIMEBANK_REQUIRE_BROWSER=1`` (CI), where they fail.
Screenshots of each page in both languages, on an office screen and a phone, are kept in
``TIMEBANK_ARTIFACTS`` (default: ``test-artifacts/`` at the repository's root).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.web.conftest import Town

CHROMIUM = Path(os.environ.get("TIMEBANK_CHROMIUM", "/usr/bin/chromium"))
REQUIRE_BROWSER = os.environ.get("TIMEBANK_REQUIRE_BROWSER") == "1"
ARTIFACTS = Path(os.environ.get("TIMEBANK_ARTIFACTS")
                 or Path(__file__).resolve().parents[2] / "test-artifacts")
#: Flags for a headless Chromium on a closed network, as root in CI.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
OFFICE = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}
START_SECONDS = 30


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        message = (f"no Chromium at {CHROMIUM}: install the system's (Debian: apt-get install "
                   "chromium fonts-noto-cjk) or name one with TIMEBANK_CHROMIUM")
        if REQUIRE_BROWSER:
            pytest.fail(f"the browser tests are required (TIMEBANK_REQUIRE_BROWSER=1): "
                        f"{message}")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def console(town: Town, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`timebank console serve` over the town's node; its address."""
    port = _free_port()
    log = tmp_path_factory.mktemp("console") / "console.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "city.cli", "console", "serve", "--node", town.address,
             "--insecure", "--listen", f"127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the console did not start: {log.read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.returncode == 0, log.read_text()
    assert "Traceback" not in log.read_text()


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_the_public_page_in_both_languages_on_an_office_screen_and_a_phone(
        chromium: Any, console: str, town: Town) -> None:
    dialogs: list[str] = []
    for viewport, size in (("office", OFFICE), ("phone", PHONE)):
        page = chromium.new_page(viewport=size, locale="zh-CN")
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(f"{console}/public")
        assert page.locator("h1").inner_text() == "社会监督：公示中的服务"
        rows = page.locator("#public-orders tbody tr")
        assert rows.count() == 2
        shown = {int(rows.nth(i).get_attribute("data-order") or 0) for i in range(2)}
        assert shown == {town.on_display, town.disputed}
        _shot(page, f"public-zh-{viewport}")
        page.get_by_role("link", name="English").click()
        page.wait_for_load_state()
        assert page.locator("h1").inner_text() == "Public supervision: services on display"
        assert page.locator("html").get_attribute("lang") == "en"
        _shot(page, f"public-en-{viewport}")
        page.goto(f"{console}/")  # the choice is remembered
        assert page.locator("h1").inner_text() == "Welcome to the time bank"
        _shot(page, f"home-en-{viewport}")
        page.get_by_role("link", name="中文").click()
        page.wait_for_load_state()
        _shot(page, f"home-zh-{viewport}")
        page.close()
    assert dialogs == [], "a page ran script it was given"


def test_the_pages_work_from_the_keyboard(chromium: Any, console: str) -> None:
    page = chromium.new_page(viewport=OFFICE, locale="zh-CN")
    page.goto(f"{console}/")
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.textContent")
    assert focused == "跳到正文"
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")  # the brand, home, then the public page's link
    assert page.evaluate("document.activeElement.getAttribute('href')") == "/public"
    page.keyboard.press("Enter")
    page.wait_for_url(f"{console}/public")
    assert page.locator("h1").inner_text() == "社会监督：公示中的服务"
    page.close()


def test_a_phone_sees_each_order_as_a_labelled_card(chromium: Any, console: str) -> None:
    page = chromium.new_page(viewport=PHONE, locale="zh-CN")
    page.goto(f"{console}/public")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], "the page scrolls sideways on a phone"
    label = page.evaluate(
        "getComputedStyle(document.querySelector('#public-orders td'), '::before').content")
    assert label == '"订单号"'
    page.close()
