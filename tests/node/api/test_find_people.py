"""FindPeople over the wire: a desk finding a person by name, ID card number or phone, or
everyone of a service point, on the shared ``world``; staff kept to the people they
serve, members refused, and bad requests refused changing nothing."""

from __future__ import annotations

import grpc
import pytest

from node.domain.access import Role
from tests.node.api.conftest import World
from tests.node.api.support import INT32_MAX, TIMEOUT, UINT64_MAX, Api, assert_status, key
from timebank.v1 import node_pb2 as pb
from timebank.v1 import node_pb2_grpc

INVALID = grpc.StatusCode.INVALID_ARGUMENT
DENIED = grpc.StatusCode.PERMISSION_DENIED
NO_SUCH_ID = 987_654_321


def _find(world: World, token: str = "", **fields: object) -> list[pb.Person]:
    """People found by the district's operator (or by whoever ``token`` is)."""
    stub = world.api.stub_as(token or world.api.login(Role.OPERATOR))
    answer: pb.FindPeopleResponse = stub.FindPeople(pb.FindPeopleRequest(**fields),
                                                    timeout=TIMEOUT)
    return list(answer.people)


def _ids(found: list[pb.Person]) -> list[int]:
    return [p.id for p in found]


def test_a_desk_finds_a_person_by_name_id_number_or_phone(world: World) -> None:
    with world.api.unchanged():
        by_name = _find(world, query="桂兰")
        by_number = _find(world, query=world.elder_id_number.lower())
        by_phone = _find(world, query="13800000001")
    assert _ids(by_name) == _ids(by_number) == _ids(by_phone) == [world.elder]
    [elder] = by_name
    full = world.api.stub.GetPerson(pb.GetPersonRequest(person_id=world.elder),
                                    timeout=TIMEOUT).person
    assert full.changes  # GetPerson shows who enrolled her; FindPeople does not
    assert list(elder.changes) == []
    assert full.links  # nor her links (her proxy)
    assert list(elder.links) == []
    full.ClearField("changes")
    full.ClearField("links")
    assert elder == full
    assert (elder.name, elder.phone, elder.service_point_id) == ("张桂兰", "13800000001",
                                                                 world.point)
    # the others all share one phone number; a part of a number finds nobody
    shared = _ids(_find(world, query="13800000000"))
    assert world.volunteer in shared and world.elder not in shared
    assert _find(world, query="1380000") == []
    assert _find(world, query=world.elder_id_number[:17]) == []


def test_everyone_of_a_service_point(world: World) -> None:
    assert _ids(_find(world, service_point_id=world.point)) == [world.elder]
    assert _find(world, query="李", service_point_id=world.point) == []
    world.api.refused("FindPeople", pb.FindPeopleRequest(service_point_id=NO_SUCH_ID),
                      grpc.StatusCode.NOT_FOUND, reason="UNKNOWN_SERVICE_POINT",
                      says=(str(NO_SUCH_ID),))


def test_wildcards_are_literal(world: World) -> None:
    for query in ("%", "_", "%%", "李_英", "\\"):
        assert _find(world, query=query) == [], query
    assert _ids(_find(world, query="李秀英")) == [world.volunteer]


def test_people_are_found_a_page_at_a_time(world: World) -> None:
    everyone = _ids(_find(world, query="13800000000", limit=100))
    assert len(everyone) >= 3 and everyone == sorted(everyone)
    first = _ids(_find(world, query="13800000000", limit=2))
    rest = _ids(_find(world, query="13800000000", after_id=first[-1], limit=100))
    assert first + rest == everyone
    # limit 0 is the default page of 20
    assert _ids(_find(world, query="13800000000")) == everyone[:20]


@pytest.mark.parametrize(("request_", "reason", "says"), [
    (pb.FindPeopleRequest(query="张" * 65), "QUERY_TOO_LONG", "64"),
    (pb.FindPeopleRequest(), "MISSING_QUERY", "service point"),
    (pb.FindPeopleRequest(query="  "), "MISSING_QUERY", "service point"),
    (pb.FindPeopleRequest(query="张\x00"), "MALFORMED_QUERY", "control"),
    (pb.FindPeopleRequest(query="张", limit=101), "LIMIT_OUT_OF_RANGE", "100"),
    (pb.FindPeopleRequest(query="张", limit=-1), "LIMIT_OUT_OF_RANGE", "100"),
    (pb.FindPeopleRequest(query="张", after_id=INT32_MAX + 1), "ID_OUT_OF_RANGE", "after_id"),
    (pb.FindPeopleRequest(service_point_id=UINT64_MAX), "ID_OUT_OF_RANGE",
     "service_point_id"),
], ids=["too-long", "empty", "blank", "nul", "limit-101", "limit-negative", "after-id",
        "service-point-id"])
def test_bad_requests_are_invalid(world: World, request_: pb.FindPeopleRequest, reason: str,
                                  says: str) -> None:
    world.api.refused("FindPeople", request_, INVALID, reason=reason, says=(says,))


def test_a_member_may_not_search(world: World) -> None:
    member = world.api.stub_as(world.api.login(Role.MEMBER, world.elder))
    with world.api.unchanged(), pytest.raises(grpc.RpcError) as caught:
        member.FindPeople(pb.FindPeopleRequest(query="张桂兰"), timeout=TIMEOUT)
    assert_status(caught.value, DENIED, reason="ROLE_NOT_ALLOWED", says=("FindPeople",))


def test_staff_find_only_the_people_they_serve(api: Api) -> None:
    s = api.stub
    p1 = s.RegisterServicePoint(pb.RegisterServicePointRequest(
        idempotency_key=key(), code="P1", name="东山服务点")).service_point.id
    p2 = s.RegisterServicePoint(pb.RegisterServicePointRequest(
        idempotency_key=key(), code="P2", name="秣陵服务点")).service_point.id
    staff1 = s.RegisterStaff(pb.RegisterStaffRequest(
        idempotency_key=key(), name="陈静", service_point_id=p1)).staff.id
    ours = api.enrol("张桂兰", 1940, point=p1)
    theirs = api.enrol("王桂兰", 1941, point=p2)
    nobodys = api.enrol("赵桂兰", 1942)
    desk = api.stub_as(api.login(Role.STAFF, staff1))

    def found(stub: node_pb2_grpc.NodeServiceStub, **fields: object) -> list[int]:
        answer = stub.FindPeople(pb.FindPeopleRequest(**fields), timeout=TIMEOUT)
        return [p.id for p in answer.people]

    assert found(desk, query="桂兰") == [ours.id, nobodys.id]
    assert found(desk, service_point_id=p1) == [ours.id]
    assert found(desk, query=f"{theirs.phone}") == [ours.id, nobodys.id]  # shared phone
    assert found(api.stub, query="桂兰") == [ours.id, theirs.id, nobodys.id]
    auditor = api.stub_as(api.login(Role.AUDITOR))
    assert found(auditor, query="桂兰", service_point_id=p2) == [theirs.id]
    for point in (p2, NO_SUCH_ID):
        with api.unchanged(), pytest.raises(grpc.RpcError) as caught:
            desk.FindPeople(pb.FindPeopleRequest(query="桂兰", service_point_id=point),
                            timeout=TIMEOUT)
        assert_status(caught.value, DENIED, reason="NOT_YOUR_SERVICE_POINT",
                      says=(f"staff:{staff1}", f"service point {point}"))
