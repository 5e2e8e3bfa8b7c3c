"""The service point's desk over a real node: logging in, finding an elder, taking a
request by phone and carrying it to recorded; and what the console refuses (forms from
elsewhere, readers without a session or outside their role) without changing anything."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from starlette.testclient import TestClient

from node.usecases import orders
from tests.helpers import enrol, id_card, request
from tests.web.conftest import BASE, PASSWORD, Town
from web.app import build
from web.nodes import Node
from web.sessions import LOGIN_CSRF_COOKIE, SESSION_COOKIE, Sessions


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, html
    return found.group(1)


def _key(html: str, action: str = "") -> str:
    pattern = (rf'action="[^"]*/{action}"[^>]*>\s*<input type="hidden" name="csrf" '
               r'value="[^"]+">\s*<input type="hidden" name="key" value="([^"]+)"')
    found = re.search(pattern if action else r'name="key" value="([^"]+)"', html)
    assert found is not None, html
    return found.group(1)


def log_in(client: TestClient, login: str, password: str = PASSWORD) -> str:
    """Log in as ``login``; the CSRF token of the session's forms."""
    page = client.get("/login")
    answer = client.post("/login", data={"login": login, "password": password,
                                         "csrf": _csrf(page.text)})
    assert answer.status_code == 303, answer.text
    return _csrf(client.get("/").text)


def _order_state(town: Town, order_id: int) -> str:
    return str(town.app.query(lambda tx: tx.repo.orders.get(order_id)).state)


def test_the_desk_needs_someone_logged_in(client: TestClient) -> None:
    for path in ("/desk", "/people/1", "/orders/1"):
        page = client.get(path)
        assert page.status_code == 401
        assert "您还没有登录" in page.text and 'action="/login"' in page.text


def test_a_session_cookie_is_httponly_secure_and_strict(client: TestClient,
                                                        town: Town) -> None:
    page = client.get("/login")
    csrf_cookie = page.headers["set-cookie"]
    assert csrf_cookie.startswith(f"{LOGIN_CSRF_COOKIE}=")
    answer = client.post("/login", data={"login": town.staff_login, "password": PASSWORD,
                                         "csrf": _csrf(page.text)})
    assert answer.status_code == 303 and answer.headers["location"] == "/desk"
    cookies = answer.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith(f"{SESSION_COOKIE}="))
    assert "HttpOnly" in session and "Secure" in session
    assert "samesite=strict" in session.lower()
    token = session.split(";")[0].split("=", 1)[1]
    assert len(token) >= 40 and town.staff_login not in session


def test_a_wrong_password_says_so_and_opens_nothing(client: TestClient, town: Town) -> None:
    page = client.get("/login")
    answer = client.post("/login", data={"login": town.staff_login, "password": "nope nope",
                                         "csrf": _csrf(page.text)})
    assert answer.status_code == 401
    assert "账号或密码不对" in answer.text
    assert SESSION_COOKIE not in answer.headers.get("set-cookie", "")
    assert client.get("/desk").status_code == 401


def test_a_login_form_from_elsewhere_is_refused(client: TestClient, town: Town) -> None:
    client.get("/login")  # the browser holds the login cookie, not the token
    answer = client.post("/login", data={"login": town.staff_login, "password": PASSWORD,
                                         "csrf": "forged"})
    assert answer.status_code == 403 and "表单已经过期" in answer.text
    assert client.get("/desk").status_code == 401


def test_staff_take_a_phone_request_for_an_elder_and_carry_it_to_recorded(
        client: TestClient, town: Town) -> None:
    csrf = log_in(client, town.staff_login)
    found = client.get("/desk", params={"q": "桂兰"})
    assert found.status_code == 200 and f'data-person="{town.elder}"' in found.text
    person = client.get(f"/people/{town.elder}")
    assert "张桂兰" in person.text and "电话代下单" in person.text
    made = client.post(f"/people/{town.elder}/orders", data={
        "csrf": csrf, "key": _key(person.text), "category": "cleaning", "minutes": "60",
        "payment": "grant", "note": "电话预约 by phone"})
    assert made.status_code == 303, made.text
    order_id = int(made.headers["location"].rsplit("/", 1)[1])
    record = town.app.query(lambda tx: tx.repo.orders.get(order_id))
    assert (record.state, record.requested_by) == ("requested", "staff:1")  # the node's

    def act(action: str, **fields: str) -> str:
        page = client.get(f"/orders/{order_id}")
        done = client.post(f"/orders/{order_id}/{action}",
                           data={"csrf": _csrf(page.text), "key": _key(page.text, action),
                                 **fields})
        assert done.status_code == 303, done.text
        return client.get(f"/orders/{order_id}").text

    assert "李秀英" in act("accept", volunteer="李秀英")
    act("check-in")
    town.clock.advance(timedelta(minutes=60))
    act("check-out")
    shown = act("verify", rating="5", comment="很好 good")
    assert "已确认，公示中" in shown
    too_soon = client.post(f"/orders/{order_id}/record",
                           data={"csrf": csrf, "key": _key(shown, "record")})
    assert too_soon.status_code == 409 and "未能办理" in too_soon.text
    assert _order_state(town, order_id) == "verified"  # the refusal changed nothing
    town.clock.advance(timedelta(days=town.app.policy.publicity_days, minutes=1))
    ended = client.get(f"/orders/{order_id}")  # a week on, the node's session has ended
    assert ended.status_code == 401 and "登录已过期" in ended.text
    csrf = log_in(client, town.staff_login)
    assert "已记入时间" in act("record")
    assert _order_state(town, order_id) == "recorded"


def test_a_form_sent_twice_is_done_once(client: TestClient, town: Town) -> None:
    csrf = log_in(client, town.staff_login)
    person = client.get(f"/people/{town.elder}")
    form = {"csrf": csrf, "key": _key(person.text), "category": "cleaning",
            "minutes": "30", "payment": "grant", "note": ""}
    first = client.post(f"/people/{town.elder}/orders", data=form)
    again = client.post(f"/people/{town.elder}/orders", data=form)
    assert first.headers["location"] == again.headers["location"]


@pytest.mark.parametrize("forged", [{"csrf": "forged"}, {}, {"origin": "https://evil.test"}])
def test_a_form_without_its_token_or_from_elsewhere_changes_nothing(
        client: TestClient, town: Town, forged: dict[str, str]) -> None:
    csrf = log_in(client, town.staff_login)
    before = town.app.query(lambda tx: tx.repo.orders.list(0, None, 0, 1000))
    origin = forged.pop("origin", None)
    data = {"key": "k-forged", "category": "cleaning", "minutes": "60",
            "payment": "grant", **({} if "csrf" in forged or origin is None
                                   else {"csrf": csrf}), **forged}
    headers = {"origin": origin} if origin else {}
    answer = client.post(f"/people/{town.elder}/orders", data=data, headers=headers)
    assert answer.status_code == 403 and "表单已经过期" in answer.text
    assert town.app.query(lambda tx: tx.repo.orders.list(0, None, 0, 1000)) == before


def test_bad_input_is_shown_plainly_and_changes_nothing(client: TestClient,
                                                        town: Town) -> None:
    csrf = log_in(client, town.staff_login)
    person = client.get(f"/people/{town.elder}")
    before = town.app.query(lambda tx: tx.repo.orders.list(0, None, 0, 1000))
    for minutes in ("", "0", "-5", "abc", "99999"):
        answer = client.post(f"/people/{town.elder}/orders", data={
            "csrf": csrf, "key": _key(person.text), "category": "cleaning",
            "minutes": minutes, "payment": "grant"})
        assert answer.status_code == 400 and "整数分钟" in answer.text
    refused = client.post(f"/people/{town.elder}/orders", data={
        "csrf": csrf, "key": _key(person.text), "category": "no-such-service",
        "minutes": "60", "payment": "grant"})
    assert refused.status_code == 409 and "未能办理" in refused.text
    assert "Traceback" not in refused.text
    assert town.app.query(lambda tx: tx.repo.orders.list(0, None, 0, 1000)) == before
    assert client.get("/people/999999").status_code == 404
    assert client.get("/people/abc").status_code == 400


def test_a_member_cannot_reach_the_desk_or_another_persons_page(client: TestClient,
                                                                town: Town) -> None:
    log_in(client, town.member_login)
    assert client.get("/desk").status_code == 403
    page = client.get(f"/people/{town.elder}")  # not theirs, not linked to them
    assert page.status_code == 403 and "张桂兰" not in page.text


def test_staff_see_only_the_people_of_their_service_point(client: TestClient,
                                                          town: Town) -> None:
    log_in(client, town.other_point_login)
    found = client.get("/desk", params={"q": "桂兰"})
    assert f'data-person="{town.elder}"' not in found.text
    page = client.get(f"/people/{town.elder}")
    assert page.status_code == 403 and "张桂兰" not in page.text


def test_logging_out_ends_the_session_for_good(client: TestClient, town: Town) -> None:
    csrf = log_in(client, town.staff_login)
    cookie = client.cookies.get(SESSION_COOKIE)
    assert client.post("/logout", data={"csrf": csrf}).status_code == 303
    client.cookies.set(SESSION_COOKIE, cookie or "", domain="console.test")
    assert client.get("/desk").status_code == 401


def test_a_session_ends_after_a_while_without_use(node: Node, town: Town) -> None:
    now = [0.0]
    sessions = Sessions(clock=lambda: now[0], idle_seconds=60, max_seconds=3600)
    with TestClient(build(node, sessions=sessions), base_url=BASE,
                    raise_server_exceptions=False, follow_redirects=False) as client:
        log_in(client, town.staff_login)
        assert client.get("/desk").status_code == 200
        now[0] += 59
        assert client.get("/desk").status_code == 200  # each request resets the idle time
        now[0] += 61
        assert client.get("/desk").status_code == 401
        assert len(sessions) == 0


def test_staff_enrol_an_elder_at_their_service_point(client: TestClient, town: Town) -> None:
    csrf = log_in(client, town.staff_login)
    desk = client.get("/desk")
    number = id_card(1941)
    form = {"csrf": csrf, "key": _key(desk.text), "name": "陈<b>阿婆</b>",
            "id_number": number, "phone": "025-5555 0101", "priority": "1"}
    made = client.post("/people", data=form)
    assert made.status_code == 303, made.text
    person_id = int(made.headers["location"].rsplit("/", 1)[1])
    record = town.app.query(lambda tx: tx.repo.people.get(person_id))
    assert (record.name, record.id_number, record.priority) == ("陈<b>阿婆</b>", number, True)
    assert record.service_point_id is not None  # the staff member's own
    page = client.get(made.headers["location"])
    assert "陈&lt;b&gt;阿婆&lt;/b&gt;" in page.text and "<b>阿婆</b>" not in page.text
    again = client.post("/people", data=form)  # sent twice: one person
    assert again.headers["location"] == made.headers["location"]
    bad = client.post("/people", data={**form, "key": "k2", "id_number": "123"})
    assert bad.status_code == 409 and "未能办理" in bad.text
    missing = client.post("/people", data={**form, "key": "k3", "name": " "})
    assert missing.status_code == 400 and "请填写姓名和身份证号" in missing.text


def test_an_order_taken_by_a_volunteer_of_another_service_point_still_shows(
        client: TestClient, town: Town) -> None:
    far_point = town.app.query(
        lambda tx: tx.repo.staff.service_point_by_code("SP-FAR")).id
    far_volunteer = enrol(town.app, "钱多多", 1980, point=far_point)
    waiting = request(town.app, town.elder, 30).record.id
    town.app.execute(orders.accept_order, waiting, far_volunteer.id)
    log_in(client, town.staff_login)
    page = client.get(f"/orders/{waiting}")
    assert page.status_code == 200, page.text
    assert "其他服务点的志愿者" in page.text and "钱多多" not in page.text
