"""Correcting a person's details through a real server (UpdatePerson), on SQLite and
PostgreSQL: what changes, what it changes for the rules that read it, and the record of
who changed it and when."""

from __future__ import annotations

from datetime import UTC, timedelta

import grpc
import pytest

from tests.node.api.support import TIMEOUT, Api, assert_status, key
from timebank.v1 import node_pb2 as pb


def _desk(api: Api) -> int:
    point = api.stub.RegisterServicePoint(pb.RegisterServicePointRequest(
        idempotency_key=key(), code="GL-HN-01", name="湖南路街道为老服务中心"),
        timeout=TIMEOUT).service_point
    return int(api.stub.RegisterStaff(pb.RegisterStaffRequest(
        idempotency_key=key(), name="周敏", service_point_id=point.id), timeout=TIMEOUT).staff.id)


def _grant(api: Api, person_id: int, staff_id: int) -> pb.LedgerTransaction:
    result: pb.LedgerTransaction = api.stub.Grant(pb.GrantRequest(
        idempotency_key=key(), person_id=person_id, minutes=60, staff_id=staff_id,
        memo="重点老人服务补贴"), timeout=TIMEOUT).transaction
    return result


def test_staff_make_a_person_a_priority_elder_and_change_their_phone(api: Api) -> None:
    desk = _desk(api)
    elder = api.enrol("王秀兰", 1941)
    assert not elder.priority and elder.phone == "13800000000"
    assert [(c.actor, c.kind) for c in elder.changes] == [("operator:1", "enrol")]
    with pytest.raises(grpc.RpcError) as caught:  # the city fund serves priority elders only
        _grant(api, elder.id, desk)
    assert_status(caught.value, grpc.StatusCode.PERMISSION_DENIED,
                  reason="NOT_A_PRIORITY_ELDER")

    api.clock.advance(timedelta(hours=2))
    request = pb.UpdatePersonRequest(idempotency_key=key(), person_id=elder.id,
                                     staff_id=desk, priority=True, phone="139 1234 5678",
                                     reason="民政局复核：独居")
    updated = api.stub.UpdatePerson(request, timeout=TIMEOUT).person
    assert updated.priority and updated.phone == "139 1234 5678"
    assert (updated.name, updated.person_ref) == (elder.name, elder.person_ref)
    enrolled, change = updated.changes  # who enrolled her (the operator), then the update
    assert (enrolled.actor, enrolled.kind) == ("operator:1", "enrol")
    assert (change.actor, change.kind) == (f"staff:{desk}", "update")
    assert change.at.ToDatetime(tzinfo=UTC) == api.clock.now()
    assert "priority elder (重点老人): no → yes" in change.detail
    assert "phone: …0000 → …5678" in change.detail  # the event keeps no whole number
    assert "民政局复核：独居" in change.detail
    assert api.stub.GetPerson(pb.GetPersonRequest(person_id=elder.id),
                              timeout=TIMEOUT).person == updated
    # what the status is for: the city fund now serves her
    assert _grant(api, elder.id, desk).postings

    # the same call again is the same answer, recorded once
    assert api.stub.UpdatePerson(request, timeout=TIMEOUT).person == updated
    # the same values under a new key change nothing and record nothing
    again = api.stub.UpdatePerson(pb.UpdatePersonRequest(
        idempotency_key=key(), person_id=elder.id, staff_id=desk, priority=True),
        timeout=TIMEOUT).person
    assert list(again.changes) == list(updated.changes)

    # only what is given changes: the phone cleared, the status kept
    cleared = api.stub.UpdatePerson(pb.UpdatePersonRequest(
        idempotency_key=key(), person_id=elder.id, staff_id=desk, phone=""), timeout=TIMEOUT).person
    assert cleared.priority and cleared.phone == ""
    assert [c.detail for c in cleared.changes][2:] == ["phone: …5678 → (none)"]


def test_a_priority_elder_is_no_longer_one(api: Api) -> None:
    desk = _desk(api)
    elder = api.enrol("赵大爷", 1938, priority=True)
    demoted = api.stub.UpdatePerson(pb.UpdatePersonRequest(
        idempotency_key=key(), person_id=elder.id, staff_id=desk, priority=False,
        reason="子女返乡同住"), timeout=TIMEOUT).person
    assert not demoted.priority
    assert [c.detail for c in demoted.changes] == [
        "enrolled", "priority elder (重点老人): yes → no (子女返乡同住)"]
    with pytest.raises(grpc.RpcError) as caught:
        _grant(api, elder.id, desk)
    assert_status(caught.value, grpc.StatusCode.PERMISSION_DENIED,
                  reason="NOT_A_PRIORITY_ELDER")
