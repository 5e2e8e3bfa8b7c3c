"""ListOpenRequests over the wire: the requests waiting for a volunteer (志愿接单) with
the recipient's name masked, on the shared ``world`` (one order in every state) and on
fresh nodes; staff kept to the people they serve; a member lists, then takes one."""

from __future__ import annotations

import grpc
import pytest

from node.domain.access import Role
from node.domain.orders import OrderState as S
from node.usecases import logins
from tests.node.api.conftest import World
from tests.node.api.support import (
    INT32_MAX,
    TIMEOUT,
    UINT64_MAX,
    Api,
    assert_status,
    key,
    person,
)
from timebank.v1 import node_pb2 as pb
from timebank.v1 import node_pb2_grpc

INVALID = grpc.StatusCode.INVALID_ARGUMENT
DENIED = grpc.StatusCode.PERMISSION_DENIED
NO_SUCH_ID = 987_654_321


def _list(stub: node_pb2_grpc.NodeServiceStub, **fields: object) -> list[pb.OpenRequest]:
    answer: pb.ListOpenRequestsResponse = stub.ListOpenRequests(
        pb.ListOpenRequestsRequest(**fields), timeout=TIMEOUT)
    return list(answer.requests)


def _ids(found: list[pb.OpenRequest]) -> list[int]:
    return [r.id for r in found]


def _points(api: Api) -> tuple[int, int, int]:
    """Two service points, and a staff member at the first."""
    s = api.stub
    p1 = s.RegisterServicePoint(pb.RegisterServicePointRequest(
        idempotency_key=key(), code="P1", name="东山服务点")).service_point.id
    p2 = s.RegisterServicePoint(pb.RegisterServicePointRequest(
        idempotency_key=key(), code="P2", name="秣陵服务点")).service_point.id
    staff1 = s.RegisterStaff(pb.RegisterStaffRequest(
        idempotency_key=key(), name="陈静", service_point_id=p1)).staff.id
    return p1, p2, staff1


def test_a_volunteer_sees_the_waiting_request_and_no_one_in_it(world: World) -> None:
    member = world.api.stub_as(world.api.login(Role.MEMBER, world.volunteer))
    with world.api.unchanged():
        answer: pb.ListOpenRequestsResponse = member.ListOpenRequests(
            pb.ListOpenRequestsRequest(), timeout=TIMEOUT)
    # accepted … recorded and cancelled are not waiting for anyone
    [shown] = answer.requests
    order = world.api.order(world.orders[S.REQUESTED])
    assert (shown.id, shown.category, shown.category_name, shown.planned_minutes,
            shown.service_point_id, shown.service_point, shown.recipient, shown.note) == (
        order.id, "cleaning", "助洁", 60, world.point, "东山街道为老服务站", "张**", "")
    assert shown.requested_at == order.requested_at
    # nothing that identifies anyone enrolled on the node, anywhere in the bytes sent
    raw = answer.SerializeToString()
    everyone = [world.elder, world.volunteer, world.volunteer2, world.parent, world.stranger,
                world.proxy, world.young, world.group]
    people = world.api.app.query(lambda tx: tx.repo.people.by_ids(everyone))
    assert len(people) == len(everyone)
    for p in people.values():
        for secret in (p.name, p.id_number, p.phone):
            if secret:
                assert secret.encode() not in raw, (p.id, secret)
    assert world.elder_id_number.encode() not in raw


@pytest.mark.parametrize("role", [Role.OPERATOR, Role.AUDITOR, Role.STAFF, Role.MEMBER])
def test_every_role_sees_the_requests_it_may(world: World, role: Role) -> None:
    bound = {Role.STAFF: world.staff, Role.MEMBER: world.stranger}.get(role, 0)
    stub = world.api.stub_as(world.api.login(role, bound))
    requested = world.orders[S.REQUESTED]
    assert _ids(_list(stub)) == [requested]
    assert _ids(_list(stub, service_point_id=world.point)) == [requested]
    assert _list(stub, after_id=requested) == []


def test_programs_that_read_or_serve_see_the_requests(world: World) -> None:
    for scopes in (("read",), ("orders",)):
        _, token = world.api.app.execute(logins.issue_token, "app-" + "-".join(scopes),
                                         scopes, 30)
        assert _ids(_list(world.api.stub_as(token))) == [world.orders[S.REQUESTED]]


@pytest.mark.parametrize(("request_", "reason", "says"), [
    (pb.ListOpenRequestsRequest(limit=101), "LIMIT_OUT_OF_RANGE", "1 to 100"),
    (pb.ListOpenRequestsRequest(limit=-1), "LIMIT_OUT_OF_RANGE", "每次最多列出 100 条"),
    (pb.ListOpenRequestsRequest(limit=INT32_MAX), "LIMIT_OUT_OF_RANGE", "100"),
    (pb.ListOpenRequestsRequest(after_id=INT32_MAX + 1), "ID_OUT_OF_RANGE", "after_id"),
    (pb.ListOpenRequestsRequest(service_point_id=UINT64_MAX), "ID_OUT_OF_RANGE",
     "service_point_id"),
], ids=["limit-101", "limit-negative", "limit-huge", "after-id", "service-point-id"])
def test_bad_requests_are_invalid(world: World, request_: pb.ListOpenRequestsRequest,
                                  reason: str, says: str) -> None:
    world.api.refused("ListOpenRequests", request_, INVALID, reason=reason, says=(says,))


def test_an_unknown_service_point_is_not_found(world: World) -> None:
    world.api.refused("ListOpenRequests", pb.ListOpenRequestsRequest(
        service_point_id=NO_SUCH_ID), grpc.StatusCode.NOT_FOUND,
        reason="UNKNOWN_SERVICE_POINT", says=(str(NO_SUCH_ID),))


def test_requests_are_paged_and_the_default_page_is_20(api: Api) -> None:
    elder = api.enrol("王建国", 1940, priority=True)
    ids = [api.request(elder.id, by=person(elder.id), minutes=30,
                       note=f"第{n}次").id for n in range(21)]
    assert _ids(_list(api.stub)) == ids[:20]  # limit 0: the default page
    first = _ids(_list(api.stub, limit=8))
    second = _ids(_list(api.stub, limit=8, after_id=first[-1]))
    third = _ids(_list(api.stub, limit=8, after_id=second[-1]))
    assert first + second + third == ids and len(third) == 5
    assert [r.note for r in _list(api.stub, limit=2)] == ["第0次", "第1次"]
    assert len(_list(api.stub, limit=100)) == 21


def test_staff_see_only_the_requests_of_the_people_they_serve(api: Api) -> None:
    p1, p2, staff1 = _points(api)
    ours = api.enrol("张桂兰", 1940, priority=True, point=p1)
    theirs = api.enrol("王桂兰", 1941, priority=True, point=p2)
    nobodys = api.enrol("赵桂兰", 1942, priority=True)
    asked = {p.id: api.request(p.id, by=person(p.id), category="meals", note="送到楼下").id
             for p in (ours, theirs, nobodys)}
    desk = api.stub_as(api.login(Role.STAFF, staff1))
    assert _ids(_list(desk)) == [asked[ours.id], asked[nobodys.id]]
    assert _ids(_list(desk, service_point_id=p1)) == [asked[ours.id]]
    everyone = list(asked.values())
    assert _ids(_list(api.stub)) == everyone
    assert _ids(_list(api.stub, service_point_id=p2)) == [asked[theirs.id]]
    [shown] = _list(api.stub, service_point_id=p2)
    assert (shown.service_point_id, shown.service_point, shown.recipient,
            shown.category_name, shown.note) == (p2, "秣陵服务点", "王**", "助餐", "送到楼下")
    for point in (p2, NO_SUCH_ID):
        with api.unchanged(), pytest.raises(grpc.RpcError) as caught:
            desk.ListOpenRequests(pb.ListOpenRequestsRequest(service_point_id=point),
                                  timeout=TIMEOUT)
        assert_status(caught.value, DENIED, reason="NOT_YOUR_SERVICE_POINT",
                      says=(f"staff:{staff1}", f"service point {point}"))


def test_a_member_lists_then_takes_a_request_as_themself(api: Api) -> None:
    p1, p2, _ = _points(api)
    elder = api.enrol("周淑珍", 1938, priority=True, point=p2)
    volunteer = api.enrol("吴小明", 1990, point=p1)
    first = api.request(elder.id, by=person(elder.id), note="陪同去社区医院").id
    second = api.request(elder.id, by=person(elder.id), minutes=30).id
    member = api.stub_as(api.login(Role.MEMBER, volunteer.id))
    # a request of another service point than the volunteer's own: members see them all
    [chosen, other] = _list(member, service_point_id=p2)
    assert (chosen.id, other.id, chosen.recipient, chosen.note) == (
        first, second, "周**", "陪同去社区医院")
    taken = member.AcceptOrder(pb.AcceptOrderRequest(
        idempotency_key=key(), order_id=chosen.id, volunteer_id=volunteer.id),
        timeout=TIMEOUT).order
    assert (taken.state, taken.volunteer_id) == (pb.ORDER_STATE_ACCEPTED, volunteer.id)
    assert _ids(_list(member)) == [second]
    assert _ids(_list(api.stub, service_point_id=p2)) == [second]
