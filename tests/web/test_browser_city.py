"""A daughter's consent and her hours paying for her mother's meals in another district,
in a real browser (the system's Chromium, through Playwright) against a real city: a
clearinghouse and two district nodes as processes on simulated time (``--dev-clock``),
and each district's `timebank console serve` as a real process, started as `timebank
demo --serve` starts them.

王芳 stores hours in 江宁区 (320115) by cleaning a neighbour's flat; her mother 李桂英
lives in 鼓楼区 (320106). On her own page in 江宁区's console 王芳 lets her hours pay for
her mother's services, naming her by ID-card number, at most an hour a service and ten
in all. 鼓楼区's service-point staff finds the mother at the desk, takes a meal request
paid with the daughter's hours and carries it through a volunteer's acceptance, check-in,
check-out and the confirmation for the elder; once the publicity period is over the desk
records it, the claim between the districts completes, and the daughter's page in
江宁区 shows the hour gone and the entry for it.

What the story needs that is not its point is set up over the nodes' API
(``tests.city.workload``): the service points, the people, the daughter's earned hours.
The two accounts that log in are made with `timebank node account add`, as a district's
operator makes them. Screenshots: ``city-consent-zh-office``, ``city-order-zh-office``
(and ``-en-``), ``city-me-zh-office`` (and ``-en-``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from city.launcher import CityLayout, CityProcesses, District, console_serving, layout
from runtime import devclock
from tests.city.workload import (
    CityClient,
    enrol_elder,
    id_number,
    key,
    record_due,
    setup_desk,
    wait_claim,
    wait_quiet,
)
from tests.web.conftest import OFFICE, PASSWORD, shot
from timebank.v1 import node_pb2

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
JN, GL = "320115", "320106"
TWO = (District(JN, "江宁区"), District(GL, "鼓楼区"))
#: The meal category of the city's default categories (timebank/policy.py: 助餐).
MEALS = "meals"
EARNED = 90  # the daughter's service in 江宁区: what she has to give
MEAL = 60  # the meal's planned and served length
PER_SERVICE, IN_ALL = 60, 600  # the bounds of her consent
DAUGHTER, MOTHER = "王芳", "李桂英"
DAUGHTER_LOGIN, DESK_LOGIN = "wang.fang", "gulou.desk"
#: How long a claim between districts may take to be accepted or to complete.
CLAIM_SECONDS = 30.0
LOGIN_MS = 15_000


def test_a_daughter_consents_and_her_hours_pay_for_her_mothers_meals_in_another_district(
        chromium: Any, tmp_path: Path) -> None:
    """One test, so that one worker builds the city (each test of a module may run on
    another worker): the story asserts each step on its page as it goes, and what the
    console does not show yet is gathered in ``missing`` and asserted last, once the
    whole story has run."""
    city = layout(tmp_path / "city", TWO)
    dialogs: list[str] = []
    missing: list[str] = []
    with CityProcesses(city, dev_clock=True) as processes:
        processes.start_all()
        client = CityClient(city)
        try:
            people = _setup(client)
            _accounts(city, people)
            with _console(city, JN) as jn, _console(city, GL) as gl:
                _story(chromium, client, city, people, jn, gl, dialogs, missing)
        finally:
            client.close()
    for node_id in (JN, GL):
        log = (city.logs_dir / f"console-{node_id}.log").read_text(encoding="utf-8")
        assert "Traceback" not in log, log
    assert dialogs == [], dialogs  # no page opened an alert, a confirm or a prompt
    assert not missing, "the console does not show it yet:\n- " + "\n- ".join(missing)


# ------------------------------------------------------------------ setting the city up


@dataclass(frozen=True)
class People:
    """Who the story needs, by their ids and ID-card numbers."""

    daughter: int  # in 江宁区, where her hours are kept
    daughter_number: str
    mother_number: str
    gl_staff: int  # 鼓楼区's service-point staff member


def _enrol(client: CityClient, node_id: str, name: str, number: str, *,
           priority: bool = False, home: str = "") -> int:
    return int(client.call(node_id, "EnrolPerson", node_pb2.EnrolPersonRequest(
        idempotency_key=key(), kind=node_pb2.PERSON_KIND_INDIVIDUAL, name=name,
        id_number=number, phone="13900000001", priority=priority, home_node_id=home)
    ).person.id)


def _setup(client: CityClient) -> People:
    """Service points in both districts (鼓楼区's with a volunteer, 志愿者0); the daughter
    with 90 min earned in 江宁区; the mother at home in 鼓楼区 and known in 江宁区 (a visitor
    record there) as the daughter's parent; the daughter known in 鼓楼区 as a visitor."""
    desks = {JN: setup_desk(client, JN, 0), GL: setup_desk(client, GL, 1)}
    daughter_number, mother_number = id_number(JN, 1968), id_number(GL, 1940)
    daughter = _enrol(client, JN, DAUGHTER, daughter_number)
    neighbour = enrol_elder(client, desks, JN, [], grant=600)
    _earn(client, desks[JN].staff_id, neighbour.ids[JN], daughter, EARNED)
    _enrol(client, GL, MOTHER, mother_number, priority=True)
    mother_in_jn = _enrol(client, JN, MOTHER, mother_number, priority=True, home=GL)
    client.call(JN, "LinkPeople", node_pb2.LinkPeopleRequest(
        idempotency_key=key(), person_id=daughter, other_id=mother_in_jn,
        kind=node_pb2.LINK_KIND_PARENT, staff_id=desks[JN].staff_id))
    _enrol(client, GL, DAUGHTER, daughter_number, home=JN)
    assert wait_quiet(client, [JN, GL], CLAIM_SECONDS), "the enrolments never reached the city"
    return People(daughter, daughter_number, mother_number, desks[GL].staff_id)


def _earn(client: CityClient, staff: int, elder: int, volunteer: int, minutes: int) -> None:
    """``volunteer`` serves ``elder`` (paid with the elder's city grant) for ``minutes``,
    and it is recorded once the publicity period is over: ``minutes`` stored for her."""
    order = client.call(JN, "RequestOrder", node_pb2.RequestOrderRequest(
        idempotency_key=key(), recipient_id=elder, category="cleaning",
        planned_minutes=minutes, payment_source=node_pb2.PAYMENT_SOURCE_OWN,
        requested_by=node_pb2.Actor(staff_id=staff))).order
    client.call(JN, "AcceptOrder", node_pb2.AcceptOrderRequest(
        idempotency_key=key(), order_id=order.id, volunteer_id=volunteer))
    client.call(JN, "CheckIn", node_pb2.CheckInRequest(idempotency_key=key(),
                                                       order_id=order.id))
    devclock.advance(client.city.clock_file, timedelta(minutes=minutes))
    client.call(JN, "CheckOut", node_pb2.CheckOutRequest(idempotency_key=key(),
                                                         order_id=order.id))
    client.call(JN, "VerifyOrder", node_pb2.VerifyOrderRequest(
        idempotency_key=key(), order_id=order.id,
        verifier=node_pb2.Actor(person_id=elder), rating=5, comment="很干净"))
    devclock.advance(client.city.clock_file, timedelta(days=8))  # past the publicity period
    assert record_due(client, JN) == 1
    stored = client.call(JN, "GetBalance", node_pb2.GetBalanceRequest(person_id=volunteer))
    assert stored.total_minutes == minutes, stored


def _accounts(city: CityLayout, people: People) -> None:
    """The daughter's member account in 江宁区 and the staff member's in 鼓楼区, with a
    password, as each district's operator makes them: `timebank node account add`."""
    made = [_account_add(city, JN, "member", DAUGHTER_LOGIN, "--person", people.daughter),
            _account_add(city, GL, "staff", DESK_LOGIN, "--staff", people.gl_staff)]
    for process in made:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, out + err


def _account_add(city: CityLayout, node_id: str, role: str, login: str, bound_as: str,
                 bound: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "city", "node", "account", "add", "--config",
         str(city.node(node_id).config_file), "--role", role, "--login", login, bound_as,
         str(bound), "--password"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
        cwd=ROOT, env={**os.environ, "TIMEBANK_PASSWORD": PASSWORD,
                       "PYTHONIOENCODING": "utf-8"})


@contextmanager
def _console(city: CityLayout, node_id: str) -> Iterator[str]:
    """The district's console as `timebank demo --serve` starts it: trusting the city
    CA, with the city's overview read from the clearinghouse as the observer."""
    node, observer = city.node(node_id), city.client_tls()
    assert node.client_tls is not None and observer is not None
    assert observer.cert is not None and observer.key is not None
    options = ["--ca", str(node.client_tls.ca), "--cert", str(observer.cert),
               "--key", str(observer.key), "--clearinghouse", city.clearinghouse_address]
    log = city.logs_dir / f"console-{node_id}.log"
    with console_serving(node.address, options, log) as (url, process):
        yield url
    assert process.returncode == 0, log.read_text(encoding="utf-8")


# ------------------------------------------------------------------ the story


def _story(chromium: Any, client: CityClient, city: CityLayout, people: People, jn: str,
           gl: str, dialogs: list[str], missing: list[str]) -> None:
    daughter = _browser(chromium, dialogs)
    desk = _browser(chromium, dialogs)
    try:
        _consent(daughter, jn, people)
        order_url, claim_id = _meal(desk, gl, client, city, people, missing)
        _record(desk, gl, order_url, client, claim_id, missing)
        _paid(daughter, jn)
    finally:
        for page in (daughter, desk):
            page.context.close()


def _consent(page: Any, jn: str, people: People) -> None:
    """In 江宁区's console the daughter reads her hours and lets them pay for her mother's
    services, naming her by ID-card number: at most an hour a service, ten in all."""
    _log_in(page, jn, DAUGHTER_LOGIN)
    expect(page).to_have_url(f"{jn}/me")
    expect(page.locator("h1")).to_have_text(f"我的时间银行 · {DAUGHTER}")
    expect(page.locator("#balance")).to_have_attribute("data-minutes", str(EARNED))
    expect(page.locator("#history")).to_contain_text("服务所得存入")

    page.get_by_role("link", name="为家人付款").click()
    expect(page.locator("h1")).to_have_text("用我的时间为家人付款")
    expect(page.locator("main")).to_contain_text("您还没有同意为任何人付款。")
    page.get_by_label("家人的身份证号（18位）").fill(people.mother_number)
    page.get_by_label("每次最多（分钟，可不填）").fill(str(PER_SERVICE))
    page.get_by_label("总共最多（分钟，可不填）").fill(str(IN_ALL))
    page.get_by_role("button", name="同意", exact=True).click()
    expect(page.get_by_role("status")).to_have_text(re.compile(r"^已同意，编号 \d+。$"))
    row = page.locator("#consents tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text(MOTHER)  # the number named her: the page says her name
    expect(row).to_contain_text("每次最多 1小时")
    expect(row).to_contain_text("总共最多 10小时，已用 0分钟")
    expect(row).to_contain_text("有效")
    shot(page, "city-consent-zh-office")


def _meal(page: Any, gl: str, client: CityClient, city: CityLayout, people: People,
          missing: list[str]) -> tuple[str, str]:
    """鼓楼区's staff finds the mother at the desk and takes a meal request paid with the
    daughter's hours; a volunteer of 鼓楼区 takes it, 江宁区 holds the hour, and the desk
    checks the volunteer in and out and confirms the meal for the elder. The order's
    address and its claim's id."""
    _log_in(page, gl, DESK_LOGIN)
    expect(page).to_have_url(f"{gl}/desk")
    page.get_by_label("姓名、身份证号或电话").fill("桂英")
    page.get_by_role("button", name="查找").click()
    page.get_by_role("link", name=MOTHER).click()
    expect(page.locator("h1")).to_have_text(MOTHER)
    page.get_by_label("服务类别").select_option(MEALS)
    page.get_by_label("预计时长（分钟）").fill(str(MEAL))
    page.get_by_label("付款方式").select_option("relative")
    page.get_by_label("付款的家人（身份证号或电话；用亲属的时间时填写）").fill(
        people.daughter_number)
    page.get_by_role("button", name="提交订单").click()
    state = page.locator("#state")
    _until(page, "requested")
    expect(page.locator("h1")).to_have_text(re.compile(r"^订单 \d+ · 助餐$"))
    order_url = page.url
    order_id = int(order_url.rsplit("/", 1)[1])

    # 鼓楼区's volunteer takes it: 鼓楼区 asks 江宁区 for the hour (a claim), which checks
    # the family link, her consent and her balance, and holds it
    page.get_by_label("志愿者（姓名、身份证号或电话）").fill("志愿者0")
    page.get_by_role("button", name="安排志愿者接单").click()
    _until(page, "accepted")
    expect(page.locator("main")).to_contain_text("志愿者0")
    claim_id = str(client.call(GL, "GetOrder", node_pb2.GetOrderRequest(order_id=order_id)
                               ).order.claim_id)
    assert claim_id, "accepting the order proposed no claim to 江宁区"
    assert wait_claim(client, GL, claim_id, {"accepted"}, CLAIM_SECONDS) == "accepted"

    page.goto(order_url)  # the hour is held in 江宁区: the service may start
    page.get_by_role("button", name="志愿者到达，签到").click()
    _until(page, "checked_in")
    devclock.advance(city.clock_file, timedelta(minutes=MEAL))
    page.get_by_role("button", name="服务结束，签退").click()
    _until(page, "checked_out")
    page.get_by_label("满意度（1 到 5 星）").select_option("5")
    page.get_by_role("button", name="代老人确认服务").click()
    _until(page, "verified")
    expect(state).to_have_text("当前状态：已确认，公示中")
    expect(_fact(page, "服务对象")).to_have_text(MOTHER)
    expect(_fact(page, "志愿者")).to_have_text("志愿者0")
    expect(_fact(page, "预计时长")).to_have_text("1小时")
    expect(_fact(page, "实际时长")).to_have_text("1小时")
    _says_who_pays(page, "accepted", "zh, verified", missing)
    shot(page, "city-order-zh-office")

    page.goto(f"{order_url}?lang=en")
    expect(state).to_have_text("Now: Confirmed, on public display")
    expect(_fact(page, "Measured")).to_have_text("1 h")
    _says_who_pays(page, "accepted", "en, verified", missing)
    shot(page, "city-order-en-office")
    page.goto(f"{order_url}?lang=zh-CN")
    return order_url, claim_id


def _record(page: Any, gl: str, order_url: str, client: CityClient, claim_id: str,
            missing: list[str]) -> None:
    """Past the publicity period the desk records the meal; the claim completes in both
    districts."""
    devclock.advance(client.city.clock_file, timedelta(days=8))
    _log_in(page, gl, DESK_LOGIN)  # the node's session ended in the eight days
    page.goto(order_url)
    page.get_by_role("button", name="公示期满，记入时间").click()
    state = page.locator("#state")
    _until(page, "recorded")
    expect(state).to_have_text("当前状态：已记入时间")
    expect(_fact(page, "记入时长")).to_have_text("1小时")
    expect(page.locator("main")).to_contain_text("这张订单已经办结。")
    for node_id in (GL, JN):
        assert wait_claim(client, node_id, claim_id, {"completed"},
                          CLAIM_SECONDS) == "completed", node_id
    page.goto(order_url)
    _says_who_pays(page, "completed", "zh, recorded", missing)


def _paid(page: Any, jn: str) -> None:
    """The daughter's page in 江宁区: her hours less the meal's hour, and the entry for
    it at the top of her history; her consent has an hour used."""
    _log_in(page, jn, DAUGHTER_LOGIN)  # her node session ended in the eight days too
    expect(page).to_have_url(f"{jn}/me")
    balance = page.locator("#balance")
    expect(balance).to_have_attribute("data-minutes", str(EARNED - MEAL))
    expect(balance).to_contain_text("30分钟 (可用 30分钟，冻结 0分钟)")
    latest = page.locator("#history tbody tr").first
    expect(latest).to_contain_text("跨区通存通兑")
    expect(latest).to_contain_text("−1小时")
    shot(page, "city-me-zh-office")
    page.goto(f"{jn}/me?lang=en")
    expect(page.locator("h1")).to_have_text(f"My time bank · {DAUGHTER}")
    expect(balance).to_contain_text("30 min (30 min available, 0 min held)")
    expect(latest).to_contain_text("−1 h")
    shot(page, "city-me-en-office")
    page.goto(f"{jn}/me/consents?lang=zh-CN")
    expect(page.locator("#consents tbody tr")).to_contain_text("总共最多 10小时，已用 1小时")


def _until(page: Any, wanted: str) -> None:
    """Wait for the order page to show the order ``wanted`` (``#state``'s
    ``data-state``); fail with the page's own words if it shows a refusal or an error
    page instead."""
    either = page.locator(f'#state[data-state="{wanted}"], main [role="alert"]').first
    expect(either).to_be_visible()
    refused = page.locator('main [role="alert"]')
    assert not refused.count(), f"wanted the order {wanted}: {refused.first.inner_text()}"


def _fact(page: Any, term: str) -> Any:
    """What the order page's facts say beside ``term``."""
    return page.locator(f'dl.facts dt:text-is("{term}") + dd')


def _says_who_pays(page: Any, claim_state: str, which: str, missing: list[str]) -> None:
    """What the order page should say of its payment, noted in ``missing`` where it does
    not: in plain words, that 江宁区 pays (the district that keeps the daughter's hours),
    and how far the claim has come, marked ``data-claim-state`` as the order's own state
    is marked ``data-state`` and said in words, not the node's code."""
    main = str(page.locator("main").inner_text())
    if "江宁区" not in main:
        missing.append(f"the order page ({which}) does not say that 江宁区 pays")
    marked = page.locator("[data-claim-state]")
    if not marked.count():
        missing.append(f"the order page ({which}) does not show the claim's state "
                       f"({claim_state})")
        return
    found, words = marked.first.get_attribute("data-claim-state"), marked.first.inner_text()
    if found != claim_state or not words.strip() or claim_state in words:
        missing.append(f"the order page ({which}) shows the claim as {found!r} "
                       f"({words!r}), not {claim_state!r} in words")


def _browser(chromium: Any, dialogs: list[str]) -> Any:
    """A page in a browser context of its own (one person's cookies), which notes every
    dialog a page opens (none may) and dismisses it."""
    context = chromium.new_context(viewport=OFFICE, locale="zh-CN")
    page = context.new_page()

    def noted(dialog: Any) -> None:
        dialogs.append(str(dialog.message))
        dialog.dismiss()

    page.on("dialog", noted)
    return page


def _log_in(page: Any, console: str, login: str) -> None:
    page.goto(f"{console}/login")
    page.get_by_label("账号").fill(login)
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录", exact=True).click()
    # the console sends a member to /me and staff to /desk; a refused login stays here
    page.wait_for_url(lambda url: not url.endswith("/login"), timeout=LOGIN_MS)

