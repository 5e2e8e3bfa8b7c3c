"""A serving district whose payment claim is refused NOT_HOME_DISTRICT (the payer moved):
what it does with each answer the city directory can give, on SQLite and PostgreSQL.

The node here is the serving district (320115); the payer's hours were kept in 320106 as
far as it knew. The clearinghouse's refusal is applied as the link applies it
(``claims.apply_refusal``); the directory's answer is handed in as the link's rehomer
hands it (``orders.redirect_payment``). tests/federation and tests/city show the same
with a real clearinghouse and directory.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from clearinghouse.bureau import issue_admission
from node.domain.claims import ClaimState, Reason
from node.domain.directory import HomeLookup
from node.domain.orders import OrderState, PaymentSource, PersonKind
from node.usecases import admissions, claims, orders, people
from node.usecases.app import NodeApp
from node.usecases.views import Actor, OrderView
from runtime.errors import FailedPrecondition
from tests.helpers import assert_ledger_ok, enrol, id_card
from timebank.admissions import verify_act
from timebank.keys import SigningKey, public_key
from timebank.v1 import clearing_pb2 as pb

OLD, NEW, OTHER = "320106", "320113", "320111"


CITY_KEY = SigningKey(b"rehoming test: the city root".ljust(32, b"."))


def _certificate(node_id: str) -> bytes:
    """The city's admission of ``node_id`` (with a key of its own), as a node stores it."""
    key = public_key(SigningKey(f"rehoming test: {node_id}".encode().ljust(32, b".")))
    signed = issue_admission(CITY_KEY, node_id, f"区{node_id}", key, 1,
                             datetime(2026, 1, 1, tzinfo=UTC))
    return pb.Envelope(kind=signed.kind, body=signed.body, signer=signed.signer,
                       key_id=signed.key_id, signature=signed.signature).SerializeToString()


@pytest.fixture
def app(node_app: NodeApp) -> NodeApp:
    """A federated node that knows the city's key and has verified its admissions of
    this district and the three others (a claim with an unadmitted one is refused)."""
    found = NodeApp(node_app.db, node_app.policy, node_app.clock,
                    replace(node_app.node, federated=True, city_key=public_key(CITY_KEY)))
    found.execute(admissions.record,
                  [verify_act(_certificate(n), public_key(CITY_KEY))
                   for n in (found.node.node_id, OLD, NEW, OTHER)])
    return found


def _accepted(app: NodeApp) -> tuple[OrderView, int]:
    """An elder visiting here, paying with her own hours kept in OLD: the order is
    accepted and its claim proposed to OLD."""
    elder = app.execute(people.enrol_person, PersonKind.INDIVIDUAL, "孙秀兰",
                        id_card(1940, OLD), "", False, 0, OLD).id
    volunteer = enrol(app, "张伟", 1990).id
    order = app.execute(orders.request_order, elder, "meals", 45, PaymentSource.OWN, 0,
                        Actor(person_id=elder), "")
    return app.execute(orders.accept_order, order.record.id, volunteer), elder


def _refused(app: NodeApp, claim_id: str, reason: str = "NOT_HOME_DISTRICT") -> None:
    """The clearinghouse refuses the claim's proposal for good."""
    [message] = [m for m in app.query(claims.outbox_due, 100) if m.claim_id == claim_id]
    app.execute(claims.apply_refusal, message.id, "FAILED_PRECONDITION", reason,
                "district is not this person's home; look the person up again")


def _order(app: NodeApp, order_id: int) -> OrderView:
    return app.query(orders.get_order, order_id)


def test_a_refusal_leaves_the_order_waiting_for_the_directory(app: NodeApp) -> None:
    order, _ = _accepted(app)
    claim_id = order.record.claim_id or ""
    _refused(app, claim_id)

    waiting = _order(app, order.record.id)
    assert waiting.record.state == OrderState.ACCEPTED and not waiting.record.cancel_reason
    assert any("正在查询付款人的新户籍区" in n and OLD in n for n in waiting.notices)
    [question] = app.query(orders.awaiting_home, 10)
    assert (question.order_id, question.claim_id) == (order.record.id, claim_id)
    assert app.query(claims.clearing_view).awaiting_home == 1
    with pytest.raises(FailedPrecondition) as caught:  # nobody is served unpaid
        app.execute(orders.check_in, order.record.id)
    assert caught.value.reason == "PAYMENT_NOT_HELD" and "directory" in caught.value.message
    # the directory cannot be asked: nothing changes, the link asks again later
    assert app.execute(orders.redirect_payment, order.record.id, claim_id,
                       HomeLookup.unreachable("UNAVAILABLE: connection refused")) is None
    assert app.query(orders.awaiting_home, 10) == [question]


def test_the_new_home_is_noted_and_asked_with_a_fresh_claim(app: NodeApp) -> None:
    order, elder = _accepted(app)
    first = order.record.claim_id or ""
    _refused(app, first)

    after = app.execute(orders.redirect_payment, order.record.id, first, HomeLookup.at(NEW))

    assert after is not None and after.record.state == OrderState.ACCEPTED
    fresh = after.record.claim_id or ""
    assert fresh and fresh != first
    claim = app.query(claims.get_claim, fresh)
    assert (claim.counterparty, claim.state, claim.minutes) == (NEW, ClaimState.PROPOSED, 45)
    assert [m.kind for m in app.query(claims.outbox_due, 100)
            if m.claim_id == fresh] == [claims.PROPOSE]
    person = app.query(people.get_person, elder)
    assert person.home_node_id == NEW  # the cached home
    [change] = person.changes
    assert (change.actor, change.kind) == ("directory", "home")
    assert f"district {NEW}" in change.detail and f"district {OLD}" in change.detail
    assert app.query(orders.awaiting_home, 10) == []
    # the same answer again finds nothing to do: the order is asked of NEW already
    assert app.execute(orders.redirect_payment, order.record.id, first,
                       HomeLookup.at(NEW)) is None
    assert_ledger_ok(app)


@pytest.mark.parametrize(("answer", "words", "code"), [
    (HomeLookup.unregistered(), "城市目录中没有付款人", "UNKNOWN_PERSON"),
    (HomeLookup.at("320115"), "付款人的时间现已记录在本区", "HOME_IS_HERE"),
    (HomeLookup.at(OLD), "城市目录仍指向原户籍区", "NOT_HOME_DISTRICT"),
], ids=["nobody-registered", "home-is-here", "still-the-old-home"])
def test_an_answer_that_names_no_other_district_cancels_saying_why(
        app: NodeApp, answer: HomeLookup, words: str, code: str) -> None:
    order, elder = _accepted(app)
    _refused(app, order.record.claim_id or "")

    after = app.execute(orders.redirect_payment, order.record.id,
                        order.record.claim_id or "", answer)

    assert after is not None
    record = after.record
    assert record.state == OrderState.CANCELLED and record.held_minutes == 0
    assert record.cancel_reason.startswith(words) and record.cancel_reason.endswith(f"[{code}]")
    assert record.cancelled_at == app.clock.now()
    assert app.query(people.get_person, elder).home_node_id == OLD  # nothing to correct
    assert app.query(orders.awaiting_home, 10) == []
    assert_ledger_ok(app)


def test_a_payer_whose_home_keeps_changing_is_given_up_on(app: NodeApp) -> None:
    order, _ = _accepted(app)
    homes = [NEW, OTHER, OLD]
    for home in homes:  # three districts asked again, each saying the hours moved on
        claim_id = _order(app, order.record.id).record.claim_id or ""
        _refused(app, claim_id)
        assert app.execute(orders.redirect_payment, order.record.id, claim_id,
                           HomeLookup.at(home)) is not None
    last = _order(app, order.record.id).record.claim_id or ""
    _refused(app, last)  # the fourth claim refused the same way: no fifth

    record = _order(app, order.record.id).record
    assert record.state == OrderState.CANCELLED
    assert "付款人的时间已不在该区" in record.cancel_reason
    assert record.cancel_reason.endswith("[NOT_HOME_DISTRICT]")
    assert app.query(orders.awaiting_home, 10) == []


def test_an_order_cancelled_while_waiting_is_left_alone(app: NodeApp) -> None:
    order, elder = _accepted(app)
    claim_id = order.record.claim_id or ""
    _refused(app, claim_id)
    cancelled = app.execute(orders.cancel_order, order.record.id, Actor(person_id=elder),
                            "改天再约")
    assert cancelled.record.held_minutes == 0
    assert app.execute(orders.redirect_payment, order.record.id, claim_id,
                       HomeLookup.at(NEW)) is None
    assert app.query(people.get_person, elder).home_node_id == OLD


@pytest.mark.parametrize(("reason", "words"), [
    (Reason.UNKNOWN_PERSON.value, "城市目录中没有付款人"),
    ("MOVE_IN_PROGRESS", "付款人正在迁移户籍区"),
])
def test_other_refusals_cancel_at_once_saying_why(app: NodeApp, reason: str,
                                                  words: str) -> None:
    order, _ = _accepted(app)
    _refused(app, order.record.claim_id or "", reason)
    record = _order(app, order.record.id).record
    assert record.state == OrderState.CANCELLED and record.held_minutes == 0
    assert record.cancel_reason.startswith(words)
    assert record.cancel_reason.endswith(f"[{reason}]")
    assert app.query(orders.awaiting_home, 10) == []
