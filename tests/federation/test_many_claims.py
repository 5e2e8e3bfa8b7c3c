"""Fifty redemptions across three districts, in every direction at once: all complete,
the positions sum to zero, every node's clearing view equals the clearinghouse's net for
it, and no minute is made or lost anywhere in the city."""

from __future__ import annotations

import itertools
from datetime import timedelta

from clearinghouse.domain.claims import ClaimState as ChState
from node.domain.claims import ClaimState
from node.domain.ledger import CONSUMPTION
from node.domain.orders import OrderState, PaymentSource
from node.usecases import claims, ledger, orders
from node.usecases.views import Actor
from tests.federation.conftest import City
from tests.federation.support import (
    GL,
    JN,
    QX,
    assert_consistent,
    assert_nothing_held,
    ch_claim,
    enrol_at,
    node_claim,
)
from tests.helpers import account_balance, earn, enrol, id_card

ORDERS = 50
MINUTES = 30
EARNED = 600


def test_fifty_redemptions_in_every_direction_all_complete(city: City) -> None:
    districts = (JN, GL, QX)
    elders: dict[str, int] = {}  # node: a person at home there, who pays with own hours
    visits: dict[tuple[str, str], int] = {}  # (serving, home): their visitor record
    volunteers: dict[str, int] = {}
    for node_id in districts:
        app = city[node_id].app
        number = id_card(1950, node_id)
        elders[node_id] = enrol_at(city, node_id, f"老人{node_id}", number)
        granted = enrol(app, "孙奶奶", 1936, priority=True).id
        earn(app, city.clock, elders[node_id], EARNED, granted)
        volunteers[node_id] = enrol_at(city, node_id, "志愿者", id_card(1990, node_id))
        for other in districts:
            if other != node_id:
                visits[(other, node_id)] = 0
    for (serving, home) in visits:
        number = city[home].app.query(lambda tx, h=home: tx.repo.people.get(elders[h]).id_number)
        visits[(serving, home)] = enrol_at(city, serving, "老人", number, home=home)
    city.settle()

    pairs = list(itertools.islice(itertools.cycle(sorted(visits)), ORDERS))
    placed: list[tuple[str, str, int, str]] = []  # serving, home, order id, claim id
    for serving, home in pairs:
        app = city[serving].app
        visitor = visits[(serving, home)]
        order = app.execute(orders.request_order, visitor, "meals", MINUTES,
                            PaymentSource.OWN, 0, Actor(person_id=visitor), "")
        order = app.execute(orders.accept_order, order.record.id, volunteers[serving])
        assert order.record.claim_id
        placed.append((serving, home, order.record.id, order.record.claim_id))
    city.settle(timeout=60)
    for serving, home, _, claim_id in placed:
        assert node_claim(city, serving, claim_id) is ClaimState.ACCEPTED
        assert node_claim(city, home, claim_id) is ClaimState.ACCEPTED

    for serving, _, order_id, _ in placed:
        city[serving].app.execute(orders.check_in, order_id)
    city.clock.advance(timedelta(minutes=MINUTES))
    for serving, home, order_id, _ in placed:
        app = city[serving].app
        app.execute(orders.check_out, order_id)
        app.execute(orders.verify_order, order_id,
                    Actor(person_id=visits[(serving, home)]), 5, "")
    city.clock.advance(timedelta(days=city[JN].app.policy.publicity_days))
    for node_id in districts:
        city[node_id].app.execute(orders.record_due_orders, 1000)
    city.settle(timeout=60)

    served = {n: 0 for n in districts}  # minutes served in each district
    spent = {n: 0 for n in districts}  # minutes paid by each district's elder
    for serving, home, order_id, claim_id in placed:
        record = city[serving].app.query(orders.get_order, order_id).record
        assert record.state == OrderState.RECORDED
        assert record.charged_minutes == MINUTES
        assert ch_claim(city, claim_id) is ChState.COMPLETED
        for node_id in (serving, home):
            view = city[node_id].app.query(claims.get_claim, claim_id)
            assert view.state is ClaimState.COMPLETED
            assert view.posted_minutes == MINUTES
        served[serving] += MINUTES
        spent[home] += MINUTES
    assert sum(served.values()) == ORDERS * MINUTES

    positions = assert_consistent(city)
    assert positions == {n: served[n] - spent[n] for n in districts}
    assert_nothing_held(city)
    for node_id in districts:
        app = city[node_id].app
        view = app.query(claims.clearing_view)
        assert (view.open_claims, view.unsent_messages) == (0, 0)
        # the elder paid exactly their redemptions; the volunteer earned exactly theirs
        assert app.query(ledger.balance, elders[node_id]).total == EARNED - spent[node_id]
        assert app.query(ledger.balance, volunteers[node_id]).total == served[node_id]
        # consumption here: the elders' own services at home (the grant's) plus what was
        # served here and paid from elsewhere
        consumed, _ = account_balance(app, CONSUMPTION.code)
        assert consumed == EARNED + served[node_id]
    # minted city-wide = what was consumed city-wide: nothing made or lost in transit
    assert sum(account_balance(city[n].app, CONSUMPTION.code)[0] for n in districts) == \
        len(districts) * EARNED + ORDERS * MINUTES
