"""A volunteer in a real browser (the system's Chromium through Playwright, against
`timebank console serve` as a real process): she logs in, reads her hours, takes a
request waiting for a volunteer (志愿接单), and disputes a service on public display."""

from __future__ import annotations

from typing import Any

from tests.helpers import enrol, request, serve
from tests.web.conftest import OFFICE, PASSWORD, PHONE, Town, shot


def test_a_volunteer_takes_a_request_and_disputes_a_service_on_display(
        chromium: Any, console: str, town: Town) -> None:
    waiting = request(town.app, town.elder, 45).record.id
    neighbour = enrol(town.app, "孙强", 1940, priority=True)
    shown = serve(town.app, town.clock, neighbour.id, town.volunteer, 30,
                  record=False).record.id
    dialogs: list[str] = []
    page = chromium.new_page(viewport=PHONE, locale="zh-CN")
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{console}/login")
    page.get_by_label("账号").fill(town.member_login)
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录", exact=True).click()
    page.wait_for_url(f"{console}/me")
    assert page.locator("h1").inner_text() == "我的时间银行 · 李秀英"
    shot(page, "me-zh-phone")

    page.get_by_role("link", name="志愿接单").first.click()
    row = page.locator(f'#requests tr[data-order="{waiting}"]')
    assert "张**" in row.inner_text()
    shot(page, "requests-zh-phone")
    row.get_by_role("button", name="我来接单").click()
    page.wait_for_url(f"{console}/me?taken={waiting}")
    assert page.get_by_role("status").inner_text() == f"您已接下订单 {waiting}，谢谢您！"
    assert town.app.query(lambda tx: tx.repo.orders.get(waiting)).state == "accepted"

    page.set_viewport_size(OFFICE)
    page.goto(f"{console}/public?lang=en")
    on_display = page.locator(f'#public-orders tr[data-order="{shown}"]')
    on_display.get_by_label("Why").fill("The volunteer never came")
    on_display.get_by_role("button", name="Raise a dispute").click()
    page.wait_for_load_state()
    assert page.get_by_role("status").inner_text().startswith("Your dispute was raised")
    assert town.app.query(lambda tx: tx.repo.orders.get(shown)).state == "disputed"
    page.goto(f"{console}/me")
    shot(page, "me-en-office")
    page.get_by_role("link", name="Pay for family").click()
    assert page.locator("h1").inner_text() == "My hours for my family's services"
    shot(page, "consents-en-office")
    page.goto(f"{console}/me/requests")
    assert page.locator("h1").inner_text() == "Requests waiting for a volunteer"
    shot(page, "requests-en-office")
    page.goto(f"{console}/me/consents?lang=zh-CN")
    shot(page, "consents-zh-office")
    page.close()
    assert dialogs == []
