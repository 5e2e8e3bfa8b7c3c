"""A daughter's consent that her hours pay for her mother's services, given and revoked on
her own page, and the desk taking her mother's request paid with those hours."""

from __future__ import annotations

import re
from typing import Any

from starlette.testclient import TestClient

from node.domain.policy import Relation
from tests.helpers import enrol, link
from tests.web.conftest import Town
from tests.web.test_desk import _csrf, _key, log_in


def _id_number(town: Town, person_id: int) -> str:
    return str(town.app.query(lambda tx: tx.repo.people.get(person_id)).id_number)


def test_a_daughter_consents_and_her_hours_pay_for_her_mothers_service(
        client: TestClient, town: Town) -> None:
    point = town.app.query(lambda tx: tx.repo.people.get(town.elder)).service_point_id
    mother = enrol(town.app, "李老太", 1938, priority=True, point=point or 0)
    link(town.app, mother.id, town.volunteer, Relation.CHILD)  # recorded at the desk
    daughter_number = _id_number(town, town.volunteer)

    helper = enrol(town.app, "周强", 1975)

    def request_for_mother() -> Any:
        csrf = log_in(client, town.staff_login)
        person = client.get(f"/people/{mother.id}")
        return client.post(f"/people/{mother.id}/orders", data={
            "csrf": csrf, "key": _key(person.text), "category": "cleaning",
            "minutes": "30", "payment": "relative", "payer": daughter_number})

    # without her consent the desk cannot charge the daughter's hours: it says why
    refused = request_for_mother()
    assert refused.status_code == 409
    assert "这位亲属还没有同意用自己的时间为此付款" in refused.text

    # the daughter agrees on her own page, naming her mother by ID-card number
    client.cookies.clear()
    csrf = log_in(client, town.member_login)
    page = client.get("/me/consents")
    assert "您还没有同意为任何人付款" in page.text
    own = client.post("/me/consents", data={"csrf": csrf, "key": "c-bad",
                                            "id_number": daughter_number})
    assert own.status_code == 409 and "无需同意" in own.text  # her own number
    bad = client.post("/me/consents", data={"csrf": csrf, "key": "c-bad2",
                                            "id_number": _id_number(town, mother.id),
                                            "max_minutes": "lots"})
    assert bad.status_code == 400 and "整数分钟" in bad.text
    granted = client.post("/me/consents", data={
        "csrf": csrf, "key": _key(page.text), "id_number": _id_number(town, mother.id),
        "max_minutes": "60", "total_minutes": "600"})
    assert granted.status_code == 303, granted.text
    shown = client.get(granted.headers["location"])
    assert "李老太" in shown.text and "每次最多 1小时" in shown.text
    assert "总共最多 10小时，已用 0分钟" in shown.text

    # now the desk takes the request, and a volunteer takes the order
    client.cookies.clear()
    made = request_for_mother()
    assert made.status_code == 303, made.text
    order_url = made.headers["location"]
    order_id = int(order_url.rsplit("/", 1)[1])
    page = client.get(order_url)
    accepted = client.post(f"{order_url}/accept", data={
        "csrf": _csrf(page.text), "key": _key(page.text, "accept"),
        "volunteer": _id_number(town, helper.id)})
    assert accepted.status_code == 303, accepted.text
    assert town.app.query(lambda tx: tx.repo.orders.get(order_id)).state == "accepted"


def test_a_consent_is_revoked_on_the_same_page(client: TestClient, town: Town) -> None:
    relative = enrol(town.app, "李小妹", 1990)
    csrf = log_in(client, town.member_login)
    granted = client.post("/me/consents", data={
        "csrf": csrf, "key": f"g-{relative.id}", "id_number": _id_number(town, relative.id)})
    consent_id = int(re.findall(r"id=(\d+)", granted.headers["location"])[0])
    forged = client.post(f"/me/consents/{consent_id}/revoke", data={"key": "r"})
    assert forged.status_code == 403
    revoked = client.post(f"/me/consents/{consent_id}/revoke",
                          data={"csrf": csrf, "key": f"r-{consent_id}"})
    assert revoked.status_code == 303
    row = client.get(revoked.headers["location"]).text.split(
        f'data-consent="{consent_id}"')[1].split("</tr>")[0]
    assert "已撤销" in row and "/revoke" not in row


def test_consents_are_a_members_own(client: TestClient, town: Town) -> None:
    assert client.get("/me/consents").status_code == 401
    log_in(client, town.staff_login)
    assert client.get("/me/consents").status_code == 403
