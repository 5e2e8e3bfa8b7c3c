"""A member rates from her own page (满意度互评): as the volunteer, each person she
served, once; an order she had no part in is refused and nothing changes."""

from __future__ import annotations

import html
import re

from starlette.testclient import TestClient

from tests.web.conftest import Town
from tests.web.test_desk import log_in
from timebank.v1 import node_pb2 as pb
from web.member import to_rate


def _rating(town: Town, order_id: int) -> int:
    return int(town.app.query(lambda tx: tx.repo.orders.get(order_id)).rating_by_volunteer)


def _key(page: str, order_id: int) -> str:
    found = re.search(rf'action="/me/orders/{order_id}/rate">\s*<input type="hidden" '
                      r'name="csrf" value="[^"]+">\s*<input type="hidden" name="key" '
                      r'value="([^"]+)"', page)
    assert found is not None, page
    return found.group(1)


def test_a_volunteer_rates_the_people_she_served_once(client: TestClient,
                                                      town: Town) -> None:
    csrf = log_in(client, town.member_login)
    page = client.get("/me").text
    listed = page.split('id="to-rate"')[1].split("</ul>")[0]
    assert f'data-order="{town.recorded}"' in listed
    assert f'data-order="{town.disputed}"' in listed  # disputed, but the service was given
    assert f'data-order="{town.before}"' not in listed  # another volunteer's
    done = client.post(f"/me/orders/{town.recorded}/rate", data={
        "csrf": csrf, "key": _key(page, town.recorded), "rating": "5",
        "comment": "张奶奶很和气"})
    assert done.status_code == 303 and done.headers["location"] == f"/me?rated={town.recorded}"
    assert _rating(town, town.recorded) == 5
    after = html.unescape(client.get(f"/me?rated={town.recorded}").text)
    assert f"谢谢！订单 {town.recorded} 的评价已保存。" in after
    assert f'data-order="{town.recorded}"' not in after.split('id="to-rate"')[1].split(
        "</ul>")[0]
    assert "Please rate" in client.get("/me?lang=en").text


def test_an_order_she_had_no_part_in_is_refused(client: TestClient, town: Town) -> None:
    csrf = log_in(client, town.member_login)
    answer = client.post(f"/me/orders/{town.before}/rate", data={
        "csrf": csrf, "key": "k-not-mine", "rating": "1", "comment": ""})
    assert answer.status_code in (403, 409) and _rating(town, town.before) == 0
    state = town.app.query(lambda tx: tx.repo.orders.get(town.before)).state
    assert state == "checked_out"  # not confirmed on her word


def test_a_rating_without_the_forms_token_is_refused(client: TestClient,
                                                     town: Town) -> None:
    log_in(client, town.member_login)
    answer = client.post(f"/me/orders/{town.disputed}/rate", data={
        "key": "k", "rating": "3"})
    assert answer.status_code == 403 and _rating(town, town.disputed) == 0


def test_who_rates_what() -> None:
    me, other = 7, 8
    mine = pb.Order(id=1, volunteer_id=me, recipient_id=other, state=pb.ORDER_STATE_RECORDED)
    rated = pb.Order(id=2, volunteer_id=me, recipient_id=other,
                     state=pb.ORDER_STATE_RECORDED, rating_by_volunteer=4)
    served = pb.Order(id=3, volunteer_id=other, recipient_id=me,
                      state=pb.ORDER_STATE_CHECKED_OUT)
    early = pb.Order(id=4, volunteer_id=me, recipient_id=other,
                     state=pb.ORDER_STATE_CHECKED_IN)
    confirmed = pb.Order(id=5, volunteer_id=other, recipient_id=me,
                         state=pb.ORDER_STATE_VERIFIED)
    assert [(o.id, side) for o, side in to_rate([mine, rated, served, early, confirmed],
                                                 me)] == [(1, "volunteer"), (3, "recipient")]
