"""A person's details and links in a real browser (the system's Chromium, through
Playwright, against `timebank console serve` as a real process): a staff member corrects
an elder's misspelt name and her phone number and links her daughter to her, and each
one's page shows the other, as they stand to that one (the daughter a child, the mother
a parent)."""

from __future__ import annotations

from typing import Any

from tests.helpers import enrol
from tests.web.conftest import OFFICE, PHONE, Town, log_in_browser, shot


def test_staff_correct_a_name_and_phone_and_link_a_daughter_to_her_mother(
        chromium: Any, console: str, town: Town) -> None:
    point = town.app.query(lambda tx: tx.repo.staff.service_point_by_code("SP-WEB")).id
    mother = enrol(town.app, "吴淑珍", 1938, priority=True, point=point).id  # a typo
    daughter = enrol(town.app, "吴晓梅", 1968, point=point).id
    number = town.app.query(lambda tx: tx.repo.people.get(daughter)).id_number
    dialogs: list[str] = []
    context = chromium.new_context(viewport=OFFICE, locale="zh-CN")
    page = context.new_page()
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    log_in_browser(page, console, town.staff_login)
    page.goto(f"{console}/people/{mother}")
    assert page.locator("h1").inner_text() == "吴淑珍"

    page.get_by_label("姓名", exact=True).fill("吴淑贞")
    phone = page.get_by_label("电话号码", exact=True)
    assert phone.input_value() == "13800000000"
    phone.fill("025-5555 6789")
    page.get_by_label("修改原因（更正姓名时必填，记入档案）").fill("女儿来电更正")
    page.get_by_role("button", name="保存修改").click()
    page.wait_for_load_state()
    assert page.get_by_role("status").inner_text() == "已保存修改，并记入档案。"
    assert page.locator("h1").inner_text() == "吴淑贞"
    assert "025-5555 6789" in page.locator("main > p").first.inner_text()
    assert town.app.query(lambda tx: tx.repo.people.get(mother)).phone == "025-5555 6789"

    page.get_by_label("对方的身份证号").fill(number)
    page.get_by_label("对方是本人的").select_option("child")
    page.get_by_role("button", name="登记关联").click()
    page.wait_for_load_state()
    assert page.get_by_role("status").inner_text() == "已登记关联，两人的档案都记下了。"
    link = page.locator(f'#links li[data-person="{daughter}"]')
    assert "吴晓梅 · 子女" in link.inner_text()  # the daughter is the mother's child
    shot(page, "person-links-zh-office")

    link.get_by_role("link", name="吴晓梅").click()
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == "吴晓梅"
    # and on the daughter's page the mother is her parent: the relation reads from her side
    assert "吴淑贞 · 父亲或母亲" in page.locator(
        f'#links li[data-person="{mother}"]').inner_text()
    page.goto(f"{console}/people/{daughter}?lang=en")
    assert "吴淑贞 · father or mother" in page.locator(
        f'#links li[data-person="{mother}"]').inner_text()
    page.set_viewport_size(PHONE)
    shot(page, "person-links-en-phone")
    context.close()
    assert dialogs == []
