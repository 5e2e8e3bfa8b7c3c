"""A member's own pages over a real node: their hours and history, requests waiting for
a volunteer and taking one, and a dispute raised from the public page."""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

from tests.helpers import enrol, request, serve
from tests.web.conftest import Town
from tests.web.test_desk import log_in


def _order(town: Town, order_id: int) -> object:
    return town.app.query(lambda tx: tx.repo.orders.get(order_id))


def test_a_member_sees_their_own_hours_and_history(client: TestClient, town: Town) -> None:
    answer = client.post("/login", data={"login": town.member_login, "password": "x"})
    assert answer.status_code == 403  # no login form shown: no token
    log_in(client, town.member_login)
    page = client.get("/me")
    assert page.status_code == 200
    assert "我的时间银行 · 李秀英" in page.text
    assert 'id="balance"' in page.text and "服务所得存入" in page.text
    assert "+1小时" in page.text  # the recorded hour she served
    assert "张桂兰" not in page.text  # whom she served is not named on her page


def test_a_member_takes_a_request_waiting_for_a_volunteer(client: TestClient,
                                                          town: Town) -> None:
    waiting = request(town.app, town.elder, 45).record.id
    csrf = log_in(client, town.member_login)
    page = client.get("/me/requests")
    assert page.status_code == 200 and f'data-order="{waiting}"' in page.text
    assert "张**" in page.text and "张桂兰" not in page.text
    for secret in town.secrets:
        assert secret not in page.text.replace("李秀英", "")  # her own name is in the header
    key = f"take-{waiting}"
    taken = client.post(f"/me/requests/{waiting}/take", data={"csrf": csrf, "key": key})
    assert taken.status_code == 303 and taken.headers["location"] == f"/me?taken={waiting}"
    record = _order(town, waiting)
    assert (record.state, record.volunteer_id) == ("accepted", town.volunteer)  # type: ignore[attr-defined]
    assert "您已接下订单" in client.get(taken.headers["location"]).text
    assert f'data-order="{waiting}"' not in client.get("/me/requests").text
    again = client.post(f"/me/requests/{waiting}/take", data={"csrf": csrf, "key": "other"})
    assert again.status_code == 409 and "未能办理" in again.text


def test_a_member_disputes_a_service_on_display(client: TestClient, town: Town) -> None:
    neighbour = enrol(town.app, "孙强", 1940, priority=True)
    shown = serve(town.app, town.clock, neighbour.id, town.volunteer, 30,
                  record=False).record.id
    csrf = log_in(client, town.member_login)
    public = client.get("/public")
    assert f'action="/public/{shown}/dispute"' in public.text
    forged = client.post(f"/public/{shown}/dispute", data={"reason": "没来 never came"})
    assert forged.status_code == 403
    assert _order(town, shown).state == "verified"  # type: ignore[attr-defined]
    done = client.post(f"/public/{shown}/dispute",
                       data={"csrf": csrf, "key": f"d-{shown}", "reason": "没来 never came"})
    assert done.status_code == 303
    assert _order(town, shown).state == "disputed"  # type: ignore[attr-defined]
    assert "已提出异议" in client.get(done.headers["location"]).text


def test_the_public_page_offers_no_dispute_to_a_reader_not_logged_in(
        client: TestClient) -> None:
    assert "/dispute" not in client.get("/public").text


def test_member_pages_need_a_member(client: TestClient, town: Town) -> None:
    assert client.get("/me").status_code == 401
    assert client.get("/me/requests").status_code == 401
    log_in(client, town.staff_login)
    assert client.get("/me").headers["location"] == "/desk"
    assert client.get("/me/requests").status_code == 403


def test_a_member_reaches_no_desk_page_by_changing_an_address(client: TestClient,
                                                              town: Town) -> None:
    log_in(client, town.member_login)
    for path in ("/desk", f"/people/{town.elder}", f"/orders/{town.on_display}",
                 f"/people/{town.volunteer}"):
        assert client.get(path).status_code == 403, path


def test_the_history_shows_the_latest_entries_however_long_it_is(
        client: TestClient, town: Town, monkeypatch: pytest.MonkeyPatch) -> None:
    from web import history

    for minutes in (30, 60, 90):  # three more services, the last the newest
        serve(town.app, town.clock, town.elder, town.volunteer, minutes)
    monkeypatch.setattr(history, "HISTORY_SIZE", 2)
    log_in(client, town.member_login)
    rows = client.get("/me").text.split('id="history"')[1]
    changes = re.findall(r'data-label="变动">([^<]+)<', rows)
    assert changes == ["+1小时30分钟", "+1小时"]  # newest first, the oldest not shown
