"""Who may do what on the node's API (ADR 0016), on a real server on 127.0.0.1.

Every role against every rpc of the rule table; members and staff kept to their people
and service point; expired, revoked and forged tokens; password guessing and its
lockout; failed logins limited per address; an actor in a request that is not the
caller; the actor recorded with every act; and credentials stored hashed only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
import pytest
from sqlalchemy import select

from node.domain.access import PUBLIC, RULES, Principal, Role, Scope, may_call
from node.storage.schema import Base
from node.usecases import logins
from tests.node.api.support import (
    PASSWORD,
    TIMEOUT,
    Api,
    assert_status,
    error_info,
    key,
    person,
    staff,
)
from timebank.v1 import node_pb2 as pb

DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
METHODS = [m for m in pb.DESCRIPTOR.services_by_name["NodeService"].methods]


@dataclass
class Town:
    api: Api
    point1: int
    point2: int
    staff1: int  # at point 1
    staff2: int  # at point 2
    elder: int  # at point 1, priority, has no phone
    daughter: int  # the elder's child (linked)
    volunteer: int  # at no service point
    stranger: int  # at point 2


@pytest.fixture
def town(api: Api) -> Town:
    s = api.stub
    p1 = s.RegisterServicePoint(pb.RegisterServicePointRequest(
        idempotency_key=key(), code="P1", name="东山服务点")).service_point.id
    p2 = s.RegisterServicePoint(pb.RegisterServicePointRequest(
        idempotency_key=key(), code="P2", name="秣陵服务点")).service_point.id
    s1 = s.RegisterStaff(pb.RegisterStaffRequest(idempotency_key=key(), name="陈静",
                                                 service_point_id=p1)).staff.id
    s2 = s.RegisterStaff(pb.RegisterStaffRequest(idempotency_key=key(), name="周敏",
                                                 service_point_id=p2)).staff.id
    elder = api.enrol("王建国", 1940, priority=True, point=p1).id
    daughter = api.enrol("王丽", 1968).id
    volunteer = api.enrol("赵敏", 1980).id
    stranger = api.enrol("孙强", 1950, point=p2).id
    api.link(elder, daughter, pb.LINK_KIND_CHILD, s1)
    s.Grant(pb.GrantRequest(idempotency_key=key(), person_id=elder, minutes=600,
                            staff_id=s1))
    return Town(api, p1, p2, s1, s2, elder, daughter, volunteer, stranger)


def _token(town: Town, role: Role, scopes: tuple[str, ...] = ()) -> str:
    if role is Role.PROGRAM:
        _, token = town.api.app.execute(logins.issue_token, "app-" + "-".join(scopes),
                                        scopes, 30)
        return token
    bound = {Role.STAFF: town.staff1, Role.MEMBER: town.elder}.get(role, 0)
    return town.api.login(role, bound, login=f"{role.value}-x")


def _principal(role: Role, scopes: tuple[str, ...]) -> Principal:
    return Principal(role, 1, staff_id=1 if role is Role.STAFF else 0,
                     service_point_id=1 if role is Role.STAFF else 0,
                     person_id=1 if role is Role.MEMBER else 0,
                     program="app" if role is Role.PROGRAM else "",
                     scopes=frozenset(Scope(s) for s in scopes))


def _call(stub: Any, name: str) -> grpc.RpcError | None:
    request = getattr(pb, f"{name}Request")()
    try:
        getattr(stub, name)(request, timeout=TIMEOUT)
    except grpc.RpcError as e:
        return e
    return None


@pytest.mark.parametrize(("role", "scopes"), [
    (Role.OPERATOR, ()), (Role.STAFF, ()), (Role.MEMBER, ()), (Role.AUDITOR, ()),
    (Role.PROGRAM, ("read",)), (Role.PROGRAM, ("orders",)), (Role.PROGRAM, ("enrol",)),
], ids=["operator", "staff", "member", "auditor", "program-read", "program-orders",
        "program-enrol"])
def test_each_role_is_allowed_or_refused_per_rule(town: Town, role: Role,
                                                  scopes: tuple[str, ...]) -> None:
    """Every rpc of the table, called with an empty request: refused PERMISSION_DENIED
    (ROLE_NOT_ALLOWED, changing nothing) exactly where the rule says; elsewhere the call
    gets past the rule (whatever the empty request then earns)."""
    stub = town.api.stub_as(_token(town, role, scopes))
    who = _principal(role, scopes)
    for name in sorted(RULES):
        if name == "Logout":
            continue  # would end the session the loop runs on (tested below)
        refused = may_call(name, who)
        with town.api.unchanged():
            error = _call(stub, name)
            if refused is not None:
                assert error is not None, f"{role} may not call {name}"
                assert_status(error, DENIED, reason="ROLE_NOT_ALLOWED")
        if refused is None and error is not None:
            assert error.code() is not UNAUTHENTICATED, (name, error.details())
            info = error_info(error)
            assert info is None or info.reason != "ROLE_NOT_ALLOWED", name


def test_without_a_token_every_rpc_but_the_public_ones_is_unauthenticated(
        town: Town) -> None:
    anonymous = town.api.stub_as("")
    with town.api.unchanged():
        for method in METHODS:
            error = _call(anonymous, method.name)
            if method.name in PUBLIC:
                assert error is None or error.code() is not UNAUTHENTICATED, method.name
                continue
            assert error is not None, method.name
            assert_status(error, UNAUTHENTICATED, reason="NOT_LOGGED_IN",
                          says=("log in again",))


# ---------------------------------------------------------------- people and points


def test_a_member_reads_only_their_own_and_their_peoples_records(town: Town) -> None:
    api = town.api
    daughter = api.stub_as(api.login(Role.MEMBER, town.daughter))
    # her mother's balance (linked as family), and her own
    assert daughter.GetBalance(pb.GetBalanceRequest(person_id=town.elder),
                               timeout=TIMEOUT).total_minutes == 600
    daughter.GetBalance(pb.GetBalanceRequest(person_id=town.daughter), timeout=TIMEOUT)
    for name, request in [
        ("GetBalance", pb.GetBalanceRequest(person_id=town.stranger)),
        ("GetHistory", pb.GetHistoryRequest(person_id=town.stranger)),
        ("GetPerson", pb.GetPersonRequest(person_id=town.stranger)),
        ("ListOrders", pb.ListOrdersRequest(person_id=town.stranger)),
        ("ListOrders", pb.ListOrdersRequest()),
        # a person who does not exist is refused the same way: nothing is told
        ("GetBalance", pb.GetBalanceRequest(person_id=987_654)),
    ]:
        with api.unchanged(), pytest.raises(grpc.RpcError) as caught:
            getattr(daughter, name)(request, timeout=TIMEOUT)
        assert_status(caught.value, DENIED, reason="NOT_AUTHORISED")


def test_a_member_reads_their_own_history_newest_first_and_not_a_strangers(
        town: Town) -> None:
    api = town.api
    elder = api.stub_as(api.login(Role.MEMBER, town.elder))
    daughter = api.stub_as(api.login(Role.MEMBER, town.daughter))
    for stub in (elder, daughter):  # hers, and her family's (as oldest first)
        latest = stub.GetHistory(pb.GetHistoryRequest(person_id=town.elder, newest_first=True,
                                                      limit=30), timeout=TIMEOUT)
        assert [e.delta_minutes for e in latest.entries] == [600]
        assert latest == stub.GetHistory(pb.GetHistoryRequest(person_id=town.elder),
                                         timeout=TIMEOUT)
    for request in [pb.GetHistoryRequest(person_id=town.stranger, newest_first=True),
                    pb.GetHistoryRequest(person_id=town.stranger, newest_first=True,
                                         before_seq=100, limit=1)]:
        with api.unchanged(), pytest.raises(grpc.RpcError) as caught:
            elder.GetHistory(request, timeout=TIMEOUT)
        assert_status(caught.value, DENIED, reason="NOT_AUTHORISED")


def test_a_member_cannot_spend_or_request_for_a_stranger(town: Town) -> None:
    api = town.api
    stranger = api.stub_as(api.login(Role.MEMBER, town.stranger))
    with api.unchanged(), pytest.raises(grpc.RpcError) as caught:
        stranger.RequestOrder(pb.RequestOrderRequest(
            idempotency_key=key(), recipient_id=town.elder, category="cleaning",
            planned_minutes=60, payment_source=pb.PAYMENT_SOURCE_CITY_GRANT),
            timeout=TIMEOUT)
    assert_status(caught.value, DENIED, reason="NOT_AUTHORISED",
                  says=(f"person {town.stranger}",))
    with api.unchanged(), pytest.raises(grpc.RpcError) as caught:
        stranger.Donate(pb.DonateRequest(idempotency_key=key(), person_id=town.elder,
                                         minutes=10), timeout=TIMEOUT)
    assert_status(caught.value, DENIED)


def test_staff_of_one_service_point_cannot_act_at_another(town: Town) -> None:
    api = town.api
    at_two = api.stub_as(api.login(Role.STAFF, town.staff2))
    granted = api.app.query(lambda tx: tx.repo.ledger.head()[0])  # the grant to the elder
    for name, request in [
        ("ReverseTransaction", pb.ReverseTransactionRequest(idempotency_key=key(),
                                                            seq=granted, reason="错了")),
        ("UpdatePerson", pb.UpdatePersonRequest(idempotency_key=key(), person_id=town.elder,
                                                priority=False, reason="复核")),
        ("RequestOrder", pb.RequestOrderRequest(
            idempotency_key=key(), recipient_id=town.elder, category="cleaning",
            planned_minutes=60, payment_source=pb.PAYMENT_SOURCE_CITY_GRANT)),
        ("Grant", pb.GrantRequest(idempotency_key=key(), person_id=town.elder, minutes=60)),
        ("GetBalance", pb.GetBalanceRequest(person_id=town.elder)),
        ("EnrolPerson", pb.EnrolPersonRequest(
            idempotency_key=key(), kind=pb.PERSON_KIND_INDIVIDUAL, name="新人",
            id_number="110101194001010012", service_point_id=town.point1)),
    ]:
        with api.unchanged(), pytest.raises(grpc.RpcError) as caught:
            getattr(at_two, name)(request, timeout=TIMEOUT)
        assert_status(caught.value, DENIED, reason="NOT_YOUR_SERVICE_POINT",
                      says=("service point 2", f"staff:{town.staff2}"))


def test_an_actor_in_the_request_must_be_the_caller(town: Town) -> None:
    api = town.api
    desk = api.stub_as(api.login(Role.STAFF, town.staff1))
    with api.unchanged(), pytest.raises(grpc.RpcError) as caught:
        desk.RequestOrder(pb.RequestOrderRequest(
            idempotency_key=key(), recipient_id=town.elder, category="cleaning",
            planned_minutes=60, payment_source=pb.PAYMENT_SOURCE_CITY_GRANT,
            requested_by=staff(town.staff2)), timeout=TIMEOUT)
    assert_status(caught.value, DENIED, reason="ACTOR_NOT_CALLER", says=(
        f"the actor in the request (staff {town.staff2}) is not the caller "
        f"(staff {town.staff1})",))
    daughter = api.stub_as(api.login(Role.MEMBER, town.daughter))
    with api.unchanged(), pytest.raises(grpc.RpcError) as caught:
        daughter.RequestOrder(pb.RequestOrderRequest(
            idempotency_key=key(), recipient_id=town.elder, category="cleaning",
            planned_minutes=60, payment_source=pb.PAYMENT_SOURCE_CITY_GRANT,
            requested_by=person(town.elder)), timeout=TIMEOUT)
    assert_status(caught.value, DENIED, reason="ACTOR_NOT_CALLER",
                  says=(f"(person {town.elder}) is not the caller (person {town.daughter})",))


# ---------------------------------------------------------------- recorded actors


def _order_actors(api: Api, order_id: int) -> list[str]:
    return [e.actor for e in api.app.query(lambda tx: tx.repo.orders.events(order_id))]


def test_every_act_records_the_authenticated_actor(town: Town) -> None:
    api = town.api
    desk = api.stub_as(api.login(Role.STAFF, town.staff1))
    volunteer = api.stub_as(api.login(Role.MEMBER, town.volunteer))
    daughter = api.stub_as(api.login(Role.MEMBER, town.daughter))
    s1, elder, v = town.staff1, town.elder, town.volunteer

    # staff act for the elder without a phone: both identities recorded
    order = desk.RequestOrder(pb.RequestOrderRequest(
        idempotency_key=key(), recipient_id=elder, category="cleaning", planned_minutes=60,
        payment_source=pb.PAYMENT_SOURCE_OWN, requested_by=person(elder)), timeout=TIMEOUT).order
    volunteer.AcceptOrder(pb.AcceptOrderRequest(idempotency_key=key(), order_id=order.id,
                                                volunteer_id=v), timeout=TIMEOUT)
    volunteer.CheckIn(pb.CheckInRequest(idempotency_key=key(), order_id=order.id),
                      timeout=TIMEOUT)
    api.clock.advance(timedelta(minutes=60))
    desk.CheckOut(pb.CheckOutRequest(idempotency_key=key(), order_id=order.id),
                  timeout=TIMEOUT)
    desk.VerifyOrder(pb.VerifyOrderRequest(idempotency_key=key(), order_id=order.id,
                                           verifier=person(elder), rating=5), timeout=TIMEOUT)
    daughter.DisputeOrder(pb.DisputeOrderRequest(idempotency_key=key(), order_id=order.id,
                                                 reason="时间不对"), timeout=TIMEOUT)
    desk.ResolveDispute(pb.ResolveDisputeRequest(
        idempotency_key=key(), order_id=order.id, outcome=pb.DISPUTE_OUTCOME_UPHOLD_SERVICE,
        resolution="核实无误"), timeout=TIMEOUT)
    assert _order_actors(api, order.id) == [
        f"staff:{s1} for person:{elder}", f"person:{v}", f"person:{v}",
        f"staff:{s1} for person:{v}", f"staff:{s1} for person:{elder}",
        f"person:{town.daughter}", f"staff:{s1}"]

    second = daughter.RequestOrder(pb.RequestOrderRequest(
        idempotency_key=key(), recipient_id=elder, category="cleaning", planned_minutes=30,
        payment_source=pb.PAYMENT_SOURCE_OWN), timeout=TIMEOUT).order
    daughter.CancelOrder(pb.CancelOrderRequest(idempotency_key=key(), order_id=second.id,
                                               reason="不需要了"), timeout=TIMEOUT)
    assert _order_actors(api, second.id) == [f"person:{town.daughter}"] * 2

    updated = desk.UpdatePerson(pb.UpdatePersonRequest(
        idempotency_key=key(), person_id=elder, phone="13900001111", reason="新号码"),
        timeout=TIMEOUT).person
    assert updated.changes[-1].actor == f"staff:{s1}"
    operator = api.stub_as(api.login(Role.OPERATOR, login="operator-y"))
    operator.LinkPeople(pb.LinkPeopleRequest(idempotency_key=key(), person_id=v,
                                             other_id=town.stranger,
                                             kind=pb.LINK_KIND_SIBLING), timeout=TIMEOUT)
    linked = operator.GetPerson(pb.GetPersonRequest(person_id=v), timeout=TIMEOUT).person
    assert linked.changes[-1].actor.startswith("operator:")
    grant = desk.Grant(pb.GrantRequest(idempotency_key=key(), person_id=elder, minutes=30),
                       timeout=TIMEOUT).transaction
    assert grant.memo == f"grant by staff:{s1}"
    reversal = desk.ReverseTransaction(pb.ReverseTransactionRequest(
        idempotency_key=key(), seq=grant.seq, reason="重复"), timeout=TIMEOUT).transaction
    assert reversal.memo.startswith(f"staff {s1}: ")


def test_another_callers_retry_under_the_same_key_is_not_their_answer(town: Town) -> None:
    api = town.api
    daughter = api.stub_as(api.login(Role.MEMBER, town.daughter))
    first = key()
    donate = pb.DonateRequest(idempotency_key=first, person_id=town.daughter, minutes=1)
    with pytest.raises(grpc.RpcError):  # she has nothing to give: refused, key unused
        daughter.Donate(donate, timeout=TIMEOUT)
    desk = api.stub_as(api.login(Role.STAFF, town.staff1))
    made = desk.Grant(pb.GrantRequest(idempotency_key=first, person_id=town.elder,
                                      minutes=5), timeout=TIMEOUT).transaction
    other = api.stub_as(api.login(Role.STAFF, town.staff1, login="staff-again"))
    with api.unchanged(), pytest.raises(grpc.RpcError) as caught:
        other.Grant(pb.GrantRequest(idempotency_key=first, person_id=town.elder, minutes=5),
                    timeout=TIMEOUT)
    assert_status(caught.value, grpc.StatusCode.ALREADY_EXISTS,
                  reason="IDEMPOTENCY_KEY_REUSED")
    assert made.seq


# ---------------------------------------------------------------- tokens


def test_expired_revoked_and_forged_tokens_are_unauthenticated(town: Town) -> None:
    api = town.api
    token = api.login(Role.AUDITOR, login="auditor-z")
    auditor = api.stub_as(token)
    assert auditor.WhoAmI(pb.WhoAmIRequest(), timeout=TIMEOUT).caller.role == "auditor"
    cases = [
        (api.stub_as(token[:-2] + ("AA" if not token.endswith("AA") else "BB")), "BAD_TOKEN"),
        (api.stub_as("x" * 300), "NOT_LOGGED_IN"),
    ]
    for stub, reason in cases:
        with api.unchanged(), pytest.raises(grpc.RpcError) as caught:
            stub.CheckLedger(pb.CheckLedgerRequest(), timeout=TIMEOUT)
        assert_status(caught.value, UNAUTHENTICATED, reason=reason, says=("log in again",))
    auditor.Logout(pb.LogoutRequest(), timeout=TIMEOUT)
    with pytest.raises(grpc.RpcError) as caught:
        auditor.CheckLedger(pb.CheckLedgerRequest(), timeout=TIMEOUT)
    assert_status(caught.value, UNAUTHENTICATED, reason="TOKEN_REVOKED")

    later = api.stub_as(api.login(Role.AUDITOR, login="auditor-w"))
    api.clock.advance(timedelta(hours=api.app.node.logins.session_hours, seconds=1))
    with pytest.raises(grpc.RpcError) as caught:
        later.CheckLedger(pb.CheckLedgerRequest(), timeout=TIMEOUT)
    assert_status(caught.value, UNAUTHENTICATED, reason="TOKEN_EXPIRED", says=("expired",))

    _, program = api.app.execute(logins.issue_token, "reader", ("read",), 1)
    reader = api.stub_as(program)
    reader.CheckLedger(pb.CheckLedgerRequest(), timeout=TIMEOUT)
    api.app.execute(logins.revoke_tokens, "reader")
    with pytest.raises(grpc.RpcError) as caught:
        reader.CheckLedger(pb.CheckLedgerRequest(), timeout=TIMEOUT)
    assert_status(caught.value, UNAUTHENTICATED, reason="TOKEN_REVOKED")


def _login(api: Api, login: str, secret: str, *, code: bool = False) -> grpc.RpcError | None:
    anonymous = api.stub_as("")
    request = (pb.LoginRequest(login=login, code=secret) if code
               else pb.LoginRequest(login=login, password=secret))
    try:
        anonymous.Login(request, timeout=TIMEOUT)
    except grpc.RpcError as e:
        return e
    return None


def test_password_guessing_locks_the_account_even_for_the_right_password(town: Town) -> None:
    api = town.api
    api.app.execute(logins.add_account, "chen", Role.STAFF, staff_id=town.staff1)
    api.app.execute(logins.set_password, "chen", PASSWORD)
    wrong = []
    for attempt in range(api.app.node.logins.max_failures):
        error = _login(api, "chen", f"guess number {attempt}")
        assert error is not None
        assert_status(error, UNAUTHENTICATED, reason="LOGIN_FAILED")
        wrong.append(error.details())
    locked = _login(api, "chen", PASSWORD)
    assert locked is not None
    assert_status(locked, UNAUTHENTICATED, reason="LOGIN_FAILED", says=("locked until",))
    api.clock.advance(timedelta(minutes=api.app.node.logins.lock_minutes, seconds=1))
    assert _login(api, "chen", PASSWORD) is None
    # an unknown login is refused in the same words as a wrong password
    unknown = _login(api, "nobody-here", PASSWORD)
    assert unknown is not None and unknown.details() == wrong[0]


def test_failed_logins_are_limited_per_address(town: Town) -> None:
    api = town.api
    for n in range(20):
        error = _login(api, f"nobody-{n}", "not a password at all")
        assert error is not None and error.code() is UNAUTHENTICATED
    api.app.execute(logins.add_account, "zhou", Role.AUDITOR)
    api.app.execute(logins.set_password, "zhou", PASSWORD)
    throttled = _login(api, "zhou", PASSWORD)
    assert throttled is not None
    assert_status(throttled, grpc.StatusCode.RESOURCE_EXHAUSTED,
                  reason="TOO_MANY_FAILED_LOGINS", says=("try again after",))
    api.clock.advance(timedelta(minutes=10, seconds=1))
    assert _login(api, "zhou", PASSWORD) is None


def test_a_one_time_code_logs_in_once_and_expires(town: Town) -> None:
    api = town.api
    api.app.execute(logins.add_account, "wang-jianguo", Role.MEMBER, person_id=town.elder)
    code = api.app.execute(logins.issue_code, "wang-jianguo")
    assert len(code) == logins.CODE_DIGITS and code.isdigit()
    assert _login(api, "wang-jianguo", code, code=True) is None
    again = _login(api, "wang-jianguo", code, code=True)
    assert again is not None and again.code() is UNAUTHENTICATED
    late = api.app.execute(logins.issue_code, "wang-jianguo")
    api.clock.advance(timedelta(minutes=api.app.node.logins.code_minutes, seconds=1))
    expired = _login(api, "wang-jianguo", late, code=True)
    assert expired is not None and expired.code() is UNAUTHENTICATED


def test_credentials_are_stored_hashed_only(town: Town) -> None:
    api = town.api
    api.app.execute(logins.add_account, "li", Role.MEMBER, person_id=town.daughter)
    api.app.execute(logins.set_password, "li", PASSWORD)
    code = api.app.execute(logins.issue_code, "li")
    session = api.stub_as("").Login(pb.LoginRequest(login="li", password=PASSWORD),
                                    timeout=TIMEOUT).token
    _, program = api.app.execute(logins.issue_token, "kiosk", ("orders",), 10)
    secrets = [PASSWORD, code, session, program]
    with api.app.db.read() as conn:
        for table in Base.metadata.sorted_tables:
            for row in conn.execute(select(table)):
                for value in row:
                    text = (value.decode("latin-1") if isinstance(value, bytes)
                            else str(value))
                    for secret in secrets:
                        assert secret not in text, f"a secret in plain text in {table.name}"
        hashes = [r.secret_hash for r in conn.execute(
            select(Base.metadata.tables["credentials"])) if r.secret_hash]
    assert hashes and all(h.startswith("$argon2id$") for h in hashes)


def test_an_operator_acting_alone_is_recorded_as_the_operator(town: Town) -> None:
    api = town.api
    operator = api.stub_as(api.login(Role.OPERATOR, login="operator-alone"))
    me = operator.WhoAmI(pb.WhoAmIRequest(), timeout=TIMEOUT).caller.actor
    grant = operator.Grant(pb.GrantRequest(idempotency_key=key(), person_id=town.elder,
                                           minutes=15), timeout=TIMEOUT).transaction
    assert grant.memo == f"grant by {me}"
    order = operator.RequestOrder(pb.RequestOrderRequest(
        idempotency_key=key(), recipient_id=town.elder, category="cleaning",
        planned_minutes=30, payment_source=pb.PAYMENT_SOURCE_OWN), timeout=TIMEOUT).order
    operator.CancelOrder(pb.CancelOrderRequest(idempotency_key=key(), order_id=order.id,
                                               reason="重复"), timeout=TIMEOUT)
    assert _order_actors(api, order.id) == [me, me]
    reversal = operator.ReverseTransaction(pb.ReverseTransactionRequest(
        idempotency_key=key(), seq=grant.seq, reason="重复"), timeout=TIMEOUT).transaction
    assert reversal.memo.startswith(me.replace(":", " "))
