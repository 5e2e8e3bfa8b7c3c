"""The node's API end to end through a real gRPC server, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from node.api.servicer import SERVICE_NAME, NodeServicer
from tests.helpers import id_card
from tests.node.api.support import TIMEOUT, Api, assert_status, key, person, staff
from timebank.v1 import node_pb2 as pb
from timebank.v1 import node_pb2_grpc


def test_the_service_loop_end_to_end(api: Api) -> None:
    s = api.stub
    point = s.RegisterServicePoint(pb.RegisterServicePointRequest(
        idempotency_key=key(), code="jn-dongshan", name="东山街道为老服务站",
        street="东山街道")).service_point
    assert (point.code, point.name, point.street) == ("jn-dongshan", "东山街道为老服务站",
                                                      "东山街道")
    manager = s.RegisterStaff(pb.RegisterStaffRequest(
        idempotency_key=key(), name="王主任", service_point_id=point.id)).staff
    assert manager.name == "王主任" and manager.service_point_id == point.id

    elder = api.enrol("张桂兰", 1940, priority=True, point=point.id)
    volunteer = api.enrol("李秀英", 1962, point=point.id)
    mother = api.enrol("李老太", 1938)
    neighbour = api.enrol("赵伟", 1985)
    assert elder.kind == pb.PERSON_KIND_INDIVIDUAL and elder.priority
    assert elder.age == 86 and elder.service_point_id == point.id
    assert len(elder.person_ref) == 64 and elder.person_ref != volunteer.person_ref
    assert elder.enrolled_at.ToDatetime(tzinfo=UTC) == api.clock.now()
    fetched = s.GetPerson(pb.GetPersonRequest(person_id=elder.id)).person
    assert fetched == elder and fetched.name == "张桂兰"

    link = api.link(volunteer.id, mother.id, pb.LINK_KIND_PARENT, manager.id)
    assert (link.person_id, link.other_id, link.kind) == (volunteer.id, mother.id,
                                                          pb.LINK_KIND_PARENT)

    # A volunteer serves a priority elder; the city fund pays.
    order = api.request(elder.id, by=staff(manager.id), minutes=90, note="每周二上午")
    assert order.state == pb.ORDER_STATE_REQUESTED and order.category_name == "助洁"
    assert order.note == "每周二上午" and order.volunteer_id == 0
    order = api.accept(order.id, volunteer.id)
    assert order.state == pb.ORDER_STATE_ACCEPTED and order.held_minutes == 90
    order = api.check_in(order.id)
    assert order.checked_in_at.ToDatetime(tzinfo=UTC) == api.clock.now()
    order = api.check_out(order.id, after_minutes=80)
    assert order.state == pb.ORDER_STATE_CHECKED_OUT and order.measured_minutes == 80
    order = api.verify(order.id, person(elder.id), rating=5, comment="服务很好，谢谢！")
    assert order.state == pb.ORDER_STATE_VERIFIED and order.comment == "服务很好，谢谢！"
    assert order.public_until.ToDatetime(tzinfo=UTC) == api.clock.now() + timedelta(days=7)
    api.clock.advance(timedelta(days=7))
    order = api.record(order.id)
    assert order.state == pb.ORDER_STATE_RECORDED
    assert (order.recorded_minutes, order.banked_minutes, order.charged_minutes) == (75, 75, 75)
    assert order.notices and "75 min" in order.notices[0]

    balance = api.balance(volunteer.id)
    assert (balance.total_minutes, balance.held_minutes, balance.available_minutes) == (75, 0, 75)
    assert [(b.origin, b.total_minutes) for b in balance.by_origin] == [(pb.ORIGIN_INDIVIDUAL,
                                                                         75)]
    assert balance.cap_minutes == 1500 * 60 and balance.person_ref == volunteer.person_ref

    # The volunteer's mother is served, paid with the volunteer's hours.
    second = api.request(mother.id, by=person(volunteer.id), minutes=60,
                         source=pb.PAYMENT_SOURCE_RELATIVE, payer=volunteer.id,
                         category="助餐")
    assert second.category == "meals" and second.payer_id == volunteer.id
    api.accept(second.id, neighbour.id)
    balance = api.balance(volunteer.id)
    assert (balance.total_minutes, balance.held_minutes, balance.available_minutes) == (75, 60, 15)
    api.check_in(second.id)
    api.check_out(second.id, after_minutes=60)
    api.verify(second.id, person(volunteer.id), rating=4)  # family may verify
    api.clock.advance(timedelta(days=7))
    due = s.RecordDueOrders(pb.RecordDueOrdersRequest(idempotency_key=key()))
    assert [o.id for o in due.recorded] == [second.id]
    assert due.recorded[0].charged_minutes == 60
    assert api.balance(volunteer.id).total_minutes == 15
    assert api.balance(neighbour.id).available_minutes == 60

    history = s.GetHistory(pb.GetHistoryRequest(person_id=volunteer.id))
    assert history.person_id == volunteer.id
    assert [e.delta_minutes for e in history.entries] == [75, -60]
    assert [e.transaction.kind for e in history.entries] == ["service", "service"]
    first, then = (e.transaction for e in history.entries)
    assert (first.seq, then.seq) == (1, 2) and then.prev_hash == first.hash
    assert first.order_id == order.id and sum(p.minutes for p in first.postings) == 0
    paged = s.GetHistory(pb.GetHistoryRequest(person_id=volunteer.id, after_seq=1, limit=1))
    assert [e.transaction.seq for e in paged.entries] == [2]
    latest = s.GetHistory(pb.GetHistoryRequest(person_id=volunteer.id, newest_first=True))
    assert list(latest.entries) == list(reversed(history.entries))
    assert [e.delta_minutes for e in latest.entries] == [-60, 75]
    back = s.GetHistory(pb.GetHistoryRequest(person_id=volunteer.id, newest_first=True,
                                             limit=1))
    assert [e.transaction.seq for e in back.entries] == [2]
    back = s.GetHistory(pb.GetHistoryRequest(person_id=volunteer.id, newest_first=True,
                                             limit=1, before_seq=2))
    assert [(e.transaction.seq, e.delta_minutes) for e in back.entries] == [(1, 75)]
    assert not s.GetHistory(pb.GetHistoryRequest(person_id=volunteer.id, newest_first=True,
                                                 before_seq=1)).entries

    listed = s.ListOrders(pb.ListOrdersRequest(person_id=volunteer.id))
    assert [o.id for o in listed.orders] == [order.id, second.id]
    recorded = s.ListOrders(pb.ListOrdersRequest(state=pb.ORDER_STATE_RECORDED, limit=1))
    assert [o.id for o in recorded.orders] == [order.id]
    assert s.GetOrder(pb.GetOrderRequest(order_id=order.id)).order == order

    # Hours outside the loop: a donation, a grant, a correction.
    donation = s.Donate(pb.DonateRequest(idempotency_key=key(), person_id=neighbour.id,
                                         minutes=30)).transaction
    assert donation.kind == "donation" and {p.minutes for p in donation.postings} == {-30, 30}
    grant = s.Grant(pb.GrantRequest(idempotency_key=key(), person_id=elder.id, minutes=120,
                                    staff_id=manager.id, memo="重阳节补贴")).transaction
    assert grant.kind == "grant" and grant.memo == f"重阳节补贴 (staff:{manager.id})"
    elder_balance = api.balance(elder.id)
    assert [(b.origin, b.total_minutes) for b in elder_balance.by_origin] == [
        (pb.ORIGIN_GRANTED, 120)]
    reversal = s.ReverseTransaction(pb.ReverseTransactionRequest(
        idempotency_key=key(), seq=grant.seq, staff_id=manager.id, reason="录入错误")).transaction
    assert reversal.kind == "reversal" and reversal.reverses_seq == grant.seq
    assert api.balance(elder.id).total_minutes == 0

    policy = s.GetPolicy(pb.GetPolicyRequest())
    assert policy.rounding_unit_minutes == 15 and policy.publicity_days == 7
    assert policy.cap_minutes == 1500 * 60 and policy.group_hours_donate_only
    assert ("cleaning", "助洁") in [(c.code, c.name) for c in policy.categories]
    assert pb.LINK_KIND_PARENT in policy.relative_kinds
    assert pb.LINK_KIND_PROXY not in policy.relative_kinds
    assert len(policy.digest) == 64 and "助洁" in policy.source_toml

    report = api.ledger()
    assert report.ok, report.problems
    assert report.transactions == 5 and len(report.head_hash) == 32
    assert report.head_hash == reversal.hash
    assert (report.issued_minutes, report.consumed_minutes) == (135, 135)
    assert report.donation_pool_minutes == 30 and report.held_by_people_minutes == 45


def test_dispute_resolution_and_cancellation(api: Api) -> None:
    s = api.stub
    point = s.RegisterServicePoint(pb.RegisterServicePointRequest(
        idempotency_key=key(), code="jn-01", name="一号站")).service_point
    manager = s.RegisterStaff(pb.RegisterStaffRequest(
        idempotency_key=key(), name="钱主任", service_point_id=point.id)).staff
    elder = api.enrol("张桂兰", 1940, priority=True)
    volunteer = api.enrol("李秀英", 1962)
    neighbour = api.enrol("孙强", 1970)

    order = api.request(elder.id, by=person(elder.id), minutes=60)
    api.accept(order.id, volunteer.id)
    api.check_in(order.id)
    api.check_out(order.id, after_minutes=120)
    api.verify(order.id, person(elder.id))
    disputed = s.DisputeOrder(pb.DisputeOrderRequest(
        idempotency_key=key(), order_id=order.id, raised_by=person(neighbour.id),
        reason="只服务了一小时")).order
    assert disputed.state == pb.ORDER_STATE_DISPUTED and disputed.dispute_reason == "只服务了一小时"
    upheld = s.ResolveDispute(pb.ResolveDisputeRequest(
        idempotency_key=key(), order_id=order.id, staff_id=manager.id,
        outcome=pb.DISPUTE_OUTCOME_UPHOLD_SERVICE, corrected_minutes=60,
        resolution="核实为一小时")).order
    assert upheld.state == pb.ORDER_STATE_VERIFIED and upheld.measured_minutes == 60
    api.clock.advance(timedelta(days=7))
    assert api.record(order.id).recorded_minutes == 60

    voided = api.request(elder.id, by=staff(manager.id), minutes=30)
    api.accept(voided.id, volunteer.id)
    api.check_in(voided.id)
    api.check_out(voided.id, after_minutes=30)
    api.verify(voided.id, staff(manager.id), rating=3)
    s.DisputeOrder(pb.DisputeOrderRequest(idempotency_key=key(), order_id=voided.id,
                                          raised_by=staff(manager.id), reason="重复录入"))
    void = s.ResolveDispute(pb.ResolveDisputeRequest(
        idempotency_key=key(), order_id=voided.id, staff_id=manager.id,
        outcome=pb.DISPUTE_OUTCOME_VOID_SERVICE, resolution="作废")).order
    assert void.state == pb.ORDER_STATE_CANCELLED and void.resolution == "作废"

    cancelled = api.request(elder.id, by=person(elder.id), minutes=45)
    api.accept(cancelled.id, volunteer.id)
    done = s.CancelOrder(pb.CancelOrderRequest(idempotency_key=key(), order_id=cancelled.id,
                                               cancelled_by=person(volunteer.id),
                                               reason="临时有事")).order
    assert done.state == pb.ORDER_STATE_CANCELLED
    assert api.balance(volunteer.id).total_minutes == 60
    report = api.ledger()
    assert report.ok and report.transactions == 1


def test_a_retry_returns_the_first_response_and_changes_nothing(api: Api) -> None:
    s = api.stub
    request = pb.EnrolPersonRequest(idempotency_key=key(), kind=pb.PERSON_KIND_INDIVIDUAL,
                                     name="张桂兰", id_number=id_card(1940), priority=True)
    first = s.EnrolPerson(request).person
    with api.unchanged():
        again = s.EnrolPerson(request).person
    assert again.SerializeToString() == first.SerializeToString()

    # The same key with a different request, or for another method: ALREADY_EXISTS.
    changed = pb.EnrolPersonRequest()
    changed.CopyFrom(request)
    changed.name = "张桂芳"
    api.refused("EnrolPerson", changed, grpc.StatusCode.ALREADY_EXISTS,
                reason="IDEMPOTENCY_KEY_REUSED", says=(request.idempotency_key,))
    api.refused("RegisterServicePoint", pb.RegisterServicePointRequest(
        idempotency_key=request.idempotency_key, code="p1", name="站"),
        grpc.StatusCode.ALREADY_EXISTS, reason="IDEMPOTENCY_KEY_REUSED")

    volunteer = api.enrol("李秀英", 1962)
    order = api.request(first.id, by=person(first.id))
    accept = pb.AcceptOrderRequest(idempotency_key=key(), order_id=order.id,
                                   volunteer_id=volunteer.id)
    accepted = s.AcceptOrder(accept).order
    with api.unchanged():  # not "already accepted": the first answer, and no second hold
        assert s.AcceptOrder(accept).order.SerializeToString() == accepted.SerializeToString()

    check_in = pb.CheckInRequest(idempotency_key=key(), order_id=order.id)  # at: now
    checked_in = s.CheckIn(check_in).order
    api.clock.advance(timedelta(minutes=10))
    with api.unchanged():
        assert s.CheckIn(check_in).order.checked_in_at == checked_in.checked_in_at
    api.check_out(order.id, after_minutes=50)
    api.verify(order.id, person(first.id))
    api.clock.advance(timedelta(days=7))
    record = pb.RecordOrderRequest(idempotency_key=key(), order_id=order.id)
    recorded = s.RecordOrder(record).order
    with api.unchanged():  # no second deposit
        assert s.RecordOrder(record).order.SerializeToString() == recorded.SerializeToString()
    assert api.balance(volunteer.id).total_minutes == 60

    donate = pb.DonateRequest(idempotency_key=key(), person_id=volunteer.id, minutes=15)
    donated = s.Donate(donate).transaction
    with api.unchanged():
        assert s.Donate(donate).transaction == donated
    assert api.balance(volunteer.id).total_minutes == 45

    # A refused request stores nothing under its key: fixed, it can go through.
    bad = pb.DonateRequest(idempotency_key=key(), person_id=volunteer.id, minutes=-5)
    api.refused("Donate", bad, grpc.StatusCode.INVALID_ARGUMENT, reason="MINUTES_OUT_OF_RANGE")
    bad.minutes = 5
    assert s.Donate(bad).transaction.seq == donated.seq + 1


def test_health_reports_serving(api: Api) -> None:
    health = health_pb2_grpc.HealthStub(api.channel)
    for service in ("", SERVICE_NAME):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as caught:
        health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=TIMEOUT)
    error: Any = caught.value
    assert error.code() is grpc.StatusCode.NOT_FOUND


def test_reflection_lists_and_describes_the_service(api: Api) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(api.channel)
    requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME)]
    listed, described = list(stub.ServerReflectionInfo(iter(requests), timeout=TIMEOUT))
    names = {s.name for s in listed.list_services_response.service}
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names
    files = described.file_descriptor_response.file_descriptor_proto
    assert any(b"timebank/v1/node.proto" in f for f in files)


def test_every_rpc_is_implemented() -> None:
    service = pb.DESCRIPTOR.services_by_name["NodeService"]
    base = node_pb2_grpc.NodeServiceServicer
    missing = [m.name for m in service.methods
               if getattr(NodeServicer, m.name) is getattr(base, m.name)]
    assert not missing


def test_times_are_utc_and_names_round_trip(api: Api) -> None:
    names = ["欧阳娜娜", "Zhāng Guìlán", "阿依古丽·买买提", "𠮷田"]
    for name in names:
        got = api.enrol(name, 1950)
        assert api.stub.GetPerson(pb.GetPersonRequest(person_id=got.id)).person.name == name
    elder = api.enrol("张桂兰", 1940, priority=True)
    volunteer = api.enrol("李秀英", 1962)
    order = api.request(elder.id, by=person(elder.id))
    api.accept(order.id, volunteer.id)
    api.clock.advance(timedelta(hours=1))  # entered afterwards, never before the request
    at = api.clock.now() - timedelta(minutes=30)
    stamp = Timestamp()
    stamp.FromDatetime(at)
    checked_in = api.stub.CheckIn(pb.CheckInRequest(idempotency_key=key(), order_id=order.id,
                                                    at=stamp)).order
    assert checked_in.checked_in_at.ToDatetime(tzinfo=UTC) == at
    assert at.tzinfo is UTC and at.year == datetime(2026, 3, 2, tzinfo=UTC).year


def test_an_unspecified_order_state_lists_every_order(api: Api) -> None:
    elder = api.enrol("张桂兰", 1940, priority=True)
    ids = [api.request(elder.id, by=person(elder.id)).id for _ in range(3)]
    page = api.stub.ListOrders(pb.ListOrdersRequest(limit=2))
    assert [o.id for o in page.orders] == ids[:2]
    rest = api.stub.ListOrders(pb.ListOrdersRequest(after_id=ids[1]))
    assert [o.id for o in rest.orders] == ids[2:]
    with pytest.raises(grpc.RpcError) as caught:
        api.stub.ListOrders(pb.ListOrdersRequest(limit=5000))
    assert_status(caught.value, grpc.StatusCode.INVALID_ARGUMENT)
