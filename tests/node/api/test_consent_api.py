"""Consent before a relative's hours are spent (ADR 0017), through a real gRPC server on
SQLite and PostgreSQL: refused without it, allowed with it, refused once revoked,
expired or exceeded; a one-time confirmation pays once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from node.domain.access import Role
from node.domain.orders import PersonKind
from node.usecases import people
from tests.helpers import id_card
from tests.node.api.support import TIMEOUT, Api, key, person, staff
from timebank.v1 import node_pb2 as pb

FAILED = grpc.StatusCode.FAILED_PRECONDITION
DENIED = grpc.StatusCode.PERMISSION_DENIED
INVALID = grpc.StatusCode.INVALID_ARGUMENT
RELATIVE = pb.PAYMENT_SOURCE_RELATIVE


@dataclass
class Family:
    desk: int
    daughter: int  # 王芳: 240 min earned
    mother: int  # 李秀英, linked as the daughter's parent
    volunteer: int


@pytest.fixture
def family(api: Api) -> Family:
    point = api.stub.RegisterServicePoint(pb.RegisterServicePointRequest(
        idempotency_key=key(), code="jn-ds", name="东山街道为老服务站"),
        timeout=TIMEOUT).service_point
    desk = api.stub.RegisterStaff(pb.RegisterStaffRequest(
        idempotency_key=key(), name="陈静", service_point_id=point.id), timeout=TIMEOUT).staff.id
    elder = api.enrol("赵大爷", 1936, priority=True).id
    daughter = api.enrol("王芳", 1965).id
    mother = api.enrol("李秀英", 1938).id
    volunteer = api.enrol("张伟", 1990).id
    api.link(daughter, mother, pb.LINK_KIND_PARENT, desk)
    earned = api.accept(api.request(elder, by=staff(desk), minutes=240).id, daughter)
    api.check_in(earned.id)
    api.check_out(earned.id, after_minutes=240)
    api.verify(earned.id, staff(desk))
    api.clock.advance(timedelta(days=7))
    api.record(earned.id)
    assert api.balance(daughter).available_minutes == 240
    return Family(desk, daughter, mother, volunteer)


def _grant(api: Api, f: Family, by: pb.Actor, *, once: bool = False, minutes: int = 0,
           total: int = 0, until: timedelta | None = None, order: int = 0) -> pb.Consent:
    request = pb.GrantConsentRequest(
        idempotency_key=key(), payer_id=f.daughter, grantee_id=f.mother,
        kind=pb.CONSENT_KIND_ONCE if once else pb.CONSENT_KIND_STANDING,
        max_minutes=minutes, total_minutes=total, order_id=order, granted_by=by)
    if until is not None:
        ts = Timestamp()
        ts.FromDatetime(api.clock.now() + until)
        request.expires_at.CopyFrom(ts)
    granted: pb.Consent = api.call("GrantConsent", request).consent
    return granted


def _meals(f: Family, minutes: int = 60) -> pb.RequestOrderRequest:
    return pb.RequestOrderRequest(
        idempotency_key=key(), recipient_id=f.mother, category="meals",
        planned_minutes=minutes, payment_source=RELATIVE, payer_id=f.daughter,
        requested_by=staff(f.desk))


def _history_memos(api: Api, person_id: int) -> list[str]:
    found = api.stub.GetHistory(pb.GetHistoryRequest(person_id=person_id), timeout=TIMEOUT)
    return [e.transaction.memo for e in found.entries]


def test_standing_consent_pays_until_revoked(api: Api, family: Family) -> None:
    f = family
    # without the daughter's consent, staff cannot spend her hours for her mother
    api.refused("RequestOrder", _meals(f), FAILED, reason="NO_CONSENT",
                says=("付款人未同意", "has not consented"))
    # nor can the mother consent for her daughter: the consent is the payer's
    api.refused("GrantConsent", pb.GrantConsentRequest(
        idempotency_key=key(), payer_id=f.daughter, grantee_id=f.mother,
        kind=pb.CONSENT_KIND_STANDING, granted_by=person(f.mother)), DENIED,
        reason="NOT_AUTHORISED")
    # staff record her standing consent (she has no phone): both are recorded
    granted = _grant(api, f, staff(f.desk))
    assert granted.in_force and granted.state == pb.CONSENT_STATE_ACTIVE
    assert granted.granted_by == f"staff:{f.desk} for person:{f.daughter}"
    assert granted.grantee_id == f.mother and len(granted.grantee_ref) == 64
    order = api.call("RequestOrder", _meals(f)).order
    order = api.accept(order.id, f.volunteer)
    assert order.held_minutes == 60 and order.consent_id == granted.id
    # the consent is part of the record: the ledger entry names it
    api.check_in(order.id)
    api.check_out(order.id, after_minutes=60)
    api.verify(order.id, person(f.mother))
    api.clock.advance(timedelta(days=7))
    api.record(order.id)
    assert f"order {order.id} (consent {granted.id})" in _history_memos(api, f.daughter)
    listed = api.stub.ListConsents(pb.ListConsentsRequest(payer_id=f.daughter),
                                   timeout=TIMEOUT).consents
    assert [(c.id, c.used_minutes) for c in listed] == [(granted.id, 60)]

    # an order accepted before she revokes keeps its hold; no new one is paid
    held = api.accept(api.call("RequestOrder", _meals(f, 30)).order.id, f.volunteer)
    waiting = api.call("RequestOrder", _meals(f, 30)).order
    revoked = api.call("RevokeConsent", pb.RevokeConsentRequest(
        idempotency_key=key(), consent_id=granted.id, revoked_by=person(f.daughter))).consent
    assert revoked.state == pb.CONSENT_STATE_REVOKED and not revoked.in_force
    assert revoked.revoked_by == f"person:{f.daughter}"
    assert api.order(held.id).held_minutes == 30
    api.refused("RequestOrder", _meals(f), FAILED, reason="NO_CONSENT",
                says=("撤销", "revoked"))
    api.refused("AcceptOrder", pb.AcceptOrderRequest(
        idempotency_key=key(), order_id=waiting.id, volunteer_id=f.volunteer), FAILED,
        reason="NO_CONSENT")
    shown = api.order(waiting.id)
    assert any("NO_CONSENT" in n and "revoked" in n for n in shown.notices)
    api.refused("RevokeConsent", pb.RevokeConsentRequest(
        idempotency_key=key(), consent_id=granted.id, revoked_by=person(f.daughter)),
        FAILED, reason="CONSENT_NOT_ACTIVE")


def test_a_one_time_confirmation_pays_once(api: Api, family: Family) -> None:
    f = family
    once = _grant(api, f, person(f.daughter), once=True, minutes=30)
    assert once.kind == pb.CONSENT_KIND_ONCE and once.max_minutes == 30
    api.refused("RequestOrder", _meals(f, 45), FAILED, reason="NO_CONSENT",
                says=("每单上限", "minutes per order"))
    first, second = api.call("RequestOrder", _meals(f, 30)).order, api.call("RequestOrder",
                                                                      _meals(f, 30)).order
    accept = pb.AcceptOrderRequest(idempotency_key=key(), order_id=first.id,
                                   volunteer_id=f.volunteer)
    assert api.call("AcceptOrder", accept).order.consent_id == once.id
    assert api.call("AcceptOrder", accept).order.consent_id == once.id  # a retry: the same answer
    api.refused("AcceptOrder", pb.AcceptOrderRequest(
        idempotency_key=key(), order_id=second.id, volunteer_id=f.volunteer), FAILED,
        reason="NO_CONSENT", says=("已用过", "used already"))
    assert api.balance(f.daughter).held_minutes == 30
    # a confirmation for exactly that order lets it go ahead
    for_it = _grant(api, f, person(f.daughter), once=True, minutes=30, order=second.id)
    assert api.accept(second.id, f.volunteer).consent_id == for_it.id
    used = {c.id: c.state for c in api.stub.ListConsents(
        pb.ListConsentsRequest(payer_id=f.daughter), timeout=TIMEOUT).consents}
    assert used == {once.id: pb.CONSENT_STATE_USED, for_it.id: pb.CONSENT_STATE_USED}


def test_the_payers_own_request_is_their_confirmation(api: Api, family: Family) -> None:
    f = family
    order = api.call("RequestOrder", pb.RequestOrderRequest(
        idempotency_key=key(), recipient_id=f.mother, category="meals", planned_minutes=60,
        payment_source=RELATIVE, payer_id=f.daughter, requested_by=person(f.daughter))).order
    accepted = api.accept(order.id, f.volunteer)
    (recorded,) = api.stub.ListConsents(pb.ListConsentsRequest(payer_id=f.daughter),
                                        timeout=TIMEOUT).consents
    assert accepted.consent_id == recorded.id and recorded.order_id == order.id
    assert recorded.granted_by == f"person:{f.daughter}"


def test_bounds_of_a_standing_consent(api: Api, family: Family) -> None:
    f = family
    _grant(api, f, staff(f.desk), minutes=60, total=90, until=timedelta(days=2))
    api.refused("RequestOrder", _meals(f, 75), FAILED, reason="NO_CONSENT",
                says=("minutes per order",))
    api.accept(api.call("RequestOrder", _meals(f, 60)).order.id, f.volunteer)
    api.refused("RequestOrder", _meals(f, 45), FAILED, reason="NO_CONSENT",
                says=("总额", "total"))
    api.accept(api.call("RequestOrder", _meals(f, 30)).order.id, f.volunteer)  # 90 in all
    _grant(api, f, staff(f.desk), until=timedelta(days=1))
    api.clock.advance(timedelta(days=3))
    api.refused("RequestOrder", _meals(f, 15), FAILED, reason="NO_CONSENT",
                says=("过期", "expired"))


@pytest.mark.parametrize(("change", "reason"), [
    ({"until": timedelta(days=-1)}, "CONSENT_ENDS_IN_PAST"),
    ({"until": timedelta(days=400)}, "CONSENT_TOO_LONG"),
    ({"once": True}, "MINUTES_OUT_OF_RANGE"),  # a confirmation names its minutes
    ({"minutes": 10**9}, "MINUTES_OUT_OF_RANGE"),
    ({"order": 1}, "ORDER_NEEDS_ONCE"),
])
def test_bad_consents_are_refused(api: Api, family: Family, change: dict[str, object],
                                  reason: str) -> None:
    api.login(Role.STAFF, family.desk)  # the desk's session, before the snapshot
    with api.unchanged(), pytest.raises(grpc.RpcError) as e:
        _grant(api, family, staff(family.desk), **change)  # type: ignore[arg-type]
    assert e.value.code() == INVALID
    assert reason in (e.value.details() or "") or reason == _reason(e.value)


def _reason(error: grpc.RpcError) -> str:
    from tests.node.api.support import error_info

    info = error_info(error)
    return "" if info is None else info.reason


def test_a_consent_names_one_grantee_not_the_payer(api: Api, family: Family) -> None:
    f = family
    api.refused("GrantConsent", pb.GrantConsentRequest(
        idempotency_key=key(), payer_id=f.daughter, grantee_id=f.mother,
        grantee_ref="a" * 64, kind=pb.CONSENT_KIND_STANDING, granted_by=staff(f.desk)),
        INVALID, reason="GRANTEE_REQUIRED")
    api.refused("GrantConsent", pb.GrantConsentRequest(
        idempotency_key=key(), payer_id=f.daughter, grantee_ref="a" * 64,
        grantee_id_number=id_card(1938), kind=pb.CONSENT_KIND_STANDING,
        granted_by=staff(f.desk)), INVALID, reason="GRANTEE_REQUIRED")
    api.refused("GrantConsent", pb.GrantConsentRequest(
        idempotency_key=key(), payer_id=f.daughter, grantee_id=f.daughter,
        kind=pb.CONSENT_KIND_STANDING, granted_by=staff(f.desk)), INVALID,
        reason="CONSENT_TO_SELF")
    api.refused("GrantConsent", pb.GrantConsentRequest(
        idempotency_key=key(), payer_id=f.daughter, grantee_ref="not a ref",
        kind=pb.CONSENT_KIND_STANDING, granted_by=staff(f.desk)), INVALID,
        reason="MALFORMED_PERSON_REF")
    for _ in range(20):
        _grant(api, f, staff(f.desk))
    api.refused("GrantConsent", pb.GrantConsentRequest(
        idempotency_key=key(), payer_id=f.daughter, grantee_id=f.mother,
        kind=pb.CONSENT_KIND_STANDING, granted_by=staff(f.desk)), FAILED,
        reason="TOO_MANY_CONSENTS")


def test_a_member_names_a_relative_elsewhere_by_id_number(api: Api, family: Family) -> None:
    """The daughter, signed in as herself, consents for her father enrolled in 鼓楼区 only:
    she knows his ID card number, not his PersonRef. The node derives the ref; a retry
    under the same key is the same consent, not a second one."""
    f = family
    father = id_card(1936, "320106")
    member = api.stub_as(api.login(Role.MEMBER, f.daughter))
    request = pb.GrantConsentRequest(
        idempotency_key=key(), payer_id=f.daughter, grantee_id_number=father.lower(),
        kind=pb.CONSENT_KIND_STANDING, max_minutes=120, granted_by=person(f.daughter))
    granted = member.GrantConsent(request, timeout=TIMEOUT).consent
    assert granted.in_force and granted.granted_by == f"person:{f.daughter}"
    assert granted.grantee_id == 0  # not enrolled here: named by PersonRef
    assert granted.grantee_ref == people.city_ref(api.app.node, PersonKind.INDIVIDUAL, father)
    again = member.GrantConsent(request, timeout=TIMEOUT).consent
    assert again == granted
    listed = api.stub.ListConsents(pb.ListConsentsRequest(payer_id=f.daughter),
                                   timeout=TIMEOUT).consents
    assert [c.id for c in listed] == [granted.id]


def test_a_confirmation_is_used_once_by_concurrent_acceptances(api: Api,
                                                               family: Family) -> None:
    """Two orders covered by one one-time confirmation, accepted at the same moment from
    two clients: the hold and the use are one transaction, so exactly one is paid."""
    from concurrent.futures import ThreadPoolExecutor

    f = family
    once = _grant(api, f, person(f.daughter), once=True, minutes=30)
    orders = [api.call("RequestOrder", _meals(f, 30)).order.id for _ in range(4)]

    def accept(order_id: int) -> str:
        try:
            api.accept(order_id, f.volunteer)
            return "ok"
        except grpc.RpcError as e:
            assert e.code() == FAILED and _reason(e) == "NO_CONSENT", e
            return "NO_CONSENT"

    with ThreadPoolExecutor(4) as pool:
        outcomes = sorted(pool.map(accept, orders))
    assert outcomes == ["NO_CONSENT"] * 3 + ["ok"]
    assert api.balance(f.daughter).held_minutes == 30
    (used,) = api.stub.ListConsents(pb.ListConsentsRequest(payer_id=f.daughter),
                                    timeout=TIMEOUT).consents
    assert (used.id, used.state, used.used_minutes) == (once.id, pb.CONSENT_STATE_USED, 30)


def test_family_may_revoke_but_only_the_payers_proxy_may_grant(api: Api,
                                                                family: Family) -> None:
    """A brother linked to the payer as family cannot give her hours away (nothing is
    granted); once she names him her proxy (委托人) he may, and the record says he acted
    for her. Family may always withdraw a consent: that only protects the payer."""
    f = family
    brother = api.enrol("王强", 1968).id
    api.link(f.daughter, brother, pb.LINK_KIND_SIBLING, f.desk)
    request = pb.GrantConsentRequest(
        idempotency_key=key(), payer_id=f.daughter, grantee_id=f.mother,
        kind=pb.CONSENT_KIND_STANDING, max_minutes=60, granted_by=person(brother))
    api.refused("GrantConsent", request, DENIED, reason="NOT_AUTHORISED",
                says=("代理人", "their proxy, or staff"))
    standing = _grant(api, f, staff(f.desk))
    revoked: pb.Consent = api.call("RevokeConsent", pb.RevokeConsentRequest(
        idempotency_key=key(), consent_id=standing.id, revoked_by=person(brother))).consent
    assert revoked.state == pb.CONSENT_STATE_REVOKED
    assert revoked.revoked_by == f"person:{brother} for person:{f.daughter}"

    api.link(f.daughter, brother, pb.LINK_KIND_PROXY, f.desk)
    request.idempotency_key = key()
    granted: pb.Consent = api.call("GrantConsent", request).consent
    assert granted.in_force
    assert granted.granted_by == f"person:{brother} for person:{f.daughter}"
