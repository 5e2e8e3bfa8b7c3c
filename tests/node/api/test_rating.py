"""The mutual rating (满意度互评) through a real gRPC server, on SQLite and PostgreSQL: the
recipient's side rates the volunteer when it verifies, the volunteer rates the person
served with RateOrder, once, after the service; both show on the order."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, timedelta

import grpc
import pytest

from node.domain.access import Role
from tests.node.api.support import TIMEOUT, Api, assert_status, key, person, staff
from timebank.v1 import node_pb2 as pb

DENIED = grpc.StatusCode.PERMISSION_DENIED
FAILED = grpc.StatusCode.FAILED_PRECONDITION
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@dataclass
class Desk:
    api: Api
    point: int
    other_point: int
    staff: int  # at point
    other_staff: int  # at other_point
    elder: int  # at point, priority
    volunteer: int
    stranger: int


def _desk(api: Api) -> Desk:
    s = api.stub
    point = s.RegisterServicePoint(pb.RegisterServicePointRequest(
        idempotency_key=key(), code="jn-dongshan", name="东山街道为老服务站"),
        timeout=TIMEOUT).service_point.id
    other = s.RegisterServicePoint(pb.RegisterServicePointRequest(
        idempotency_key=key(), code="jn-moling", name="秣陵服务点"),
        timeout=TIMEOUT).service_point.id
    desk = s.RegisterStaff(pb.RegisterStaffRequest(
        idempotency_key=key(), name="王主任", service_point_id=point), timeout=TIMEOUT).staff.id
    far = s.RegisterStaff(pb.RegisterStaffRequest(
        idempotency_key=key(), name="周敏", service_point_id=other), timeout=TIMEOUT).staff.id
    elder = api.enrol("张桂兰", 1940, priority=True, point=point).id
    volunteer = api.enrol("李秀英", 1962).id
    stranger = api.enrol("孙强", 1970).id
    return Desk(api, point, other, desk, far, elder, volunteer, stranger)


def _served(d: Desk, *, check_out: bool = True) -> int:
    """An order of the elder's (the city fund pays), the volunteer checked in and, with
    ``check_out``, out an hour later."""
    order_id = d.api.request(d.elder, by=staff(d.staff)).id
    d.api.accept(order_id, d.volunteer)
    d.api.check_in(order_id)
    if check_out:
        d.api.check_out(order_id)
    return order_id


def _rate(order_id: int, rating: int, comment: str = "", idempotency_key: str = ""
          ) -> pb.RateOrderRequest:
    return pb.RateOrderRequest(idempotency_key=idempotency_key or key(), order_id=order_id,
                               rating=rating, comment=comment)


def _events(api: Api, order_id: int) -> list[tuple[str, str, str, str]]:
    return [(e.from_state, e.to_state, e.actor, e.detail)
            for e in api.app.query(lambda tx: tx.repo.orders.events(order_id))]


def _refused_as(api: Api, role: Role, bound: int, request: pb.RateOrderRequest,
                code: grpc.StatusCode, reason: str, says: tuple[str, ...] = ()) -> None:
    stub = api.stub_as(api.login(role, bound))
    with api.unchanged(), pytest.raises(grpc.RpcError) as caught:
        stub.RateOrder(request, timeout=TIMEOUT)
    assert_status(caught.value, code, reason=reason, says=says)


def test_the_volunteer_rates_the_person_served_once_after_check_out(api: Api) -> None:
    d = _desk(api)
    order_id = _served(d, check_out=False)
    volunteer = Role.MEMBER, d.volunteer

    # before check-out the service is not done: refused, nothing changes
    _refused_as(api, *volunteer, _rate(order_id, 4), FAILED, "ORDER_STATE",
                says=("服务完成后才能评价", f"order {order_id} is checked in"))
    api.check_out(order_id)
    served = api.order(order_id)
    ledger = api.ledger()

    # nobody but the volunteer (or staff for them) rates: not the recipient, not a
    # stranger, not staff of another service point
    _refused_as(api, Role.MEMBER, d.elder, _rate(order_id, 1), DENIED, "NOT_THE_VOLUNTEER",
                says=(f"only the volunteer, person {d.volunteer}",))
    _refused_as(api, Role.MEMBER, d.stranger, _rate(order_id, 1), DENIED, "NOT_AUTHORISED")
    _refused_as(api, Role.STAFF, d.other_staff, _rate(order_id, 1), DENIED,
                "NOT_YOUR_SERVICE_POINT")
    # a rating is 1..5 stars, its comment bounded like the verifier's
    for stars in (0, 6, -1, 2**31 - 1):
        _refused_as(api, *volunteer, _rate(order_id, stars), INVALID, "BAD_RATING",
                    says=("评分须为 1 到 5 星",))
    _refused_as(api, *volunteer, _rate(order_id, 4, "很" * 501), INVALID, "INVALID_ARGUMENT",
                says=("comment is too long",))

    api.clock.advance(timedelta(minutes=5))
    stub = api.stub_as(api.login(*volunteer))
    rated = stub.RateOrder(_rate(order_id, 4, "  老人很热情，家里有点远  "), timeout=TIMEOUT).order
    assert (rated.rating_by_volunteer, rated.comment_by_volunteer) == (4, "老人很热情，家里有点远")
    assert rated.rated_by_volunteer_at.ToDatetime(tzinfo=UTC) == api.clock.now()
    assert rated.state == pb.ORDER_STATE_CHECKED_OUT and rated.rating == 0
    # nothing else of the order changed, and no hours moved
    unrated = pb.Order()
    unrated.CopyFrom(rated)
    unrated.ClearField("rating_by_volunteer")
    unrated.ClearField("comment_by_volunteer")
    unrated.ClearField("rated_by_volunteer_at")
    assert unrated == served
    assert api.ledger() == ledger
    # the order's history records the rating, as every change of the order
    assert _events(api, order_id)[-1] == (
        "checked_out", "checked_out", f"person:{d.volunteer}",
        "志愿者评价 4 星 (the volunteer rated the person served 4)")

    # the same rating again (a new key): answered, nothing changes
    with api.unchanged(ignore=("idempotency",)):
        again = stub.RateOrder(_rate(order_id, 4, "老人很热情，家里有点远"), timeout=TIMEOUT).order
    assert again == rated
    # a different one: refused, the first stands
    _refused_as(api, *volunteer, _rate(order_id, 5, "老人很热情，家里有点远"), FAILED,
                "ALREADY_RATED", says=("志愿者已评价过此订单", f"order {order_id} was "
                                       "already rated 4"))
    _refused_as(api, *volunteer, _rate(order_id, 4, "改一下评语"), FAILED, "ALREADY_RATED")

    # the recipient's side rates the volunteer when it verifies: the order carries both
    api.verify(order_id, person(d.elder), rating=5, comment="服务很好，谢谢！")
    shown = api.order(order_id)
    assert shown.state == pb.ORDER_STATE_VERIFIED
    assert (shown.rating, shown.comment) == (5, "服务很好，谢谢！")
    assert (shown.rating_by_volunteer, shown.comment_by_volunteer) == (4, "老人很热情，家里有点远")
    assert shown.rated_by_volunteer_at == rated.rated_by_volunteer_at
    for who in (d.elder, d.volunteer):
        [listed] = api.stub.ListOrders(pb.ListOrdersRequest(person_id=who),
                                       timeout=TIMEOUT).orders
        assert listed == shown
    # the volunteer's own view of it, as a member
    assert stub.GetOrder(pb.GetOrderRequest(order_id=order_id),
                         timeout=TIMEOUT).order == shown


def test_a_retry_under_the_same_key_is_the_first_answer(api: Api) -> None:
    d = _desk(api)
    order_id = _served(d)
    stub = api.stub_as(api.login(Role.MEMBER, d.volunteer))
    first_key = key()
    first = stub.RateOrder(_rate(order_id, 3, "准时", first_key), timeout=TIMEOUT).order
    api.clock.advance(timedelta(hours=1))
    with api.unchanged():
        retried = stub.RateOrder(_rate(order_id, 3, "准时", first_key), timeout=TIMEOUT).order
    assert retried == first
    with api.unchanged(), pytest.raises(grpc.RpcError) as caught:
        stub.RateOrder(_rate(order_id, 2, "准时", first_key), timeout=TIMEOUT)
    assert_status(caught.value, grpc.StatusCode.ALREADY_EXISTS)


def test_the_volunteer_rates_a_verified_disputed_or_recorded_order_not_a_cancelled_one(
        api: Api) -> None:
    """``api.stub`` sends a volunteer's step with the volunteer's session (renewed when
    the week of a publicity period outlives it)."""
    d = _desk(api)
    stub = api.stub

    verified = _served(d)
    api.verify(verified, person(d.elder), rating=2)
    assert stub.RateOrder(_rate(verified, 5), timeout=TIMEOUT).order.rating_by_volunteer == 5

    disputed = _served(d)
    api.verify(disputed, person(d.elder))
    api.stub.DisputeOrder(pb.DisputeOrderRequest(
        idempotency_key=key(), order_id=disputed, raised_by=person(d.stranger),
        reason="志愿者没有来"), timeout=TIMEOUT)
    order = stub.RateOrder(_rate(disputed, 1, "没有见到老人"), timeout=TIMEOUT).order
    assert (order.state, order.rating_by_volunteer) == (pb.ORDER_STATE_DISPUTED, 1)

    recorded = _served(d)
    api.verify(recorded, person(d.elder))
    api.clock.advance(timedelta(days=7))
    api.record(recorded)
    balance = api.balance(d.volunteer)
    order = stub.RateOrder(_rate(recorded, 3), timeout=TIMEOUT).order
    assert (order.state, order.rating_by_volunteer) == (pb.ORDER_STATE_RECORDED, 3)
    assert api.balance(d.volunteer) == balance  # a rating moves no hours

    # voided after the dispute: the service counts as never done
    api.stub.ResolveDispute(pb.ResolveDisputeRequest(
        idempotency_key=key(), order_id=disputed, staff_id=d.staff,
        outcome=pb.DISPUTE_OUTCOME_VOID_SERVICE, resolution="回访核实，服务无效"),
        timeout=TIMEOUT)
    # its rating stands: the same again is answered, whatever the order's state now
    again = stub.RateOrder(_rate(disputed, 1, "没有见到老人"), timeout=TIMEOUT).order
    assert (again.state, again.rating_by_volunteer) == (pb.ORDER_STATE_CANCELLED, 1)

    cancelled = api.request(d.elder, by=staff(d.staff)).id
    api.accept(cancelled, d.volunteer)
    api.stub.CancelOrder(pb.CancelOrderRequest(idempotency_key=key(), order_id=cancelled,
                                               cancelled_by=staff(d.staff), reason="住院"),
                         timeout=TIMEOUT)
    _refused_as(api, Role.MEMBER, d.volunteer, _rate(cancelled, 4), FAILED, "ORDER_STATE",
                says=(f"order {cancelled} is cancelled",))
    requested = api.request(d.elder, by=staff(d.staff)).id
    _refused_as(api, Role.STAFF, d.staff, _rate(requested, 4), FAILED, "ORDER_STATE",
                says=(f"order {requested} is requested",))


def test_staff_rate_for_a_volunteer_and_both_are_recorded(api: Api) -> None:
    """As with the volunteer's other steps, staff of the recipient's service point may
    record the rating for a volunteer without a phone."""
    d = _desk(api)
    order_id = _served(d)
    desk = api.stub_as(api.login(Role.STAFF, d.staff))
    order = desk.RateOrder(_rate(order_id, 5, "电话里说的"), timeout=TIMEOUT).order
    assert order.rating_by_volunteer == 5
    assert _events(api, order_id)[-1][2] == f"staff:{d.staff} for person:{d.volunteer}"
    # the volunteer sending the same rating later changes nothing
    volunteer = api.stub_as(api.login(Role.MEMBER, d.volunteer))
    with api.unchanged(ignore=("idempotency",)):
        volunteer.RateOrder(_rate(order_id, 5, "电话里说的"), timeout=TIMEOUT)

