"""The public pages in a real browser: the system's Chromium, headless, driven by
Playwright, against `timebank console serve` (a real process) over a real node
(``tests/web/conftest.py``)."""

from __future__ import annotations

from typing import Any

from tests.web.conftest import OFFICE, PHONE, Town, shot


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
        shot(page, f"public-zh-{viewport}")
        page.get_by_role("link", name="English").click()
        page.wait_for_load_state()
        assert page.locator("h1").inner_text() == "Public supervision: services on display"
        assert page.locator("html").get_attribute("lang") == "en"
        shot(page, f"public-en-{viewport}")
        page.goto(f"{console}/")  # the choice is remembered
        assert page.locator("h1").inner_text() == "Welcome to the time bank"
        shot(page, f"home-en-{viewport}")
        page.get_by_role("link", name="中文").click()
        page.wait_for_load_state()
        shot(page, f"home-zh-{viewport}")
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
