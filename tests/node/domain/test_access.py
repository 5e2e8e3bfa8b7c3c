"""The access rules: every rpc of the contract has one, unknown rpcs are refused, and
the actor a request names must be the caller (or a person staff act for)."""

from __future__ import annotations

import pytest

from node.domain.access import (
    PUBLIC,
    RULES,
    Actor,
    Principal,
    Role,
    Scope,
    Subject,
    acting,
    may_call,
    may_move,
    may_touch,
)
from runtime.errors import InvariantViolation
from timebank.v1 import node_pb2 as pb

OPERATOR = Principal(Role.OPERATOR, 1)
STAFF = Principal(Role.STAFF, 2, staff_id=3, service_point_id=1)
MEMBER = Principal(Role.MEMBER, 4, person_id=5)
AUDITOR = Principal(Role.AUDITOR, 6)
READER = Principal(Role.PROGRAM, 7, program="app", scopes=frozenset({Scope.READ}))


def test_every_rpc_of_the_contract_has_a_rule_or_is_public() -> None:
    methods = {m.name for m in pb.DESCRIPTOR.services_by_name["NodeService"].methods}
    assert methods - PUBLIC == set(RULES), "an rpc without an access rule (or a stale rule)"
    assert methods >= PUBLIC


def test_an_unknown_rpc_is_refused_to_everyone() -> None:
    for who in (OPERATOR, STAFF, MEMBER, AUDITOR, READER):
        assert may_call("DropEverything", who) is not None


def test_auditors_and_reading_programs_change_nothing() -> None:
    mutating = {m.name for m in pb.DESCRIPTOR.services_by_name["NodeService"].methods
                if m.input_type.fields_by_name.get("idempotency_key") is not None}
    assert mutating
    for rpc in mutating:
        assert may_call(rpc, AUDITOR) is not None, rpc
        assert may_call(rpc, READER) is not None, rpc
    assert may_call("CheckLedger", AUDITOR) is None
    assert "scope 'read'" in (may_call("CheckLedger", Principal(
        Role.PROGRAM, 8, program="orders-app", scopes=frozenset({Scope.ORDERS}))) or "")


def test_members_touch_only_themselves_and_their_people() -> None:
    assert may_touch(MEMBER, Subject(5)) is None
    assert may_touch(MEMBER, Subject(9, linked=frozenset({5}))) is None
    assert "person 9" in (may_touch(MEMBER, Subject(9, linked=frozenset({6}))) or "")


def test_staff_touch_their_service_point_only() -> None:
    assert may_touch(STAFF, Subject(9, service_point_id=1)) is None
    assert may_touch(STAFF, Subject(9, service_point_id=0)) is None
    assert "service point 2" in (may_touch(STAFF, Subject(9, service_point_id=2)) or "")


def test_staff_move_people_only_into_their_own_point_and_operators_anywhere() -> None:
    enroller = Principal(Role.PROGRAM, 8, program="app", scopes=frozenset({Scope.ENROL}))
    for point in (0, 1):  # of none or of their own point, into their own point
        assert may_move(STAFF, Subject(9, service_point_id=point), 1) is None
    assert may_move(STAFF, Subject(9, service_point_id=0), 0) is None  # no move at all
    for subject, to in ((Subject(9, service_point_id=1), 2), (Subject(9, service_point_id=1), 0),
                        (Subject(9, service_point_id=0), 2)):
        refusal = may_move(STAFF, subject, to) or ""
        assert refusal.startswith("服务点工作人员只能把人员转入本服务点"), (subject, to)
    for subject, to in ((Subject(9, service_point_id=1), 2), (Subject(9), 2),
                        (Subject(9, service_point_id=2), 0)):
        assert may_move(OPERATOR, subject, to) is None
        assert (may_move(enroller, subject, to) or "").startswith("只有区运维员")
    assert may_move(enroller, Subject(9, service_point_id=2), 2) is None


def test_the_actor_named_must_be_the_caller() -> None:
    assert acting(STAFF) == Actor(staff_id=3)
    assert acting(STAFF, staff_id=3) == Actor(staff_id=3)
    assert acting(STAFF, staff_id=2) == ("请求中的办理人与登录身份不符 (the actor in the "
                                         "request (staff 2) is not the caller (staff 3))")
    assert acting(STAFF, person_id=5).label == "staff:3 for person:5"
    assert acting(MEMBER).label == "person:5"
    assert isinstance(acting(MEMBER, person_id=6), str)
    assert isinstance(acting(MEMBER, staff_id=3), str)
    assert acting(OPERATOR).label == "operator:1"
    assert acting(READER, person_id=5).label == "program:app for person:5"


def test_a_principal_is_bound_as_its_role_says() -> None:
    with pytest.raises(InvariantViolation):
        Principal(Role.STAFF, 1)
    with pytest.raises(InvariantViolation):
        Principal(Role.MEMBER, 1, staff_id=2, service_point_id=1)
    with pytest.raises(InvariantViolation):
        Principal(Role.OPERATOR, 1, scopes=frozenset({Scope.READ}))
