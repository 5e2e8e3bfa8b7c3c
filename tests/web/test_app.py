"""The console's pages over a real node's API: what the public sees, in both languages,
and what the pages refuse or withhold."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.web.conftest import HOSTILE_POINT, Town
from web.app import LANGUAGE_COOKIE, SECURITY_HEADERS, build
from web.nodes import Node


@pytest.fixture
def browser(node: Node) -> Iterator[TestClient]:
    with TestClient(build(node), raise_server_exceptions=False) as client:
        yield client


def _rows(html: str) -> set[int]:
    import re

    return {int(n) for n in re.findall(r'data-order="(\d+)"', html)}


def test_the_public_page_shows_orders_in_publicity_and_nothing_else(
        browser: TestClient, town: Town) -> None:
    page = browser.get("/public")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html; charset=utf-8")
    html = page.text
    assert '<html lang="zh-CN">' in html
    assert "社会监督：公示中的服务" in html
    assert _rows(html) == {town.on_display, town.disputed}
    assert "1小时30分钟" in html  # the order on display: 90 minutes
    assert "张*" in html and "A**** *****" in html  # masked on the node
    assert "有异议，处理中" in html  # the disputed one says so


def test_english_is_asked_for_then_remembered(browser: TestClient, town: Town) -> None:
    page = browser.get("/public?lang=en")
    assert '<html lang="en">' in page.text
    assert "Public supervision: services on display" in page.text
    assert "1 h 30 min" in page.text and "Disputed, being resolved" in page.text
    cookie = page.headers["set-cookie"]
    assert cookie.startswith(f"{LANGUAGE_COOKIE}=en") and "HttpOnly" in cookie
    assert "samesite=lax" in cookie.lower()
    again = browser.get("/public")  # the client sends the cookie back
    assert '<html lang="en">' in again.text
    assert '<html lang="zh-CN">' in browser.get("/public?lang=zh-CN").text


def test_no_page_shows_a_name_id_number_or_phone(browser: TestClient, town: Town) -> None:
    for path in ("/", "/public", "/public?lang=en", "/public?lang=zh-CN"):
        html = browser.get(path).text
        for secret in town.secrets:
            assert secret not in html, f"{path} shows {secret!r}"


def test_what_the_node_gives_is_escaped_not_run(browser: TestClient) -> None:
    html = browser.get("/public").text
    assert HOSTILE_POINT not in html and "<script>" not in html
    assert "&lt;script&gt;alert(&#39;点&#39;)&lt;/script&gt;东山&lt;b&gt;站&lt;/b&gt;" in html


@pytest.mark.parametrize("path", ["/", "/public", "/static/console.css", "/nowhere"])
def test_every_response_carries_the_safe_headers(browser: TestClient, path: str) -> None:
    response = browser.get(path)
    for name, value in SECURITY_HEADERS:
        assert response.headers[name.decode()] == value.decode(), (path, name)
    assert "unsafe-inline" not in response.headers["content-security-policy"]


@pytest.mark.parametrize("after", ["x", "-1", "1.5", "99999999999999999999", "1%00"])
def test_a_bad_page_address_is_a_clear_page_not_a_traceback(browser: TestClient,
                                                             after: str) -> None:
    page = browser.get(f"/public?after={after}")
    assert page.status_code == 400
    assert "请求有误" in page.text and "Traceback" not in page.text
    english = browser.get(f"/public?after={after}&lang=en")
    assert "The request was not right" in english.text


def test_an_unknown_page_says_so_in_the_readers_language(browser: TestClient) -> None:
    page = browser.get("/no/such/page", headers={"accept-language": "en-US,en;q=0.9"})
    assert page.status_code == 404
    assert "There is no such page." in page.text


def test_a_node_that_cannot_be_reached_is_said_plainly() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    node = Node(f"127.0.0.1:{port}", None)
    try:
        with TestClient(build(node), raise_server_exceptions=False) as client:
            page = client.get("/public")
    finally:
        node.close()
    assert page.status_code == 503
    assert "暂时连不上本区的时间银行节点" in page.text
    assert "UNAVAILABLE" not in page.text and "Traceback" not in page.text


def test_paging_follows_the_order_ids(node: Node, town: Town) -> None:
    first = node.public_orders(0, 1)
    assert [o.id for o in first] == [min(town.on_display, town.disputed)]
    rest = node.public_orders(first[0].id, 50)
    assert [o.id for o in rest] == [max(town.on_display, town.disputed)]


class _Failing(Node):
    """A node client whose every public call fails in a way nobody foresaw."""

    def public_orders(self, after_id: int = 0, limit: int = 50) -> list[Any]:
        raise RuntimeError("a fault injected by the test")


def test_an_unforeseen_failure_is_a_page_and_one_log_line(town: Town) -> None:
    node = _Failing(town.address, None)
    try:
        with TestClient(build(node), raise_server_exceptions=False) as client:
            page = client.get("/public")
    finally:
        node.close()
    assert page.status_code == 500
    assert "网页出现内部错误" in page.text and "Traceback" not in page.text
    assert "a fault injected" not in page.text


def test_a_refusal_is_said_by_its_reason_in_the_readers_language() -> None:
    from web.app import said
    from web.catalogue import Language, packaged
    from web.nodes import Detail

    catalogue = packaged()
    known = Detail("order 3 was already rated by its volunteer", "ALREADY_RATED")
    assert said(known, Language.ZH, catalogue) == "这张订单已经评价过了，评价只能给一次。"
    assert said(known, Language.EN, catalogue).startswith("This order was already rated")
    unknown = Detail("某事 / something", "SOMETHING_NEW")
    assert said(unknown, Language.EN, catalogue) == "某事 / something"  # the service's words
    assert said(Detail("plain"), Language.ZH, catalogue) == "plain"
