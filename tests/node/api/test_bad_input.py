"""Every bad input of issue 3 through a real server: the exact status, a message an
operator understands, the machine-readable reason, and a database exactly as it was.

All tests here share one ``world`` per storage engine (see conftest.py) and only
send requests that must be refused.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from node.api.server import start_server
from node.domain.access import Role
from node.domain.identity import id_card_with_check_digit
from node.domain.orders import Action, OrderState, already_done
from tests.helpers import credit_code, id_card
from tests.node.api.conftest import World
from tests.node.api.support import (
    INT32_MAX,
    INT64_MAX,
    INT64_MIN,
    TIMEOUT,
    UINT64_MAX,
    assert_status,
    key,
    person,
    serving,
    staff,
)
from timebank.v1 import node_pb2 as pb

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
FAILED = grpc.StatusCode.FAILED_PRECONDITION
DENIED = grpc.StatusCode.PERMISSION_DENIED
EXISTS = grpc.StatusCode.ALREADY_EXISTS
S = OrderState
NO_SUCH_ID = 987_654_321


def _stamp(seconds: int, nanos: int = 0) -> Timestamp:
    return Timestamp(seconds=seconds, nanos=nanos)


def _time(w: World, delta: timedelta) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(w.api.clock.now() + delta)
    return stamp


# ---------------------------------------------------------------- minutes

@pytest.mark.parametrize("minutes", [-1, 0, 1441, 24 * 60 * 365, INT64_MAX, INT64_MIN],
                         ids=["negative", "zero", "over-24h", "a-year", "int64-max",
                              "int64-min"])
def test_absurd_planned_minutes_are_refused(world: World, minutes: int) -> None:
    world.api.refused("RequestOrder", pb.RequestOrderRequest(
        idempotency_key=key(), recipient_id=world.elder, category="cleaning",
        planned_minutes=minutes, payment_source=pb.PAYMENT_SOURCE_CITY_GRANT,
        requested_by=staff(world.staff)), INVALID, reason="MINUTES_OUT_OF_RANGE",
        says=(str(minutes),))


@pytest.mark.parametrize("minutes", [-1, 0, INT64_MAX, INT64_MIN])
@pytest.mark.parametrize("method", ["Donate", "Grant"])
def test_absurd_ledger_minutes_are_refused(world: World, method: str, minutes: int) -> None:
    if method == "Donate":
        request: Any = pb.DonateRequest(idempotency_key=key(), person_id=world.volunteer,
                                        minutes=minutes)
    else:
        request = pb.GrantRequest(idempotency_key=key(), person_id=world.elder,
                                  minutes=minutes, staff_id=world.staff)
    world.api.refused(method, request, INVALID, reason="MINUTES_OUT_OF_RANGE",
                      says=(str(minutes),))


@pytest.mark.parametrize("minutes", [-1, 1441, INT64_MAX, INT64_MIN])
def test_absurd_corrected_minutes_are_refused(world: World, minutes: int) -> None:
    world.api.refused("ResolveDispute", pb.ResolveDisputeRequest(
        idempotency_key=key(), order_id=world.orders[S.DISPUTED], staff_id=world.staff,
        outcome=pb.DISPUTE_OUTCOME_UPHOLD_SERVICE, corrected_minutes=minutes,
        resolution="核实"), INVALID, reason="MINUTES_OUT_OF_RANGE")


def test_a_service_measured_over_24_hours_is_refused(world: World) -> None:
    world.api.refused("CheckOut", pb.CheckOutRequest(
        idempotency_key=key(), order_id=world.long_order), INVALID,
        reason="MINUTES_OUT_OF_RANGE", says=("1440",))


# ---------------------------------------------------------------- times

def test_check_out_before_check_in_is_refused(world: World) -> None:
    # Before the order is checked in at all ...
    world.api.refused("CheckOut", pb.CheckOutRequest(
        idempotency_key=key(), order_id=world.orders[S.ACCEPTED]), FAILED,
        reason="ORDER_STATE", says=("accepted", "checked in"))
    # ... or at a time before the check-in.
    checked_in = world.api.order(world.orders[S.CHECKED_IN]).checked_in_at
    earlier = _stamp(checked_in.seconds - 60)
    world.api.refused("CheckOut", pb.CheckOutRequest(
        idempotency_key=key(), order_id=world.orders[S.CHECKED_IN], at=earlier), INVALID,
        reason="CHECK_OUT_BEFORE_CHECK_IN")


@pytest.mark.parametrize(("stamp", "reason"), [
    (_stamp(2**62), "BAD_TIMESTAMP"),
    (_stamp(-(2**62)), "BAD_TIMESTAMP"),
    (_stamp(0, nanos=-1), "BAD_TIMESTAMP"),
    (_stamp(0, nanos=10**9), "BAD_TIMESTAMP"),
    (None, "TIME_IN_FUTURE"),
    (_stamp(0), "TIME_TOO_OLD"),
], ids=["far-future", "far-past", "negative-nanos", "nanos-overflow", "in-future", "1970"])
def test_impossible_check_in_times_are_refused(world: World, stamp: Timestamp | None,
                                               reason: str) -> None:
    at = stamp if stamp is not None else _time(world, timedelta(hours=1))
    world.api.refused("CheckIn", pb.CheckInRequest(
        idempotency_key=key(), order_id=world.orders[S.ACCEPTED], at=at), INVALID,
        reason=reason)


# ---------------------------------------------------------------- who may do what

def test_verifying_someone_elses_order_is_denied(world: World) -> None:
    world.api.refused("VerifyOrder", pb.VerifyOrderRequest(
        idempotency_key=key(), order_id=world.orders[S.CHECKED_OUT],
        verifier=person(world.stranger), rating=5), DENIED, reason="NOT_AUTHORISED",
        says=(f"person {world.stranger}",))


def test_a_volunteer_cannot_verify_their_own_service(world: World) -> None:
    world.api.refused("VerifyOrder", pb.VerifyOrderRequest(
        idempotency_key=key(), order_id=world.orders[S.CHECKED_OUT],
        verifier=person(world.volunteer2), rating=5), DENIED, reason="NOT_AUTHORISED")


def test_a_stranger_cannot_request_or_cancel_for_someone(world: World) -> None:
    world.api.refused("RequestOrder", pb.RequestOrderRequest(
        idempotency_key=key(), recipient_id=world.elder, category="cleaning",
        planned_minutes=60, payment_source=pb.PAYMENT_SOURCE_CITY_GRANT,
        requested_by=person(world.stranger)), DENIED, reason="NOT_AUTHORISED")
    world.api.refused("CancelOrder", pb.CancelOrderRequest(
        idempotency_key=key(), order_id=world.orders[S.REQUESTED],
        cancelled_by=person(world.stranger)), DENIED, reason="NOT_AUTHORISED")


def test_recording_before_the_publicity_period_ends_is_refused(world: World) -> None:
    world.api.refused("RecordOrder", pb.RecordOrderRequest(
        idempotency_key=key(), order_id=world.orders[S.VERIFIED]), FAILED,
        reason="PUBLICITY_NOT_OVER", says=("public until",))


def test_recording_due_orders_records_nothing_before_the_period_ends(world: World) -> None:
    with world.api.unchanged(ignore=("idempotency",)):
        reply = world.api.stub.RecordDueOrders(pb.RecordDueOrdersRequest(
            idempotency_key=key()), timeout=TIMEOUT)
    # Answered (and the answer stored under its key), but nothing was due.
    assert list(reply.recorded) == []


# ---------------------------------------------------------------- paying

def _pay(w: World, recipient: int, source: pb.PaymentSource.ValueType, payer: int = 0,
         minutes: int = 60, by: pb.Actor | None = None) -> pb.RequestOrderRequest:
    return pb.RequestOrderRequest(
        idempotency_key=key(), recipient_id=recipient, category="meals",
        planned_minutes=minutes, payment_source=source, payer_id=payer,
        requested_by=by or staff(w.staff))


def test_redeeming_more_than_the_available_balance_is_refused(world: World) -> None:
    available = world.api.balance(world.volunteer).available_minutes
    assert available == 60
    world.api.call("GrantConsent", pb.GrantConsentRequest(  # her consent first (ADR 0017)
        idempotency_key=key(), payer_id=world.volunteer, grantee_id=world.parent,
        kind=pb.CONSENT_KIND_STANDING, granted_by=person(world.volunteer)))
    world.api.refused("RequestOrder", _pay(world, world.parent, pb.PAYMENT_SOURCE_RELATIVE,
                                           world.volunteer, minutes=available + 15),
                      FAILED, reason="INSUFFICIENT_BALANCE", says=("1.00 h", "1.25 h"))
    world.api.refused("RequestOrder", _pay(world, world.parent, pb.PAYMENT_SOURCE_OWN),
                      FAILED, reason="INSUFFICIENT_BALANCE")
    world.api.refused("Donate", pb.DonateRequest(
        idempotency_key=key(), person_id=world.volunteer, minutes=available + 1), FAILED,
        reason="INSUFFICIENT_BALANCE")


def test_redeeming_a_non_relatives_hours_is_denied(world: World) -> None:
    world.api.refused("RequestOrder", _pay(world, world.elder, pb.PAYMENT_SOURCE_RELATIVE,
                                           world.volunteer),
                      DENIED, reason="NOT_A_RELATIVE", says=("relative",))
    # A proxy acts for the elder but is not family: their hours cannot pay either.
    world.api.refused("RequestOrder", _pay(world, world.elder, pb.PAYMENT_SOURCE_RELATIVE,
                                           world.proxy, by=person(world.proxy)),
                      DENIED, reason="NOT_A_RELATIVE")


def test_group_hours_cannot_be_redeemed(world: World) -> None:
    world.api.refused("RequestOrder", _pay(world, world.elder, pb.PAYMENT_SOURCE_RELATIVE,
                                           world.group),
                      DENIED, reason="GROUP_HOURS_DONATE_ONLY", says=("donated",))


def test_own_hours_and_grants_need_age_or_priority(world: World) -> None:
    world.api.refused("RequestOrder", _pay(world, world.young, pb.PAYMENT_SOURCE_OWN),
                      DENIED, reason="TOO_YOUNG_TO_REDEEM")
    world.api.refused("RequestOrder", _pay(world, world.parent, pb.PAYMENT_SOURCE_CITY_GRANT),
                      DENIED, reason="NOT_A_PRIORITY_ELDER")
    world.api.refused("Grant", pb.GrantRequest(
        idempotency_key=key(), person_id=world.parent, minutes=60, staff_id=world.staff),
        DENIED, reason="NOT_A_PRIORITY_ELDER")


# ---------------------------------------------------------------- unknown things

@pytest.mark.parametrize(("method", "make", "reason"), [
    ("GetPerson", lambda w: pb.GetPersonRequest(person_id=NO_SUCH_ID), "UNKNOWN_PERSON"),
    ("GetBalance", lambda w: pb.GetBalanceRequest(person_id=NO_SUCH_ID), "UNKNOWN_PERSON"),
    ("GetHistory", lambda w: pb.GetHistoryRequest(person_id=NO_SUCH_ID), "UNKNOWN_PERSON"),
    ("ListOrders", lambda w: pb.ListOrdersRequest(person_id=NO_SUCH_ID), "UNKNOWN_PERSON"),
    ("GetOrder", lambda w: pb.GetOrderRequest(order_id=NO_SUCH_ID), "UNKNOWN_ORDER"),
    ("RequestOrder", lambda w: _pay(w, NO_SUCH_ID, pb.PAYMENT_SOURCE_CITY_GRANT),
     "UNKNOWN_PERSON"),
    ("RequestOrder", lambda w: _pay(w, w.parent, pb.PAYMENT_SOURCE_RELATIVE, NO_SUCH_ID),
     "UNKNOWN_PERSON"),
    ("AcceptOrder", lambda w: pb.AcceptOrderRequest(
        idempotency_key=key(), order_id=NO_SUCH_ID, volunteer_id=w.volunteer2),
     "UNKNOWN_ORDER"),
    ("AcceptOrder", lambda w: pb.AcceptOrderRequest(
        idempotency_key=key(), order_id=w.orders[S.REQUESTED], volunteer_id=NO_SUCH_ID),
     "UNKNOWN_PERSON"),
    ("CheckIn", lambda w: pb.CheckInRequest(idempotency_key=key(), order_id=NO_SUCH_ID),
     "UNKNOWN_ORDER"),
    ("RecordOrder", lambda w: pb.RecordOrderRequest(idempotency_key=key(),
                                                    order_id=NO_SUCH_ID), "UNKNOWN_ORDER"),
    ("VerifyOrder", lambda w: pb.VerifyOrderRequest(
        idempotency_key=key(), order_id=w.orders[S.CHECKED_OUT],
        verifier=person(NO_SUCH_ID), rating=5), "UNKNOWN_PERSON"),
    ("LinkPeople", lambda w: pb.LinkPeopleRequest(
        idempotency_key=key(), person_id=w.stranger, other_id=NO_SUCH_ID,
        kind=pb.LINK_KIND_SIBLING), "UNKNOWN_PERSON"),
    ("RegisterStaff", lambda w: pb.RegisterStaffRequest(
        idempotency_key=key(), name="新员工", service_point_id=NO_SUCH_ID),
     "UNKNOWN_SERVICE_POINT"),
    ("EnrolPerson", lambda w: pb.EnrolPersonRequest(
        idempotency_key=key(), kind=pb.PERSON_KIND_INDIVIDUAL, name="新人",
        id_number=id_card(1950), service_point_id=NO_SUCH_ID), "UNKNOWN_SERVICE_POINT"),
    ("ReverseTransaction", lambda w: pb.ReverseTransactionRequest(
        idempotency_key=key(), seq=NO_SUCH_ID, staff_id=w.staff, reason="错误"),
     "UNKNOWN_ENTRY"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_unknown_things_are_not_found(world: World, method: str,
                                      make: Callable[[World], Any], reason: str) -> None:
    world.api.refused(method, make(world), NOT_FOUND, reason=reason,
                      says=(str(NO_SUCH_ID),))


@pytest.mark.parametrize("category", ["gardening", "", "CLEANING", "打麻将"])
def test_unknown_categories_are_refused(world: World, category: str) -> None:
    error = world.api.refused("RequestOrder", pb.RequestOrderRequest(
        idempotency_key=key(), recipient_id=world.elder, category=category,
        planned_minutes=60, payment_source=pb.PAYMENT_SOURCE_CITY_GRANT,
        requested_by=staff(world.staff)), INVALID, reason="UNKNOWN_CATEGORY")
    # The message lists the city's categories, in Chinese, intact.
    assert "cleaning (助洁)" in error.details()


@pytest.mark.parametrize(("method", "make", "field"), [
    ("GetPerson", lambda w: pb.GetPersonRequest(), "person_id"),
    ("GetOrder", lambda w: pb.GetOrderRequest(), "order_id"),
    ("GetBalance", lambda w: pb.GetBalanceRequest(), "person_id"),
    ("GetHistory", lambda w: pb.GetHistoryRequest(), "person_id"),
    ("AcceptOrder", lambda w: pb.AcceptOrderRequest(idempotency_key=key(),
                                                    volunteer_id=w.volunteer2), "order_id"),
    ("AcceptOrder", lambda w: pb.AcceptOrderRequest(
        idempotency_key=key(), order_id=w.orders[S.REQUESTED]), "volunteer_id"),
    ("RequestOrder", lambda w: _pay(w, 0, pb.PAYMENT_SOURCE_CITY_GRANT), "recipient_id"),
    ("RegisterStaff", lambda w: pb.RegisterStaffRequest(idempotency_key=key(), name="新员工"),
     "service_point_id"),
    ("LinkPeople", lambda w: pb.LinkPeopleRequest(
        idempotency_key=key(), other_id=w.stranger, kind=pb.LINK_KIND_SIBLING), "person_id"),
    ("ReverseTransaction", lambda w: pb.ReverseTransactionRequest(
        idempotency_key=key(), staff_id=w.staff, reason="错误"), "seq"),
    ("VerifyOrder", lambda w: pb.VerifyOrderRequest(
        idempotency_key=key(), order_id=w.orders[S.CHECKED_OUT], verifier=person(0),
        rating=5), "verifier.person_id"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_required_ids_left_zero_are_invalid(world: World, method: str,
                                           make: Callable[[World], Any], field: str) -> None:
    world.api.refused(method, make(world), INVALID, reason="MISSING_FIELD",
                      says=(f"{field} is required",))


@pytest.mark.parametrize(("method", "make"), [
    ("GetPerson", lambda w: pb.GetPersonRequest(person_id=UINT64_MAX)),
    ("GetOrder", lambda w: pb.GetOrderRequest(order_id=INT32_MAX + 1)),
    ("GetOrder", lambda w: pb.GetOrderRequest(order_id=INT64_MAX)),
    ("AcceptOrder", lambda w: pb.AcceptOrderRequest(
        idempotency_key=key(), order_id=w.orders[S.REQUESTED], volunteer_id=UINT64_MAX)),
    ("ListOrders", lambda w: pb.ListOrdersRequest(after_id=INT64_MAX)),
    ("RequestOrder", lambda w: _pay(w, w.parent, pb.PAYMENT_SOURCE_RELATIVE, UINT64_MAX)),
    ("ReverseTransaction", lambda w: pb.ReverseTransactionRequest(
        idempotency_key=key(), seq=UINT64_MAX, staff_id=w.staff, reason="错误")),
    ("GetHistory", lambda w: pb.GetHistoryRequest(person_id=w.volunteer,
                                                  after_seq=INT64_MAX + 1)),
], ids=lambda v: v if isinstance(v, str) else "")
def test_ids_beyond_any_row_are_invalid(world: World, method: str,
                                        make: Callable[[World], Any]) -> None:
    world.api.refused(method, make(world), INVALID, reason="ID_OUT_OF_RANGE",
                      says=("out of range",))


def test_the_largest_possible_ids_are_simply_not_found(world: World) -> None:
    world.api.refused("GetOrder", pb.GetOrderRequest(order_id=INT32_MAX), NOT_FOUND,
                      reason="UNKNOWN_ORDER")
    world.api.refused("ReverseTransaction", pb.ReverseTransactionRequest(
        idempotency_key=key(), seq=INT64_MAX, staff_id=world.staff, reason="错误"),
        NOT_FOUND, reason="UNKNOWN_ENTRY")
    history = world.api.stub.GetHistory(pb.GetHistoryRequest(person_id=world.volunteer,
                                                              after_seq=INT64_MAX))
    assert list(history.entries) == []
    latest = world.api.stub.GetHistory(pb.GetHistoryRequest(
        person_id=world.volunteer, newest_first=True, before_seq=INT64_MAX))
    assert latest.entries and latest == world.api.stub.GetHistory(pb.GetHistoryRequest(
        person_id=world.volunteer, newest_first=True))
    world.api.refused("GetHistory", pb.GetHistoryRequest(
        person_id=world.volunteer, newest_first=True, before_seq=INT64_MAX + 1), INVALID,
        reason="ID_OUT_OF_RANGE", says=("before_seq", "out of range"))


@pytest.mark.parametrize(("make", "reason", "says"), [
    (lambda w: pb.GetHistoryRequest(person_id=w.volunteer, newest_first=True, after_seq=1),
     "AFTER_SEQ_WITH_NEWEST_FIRST", ("after_seq must be 0",)),
    (lambda w: pb.GetHistoryRequest(person_id=w.volunteer, newest_first=True, after_seq=1,
                                    before_seq=5), "AFTER_SEQ_WITH_NEWEST_FIRST", ()),
    (lambda w: pb.GetHistoryRequest(person_id=w.volunteer, before_seq=5),
     "BEFORE_SEQ_NEEDS_NEWEST_FIRST", ("set newest_first",)),
    (lambda w: pb.GetHistoryRequest(person_id=w.volunteer, after_seq=1, before_seq=5),
     "BEFORE_SEQ_NEEDS_NEWEST_FIRST", ()),
], ids=["after-and-newest-first", "after-before-and-newest-first", "before-alone",
        "after-and-before"])
def test_history_paged_both_ways_at_once_is_invalid(world: World, make: Callable[[World], Any],
                                                    reason: str, says: tuple[str, ...]) -> None:
    world.api.refused("GetHistory", make(world), INVALID, reason=reason, says=says)


# ---------------------------------------------------------------- identity numbers

def _bad_check_digit() -> str:
    good = id_card(1950)
    return good[:17] + ("0" if good[17] != "0" else "1")


@pytest.mark.parametrize("number", [
    "", "3201151950", "32011519500101001", "3201151950010100123",
    _bad_check_digit(),
    id_card_with_check_digit("32011519501301001"),  # month 13
    id_card_with_check_digit("32011518500101001"),  # born 1850
    id_card_with_check_digit("32011520990101001"),  # born in the future
    "32011519500101001Y",
    "３２０１１５１９５００１０１００１Ｘ",  # full-width digits
    "32011519500101001\x00",
], ids=["empty", "short", "17-digits", "19-digits", "check-digit", "month-13", "born-1850",
        "born-2099", "check-Y", "full-width", "nul"])
def test_malformed_id_card_numbers_are_refused(world: World, number: str) -> None:
    world.api.refused("EnrolPerson", pb.EnrolPersonRequest(
        idempotency_key=key(), kind=pb.PERSON_KIND_INDIVIDUAL, name="王五",
        id_number=number), INVALID, reason="MALFORMED_ID_NUMBER")


def test_malformed_credit_codes_are_refused(world: World) -> None:
    good = credit_code()
    for code in ["", good[:17], good[:17] + ("0" if good[17] != "0" else "1"),
                 good[:17] + "I"]:
        world.api.refused("EnrolPerson", pb.EnrolPersonRequest(
            idempotency_key=key(), kind=pb.PERSON_KIND_GROUP, name="某公司",
            id_number=code), INVALID, reason="MALFORMED_ID_NUMBER")


def test_enrolling_the_same_person_twice_is_already_exists(world: World) -> None:
    world.api.refused("EnrolPerson", pb.EnrolPersonRequest(
        idempotency_key=key(), kind=pb.PERSON_KIND_INDIVIDUAL, name="张桂兰",
        id_number=world.elder_id_number.lower()), EXISTS, reason="ALREADY_ENROLLED",
        says=(f"person {world.elder}",))


def test_linking_twice_is_already_exists(world: World) -> None:
    world.api.refused("LinkPeople", pb.LinkPeopleRequest(
        idempotency_key=key(), person_id=world.volunteer, other_id=world.parent,
        kind=pb.LINK_KIND_PARENT), EXISTS, reason="ALREADY_LINKED")


def test_registering_a_service_point_code_twice_is_already_exists(world: World) -> None:
    world.api.refused("RegisterServicePoint", pb.RegisterServicePointRequest(
        idempotency_key=key(), code="jn-dongshan", name="另一个站"), EXISTS,
        reason="DUPLICATE_CODE")


# ---------------------------------------------------------------- enums and oneofs

@pytest.mark.parametrize(("method", "make", "says"), [
    ("EnrolPerson", lambda w, v: pb.EnrolPersonRequest(
        idempotency_key=key(), kind=v, name="王五", id_number=id_card(1950)), "kind"),
    ("LinkPeople", lambda w, v: pb.LinkPeopleRequest(
        idempotency_key=key(), person_id=w.stranger, other_id=w.young, kind=v), "kind"),
    ("RequestOrder", lambda w, v: _pay(w, w.elder, v), "payment_source"),
    ("ResolveDispute", lambda w, v: pb.ResolveDisputeRequest(
        idempotency_key=key(), order_id=w.orders[S.DISPUTED], staff_id=w.staff, outcome=v,
        resolution="作废"), "outcome"),
    # For ListOrders an unspecified state means "any": send an unknown one either way.
    ("ListOrders", lambda w, v: pb.ListOrdersRequest(state=pb.OrderState.ValueType(v or 99)),
     "state"),
], ids=lambda v: v if isinstance(v, str) and v[0].isupper() else "")
@pytest.mark.parametrize("value", [0, 99], ids=["unspecified", "unknown"])
def test_unspecified_or_unknown_enums_are_invalid(world: World, method: str,
                                                  make: Callable[[World, int], Any],
                                                  says: str, value: int) -> None:
    reason = "MISSING_FIELD" if value == 0 and method != "ListOrders" else "UNKNOWN_ENUM_VALUE"
    world.api.refused(method, make(world, value), INVALID, reason=reason, says=(says,))


# A request that names no actor is made by its caller (ADR 0016): here a member linked
# to nobody, who may not act for the elder. A staff member the caller is not is refused
# whoever it names.
@pytest.mark.parametrize("method", ["RequestOrder", "VerifyOrder", "CancelOrder"])
def test_a_missing_actor_is_the_caller(world: World, method: str) -> None:
    request: Any = {
        "RequestOrder": pb.RequestOrderRequest(
            idempotency_key=key(), recipient_id=world.elder, category="cleaning",
            planned_minutes=60, payment_source=pb.PAYMENT_SOURCE_CITY_GRANT),
        "VerifyOrder": pb.VerifyOrderRequest(idempotency_key=key(),
                                             order_id=world.orders[S.CHECKED_OUT], rating=5),
        "CancelOrder": pb.CancelOrderRequest(idempotency_key=key(),
                                             order_id=world.orders[S.REQUESTED]),
    }[method]
    stranger = world.api.stub_as(world.api.login(Role.MEMBER, world.stranger))
    with world.api.unchanged(), pytest.raises(grpc.RpcError) as caught:
        getattr(stranger, method)(request, timeout=TIMEOUT)
    assert_status(caught.value, DENIED, reason="NOT_AUTHORISED",
                  says=(f"person {world.stranger}",))


@pytest.mark.parametrize(("method", "make"), [
    ("RequestOrder", lambda w: _pay(w, w.elder, pb.PAYMENT_SOURCE_CITY_GRANT,
                                    by=staff(NO_SUCH_ID))),
    ("ResolveDispute", lambda w: pb.ResolveDisputeRequest(
        idempotency_key=key(), order_id=w.orders[S.DISPUTED], staff_id=NO_SUCH_ID,
        outcome=pb.DISPUTE_OUTCOME_VOID_SERVICE, resolution="作废")),
    ("UpdatePerson", lambda w: _update(w, staff_id=NO_SUCH_ID, priority=True)),
], ids=lambda v: v if isinstance(v, str) else "")
def test_an_actor_the_caller_is_not_is_denied(world: World, method: str,
                                             make: Callable[[World], Any]) -> None:
    world.api.refused(method, make(world), DENIED, reason="ACTOR_NOT_CALLER",
                      says=(f"staff {NO_SUCH_ID}", "is not the caller (operator 1)"))


@pytest.mark.parametrize("rating", [0, 6, -1, 2**31 - 1])
def test_ratings_outside_one_to_five_are_invalid(world: World, rating: int) -> None:
    world.api.refused("VerifyOrder", pb.VerifyOrderRequest(
        idempotency_key=key(), order_id=world.orders[S.CHECKED_OUT],
        verifier=staff(world.staff), rating=rating), INVALID, reason="BAD_RATING")


@pytest.mark.parametrize(("method", "make"), [
    ("ListOrders", lambda w: pb.ListOrdersRequest(limit=-1)),
    ("ListOrders", lambda w: pb.ListOrdersRequest(limit=1001)),
    ("GetHistory", lambda w: pb.GetHistoryRequest(person_id=w.volunteer, limit=-5)),
    ("GetHistory", lambda w: pb.GetHistoryRequest(person_id=w.volunteer, limit=2**31 - 1)),
    ("RecordDueOrders", lambda w: pb.RecordDueOrdersRequest(idempotency_key=key(),
                                                            limit=-1)),
    ("RecordDueOrders", lambda w: pb.RecordDueOrdersRequest(idempotency_key=key(),
                                                            limit=10_001)),
], ids=lambda v: v if isinstance(v, str) else "")
def test_page_sizes_out_of_range_are_invalid(world: World, method: str,
                                            make: Callable[[World], Any]) -> None:
    world.api.refused(method, make(world), INVALID, says=("1000",))


@pytest.mark.parametrize(("field", "value"), [
    ("name", ""), ("name", "   "), ("name", "名" * 65), ("name", "王\x07五"),
    ("phone", "电话"), ("phone", "1" * 21),
])
def test_bad_names_and_phones_are_invalid(world: World, field: str, value: str) -> None:
    request = pb.EnrolPersonRequest(idempotency_key=key(), kind=pb.PERSON_KIND_INDIVIDUAL,
                                    name="王五", id_number=id_card(1950))
    setattr(request, field, value)
    world.api.refused("EnrolPerson", request, INVALID)


def _update(w: World, **fields: Any) -> pb.UpdatePersonRequest:
    request = pb.UpdatePersonRequest(idempotency_key=key(), person_id=w.stranger,
                                     staff_id=w.staff)
    for name, value in fields.items():
        setattr(request, name, value)
    return request


@pytest.mark.parametrize(("make", "code", "reason", "says"), [
    (lambda w: _update(w), INVALID, "NOTHING_TO_UPDATE", ("priority",)),
    (lambda w: _update(w, phone="电话"), INVALID, "MALFORMED_PHONE", ("phone",)),
    (lambda w: _update(w, phone="1" * 21), INVALID, "MALFORMED_PHONE", ("20",)),
    (lambda w: _update(w, priority=True, reason="x" * 501), INVALID, None, ("reason",)),
    (lambda w: _update(w, priority=True, reason="复核\x07"), INVALID, None, ("control",)),
    (lambda w: _update(w, person_id=w.group, priority=True), INVALID,
     "GROUP_CANNOT_BE_PRIORITY", ("group",)),
    (lambda w: _update(w, person_id=0, priority=True), INVALID, "MISSING_FIELD",
     ("person_id",)),
    (lambda w: _update(w, person_id=UINT64_MAX, priority=True), INVALID, "ID_OUT_OF_RANGE",
     ()),
    (lambda w: _update(w, person_id=NO_SUCH_ID, priority=True), NOT_FOUND, "UNKNOWN_PERSON",
     ()),
], ids=["nothing", "phone-not-digits", "phone-too-long", "reason-too-long",
        "reason-control", "group-priority", "no-person", "person-id-too-big",
        "unknown-person"])
def test_bad_person_updates_are_refused(world: World, make: Callable[[World], Any],
                                        code: grpc.StatusCode, reason: str | None,
                                        says: tuple[str, ...]) -> None:
    world.api.refused("UpdatePerson", make(world), code, reason=reason, says=says)


# ---------------------------------------------------------------- idempotency keys

#: An otherwise valid request for every mutating call.
MUTATING: dict[str, Callable[[World], Any]] = {
    "RegisterServicePoint": lambda w: pb.RegisterServicePointRequest(code="new", name="新站"),
    "RegisterStaff": lambda w: pb.RegisterStaffRequest(name="新员工", service_point_id=w.point),
    "EnrolPerson": lambda w: pb.EnrolPersonRequest(
        kind=pb.PERSON_KIND_INDIVIDUAL, name="新人", id_number=id_card(1950)),
    "LinkPeople": lambda w: pb.LinkPeopleRequest(person_id=w.stranger, other_id=w.young,
                                                 kind=pb.LINK_KIND_SIBLING),
    "RequestOrder": lambda w: pb.RequestOrderRequest(
        recipient_id=w.elder, category="cleaning", planned_minutes=60,
        payment_source=pb.PAYMENT_SOURCE_CITY_GRANT, requested_by=staff(w.staff)),
    "AcceptOrder": lambda w: pb.AcceptOrderRequest(order_id=w.orders[S.REQUESTED],
                                                   volunteer_id=w.volunteer2),
    "CheckIn": lambda w: pb.CheckInRequest(order_id=w.orders[S.ACCEPTED]),
    "CheckOut": lambda w: pb.CheckOutRequest(order_id=w.orders[S.CHECKED_IN]),
    "VerifyOrder": lambda w: pb.VerifyOrderRequest(
        order_id=w.orders[S.CHECKED_OUT], verifier=staff(w.staff), rating=5),
    "DisputeOrder": lambda w: pb.DisputeOrderRequest(
        order_id=w.orders[S.VERIFIED], raised_by=person(w.stranger), reason="没来"),
    "ResolveDispute": lambda w: pb.ResolveDisputeRequest(
        order_id=w.orders[S.DISPUTED], staff_id=w.staff,
        outcome=pb.DISPUTE_OUTCOME_UPHOLD_SERVICE, resolution="属实"),
    "CancelOrder": lambda w: pb.CancelOrderRequest(order_id=w.orders[S.REQUESTED],
                                                   cancelled_by=staff(w.staff)),
    "RecordOrder": lambda w: pb.RecordOrderRequest(order_id=w.orders[S.VERIFIED]),
    "RecordDueOrders": lambda w: pb.RecordDueOrdersRequest(),
    "RateOrder": lambda w: pb.RateOrderRequest(order_id=w.orders[S.RECORDED], rating=4),
    "Donate": lambda w: pb.DonateRequest(person_id=w.volunteer, minutes=15),
    "Grant": lambda w: pb.GrantRequest(person_id=w.elder, minutes=60, staff_id=w.staff),
    "ReverseTransaction": lambda w: pb.ReverseTransactionRequest(seq=1, staff_id=w.staff,
                                                                 reason="错误"),
    "MovePerson": lambda w: pb.MovePersonRequest(person_id=w.volunteer, to_node_id="320113"),
    "UpdatePerson": lambda w: pb.UpdatePersonRequest(person_id=w.stranger, staff_id=w.staff,
                                                     phone="13900000000"),
    "GrantConsent": lambda w: pb.GrantConsentRequest(
        payer_id=w.volunteer, grantee_id=w.parent, kind=pb.CONSENT_KIND_STANDING,
        granted_by=staff(w.staff)),
    "RevokeConsent": lambda w: pb.RevokeConsentRequest(consent_id=1,
                                                       revoked_by=staff(w.staff)),
}


def test_every_mutating_call_is_covered() -> None:
    service = pb.DESCRIPTOR.services_by_name["NodeService"]
    mutating = {m.name for m in service.methods
                if "idempotency_key" in m.input_type.fields_by_name}
    assert mutating == set(MUTATING)


@pytest.mark.parametrize("method", sorted(MUTATING))
def test_a_missing_idempotency_key_is_invalid(world: World, method: str) -> None:
    world.api.refused(method, MUTATING[method](world), INVALID,
                      reason="MISSING_IDEMPOTENCY_KEY", says=("idempotency_key",))


@pytest.mark.parametrize("bad_key", ["键", "x" * 65, "a\nb"], ids=["non-ascii", "too-long",
                                                                   "control"])
def test_a_malformed_idempotency_key_is_invalid(world: World, bad_key: str) -> None:
    request = MUTATING["EnrolPerson"](world)
    request.idempotency_key = bad_key
    world.api.refused("EnrolPerson", request, INVALID, reason="BAD_IDEMPOTENCY_KEY")


# ---------------------------------------------------------------- state transitions

#: The service loop, written out independently of the code: which actions each state allows.
ALLOWED = {
    "accept": {S.REQUESTED},
    "check in": {S.ACCEPTED},
    "check out": {S.CHECKED_IN},
    "verify": {S.CHECKED_OUT},
    "dispute": {S.VERIFIED},
    "resolve": {S.DISPUTED},
    "cancel": {S.REQUESTED, S.ACCEPTED, S.CHECKED_IN},
    "record": {S.VERIFIED},
}
ACTIONS: dict[str, tuple[str, Callable[[World, int], Any]]] = {
    "accept": ("AcceptOrder", lambda w, o: pb.AcceptOrderRequest(
        idempotency_key=key(), order_id=o, volunteer_id=w.volunteer)),
    "check in": ("CheckIn", lambda w, o: pb.CheckInRequest(idempotency_key=key(), order_id=o)),
    "check out": ("CheckOut", lambda w, o: pb.CheckOutRequest(idempotency_key=key(),
                                                              order_id=o)),
    "verify": ("VerifyOrder", lambda w, o: pb.VerifyOrderRequest(
        idempotency_key=key(), order_id=o, verifier=staff(w.staff), rating=5)),
    "dispute": ("DisputeOrder", lambda w, o: pb.DisputeOrderRequest(
        idempotency_key=key(), order_id=o, raised_by=staff(w.staff), reason="有疑问")),
    "resolve": ("ResolveDispute", lambda w, o: pb.ResolveDisputeRequest(
        idempotency_key=key(), order_id=o, staff_id=w.staff,
        outcome=pb.DISPUTE_OUTCOME_UPHOLD_SERVICE, resolution="属实")),
    "cancel": ("CancelOrder", lambda w, o: pb.CancelOrderRequest(
        idempotency_key=key(), order_id=o, cancelled_by=staff(w.staff), reason="取消")),
    "record": ("RecordOrder", lambda w, o: pb.RecordOrderRequest(idempotency_key=key(),
                                                                 order_id=o)),
}
FORBIDDEN = [(action, state) for action in ALLOWED for state in S
             if state not in ALLOWED[action] and not already_done(Action(action), state)]


def test_recording_a_recorded_order_again_answers_it_and_changes_nothing(world: World) -> None:
    """The node records due orders by itself: staff recording one after it are not wrong."""
    order_id = world.orders[S.RECORDED]
    request = pb.RecordOrderRequest(idempotency_key=key(), order_id=order_id)
    world.api.prepare("RecordOrder", request)
    with world.api.unchanged(ignore=("idempotency",)):
        order = world.api.call("RecordOrder", request).order
    assert order.state == pb.ORDER_STATE_RECORDED and order.id == order_id
    assert "[ALREADY_RECORDED]" in order.notices[0] and "nothing changed" in order.notices[0]


@pytest.mark.parametrize(("action", "state"), FORBIDDEN,
                         ids=[f"{a.replace(' ', '-')}-from-{s.value}" for a, s in FORBIDDEN])
def test_a_transition_the_state_forbids_is_a_failed_precondition(world: World, action: str,
                                                                 state: OrderState) -> None:
    method, make = ACTIONS[action]
    order_id = world.orders[state]
    world.api.refused(method, make(world, order_id), FAILED, reason="ORDER_STATE",
                      says=(f"order {order_id} is {state.value.replace('_', ' ')}",))


# ---------------------------------------------------------------- the wire itself

def test_an_oversized_message_is_resource_exhausted(world: World) -> None:
    request = pb.EnrolPersonRequest(idempotency_key=key(), kind=pb.PERSON_KIND_INDIVIDUAL,
                                    name="长" * 30_000, id_number=id_card(1950))
    assert request.ByteSize() > 65536
    world.api.refused("EnrolPerson", request, grpc.StatusCode.RESOURCE_EXHAUSTED,
                      says=("larger than max",))


def test_a_message_that_is_not_protobuf_is_invalid(world: World) -> None:
    raw: grpc.UnaryUnaryMultiCallable[bytes, bytes] = world.api.channel.unary_unary(
        "/timebank.v1.NodeService/EnrolPerson")
    for body in (b"\xff\xff\xff", b"\x1a\x02\xff\xfe"):  # corrupt; a name of bad UTF-8
        with world.api.unchanged(), pytest.raises(grpc.RpcError) as caught:
            raw(body, timeout=TIMEOUT)
        assert_status(caught.value, INVALID, reason="MALFORMED_REQUEST",
                      says=("EnrolPerson",))


def test_the_message_limit_is_the_servers_setting(world: World) -> None:
    big = pb.RegisterServicePointRequest(idempotency_key=key(), code="x", name="站" * 400)
    assert 1024 < big.ByteSize() < 65536
    with serving(world.api.app, world.api.clock, max_message_bytes=1024) as small:
        small.refused("RegisterServicePoint", big, grpc.StatusCode.RESOURCE_EXHAUSTED)
        # The limit is on requests: a larger reply (a page of orders, the policy) still goes.
        policy = small.stub.GetPolicy(pb.GetPolicyRequest(), timeout=TIMEOUT)
        assert policy.ByteSize() > 1024


def test_a_second_server_on_a_taken_port_fails_to_start(world: World) -> None:
    with pytest.raises(OSError, match="cannot listen"):
        start_server(world.api.app, f"127.0.0.1:{world.api.port}")
