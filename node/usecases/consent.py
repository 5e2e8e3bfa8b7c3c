"""Consent before someone else's hours are spent (ADR 0017): grant, revoke, list, and
the check the payer's home node makes before it holds a relative's hours.

The check runs where the hours are: on this node for a payer it keeps, when an order
is requested (refused early) and again when it is accepted, in the transaction that
holds the minutes (``require`` then ``spend``); and in ``claims._decide_redemption``
when another district asks for them. A one-time confirmation is used in the same
transaction as the hold it pays, so a retry (idempotency key, or a delivery already in
the inbox) or a crash never uses it twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from node.domain import consent as model
from node.domain.consent import Consent, ConsentKind, Cover
from node.domain.orders import OrderState, PaymentSource, PersonKind
from node.domain.policy import Relation
from node.storage.consents import ConsentUseRecord
from node.storage.people import PersonRecord
from node.usecases.app import Tx
from node.usecases.people import acts_for, city_ref, require_actor
from node.usecases.views import Actor
from runtime.errors import FailedPrecondition, InvalidArgument, PermissionDenied

MAX_LIST = 100
_PERSON_REF = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class ConsentView:
    """A consent as an operator sees it: ``grantee_id`` is the person's id here (0: not
    enrolled on this node, named by PersonRef only); ``in_force``: it pays now."""

    consent: Consent
    grantee_id: int
    in_force: bool


def _view(tx: Tx, c: Consent) -> ConsentView:
    grantee = tx.repo.people.by_ref(c.grantee_ref)
    return ConsentView(c, 0 if grantee is None else grantee.id, c.in_force(tx.now))


def _home_payer(tx: Tx, payer_id: int) -> PersonRecord:
    payer = tx.repo.people.get(payer_id)
    if payer.visitor:
        raise FailedPrecondition(
            f"付款人的时间存于 {payer.home_node_id} 区，同意须在该区登记 (person {payer.id}'s "
            f"hours are kept in district {payer.home_node_id}: their consent is granted "
            "there, where the hours are)", "NOT_HOME_DISTRICT")
    return payer


def _by(tx: Tx, actor: Actor, payer: PersonRecord, grantee_ref: str,
        what: tuple[str, str], *, granting: bool) -> str:
    """Who acts for the payer, as recorded: the payer themself, someone the payer made
    their proxy (委托人), or staff recording it for them ("staff:3 for person:5"). Other
    family may revoke (that only protects the payer) but never grant: a sibling cannot
    give away the payer's hours. The person whose services the consent pays for never
    grants or revokes it for the payer."""
    require_actor(tx, actor)
    if actor.person_id == payer.id:
        return actor.label
    if actor.person_id:
        me = tx.repo.people.get(actor.person_id)
        allowed = (Relation.PROXY in tx.repo.people.relations(payer.id, actor.person_id)
                   if granting else acts_for(tx, actor, payer.id))
        if me.person_ref == grantee_ref or not allowed:
            raise PermissionDenied(
                f"只有付款人本人、其代理人或工作人员可以{what[0]} (person {actor.person_id} may "
                f"not {what[1]} for person {payer.id}: only the payer, their proxy"
                f"{'' if granting else ' or family'}, or staff may, and never the person "
                "the consent pays for)", "NOT_AUTHORISED")
    return f"{actor.label} for person:{payer.id}"


def _grantee(tx: Tx, grantee_id: int, grantee_ref: str, grantee_id_number: str) -> str:
    """The PersonRef the consent is for, named one way of three: a person id on this
    node; a PersonRef; or an ID card number, from which the ref is derived as enrolment
    derives it (the city secret; the card's check digit validated), so the payer can name
    a relative enrolled in another district by the number they know."""
    if sum(map(bool, (grantee_id, grantee_ref, grantee_id_number))) != 1:
        raise InvalidArgument("请指定被授权人: 本区人员编号、PersonRef 或身份证号之一 (name whom "
                              "the consent is for: a person id on this node, a PersonRef, or "
                              "their ID card number, exactly one)", "GRANTEE_REQUIRED")
    if grantee_id:
        return tx.repo.people.get(grantee_id).person_ref
    if grantee_id_number:
        return city_ref(tx.node, PersonKind.INDIVIDUAL, grantee_id_number)
    ref = grantee_ref.strip().lower()
    if not _PERSON_REF.fullmatch(ref):
        raise InvalidArgument("PersonRef 为 64 位十六进制 (a PersonRef is 64 hexadecimal "
                              "characters)", "MALFORMED_PERSON_REF")
    return ref


def grant_consent(tx: Tx, payer_id: int, grantee_id: int, grantee_ref: str,
                  kind: ConsentKind, max_minutes: int, total_minutes: int,
                  until: datetime | None, order_id: int, granted_by: Actor, *,
                  grantee_id_number: str = "") -> ConsentView:
    """The payer (or whoever acts for them) lets their hours pay for one person's
    services: standing, or once (``order_id``: for that order on this node only). The
    person is named by exactly one of ``grantee_id`` (enrolled here), ``grantee_ref`` and
    ``grantee_id_number`` (their ID card number: the ref is derived from it)."""
    payer = _home_payer(tx, payer_id)
    ref = _grantee(tx, grantee_id, grantee_ref, grantee_id_number)
    if ref == payer.person_ref:
        raise InvalidArgument("本人使用自己的时间无需同意 (a person's own hours need no consent)",
                              "CONSENT_TO_SELF")
    label = _by(tx, granted_by, payer, ref, ("授予同意", "grant consent"),
                granting=True)
    t = model.terms(kind, max_minutes, total_minutes, until, order_id or None, tx.now,
                    tx.repo.consents.active_count(payer.id, tx.now))
    if order_id:
        order = tx.repo.orders.get(order_id)
        recipient = tx.repo.people.get(order.recipient_id)
        if (order.payment_source != PaymentSource.RELATIVE.value
                or order.payer_id != payer.id or recipient.person_ref != ref):
            raise InvalidArgument(f"订单 {order.id} 不是由该付款人为该人付款 (order {order.id} "
                                  "is not paid with this payer's hours for this person)",
                                  "ORDER_NOT_THEIRS")
        if order.state != OrderState.REQUESTED.value:
            raise FailedPrecondition(f"订单 {order.id} 已{order.state} (order {order.id} is "
                                     f"{order.state}; a confirmation is for an order not yet "
                                     "accepted)", "ORDER_NOT_REQUESTED")
    new = Consent(0, payer.id, ref, t.kind, model.ConsentState.ACTIVE, t.max_minutes,
                  t.total_minutes, 0, tx.now, t.expires_at, label[:model.MAX_ACTOR_CHARS],
                  t.order_id)
    return _view(tx, tx.repo.consents.get(tx.repo.consents.add(new)))


def revoke_consent(tx: Tx, consent_id: int, revoked_by: Actor) -> ConsentView:
    """No new redemption is paid under it from now on; minutes held under it stay held."""
    found = tx.repo.consents.get(consent_id)
    payer = tx.repo.people.get(found.payer_id)
    label = _by(tx, revoked_by, payer, found.grantee_ref, ("撤销同意", "revoke consent"),
                granting=False)
    after = model.revoked(found, tx.now, label[:model.MAX_ACTOR_CHARS])
    tx.repo.consents.update(found, after)
    return _view(tx, after)


def list_consents(tx: Tx, payer_id: int, after_id: int, limit: int) -> list[ConsentView]:
    if not 1 <= limit <= MAX_LIST:
        raise InvalidArgument(f"list 1 to {MAX_LIST} consents at a time")
    tx.repo.people.get(payer_id)
    return [_view(tx, c) for c in tx.repo.consents.of_payer(payer_id, after_id=after_id,
                                                            limit=limit)]


# ------------------------------------------------------------------ the check


def cover(tx: Tx, payer: PersonRecord, grantee_ref: str, minutes: int,
          order_id: int | None = None) -> Cover:
    """Which of the payer's consents pays for this redemption now, or why none does."""
    return model.cover(tx.repo.consents.for_grantee(payer.id, grantee_ref), payer.id,
                       grantee_ref, minutes, tx.now, order_id)


def refusal(order_id: int, missing: str) -> FailedPrecondition:
    """The refusal of an order no consent covers, saying what is missing; no names (it
    is logged)."""
    zh, en = model.MISSING[missing]
    what_zh, what_en = (f"订单 {order_id}", f"order {order_id}") if order_id else (
        "该服务", "the service asked for")
    return FailedPrecondition(
        f"{zh}，{what_zh}不能使用其时间 ({what_en}: {en}; the payer, their "
        "proxy or family, or staff records consent on the payer's home node with "
        "`timebank node consent grant`)", "NO_CONSENT")


def require(tx: Tx, payer: PersonRecord, grantee_ref: str, minutes: int,
            order_id: int) -> Consent:
    """The consent that pays for an order, or FAILED_PRECONDITION NO_CONSENT."""
    found = cover(tx, payer, grantee_ref, minutes, order_id)
    if found.consent is None:
        raise refusal(order_id, found.missing)
    return found.consent


def self_confirmation(tx: Tx, payer: PersonRecord, grantee_ref: str, minutes: int,
                      order_id: int, by: Actor) -> Consent:
    """The payer asked for the service themself: their request is their one-time
    confirmation for that order, recorded as such. Bound to the order, it does not count
    against ``MAX_ACTIVE_CONSENTS`` (the orders bound these)."""
    t = model.terms(ConsentKind.ONCE, minutes, 0, None, order_id, tx.now, 0)
    new = Consent(0, payer.id, grantee_ref, t.kind, model.ConsentState.ACTIVE, t.max_minutes,
                  0, 0, tx.now, t.expires_at, by.label, t.order_id)
    return tx.repo.consents.get(tx.repo.consents.add(new))


def spend(tx: Tx, consent: Consent, minutes: int, *, order_id: int | None = None,
          claim_id: str | None = None) -> None:
    """Record that ``consent`` pays ``minutes`` held for an order or a claim: in the
    transaction of the hold, once (a one-time confirmation is used up)."""
    tx.repo.consents.update(consent, model.used(consent, minutes))
    tx.repo.consents.add_use(ConsentUseRecord(consent.id, order_id, claim_id, minutes, tx.now))
