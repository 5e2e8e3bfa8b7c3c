"""The desk's lists: everyone at the staff member's service point, a page at a time,
and a person's ledger history on their page."""

from __future__ import annotations

import html
import re

from starlette.testclient import TestClient

from tests.web.conftest import Town
from tests.web.test_desk import log_in


def _listed(page: str) -> set[int]:
    return {int(i) for i in re.findall(r'data-person="(\d+)"', page)}


def test_staff_list_everyone_at_their_service_point(client: TestClient, town: Town) -> None:
    log_in(client, town.staff_login)
    page = client.get("/desk").text
    assert 'href="/desk?point=mine"' in page
    listed = _listed(client.get("/desk?point=mine").text)
    assert town.elder in listed  # enrolled at the point
    assert town.volunteer not in listed  # enrolled at none: found by name, not listed here
    english = client.get("/desk?point=mine&lang=en").text
    assert "List everyone at my service point" in english


def test_staff_of_another_point_cannot_list_this_one(client: TestClient, town: Town) -> None:
    point = town.app.query(lambda tx: tx.repo.people.get(town.elder)).service_point_id
    log_in(client, town.other_point_login)
    assert town.elder not in _listed(client.get("/desk?point=mine").text)
    refused = client.get(f"/desk?point={point}")
    assert refused.status_code == 403 and town.elder not in _listed(refused.text)


def test_a_persons_page_shows_their_history(client: TestClient, town: Town) -> None:
    log_in(client, town.staff_login)
    page = html.unescape(client.get(f"/people/{town.volunteer}").text)
    rows = page.split('id="history"')[1].split("</table>")[0]
    assert "服务所得存入" in rows and "+1小时" in rows, rows  # the hour she served, recorded
