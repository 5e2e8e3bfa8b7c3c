"""The order page at the desk: the volunteer's rating of the person served (满意度互评),
entered by staff for a volunteer without a phone, once; both sides' ratings shown."""

from __future__ import annotations

import html
import re

from starlette.testclient import TestClient

from tests.web.conftest import Town
from tests.web.test_desk import _key, log_in


def _rating(town: Town, order_id: int) -> int:
    return int(town.app.query(lambda tx: tx.repo.orders.get(order_id)).rating_by_volunteer)


def test_staff_enter_the_volunteers_rating_once(client: TestClient, town: Town) -> None:
    csrf = log_in(client, town.staff_login)
    page = client.get(f"/orders/{town.before}").text
    assert 'data-action="rate"' in page and "志愿者给服务对象的评价" in page
    key = _key(page, "rate")
    done = client.post(f"/orders/{town.before}/rate", data={
        "csrf": csrf, "key": key, "rating": "4", "comment": "老人很热情"})
    assert done.status_code == 303 and _rating(town, town.before) == 4
    shown = html.unescape(client.get(f"/orders/{town.before}").text)
    assert "4 星（满分 5 星） · 老人很热情" in shown
    assert 'data-action="rate"' not in shown  # once
    english = client.get(f"/orders/{town.before}?lang=en").text
    assert "The volunteer rated the person served" in english and "4 of 5 stars" in english
    again = client.post(f"/orders/{town.before}/rate?lang=zh-CN", data={
        "csrf": csrf, "key": key + "-other", "rating": "2", "comment": ""})
    assert again.status_code == 409 and _rating(town, town.before) == 4
    assert "这张订单已经评价过了，评价只能给一次。" in again.text  # the reason, in words
    english = client.post(f"/orders/{town.before}/rate?lang=en", data={
        "csrf": csrf, "key": key + "-en", "rating": "2", "comment": ""})
    assert "This order was already rated; a rating is given once." in english.text


def test_a_rating_out_of_range_changes_nothing(client: TestClient, town: Town) -> None:
    csrf = log_in(client, town.staff_login)
    page = client.get(f"/orders/{town.on_display}").text
    assert "服务对象给志愿者的评价" in page  # given when the order was verified
    answer = client.post(f"/orders/{town.on_display}/rate", data={
        "csrf": csrf, "key": _key(page, "rate"), "rating": "9", "comment": ""})
    assert answer.status_code == 409 and _rating(town, town.on_display) == 0
    assert re.search("评分|rating", answer.text)


def test_a_disputed_service_can_still_be_rated(client: TestClient, town: Town) -> None:
    log_in(client, town.staff_login)
    page = client.get(f"/orders/{town.disputed}").text
    assert 'data-action="rate"' in page  # the service was given, whatever the dispute
