"""The access checks that need the node's records (ADR 0016): whether a caller may touch
a person or an order, and the actor recorded for them. The rules themselves are
``node.domain.access``'s; this module only looks up what they decide on.

A member is refused before anything about the person is read (so a refusal does not
say whether the person exists); staff are refused for a person of another service point.
"""

from __future__ import annotations

from node.domain.access import (
    Actor,
    Principal,
    Role,
    Subject,
    acting,
    may_call,
    may_move,
    may_touch,
)
from node.usecases.app import Tx
from runtime.errors import PermissionDenied


def require_call(rpc: str, who: Principal) -> None:
    refusal = may_call(rpc, who)
    if refusal is not None:
        raise PermissionDenied(refusal, "ROLE_NOT_ALLOWED")


def _linked(tx: Tx, person_id: int, member_id: int) -> frozenset[int]:
    return (frozenset({member_id}) if tx.repo.people.relations(person_id, member_id)
            else frozenset())


def require_person(tx: Tx, who: Principal, person_id: int) -> None:
    """``who`` may read or act on ``person_id``'s records (``may_touch``)."""
    if who.role is Role.MEMBER:
        subject = Subject(person_id, 0, _linked(tx, person_id, who.person_id))
    elif who.role is Role.STAFF:
        subject = Subject(person_id, tx.repo.people.get(person_id).service_point_id or 0)
    else:
        return
    refusal = may_touch(who, subject)
    if refusal is not None:
        raise PermissionDenied(refusal, "NOT_AUTHORISED" if who.role is Role.MEMBER
                               else "NOT_YOUR_SERVICE_POINT")


def require_service_point(who: Principal, point_id: int) -> None:
    """Staff enrol people at their own service point (or at none)."""
    refusal = may_touch(who, Subject(0, point_id))
    if refusal is not None:
        raise PermissionDenied(refusal, "NOT_YOUR_SERVICE_POINT")


def require_move(tx: Tx, who: Principal, person_id: int, to_point: int) -> None:
    """``who`` may move ``person_id`` to service point ``to_point`` (0: none), as
    ``may_move`` says; PERMISSION_DENIED ``MOVE_NOT_ALLOWED`` otherwise. After
    ``require_person``: whether the point exists is the use-case's to say."""
    subject = Subject(person_id, tx.repo.people.get(person_id).service_point_id or 0)
    refusal = may_move(who, subject, to_point)
    if refusal is not None:
        raise PermissionDenied(refusal, "MOVE_NOT_ALLOWED")


def require_order(tx: Tx, who: Principal, order_id: int) -> None:
    """``who`` may read or act on the order: staff of its recipient's service point;
    a member who receives, serves or pays for it, or acts for its recipient."""
    if who.role not in (Role.STAFF, Role.MEMBER):
        return
    order = tx.repo.orders.get(order_id)
    if who.role is Role.MEMBER and who.person_id in (order.volunteer_id, order.payer_id):
        return
    require_person(tx, who, order.recipient_id)


def require_claim(tx: Tx, who: Principal, order_id: int, person_id: int) -> None:
    """Staff follow a claim only as far as they may its people: the order here it pays
    for (a redemption this district is owed for), else the person here whose hours it
    moves; a claim naming neither is the operator's. Other roles: ``may_call`` alone."""
    if who.role is not Role.STAFF:
        return
    if order_id:
        require_order(tx, who, order_id)
    elif person_id:
        require_person(tx, who, person_id)
    else:
        raise PermissionDenied(f"这笔账目不涉及本服务点的人 / claim of no one at {who.label}'s "
                               "service point: the operator follows it", "NOT_YOUR_SERVICE_POINT")


def require_consent(tx: Tx, who: Principal, consent_id: int) -> None:
    """``who`` may act on a consent: whoever may act on its payer's records."""
    require_person(tx, who, tx.repo.consents.get(consent_id).payer_id)


def require_entry(tx: Tx, who: Principal, seq: int) -> None:
    """Staff reverse only entries that touch no one outside their service point (the
    people whose hours the entry moved)."""
    if who.role is not Role.STAFF:
        return
    stored = tx.repo.ledger.entry(seq)
    if stored is None:
        return  # the use-case says NOT_FOUND
    for posting in stored.entry.postings:
        if posting.account.person_ref is None:
            continue
        record = tx.repo.ledger.account(posting.account.code)
        if record is not None and record.person_id:
            require_person(tx, who, record.person_id)


def actor(who: Principal, person_id: int = 0, staff_id: int = 0) -> Actor:
    """The recorded actor of a call by ``who`` whose request names this actor (none:
    the caller); PERMISSION_DENIED if the request names someone the caller is not."""
    found = acting(who, person_id, staff_id)
    if isinstance(found, str):
        raise PermissionDenied(found, "ACTOR_NOT_CALLER")
    return found


def actor_for(tx: Tx, who: Principal, person_id: int = 0, staff_id: int = 0) -> Actor:
    """``actor``, and staff acting for a person may act for that person at all."""
    found = actor(who, person_id, staff_id)
    if found.person_id and found.by:
        require_person(tx, who, found.person_id)
    return found
