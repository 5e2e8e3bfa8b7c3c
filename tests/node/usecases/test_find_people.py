"""Finding people at a service point's desk (FindPeople), on SQLite and PostgreSQL: by
part of a name, by a whole ID card or phone number, or everyone of a service point;
staff only among the people they serve, members not at all."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from node.domain.access import Principal, Role, Scope
from node.domain.identity import id_card_with_check_digit
from node.domain.orders import PersonKind
from node.usecases import people
from node.usecases.app import NodeApp
from node.usecases.views import Actor, PersonView
from runtime.errors import InvalidArgument, NotFound, PermissionDenied
from tests.helpers import enrol, id_card, snapshot, staff

OPERATOR = Principal(Role.OPERATOR, 1)
AUDITOR = Principal(Role.AUDITOR, 2)
READER = Principal(Role.PROGRAM, 3, program="reader", scopes=frozenset({Scope.READ}))


def _point_of(app: NodeApp, staff_id: int) -> int:
    found = app.query(lambda tx: tx.repo.staff.get(staff_id))
    assert found is not None
    return found.service_point_id


def _desk(app: NodeApp) -> Principal:
    """A staff member's principal, at a new service point of their own."""
    sid = staff(app)
    return Principal(Role.STAFF, 10 + sid, staff_id=sid, service_point_id=_point_of(app, sid))


def _find(app: NodeApp, query: str = "", point: int = 0, *, who: Principal = OPERATOR,
          after_id: int = 0, limit: int = 100) -> list[PersonView]:
    return app.query(people.find_people, who, query, point, after_id, limit)


def _ids(found: list[PersonView]) -> list[int]:
    return [p.id for p in found]


def _person(app: NodeApp, name: str, *, number: str = "", phone: str = "13800000000",
            point: int = 0) -> PersonView:
    return app.execute(people.enrol_person, PersonKind.INDIVIDUAL, name,
                       number or id_card(1950), phone, False, point)


def _ending_in_x(first6: str = "320106", born: str = "19390101") -> str:
    """An ID card number whose check character is X."""
    for serial in range(1000):
        number = id_card_with_check_digit(f"{first6}{born}{serial:03d}")
        if number.endswith("X"):
            return number
    raise AssertionError("no serial gives a check character X")


def test_part_of_a_name_finds_everyone_whose_name_holds_it(node_app: NodeApp) -> None:
    app = node_app
    zhang = enrol(app, "张桂兰", 1940)
    wang = enrol(app, "王桂兰", 1942)
    enrol(app, "李秀英", 1962)
    alice = enrol(app, "Alice Smith", 1990)
    assert _ids(_find(app, "桂兰")) == [zhang.id, wang.id]
    assert _ids(_find(app, " 张桂兰 ")) == [zhang.id]  # the query is stripped
    assert _ids(_find(app, "张")) == [zhang.id]
    assert _ids(_find(app, "ALICE")) == [alice.id]  # case folded (ASCII on SQLite)
    assert _ids(_find(app, "e S")) == [alice.id]
    assert _find(app, "赵") == []
    [found] = _find(app, "张桂兰")
    assert found == replace(app.query(people.get_person, zhang.id), changes=())


def test_a_whole_id_card_number_finds_its_person(node_app: NodeApp) -> None:
    app = node_app
    number = id_card(1945)
    elder = _person(app, "陈国强", number=number)
    other = _person(app, "陈国华")
    assert _ids(_find(app, number)) == [elder.id]
    assert _ids(_find(app, f"{number[:6]} {number[6:14]} {number[14:]}")) == [elder.id]
    assert _find(app, number[:17]) == []  # a part of a number is no number, nor a name
    assert _find(app, number[:6]) == []
    assert _find(app, id_card(1946)) == []  # a valid number nobody here holds
    assert _ids(_find(app, "陈国")) == [elder.id, other.id]


def test_an_id_card_number_ending_in_x_is_found_in_either_case(node_app: NodeApp) -> None:
    app = node_app
    number = _ending_in_x()
    elder = _person(app, "周淑珍", number=number.lower())  # enrolment normalises it
    assert app.query(lambda tx: tx.repo.people.get(elder.id)).id_number == number
    assert _ids(_find(app, number)) == [elder.id]
    assert _ids(_find(app, number.lower())) == [elder.id]
    assert _ids(_find(app, f" {number[:9]} {number[9:].lower()}")) == [elder.id]


def test_a_whole_phone_number_finds_its_people(node_app: NodeApp) -> None:
    app = node_app
    elder = _person(app, "吴桂英", phone="13912345678")
    spaced = _person(app, "郑大爷", phone="139 8765 4321")
    landline = _person(app, "冯奶奶", phone="+86-25-5201-1234")
    _person(app, "钱老师", phone="")
    assert _ids(_find(app, "13912345678")) == [elder.id]
    assert _ids(_find(app, " 13912345678 ")) == [elder.id]
    assert _ids(_find(app, "139 8765 4321")) == [spaced.id]  # as enrolment kept it
    assert _ids(_find(app, "+86-25-5201-1234")) == [landline.id]
    assert _find(app, "1391234") == []  # a part of a number finds nobody
    assert _find(app, "5201-1234") == []


def test_everyone_of_a_service_point_and_a_name_there(node_app: NodeApp) -> None:
    app = node_app
    desk = _desk(app)
    point, other = desk.service_point_id, _point_of(app, staff(app))
    here = [enrol(app, name, 1940, point=point).id for name in ("张桂兰", "刘桂英")]
    enrol(app, "王桂兰", 1941, point=other)
    enrol(app, "赵桂兰", 1942)  # at no service point
    assert _ids(_find(app, "", point)) == here
    assert _ids(_find(app, "桂兰", point)) == here[:1]
    assert _find(app, "王桂兰", point) == []
    with pytest.raises(NotFound) as e:
        _find(app, "", 987_654)
    assert e.value.reason == "UNKNOWN_SERVICE_POINT"


@pytest.mark.parametrize("name", ["100%志愿者", "王_明", "Back\\slash"])
def test_wildcards_in_a_query_are_taken_literally(node_app: NodeApp, name: str) -> None:
    app = node_app
    for plain in ("王小明", "王大明", "张三"):
        enrol(app, plain, 1950)
    assert _find(app, "%") == [] and _find(app, "_") == [] and _find(app, "\\") == []
    assert _find(app, "王_明") == [] and _find(app, "%明") == []
    odd = enrol(app, name, 1950)
    for char in ("%", "_", "\\"):
        assert _ids(_find(app, char)) == ([odd.id] if char in name else []), char
    assert _ids(_find(app, name)) == [odd.id]
    assert len(_find(app, "明")) == 2 + ("明" in name)


def test_people_are_found_a_page_at_a_time_in_id_order(node_app: NodeApp) -> None:
    app = node_app
    ids = [enrol(app, f"刘{n}", 1950).id for n in "一二三四五"]
    enrol(app, "孙强", 1950)
    first = _ids(_find(app, "刘", limit=2))
    second = _ids(_find(app, "刘", after_id=first[-1], limit=2))
    third = _ids(_find(app, "刘", after_id=second[-1], limit=2))
    assert first + second + third == ids and len(third) == 1
    assert _find(app, "刘", after_id=ids[-1]) == []
    assert len(_find(app, "刘", limit=people.MAX_FOUND)) == 5


@dataclass(frozen=True)
class Bad:
    query: str
    point: int
    limit: int
    reason: str
    says: str


@pytest.mark.parametrize("bad", [
    Bad("桂" * 65, 0, 20, "QUERY_TOO_LONG", "最多 64 个字符"),
    Bad("x" * 1000, 1, 20, "QUERY_TOO_LONG", "not 1000"),
    Bad("", 0, 20, "MISSING_QUERY", "a service point"),
    Bad("   ", 0, 20, "MISSING_QUERY", "请输入"),
    Bad("张\x00", 0, 20, "MALFORMED_QUERY", "control characters"),
    Bad("张", 0, 0, "LIMIT_OUT_OF_RANGE", "每次最多查找 100 人"),
    Bad("张", 0, -1, "LIMIT_OUT_OF_RANGE", "not -1"),
    Bad("张", 0, 101, "LIMIT_OUT_OF_RANGE", "1 to 100"),
    Bad("张", 1, 2**31 - 1, "LIMIT_OUT_OF_RANGE", "1 to 100"),
], ids=["65-chars", "1000-chars", "both-empty", "blank", "nul", "limit-0", "limit-neg",
        "limit-101", "limit-huge"])
def test_bad_queries_are_refused_and_change_nothing(node_app: NodeApp, bad: Bad) -> None:
    app = node_app
    desk = _desk(app)
    enrol(app, "张桂兰", 1940, point=desk.service_point_id)
    before = snapshot(app)
    with pytest.raises(InvalidArgument) as e:
        _find(app, bad.query, bad.point, limit=bad.limit)
    assert e.value.reason == bad.reason and bad.says in e.value.message
    assert "\u4e00" <= e.value.message[0] <= "\u9fff"  # Chinese first, English beside
    assert snapshot(app) == before


def test_the_longest_query_and_page_are_taken(node_app: NodeApp) -> None:
    app = node_app
    long_name = "阿" * people.MAX_QUERY_CHARS
    person = enrol(app, long_name, 1950)
    assert _ids(_find(app, f"  {long_name}  ", limit=people.MAX_FOUND)) == [person.id]
    assert _ids(_find(app, long_name, limit=1)) == [person.id]


def test_staff_find_the_people_of_their_service_point_and_those_at_none(
        node_app: NodeApp) -> None:
    app = node_app
    desk, other_desk = _desk(app), _desk(app)
    point, other = desk.service_point_id, other_desk.service_point_id
    ours = enrol(app, "张桂兰", 1940, point=point)
    theirs = enrol(app, "王桂兰", 1941, point=other)
    nobodys = enrol(app, "赵桂兰", 1942)
    everyone = [ours.id, theirs.id, nobodys.id]
    assert _ids(_find(app, "桂兰", who=desk)) == [ours.id, nobodys.id]
    assert _ids(_find(app, "桂兰", who=other_desk)) == [theirs.id, nobodys.id]
    assert _ids(_find(app, "", point, who=desk)) == [ours.id]
    assert _ids(_find(app, "桂兰", point, who=desk)) == [ours.id]
    # by a whole number too: a person of another point is not found, nor told of
    theirs_number = app.query(lambda tx: tx.repo.people.get(theirs.id)).id_number
    assert _find(app, theirs_number, who=desk) == []
    assert _ids(_find(app, theirs_number, who=other_desk)) == [theirs.id]
    before = snapshot(app)
    for point_asked in (other, 987_654):  # another point, or one that does not exist
        with pytest.raises(PermissionDenied) as e:
            _find(app, "桂兰", point_asked, who=desk)
        assert e.value.reason == "NOT_YOUR_SERVICE_POINT"
        assert f"staff:{desk.staff_id}" in e.value.message
        assert f"service point {point_asked}" in e.value.message
    assert snapshot(app) == before
    for who in (OPERATOR, AUDITOR, READER):
        assert _ids(_find(app, "桂兰", who=who)) == everyone
        assert _ids(_find(app, "", other, who=who)) == [theirs.id]


@pytest.mark.parametrize("who", [
    Principal(Role.MEMBER, 5, person_id=1),
    Principal(Role.PROGRAM, 6, program="kiosk", scopes=frozenset({Scope.ORDERS})),
    Principal(Role.PROGRAM, 7, program="enrol", scopes=frozenset({Scope.ENROL})),
], ids=["member", "program-orders", "program-enrol"])
def test_members_and_programs_that_do_not_read_may_not_search(node_app: NodeApp,
                                                              who: Principal) -> None:
    app = node_app
    enrol(app, "张桂兰", 1940)
    before = snapshot(app)
    with pytest.raises(PermissionDenied) as e:
        _find(app, "张桂兰", who=who)
    assert e.value.reason == "ROLE_NOT_ALLOWED" and "FindPeople" in e.value.message
    assert snapshot(app) == before


def test_people_found_carry_no_change_history(node_app: NodeApp) -> None:
    app = node_app
    elder = app.execute(people.enrol_person, PersonKind.INDIVIDUAL, "张桂兰", id_card(1940),
                        "13800000001", True, 0, actor=Actor(staff_id=staff(app)))
    assert app.query(people.get_person, elder.id).changes  # its enrolment
    [found] = _find(app, "13800000001")
    assert found.changes == ()
    assert (found.id, found.name, found.phone, found.priority) == (
        elder.id, "张桂兰", "13800000001", True)

