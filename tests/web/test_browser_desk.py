"""The desk in a real browser (the system's Chromium, through Playwright, against
`timebank console serve` as a real process): a staff member logs in, finds an elder who
phoned, takes her request and carries it through the whole service loop to recorded."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.web.conftest import OFFICE, PHONE, Town, log_in_browser, shot


def _state(page: Any) -> str:
    return str(page.locator("#state").get_attribute("data-state"))


def test_staff_take_a_phone_request_and_carry_it_to_recorded(
        chromium: Any, console: str, town: Town) -> None:
    dialogs: list[str] = []
    context = chromium.new_context(viewport=OFFICE, locale="zh-CN")
    page = context.new_page()
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    log_in_browser(page, console, town.staff_login)
    assert page.url == f"{console}/desk", page.locator("main").inner_text()
    session = [c for c in context.cookies() if c["name"] == "timebank_session"]
    assert session and session[0]["httpOnly"] and session[0]["secure"]
    assert session[0]["sameSite"] == "Strict"

    page.get_by_label("姓名、身份证号或电话").fill("桂兰")
    page.get_by_role("button", name="查找").click()
    shot(page, "desk-zh-office")
    page.get_by_role("link", name="张桂兰").click()
    assert page.locator("h1").inner_text() == "张桂兰"
    shot(page, "person-zh-office")
    page.get_by_label("服务类别").select_option("cleaning")
    page.get_by_label("预计时长（分钟）").fill("60")
    page.get_by_label("付款方式").select_option("grant")
    page.get_by_label("备注（可不填；等待接单时所有志愿者都能看到，请勿写电话或住址）").fill(
        "电话预约，上午九点")
    page.get_by_role("button", name="提交订单").click()
    page.wait_for_load_state()
    assert _state(page) == "requested"
    order_url = page.url

    page.get_by_label("志愿者（姓名、身份证号或电话）").fill("李秀英")
    page.get_by_role("button", name="安排志愿者接单").click()
    assert _state(page) == "accepted"
    page.get_by_role("button", name="志愿者到达，签到").click()
    assert _state(page) == "checked_in"
    town.clock.advance(timedelta(minutes=60))
    page.get_by_role("button", name="服务结束，签退").click()
    assert _state(page) == "checked_out"
    page.get_by_label("满意度（1 到 5 星）").select_option("5")
    page.get_by_role("button", name="代老人确认服务").click()
    assert _state(page) == "verified"
    shot(page, "order-zh-office")
    page.get_by_role("button", name="公示期满，记入时间").click()  # too soon
    assert page.get_by_role("alert").inner_text().startswith("未能办理：公示期还没有结束")
    assert _state(page) == "verified"

    town.clock.advance(timedelta(days=town.app.policy.publicity_days, minutes=1))
    log_in_browser(page, console, town.staff_login)  # the node's session ended meanwhile
    page.goto(order_url)
    assert _state(page) == "verified"
    page.get_by_role("button", name="公示期满，记入时间").click()
    assert _state(page) == "recorded"
    page.goto(f"{order_url}?lang=en")
    assert page.locator("#state").inner_text().endswith("Hours recorded")
    shot(page, "order-en-office")
    page.set_viewport_size(PHONE)
    shot(page, "order-en-phone")
    page.set_viewport_size(OFFICE)
    page.goto(f"{console}/desk?point=mine&lang=en")
    assert "List everyone at my service point" in page.locator("main").inner_text()
    shot(page, "desk-en-office")
    page.get_by_role("button", name="Log out").click()
    page.wait_for_load_state()
    assert [c for c in context.cookies() if c["name"] == "timebank_session"] == []
    page.goto(order_url)
    assert "Log in" in page.locator("h1").inner_text()
    context.close()
    assert dialogs == []
