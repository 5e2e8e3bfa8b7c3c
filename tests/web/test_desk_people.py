"""The desk corrects a person's details and links people (family, proxies) over a real
node: what staff change is on the person's page and record; what the console or the node
refuses is said in the reader's language and changes nothing; a form sent twice is done
once; staff reach only the people they serve; names are shown, never run."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

import pytest
from starlette.testclient import TestClient

from node.domain.access import Role
from node.domain.policy import Relation
from node.usecases import logins, people
from node.usecases.views import Actor
from tests.helpers import enrol
from tests.web.conftest import PASSWORD, Town
from tests.web.test_desk import log_in
from timebank.v1 import node_pb2 as pb
from web import desk
from web.catalogue import Language, packaged


def _form_key(html: str, action: str) -> str:
    """The idempotency key of the form posting to ``.../action``."""
    found = re.search(rf'action="[^"]*/{action}"[^>]*>\s*<input type="hidden" name="csrf" '
                      r'value="[^"]+">\s*<input type="hidden" name="key" value="([^"]+)"',
                      html)
    assert found is not None, html
    return found.group(1)


def _point(town: Town, code: str = "SP-WEB") -> int:
    return int(town.app.query(lambda tx: tx.repo.staff.service_point_by_code(code)).id)


def _record(town: Town, person_id: int) -> Any:
    return town.app.query(lambda tx: tx.repo.people.get(person_id))


def _events(town: Town, person_id: int) -> list[Any]:
    return town.app.query(lambda tx: tx.repo.people.events(person_id, 1000))


def _relations(town: Town, person_id: int, other_id: int) -> set[Relation]:
    return town.app.query(lambda tx: tx.repo.people.relations(person_id, other_id))


def _links_listed(html: str) -> str:
    """The list of a person's links on their page (not the link form's choices)."""
    found = re.search(r'<ul class="links" id="links">(.*?)</ul>', html, re.S)
    assert found is not None, html
    return found.group(1)


def _edit_form(csrf: str, page: str, **fields: str) -> dict[str, str]:
    """The edit form as the page showed it, with ``fields`` typed over it."""
    was = re.search(r'name="phone_was" value="([^"]*)"', page)
    priority = re.search(r'name="priority_was" value="([01])"', page)
    name = re.search(r'name="name_was" value="([^"]*)"', page)
    point = re.search(r'name="point_was" value="(\d+)"', page)
    assert was and priority and name and point, page
    form = {"csrf": csrf, "key": _form_key(page, "edit"), "phone_was": was.group(1),
            "phone": was.group(1), "priority_was": priority.group(1), "reason": "",
            "name_was": unescape(name.group(1)), "name": unescape(name.group(1)),
            "point_was": point.group(1), "point": point.group(1)}
    if priority.group(1) == "1":
        form["priority"] = "1"
    return {**form, **fields}


def _t(key: str, language: Language) -> str:
    return packaged().text(key, language)


def test_staff_correct_a_phone_and_priority_and_the_page_shows_it(
        client: TestClient, town: Town) -> None:
    elder = enrol(town.app, "孙玉珍", 1939, priority=True, point=_point(town)).id
    csrf = log_in(client, town.staff_login)
    page = client.get(f"/people/{elder}").text
    assert 'id="edit-phone" name="phone" maxlength="20" inputmode="tel" ' \
           'autocomplete="off" value="13800000000"' in page
    assert re.search(r'id="edit-priority" name="priority" value="1" checked', page)
    form = _edit_form(csrf, page, phone="025-8888 1234", reason="女儿来电更正 new number")
    del form["priority"]  # no longer a priority elder
    done = client.post(f"/people/{elder}/edit", data=form)
    assert done.status_code == 303, done.text
    assert done.headers["location"] == f"/people/{elder}?done=edit_done"
    shown = client.get(done.headers["location"]).text
    assert "已保存修改" in shown and "025-8888 1234" in shown
    assert not re.search(r'id="edit-priority" name="priority" value="1" checked', shown)
    record = _record(town, elder)
    assert (record.phone, record.priority) == ("025-8888 1234", False)
    changes = [e for e in _events(town, elder) if e.kind == "update"]
    assert len(changes) == 1 and changes[0].actor == "staff:1"
    assert "女儿来电更正" in changes[0].detail

    again = client.post(f"/people/{elder}/edit", data=form)  # sent twice: done once
    assert again.headers["location"] == done.headers["location"]
    assert len([e for e in _events(town, elder) if e.kind == "update"]) == 1

    cleared = client.post(f"/people/{elder}/edit", data=_edit_form(csrf, shown, phone=""))
    assert cleared.status_code == 303, cleared.text
    assert _record(town, elder).phone == ""  # "" clears it, as UpdatePerson says


def test_a_form_shown_before_anothers_change_does_not_undo_it(client: TestClient,
                                                              town: Town) -> None:
    elder = enrol(town.app, "钱桂芳", 1941, priority=False, point=_point(town)).id
    csrf = log_in(client, town.staff_login)
    stale = client.get(f"/people/{elder}").text
    first = client.get(f"/people/{elder}").text
    assert client.post(f"/people/{elder}/edit", data=_edit_form(
        csrf, first, phone="13911112222")).status_code == 303
    only_priority = _edit_form(csrf, stale, priority="1")  # its phone field as shown
    assert client.post(f"/people/{elder}/edit", data=only_priority).status_code == 303
    record = _record(town, elder)
    assert (record.phone, record.priority) == ("13911112222", True)


@pytest.mark.parametrize(("fields", "key"), [
    ({"phone": "call my daughter"}, "edit_bad_phone"),
    ({"phone": "1" * 21}, "edit_bad_phone"),
    ({"phone": "138<script>"}, "edit_bad_phone"),
    ({"phone": "13912345678", "reason": "长" * 501}, "edit_bad_reason"),
    ({"phone": "13912345678", "reason": "bell\x07"}, "edit_bad_reason"),
    ({"name": ""}, "edit_bad_name"),
    ({"name": "名" * 65}, "edit_bad_name"),
    ({"name": "周秀\x07兰", "reason": "更正"}, "edit_bad_name"),
    ({"name": "周秀\u202e兰", "reason": "更正"}, "edit_bad_name"),  # a right-to-left override
    ({"name": "周秀英"}, "edit_name_needs_reason"),
    ({}, "edit_nothing_changed"),
])
def test_a_bad_edit_is_refused_in_both_languages_and_changes_nothing(
        client: TestClient, town: Town, fields: dict[str, str], key: str) -> None:
    elder = enrol(town.app, "周秀兰", 1936, priority=True, point=_point(town)).id
    csrf = log_in(client, town.staff_login)
    page = client.get(f"/people/{elder}").text
    before = (_record(town, elder), _events(town, elder))
    form = _edit_form(csrf, page, **fields)
    for language, path in ((Language.ZH, ""), (Language.EN, "?lang=en")):
        refused = client.post(f"/people/{elder}/edit{path}", data=form)
        assert refused.status_code == 400, refused.text
        assert 'role="alert"' in refused.text
        assert _t(key, language).replace("'", "&#39;") in refused.text
        assert "Traceback" not in refused.text
    assert (_record(town, elder), _events(town, elder)) == before


def _options(page: str) -> list[tuple[str, bool]]:
    """The service point form's choices: each option's value, and whether it is chosen."""
    found = re.search(r'<select id="edit-point" name="point">(.*?)</select>', page, re.S)
    assert found is not None, page
    return [(v, bool(chosen)) for v, chosen in
            re.findall(r'<option value="(\d+)"( selected)?>', found.group(1))]


def test_staff_correct_a_misspelt_name_and_the_page_shows_it(client: TestClient,
                                                             town: Town) -> None:
    elder = enrol(town.app, "张桂南", 1941, point=_point(town)).id
    csrf = log_in(client, town.staff_login)
    page = client.get(f"/people/{elder}").text
    assert 'id="edit-name" name="name" maxlength="64" autocomplete="off" value="张桂南"' in page
    edit_form = page.split(f'action="/people/{elder}/edit"')[1].split("</form>")[0]
    assert "id_number" not in edit_form  # an ID number is who she is: never edited
    assert "身份证号是本人的身份，不能修改" in page
    done = client.post(f"/people/{elder}/edit", data=_edit_form(
        csrf, page, name="张桂兰", reason="登记时录错"))
    assert done.status_code == 303, done.text
    shown = client.get(done.headers["location"]).text
    assert "<h1>张桂兰</h1>" in shown and "已保存修改" in shown
    assert _record(town, elder).name == "张桂兰"
    [change] = [e for e in _events(town, elder) if e.kind == "update"]
    assert (change.actor, change.detail) == ("staff:1", "name: 张桂南 → 张桂兰 (登记时录错)")


def test_staff_see_only_their_own_point_and_take_in_a_person_of_none(
        client: TestClient, town: Town) -> None:
    point = _point(town)
    own = enrol(town.app, "郭秀云", 1940, point=point).id
    unplaced = enrol(town.app, "郭建华", 1942).id
    csrf = log_in(client, town.staff_login)
    page = client.get(f"/people/{own}").text
    assert _options(page) == [(str(point), True)]  # their own point, and nothing else
    assert "&lt;script&gt;alert(&#39;点&#39;)&lt;/script&gt;东山&lt;b&gt;站&lt;/b&gt; (SP-WEB)" \
        in page and "<script>alert" not in page
    assert "转到其他服务点，请联系区运维员" in page
    theirs = client.get(f"/people/{unplaced}").text
    assert _options(theirs) == [("0", True), (str(point), False)]
    done = client.post(f"/people/{unplaced}/edit", data=_edit_form(
        csrf, theirs, point=str(point), reason="搬到东山"))
    assert done.status_code == 303, done.text
    assert _record(town, unplaced).service_point_id == point
    assert _options(client.get(f"/people/{unplaced}").text) == [(str(point), True)]


def test_a_move_staff_may_not_make_is_refused_in_both_languages(client: TestClient,
                                                               town: Town) -> None:
    elder = enrol(town.app, "郭桂芝", 1939, point=_point(town)).id
    csrf = log_in(client, town.staff_login)
    page = client.get(f"/people/{elder}").text
    before = (_record(town, elder), _events(town, elder))
    form = _edit_form(csrf, page, point=str(_point(town, "SP-FAR")), name="郭桂枝",
                      reason="搬家")  # not a choice the form offers them
    for language, path in ((Language.ZH, ""), (Language.EN, "?lang=en")):
        refused = client.post(f"/people/{elder}/edit{path}", data=form)
        assert refused.status_code == 403, refused.text
        assert _t("refusal_move_not_allowed", language).replace("'", "&#39;") \
            in refused.text
        assert 'value="郭桂枝"' in refused.text  # what was typed, shown again
    assert (_record(town, elder), _events(town, elder)) == before


def test_the_operator_moves_a_person_to_another_point(client: TestClient,
                                                      town: Town) -> None:
    far = _point(town, "SP-FAR")
    elder = enrol(town.app, "郭淑华", 1938, point=_point(town)).id
    town.app.execute(logins.add_account, "desk.operator", Role.OPERATOR)
    town.app.execute(logins.set_password, "desk.operator", PASSWORD)
    csrf = log_in(client, "desk.operator")
    page = client.get(f"/people/{elder}").text
    assert [v for v, _ in _options(page)] == ["0", str(_point(town)), str(far)]
    assert "转到其他服务点，请联系区运维员" not in page
    done = client.post(f"/people/{elder}/edit", data=_edit_form(
        csrf, page, point=str(far), reason="搬到麒麟"))
    assert done.status_code == 303, done.text
    assert _record(town, elder).service_point_id == far
    [change] = [e for e in _events(town, elder) if e.kind == "update"]
    assert change.detail == f"service point: service point {_point(town)} → service point " \
                            f"{far} (搬到麒麟)"


def test_a_group_is_never_made_a_priority_elder(client: TestClient, town: Town) -> None:
    group = enrol(town.app, "志愿服务队", group=True, point=_point(town)).id
    csrf = log_in(client, town.staff_login)
    page = client.get(f"/people/{group}").text
    assert 'name="priority"' not in page and 'action="/people/' + str(group) + '/links"' \
        not in page  # a group is never a priority elder, nor anyone's family
    refused = client.post(f"/people/{group}/edit", data={
        "csrf": csrf, "key": _form_key(page, "edit"), "phone_was": "", "phone": "",
        "priority_was": "0", "priority": "1"})
    assert refused.status_code == 400 and "团体志愿者不能登记为重点老人" in refused.text
    assert _record(town, group).priority is False


def test_staff_link_a_daughter_and_both_pages_show_it(client: TestClient,
                                                      town: Town) -> None:
    point = _point(town)
    mother = enrol(town.app, "吴淑贞", 1938, priority=True, point=point).id
    daughter = enrol(town.app, "吴晓梅", 1968, point=point).id
    csrf = log_in(client, town.staff_login)
    page = client.get(f"/people/{mother}").text
    assert "还没有登记任何关联" in page
    number = _record(town, daughter).id_number
    form = {"csrf": csrf, "key": _form_key(page, "links"),
            "id_number": f"{number[:6]} {number[6:14]} {number[14:].lower()}",
            "kind": "child"}
    done = client.post(f"/people/{mother}/links", data=form)
    assert done.status_code == 303, done.text
    assert done.headers["location"] == f"/people/{mother}?done=link_done"
    assert _relations(town, mother, daughter) == {Relation.CHILD}
    assert _relations(town, daughter, mother) == {Relation.PARENT}

    shown = client.get(done.headers["location"]).text
    assert "已登记关联" in shown
    # each page says how the other person stands to this one: the daughter is the
    # mother's child, and the mother the daughter's parent (never the other way round)
    assert re.search(rf'<li data-person="{daughter}"><a href="/people/{daughter}">吴晓梅</a>'
                     r' · 子女 ', shown), shown
    assert "父亲或母亲" not in _links_listed(shown)
    theirs = client.get(f"/people/{daughter}?lang=en").text
    assert re.search(rf'<li data-person="{mother}"><a href="/people/{mother}">吴淑贞</a>'
                     r' · father or mother ', theirs), theirs
    assert "son or daughter" not in _links_listed(theirs)
    theirs_zh = client.get(f"/people/{daughter}?lang=zh-CN").text
    assert re.search(rf'<a href="/people/{mother}">吴淑贞</a> · 父亲或母亲 ', theirs_zh)

    again = client.post(f"/people/{mother}/links", data=form)  # sent twice: done once
    assert again.headers["location"] == done.headers["location"]
    once = [e for e in _events(town, mother) if e.kind == "link"]
    assert len(once) == 1
    anew = client.post(f"/people/{mother}/links?lang=zh-CN",
                       data={**form, "key": "k-link-anew"})
    # the node refuses it (already linked), in its own words after the console's
    assert anew.status_code == 409 and "未能办理：" in anew.text
    assert "already linked" in anew.text
    assert [e for e in _events(town, mother) if e.kind == "link"] == once


def test_a_link_to_someone_staff_do_not_serve_shows_no_name(client: TestClient,
                                                            town: Town) -> None:
    elder = enrol(town.app, "郑阿婆", 1935, point=_point(town)).id
    son = enrol(town.app, "郑远山", 1960, point=_point(town, "SP-FAR")).id
    town.app.execute(people.link_people, elder, son, Relation.CHILD, 0,
                     actor=Actor(staff_id=2))
    log_in(client, town.staff_login)
    page = client.get(f"/people/{elder}").text
    assert f'<li data-person="{son}">其他服务点的人（编号 {son}） · 子女 ' in page
    assert "郑远山" not in page and f'href="/people/{son}"' not in page
    client.cookies.clear()
    log_in(client, town.other_point_login)  # the son's own service point, the other way
    theirs = client.get(f"/people/{son}").text
    assert f'<li data-person="{elder}">其他服务点的人（编号 {elder}） · 父亲或母亲 ' in theirs
    assert "郑阿婆" not in theirs


def test_a_link_is_listed_however_many_changes_the_record_has_had(
        client: TestClient, town: Town) -> None:
    point = _point(town)
    elder = enrol(town.app, "许桂兰", 1936, point=point).id
    helper = enrol(town.app, "许志明", 1975, point=point).id
    town.app.execute(people.link_people, elder, helper, Relation.PROXY, 0,
                     actor=Actor(staff_id=1))
    for i in range(25):  # more than the latest changes GetPerson returns
        town.app.execute(people.update_person, elder, 1, None, f"1390000{i:04d}", "",
                         actor=Actor(staff_id=1))
    log_in(client, town.staff_login)
    page = client.get(f"/people/{elder}").text
    assert re.search(rf'<li data-person="{helper}"><a href="/people/{helper}">许志明</a>'
                     r' · 委托代理人（代本人办理） ', page), page
    theirs = client.get(f"/people/{helper}?lang=en").text
    assert re.search(rf'<li data-person="{elder}"><a href="/people/{elder}">许桂兰</a>'
                     r' · represented by this person \(this person is their proxy and acts '
                     r'for them\) ', theirs), theirs


@pytest.mark.parametrize(("typed", "kind", "key", "status"), [
    ("", "child", "link_bad_id_number", 400),
    ("吴晓梅", "child", "link_bad_id_number", 400),  # a name is not a whole ID number
    ("13800000000", "child", "link_bad_id_number", 400),
    ("other", "cousin", "link_bad_kind", 400),
    ("self", "spouse", "link_self", 400),
    ("nobody", "spouse", "link_not_found", 409),
    ("group", "proxy", "link_group", 400),
])
def test_a_bad_link_is_refused_in_both_languages_and_links_nothing(
        client: TestClient, town: Town, typed: str, kind: str, key: str,
        status: int) -> None:
    point = _point(town)
    elder = enrol(town.app, "冯桂英", 1937, point=point).id
    other = enrol(town.app, "冯志强", 1966, point=point).id
    group = enrol(town.app, "冯家志愿队", group=True, point=point).id
    named = {"self": _record(town, elder).id_number, "other": _record(town, other).id_number,
             "nobody": "11010519491231002X", "group": _record(town, group).id_number}
    if typed == "group":  # a credit code is no ID-card number: link the group's way round
        named["group"] = _record(town, elder).id_number
        elder, other = group, elder
    csrf = log_in(client, town.staff_login)
    page = client.get(f"/people/{elder}").text
    form = {"csrf": csrf, "key": "k-bad-link", "id_number": named.get(typed, typed),
            "kind": kind}
    for language, path in ((Language.ZH, ""), (Language.EN, "?lang=en")):
        refused = client.post(f"/people/{elder}/links{path}", data=form)
        assert refused.status_code == status, refused.text
        assert _t(key, language).replace("'", "&#39;") in refused.text
    assert "Traceback" not in page
    assert _relations(town, elder, other) == set() == _relations(town, other, elder)
    assert not [e for e in _events(town, elder) if e.kind == "link"]


def test_another_points_staff_cannot_edit_or_link_a_person_they_do_not_serve(
        client: TestClient, town: Town) -> None:
    elder = enrol(town.app, "陈淑芬", 1940, priority=True, point=_point(town)).id
    theirs = enrol(town.app, "陈国华", 1965, point=_point(town, "SP-FAR")).id
    csrf = log_in(client, town.other_point_login)
    own = client.get(f"/people/{theirs}").text  # their own person's page, for a key
    before = (_record(town, elder), _events(town, elder))
    edited = client.post(f"/people/{elder}/edit", data={
        "csrf": csrf, "key": _form_key(own, "edit"), "phone_was": "13800000000",
        "phone": "13700000000", "priority_was": "1"})
    assert edited.status_code == 403, edited.text
    assert "陈淑芬" not in edited.text
    linked = client.post(f"/people/{elder}/links", data={
        "csrf": csrf, "key": _form_key(own, "links"),
        "id_number": _record(town, theirs).id_number, "kind": "child"})
    assert linked.status_code == 403, linked.text
    assert "陈淑芬" not in linked.text
    renamed = client.post(f"/people/{elder}/edit", data={
        "csrf": csrf, "key": _form_key(own, "edit"), "phone_was": "13800000000",
        "phone": "13800000000", "name_was": "陈淑芬", "name": "陈淑芳", "reason": "更正"})
    assert renamed.status_code == 403, renamed.text
    assert "陈淑芬" not in renamed.text and "陈淑芳" not in renamed.text
    assert (_record(town, elder), _events(town, elder)) == before
    assert _relations(town, elder, theirs) == set()


@pytest.mark.parametrize("forged", ["missing", "wrong", "elsewhere"])
def test_a_form_without_its_csrf_token_changes_nothing(client: TestClient, town: Town,
                                                       forged: str) -> None:
    point = _point(town)
    elder = enrol(town.app, "林美华", 1942, point=point).id
    other = enrol(town.app, "林建国", 1970, point=point).id
    csrf = log_in(client, town.staff_login)
    token = {"missing": {}, "wrong": {"csrf": "forged"}, "elsewhere": {"csrf": csrf}}[forged]
    headers = {"origin": "https://evil.test"} if forged == "elsewhere" else {}
    before = (_record(town, elder), _events(town, elder))
    for action, fields in (("edit", {"phone_was": "13800000000", "phone": "110"}),
                           ("links", {"id_number": _record(town, other).id_number,
                                      "kind": "child"})):
        answer = client.post(f"/people/{elder}/{action}", headers=headers,
                             data={"key": f"k-{forged}-{action}", **token, **fields})
        assert answer.status_code == 403 and "表单已经过期" in answer.text
    assert (_record(town, elder), _events(town, elder)) == before
    assert _relations(town, elder, other) == set()


def test_a_name_that_is_markup_is_shown_not_run(client: TestClient, town: Town) -> None:
    point = _point(town)
    hostile = enrol(town.app, "<script>alert(1)</script>", 1950, point=point).id
    elder = enrol(town.app, "何丽娟", 1939, point=point).id
    csrf = log_in(client, town.staff_login)
    page = client.get(f"/people/{elder}").text
    done = client.post(f"/people/{elder}/links", data={
        "csrf": csrf, "key": _form_key(page, "links"),
        "id_number": _record(town, hostile).id_number, "kind": "proxy"})
    assert done.status_code == 303, done.text
    shown = client.get(f"/people/{elder}").text
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert f'<a href="/people/{hostile}">{escaped}</a> · 委托代理人（代本人办理）' in shown
    their_page = client.get(f"/people/{hostile}").text
    assert f"<h1>{escaped}</h1>" in their_page
    assert f'<a href="/people/{elder}">何丽娟</a> · 委托人（本人是其委托代理人，代其办理）' \
        in their_page
    typed = client.post(f"/people/{elder}/edit", data=_edit_form(
        csrf, shown, phone='"><script>alert(2)</script>'))
    assert typed.status_code == 400
    assert 'value="&#34;&gt;&lt;script&gt;alert(2)&lt;/script&gt;"' in typed.text
    for html in (shown, their_page, typed.text):
        assert "<script>alert" not in html


def test_every_word_the_people_forms_choose_is_in_the_catalogue() -> None:
    chosen = ({label for _, label in desk.LINK_KINDS.values()}
              | set(desk.LINK_STANDINGS.values()) | {desk.LINK_REPRESENTED}
              | set(desk.PEOPLE_PROBLEMS) | set(desk.PEOPLE_DONE))
    assert set(desk.LINK_KINDS) == {r.value for r in Relation}
    # every kind a record's link may have has its words, from both sides of a proxy link
    kinds = [v for v in pb.LinkKind.values() if v != pb.LINK_KIND_UNSPECIFIED]
    assert set(desk.LINK_STANDINGS) == set(kinds)
    assert desk.standing_of(pb.PersonLink(kind=pb.LINK_KIND_PROXY)) == "link_kind_proxy"
    assert desk.standing_of(pb.PersonLink(kind=pb.LINK_KIND_PROXY, acts_for_other=True)) \
        == desk.LINK_REPRESENTED
    missing = chosen - set(packaged().messages)
    assert not missing, sorted(missing)
