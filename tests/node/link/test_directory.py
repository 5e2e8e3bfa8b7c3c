"""The link's look-ups in the city directory, against a real clearinghouse: a home, no
home, no answer; and the rehomer, which asks about orders whose payer moved, waits out a
directory it cannot reach and then asks the new home."""

from __future__ import annotations

import pytest

from node.domain.claims import ClaimState
from node.domain.directory import HomeLookup
from node.domain.orders import OrderState
from node.link.clearing_link import ClearingLink
from node.link.supervise import ClearinghouseAway
from node.usecases import orders, people
from tests.federation.conftest import City
from tests.federation.support import GL, JN, QX, family, node_claim, order_for_mother
from tests.node.link.support import CH_PUBLIC, replace_link


def test_the_directory_names_a_home_none_or_cannot_be_asked(city: City) -> None:
    f = family(city)
    ref = city[JN].app.query(people.get_person, f.daughter).person_ref
    assert city[GL].link.look_up(ref) == HomeLookup.at(JN)
    assert city[GL].link.look_up("ab" * 32) == HomeLookup.unregistered()
    d = city[GL]
    away = ClearingLink(d.app, "127.0.0.1:1", CH_PUBLIC, d.key)  # nothing listens there
    try:
        answer = away.look_up(ref)
    finally:
        away.stop(0)
    assert not answer.reached and answer.home_node_id == ""
    assert answer.detail.startswith("UNAVAILABLE")


def test_the_rehomer_waits_for_the_directory_then_asks_the_new_home(city: City) -> None:
    link = replace_link(city, GL, rehome_seconds=3600)  # it asks only when told to here
    f = family(city, daughter_home=QX)  # 鼓楼区 believes 栖霞区 keeps her hours
    order = order_for_mother(city, f)
    city.wait_for(lambda: len(city[GL].app.query(orders.awaiting_home, 10)) == 1)

    d = city[GL]
    away = ClearingLink(d.app, "127.0.0.1:1", CH_PUBLIC, d.key)
    try:
        with pytest.raises(ClearinghouseAway, match="city directory"):
            away.rehome_once()
    finally:
        away.stop(0)
    waiting = city[GL].app.query(orders.get_order, order.record.id).record
    assert waiting.state == OrderState.ACCEPTED and waiting.claim_id == order.record.claim_id

    assert link.rehome_once() == 1
    city.settle()
    now = city[GL].app.query(orders.get_order, order.record.id).record
    assert now.claim_id != order.record.claim_id and now.held_minutes == 60
    assert node_claim(city, JN, now.claim_id or "") is ClaimState.ACCEPTED
    assert link.rehome_once() == 0
