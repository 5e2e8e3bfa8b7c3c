"""Who may close a settlement period from a console, checked before the clearinghouse is
asked anything: the clearinghouse here is an address nobody answers, so a form that got
past the console's checks would fail as "unavailable" (503), not be refused (403)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from node.domain.access import Role
from tests.web.conftest import BASE, Town, _account
from tests.web.test_desk import log_in
from web.app import build
from web.bureau import Clearinghouse
from web.nodes import Node

NOBODY = "127.0.0.1:1"  # nothing listens there


def _console(node: Node, *, closes: bool) -> Iterator[TestClient]:
    house = Clearinghouse(NOBODY, None, closes_periods=closes)
    try:
        with TestClient(build(node, clearinghouse=house), base_url=BASE,
                        raise_server_exceptions=False, follow_redirects=False) as made:
            yield made
    finally:
        house.close()


@pytest.fixture
def bureau(node: Node) -> Iterator[TestClient]:
    yield from _console(node, closes=True)


@pytest.fixture
def observer(node: Node) -> Iterator[TestClient]:
    yield from _console(node, closes=False)


@pytest.fixture(scope="module")
def operator(town: Town) -> str:
    return _account(town.app, "bureau.op", Role.OPERATOR)


def _close(client: TestClient, csrf: str, period: str = "2026-11") -> int:
    return client.post("/bureau/settlements/close", data={
        "csrf": csrf, "period": period, "reason": "月末结算"}).status_code


def test_staff_may_not_close_a_period(bureau: TestClient, town: Town) -> None:
    csrf = log_in(bureau, town.staff_login)
    assert _close(bureau, csrf) == 403


def test_a_member_may_not_close_a_period(bureau: TestClient, town: Town) -> None:
    csrf = log_in(bureau, town.member_login)
    assert _close(bureau, csrf) == 403


def test_nobody_logged_in_may_not_close(bureau: TestClient) -> None:
    page = bureau.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token is not None
    assert _close(bureau, token.group(1)) == 401


def test_an_observers_console_closes_nothing_even_for_an_operator(
        observer: TestClient, operator: str) -> None:
    csrf = log_in(observer, operator)
    assert _close(observer, csrf) == 403


def test_an_operator_on_the_bureaus_console_reaches_the_clearinghouse(
        bureau: TestClient, operator: str) -> None:
    csrf = log_in(bureau, operator)
    assert _close(bureau, csrf, "2026-13") == 503  # the list page asks the clearinghouse
    assert _close(bureau, "not-the-token") == 403  # a form from elsewhere: refused first
