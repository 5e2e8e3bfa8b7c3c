"""Correcting a person's name and moving them to another service point through a real
server (UpdatePerson), on SQLite and PostgreSQL: the record's history keeps the old and
the new value; a bad name, a move the caller may not make and an unknown service point
are refused and change nothing; and the district's service points are listed for a desk
to choose from (ListServicePoints)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from node.domain.access import Role
from node.usecases import logins
from tests.node.api.support import TIMEOUT, UINT64_MAX, Api, assert_status, key
from timebank.v1 import node_pb2 as pb
from timebank.v1 import node_pb2_grpc

DENIED = grpc.StatusCode.PERMISSION_DENIED
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@dataclass
class Desks:
    api: Api
    point1: int
    point2: int
    staff1: int  # at point 1
    staff2: int  # at point 2
    at1: int  # 张桂南 (a typo for 张桂兰), at point 1
    at_none: int  # at no service point
    at2: int  # at point 2


@pytest.fixture
def desks(api: Api) -> Desks:
    s = api.stub
    points = [s.RegisterServicePoint(pb.RegisterServicePointRequest(
        idempotency_key=key(), code=code, name=name), timeout=TIMEOUT).service_point.id
        for code, name in (("DS-01", "东山服务点"), ("ML-02", "秣陵服务点"))]
    staff1, staff2 = (s.RegisterStaff(pb.RegisterStaffRequest(
        idempotency_key=key(), name=name, service_point_id=point), timeout=TIMEOUT).staff.id
        for name, point in (("陈静", points[0]), ("周敏", points[1])))
    return Desks(api, points[0], points[1], staff1, staff2,
                 api.enrol("张桂南", 1940, point=points[0]).id, api.enrol("赵敏", 1950).id,
                 api.enrol("孙强", 1945, point=points[1]).id)


def _as(api: Api, role: Role, bound: int = 0) -> node_pb2_grpc.NodeServiceStub:
    return api.stub_as(api.login(role, bound))


def _update(person_id: int, **fields: Any) -> pb.UpdatePersonRequest:
    return pb.UpdatePersonRequest(idempotency_key=key(), person_id=person_id, **fields)


def _refused(api: Api, stub: node_pb2_grpc.NodeServiceStub, request: Any,
             code: grpc.StatusCode, reason: str, says: tuple[str, ...] = ()) -> None:
    with api.unchanged(), pytest.raises(grpc.RpcError) as caught:
        stub.UpdatePerson(request, timeout=TIMEOUT)
    assert_status(caught.value, code, reason=reason, says=says)


def _person(api: Api, person_id: int) -> pb.Person:
    found: pb.Person = api.stub.GetPerson(pb.GetPersonRequest(person_id=person_id),
                                          timeout=TIMEOUT).person
    return found


# ---------------------------------------------------------------- a misspelt name


def test_staff_correct_a_misspelt_name_and_the_history_keeps_old_and_new(
        desks: Desks) -> None:
    api = desks.api
    desk = _as(api, Role.STAFF, desks.staff1)
    request = _update(desks.at1, name=" 张桂兰 ", reason="登记时录错 typo at enrolment")
    corrected = desk.UpdatePerson(request, timeout=TIMEOUT).person
    assert corrected.name == "张桂兰"
    change = corrected.changes[-1]
    assert (change.actor, change.kind) == (f"staff:{desks.staff1}", "update")
    assert change.detail == "name: 张桂南 → 张桂兰 (登记时录错 typo at enrolment)"
    assert _person(api, desks.at1) == corrected
    # the desk finds her by her right name now, and no longer by the typo
    found = desk.FindPeople(pb.FindPeopleRequest(query="桂兰"), timeout=TIMEOUT).people
    assert [p.id for p in found] == [desks.at1]
    assert not desk.FindPeople(pb.FindPeopleRequest(query="桂南"), timeout=TIMEOUT).people

    # a retry is the first answer, recorded once; the same key for another name is not
    assert desk.UpdatePerson(request, timeout=TIMEOUT).person == corrected
    other = pb.UpdatePersonRequest()
    other.CopyFrom(request)
    other.name = "张桂英"
    with api.unchanged(), pytest.raises(grpc.RpcError) as caught:
        desk.UpdatePerson(other, timeout=TIMEOUT)
    assert_status(caught.value, grpc.StatusCode.ALREADY_EXISTS)
    # the same name again (no reason needed) changes and records nothing
    again = desk.UpdatePerson(_update(desks.at1, name="张桂兰"), timeout=TIMEOUT).person
    assert list(again.changes) == list(corrected.changes)


def test_a_name_is_corrected_only_with_a_reason(desks: Desks) -> None:
    api = desks.api
    _refused(api, _as(api, Role.STAFF, desks.staff1), _update(desks.at1, name="张桂兰"),
             INVALID, "NAME_NEEDS_REASON", says=("更正姓名须说明原因", "reason"))
    assert _person(api, desks.at1).name == "张桂南"


@pytest.mark.parametrize(("name", "reason", "says"), [
    ("", "MISSING_NAME", "请填写姓名"),
    ("   ", "MISSING_NAME", "a name is required"),
    ("名" * 65, "NAME_TOO_LONG", "at most 64 characters, not 65"),
    ("王\x07五", "MALFORMED_NAME", "control characters"),
    ("王\n五", "MALFORMED_NAME", "姓名不能含控制字符"),
    ("王\t五", "MALFORMED_NAME", "line breaks"),
    ("王\u202e五", "MALFORMED_NAME", "invisible formatting"),  # a right-to-left override
    ("王\u200b五", "MALFORMED_NAME", "invisible formatting"),  # a zero-width space
], ids=["empty", "blank", "too-long", "bell", "newline", "tab", "bidi-override",
        "zero-width"])
def test_a_bad_name_is_refused_and_changes_nothing(desks: Desks, name: str, reason: str,
                                                   says: str) -> None:
    api = desks.api
    _refused(api, _as(api, Role.STAFF, desks.staff1),
             _update(desks.at1, name=name, phone="13911112222", reason="更正"), INVALID,
             reason, says=(says,))
    person = _person(api, desks.at1)
    assert (person.name, person.phone) == ("张桂南", "13800000000")


def test_enrolment_takes_names_by_the_same_rule(desks: Desks) -> None:
    api = desks.api
    with api.unchanged(), pytest.raises(grpc.RpcError) as caught:
        api.enrol("王\n五", 1950)
    assert_status(caught.value, INVALID, reason="MALFORMED_NAME")
    longest = api.enrol("阿依古丽·买买提" + "名" * 56, 1950)  # 64 characters, a middle dot
    assert len(longest.name) == 64
    fixed = api.stub.UpdatePerson(_update(longest.id, name="阿依古丽·买买提",
                                          reason="多录了字"), timeout=TIMEOUT).person
    assert fixed.name == "阿依古丽·买买提"


# ---------------------------------------------------------------- moving between points


def test_staff_take_a_person_of_no_service_point_into_their_own(desks: Desks) -> None:
    api = desks.api
    desk = _as(api, Role.STAFF, desks.staff1)
    moved = desk.UpdatePerson(_update(desks.at_none, service_point_id=desks.point1,
                                      reason="搬到东山"), timeout=TIMEOUT).person
    assert moved.service_point_id == desks.point1
    assert moved.changes[-1].detail == (f"service point: (none) → service point "
                                        f"{desks.point1} (搬到东山)")
    # staying where one is, is no move: nothing recorded
    same = desk.UpdatePerson(_update(desks.at_none, service_point_id=desks.point1),
                             timeout=TIMEOUT).person
    assert list(same.changes) == list(moved.changes)
    # and the other point's staff no longer reach them
    with pytest.raises(grpc.RpcError) as caught:
        _as(api, Role.STAFF, desks.staff2).GetPerson(
            pb.GetPersonRequest(person_id=desks.at_none), timeout=TIMEOUT)
    assert_status(caught.value, DENIED, reason="NOT_YOUR_SERVICE_POINT")


@pytest.mark.parametrize("to", ["other", "none"])
def test_staff_cannot_give_a_person_away(desks: Desks, to: str) -> None:
    api = desks.api
    point = desks.point2 if to == "other" else 0
    # a name correction in the same request is refused with the move: nothing changes
    _refused(api, _as(api, Role.STAFF, desks.staff1),
             _update(desks.at1, service_point_id=point, name="张桂兰", reason="搬家"), DENIED,
             "MOVE_NOT_ALLOWED", says=("服务点工作人员只能把人员转入本服务点",
                                       f"staff:{desks.staff1} works at service point "
                                       f"{desks.point1}"))
    person = _person(api, desks.at1)
    assert (person.service_point_id, person.name) == (desks.point1, "张桂南")


def test_staff_cannot_take_a_person_of_another_point(desks: Desks) -> None:
    api = desks.api
    _refused(api, _as(api, Role.STAFF, desks.staff2),
             _update(desks.at1, service_point_id=desks.point2, reason="搬家"), DENIED,
             "NOT_YOUR_SERVICE_POINT")
    assert _person(api, desks.at1).service_point_id == desks.point1


def test_the_operator_moves_anyone_anywhere(desks: Desks) -> None:
    api = desks.api
    operator = _as(api, Role.OPERATOR)
    moved = operator.UpdatePerson(_update(desks.at1, service_point_id=desks.point2,
                                          reason="搬到秣陵"), timeout=TIMEOUT).person
    assert moved.service_point_id == desks.point2
    assert moved.changes[-1].actor.startswith("operator:")
    assert moved.changes[-1].detail == (f"service point: service point {desks.point1} → "
                                        f"service point {desks.point2} (搬到秣陵)")
    # her new point's staff serve her now, her old point's do not
    theirs = _as(api, Role.STAFF, desks.staff2)
    assert theirs.GetPerson(pb.GetPersonRequest(person_id=desks.at1),
                            timeout=TIMEOUT).person.name == "张桂南"
    with pytest.raises(grpc.RpcError) as caught:
        _as(api, Role.STAFF, desks.staff1).GetPerson(
            pb.GetPersonRequest(person_id=desks.at1), timeout=TIMEOUT)
    assert_status(caught.value, DENIED, reason="NOT_YOUR_SERVICE_POINT")
    released = operator.UpdatePerson(_update(desks.at2, service_point_id=0),
                                     timeout=TIMEOUT).person
    assert released.service_point_id == 0
    assert released.changes[-1].detail == (f"service point: service point {desks.point2} → "
                                           "(none)")


def test_a_program_moves_no_one(desks: Desks) -> None:
    api = desks.api
    _, token = api.app.execute(logins.issue_token, "civil-affairs", ("enrol",), 30)
    program = api.stub_as(token)
    _refused(api, program, _update(desks.at_none, service_point_id=desks.point1), DENIED,
             "MOVE_NOT_ALLOWED", says=("只有区运维员可以在服务点之间转移人员",))
    # its scope still corrects details
    assert program.UpdatePerson(_update(desks.at_none, phone="13955556666"),
                                timeout=TIMEOUT).person.phone == "13955556666"


def test_an_unknown_service_point_is_refused(desks: Desks) -> None:
    api = desks.api
    _refused(api, _as(api, Role.OPERATOR), _update(desks.at1, service_point_id=987_654),
             grpc.StatusCode.NOT_FOUND, "UNKNOWN_SERVICE_POINT", says=("987654",))
    _refused(api, _as(api, Role.STAFF, desks.staff1),
             _update(desks.at1, service_point_id=987_654), DENIED, "MOVE_NOT_ALLOWED")
    _refused(api, _as(api, Role.OPERATOR), _update(desks.at1, service_point_id=UINT64_MAX),
             INVALID, "ID_OUT_OF_RANGE")
    assert _person(api, desks.at1).service_point_id == desks.point1


# ---------------------------------------------------------------- the service points listed


def test_any_caller_lists_the_service_points_in_pages(desks: Desks) -> None:
    api = desks.api
    member = _as(api, Role.MEMBER, desks.at1)
    listed = member.ListServicePoints(pb.ListServicePointsRequest(),
                                      timeout=TIMEOUT).service_points
    assert [(p.id, p.code, p.name) for p in listed] == [
        (desks.point1, "DS-01", "东山服务点"), (desks.point2, "ML-02", "秣陵服务点")]
    page = _as(api, Role.STAFF, desks.staff1).ListServicePoints(
        pb.ListServicePointsRequest(after_id=desks.point1, limit=1),
        timeout=TIMEOUT).service_points
    assert [p.id for p in page] == [desks.point2]
    for limit in (-1, 501):
        with pytest.raises(grpc.RpcError) as caught:
            member.ListServicePoints(pb.ListServicePointsRequest(limit=limit),
                                     timeout=TIMEOUT)
        assert_status(caught.value, INVALID, reason="LIMIT_OUT_OF_RANGE",
                      says=("500 个服务点",))
