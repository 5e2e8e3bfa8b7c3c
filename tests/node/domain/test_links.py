"""A link as each of its two people sees it: the inverse of every kind, and a person's
stored links folded into one list from their own side."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from node.domain.links import (
    MAX_LINKS_SHOWN,
    MAX_STORED_READ,
    PersonLink,
    Standing,
    StoredLink,
    links_seen_by,
    seen_from_the_other_side,
)
from node.domain.policy import Relation
from runtime.errors import InvariantViolation

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(("relation", "inverse"), [
    (Relation.SPOUSE, Relation.SPOUSE),
    (Relation.PARENT, Relation.CHILD),
    (Relation.CHILD, Relation.PARENT),
    (Relation.SIBLING, Relation.SIBLING),
    (Relation.GRANDPARENT, Relation.GRANDCHILD),
    (Relation.GRANDCHILD, Relation.GRANDPARENT),
])
def test_a_family_relation_seen_from_the_other_side_is_its_inverse(
        relation: Relation, inverse: Relation) -> None:
    assert seen_from_the_other_side(Standing(relation)) == Standing(inverse)


def test_a_proxy_link_seen_from_the_other_side_turns_its_direction() -> None:
    proxy = Standing(Relation.PROXY)  # the other acts for this person
    represented = Standing(Relation.PROXY, acts_for_other=True)  # this person acts for them
    assert seen_from_the_other_side(proxy) == represented
    assert seen_from_the_other_side(represented) == proxy


def test_every_standing_turned_twice_is_itself() -> None:
    standings = [Standing(r) for r in Relation] + [Standing(Relation.PROXY, True)]
    assert len(set(standings)) == len(Relation) + 1
    for standing in standings:
        assert seen_from_the_other_side(seen_from_the_other_side(standing)) == standing
    assert {seen_from_the_other_side(s) for s in standings} == set(standings)


def test_a_family_link_has_no_direction() -> None:
    with pytest.raises(InvariantViolation, match="no direction"):
        Standing(Relation.CHILD, acts_for_other=True)


def test_a_family_link_stored_both_ways_is_listed_once_from_each_side() -> None:
    mother, daughter = 1, 2
    stored = [StoredLink(mother, daughter, Relation.CHILD, T0),
              StoredLink(daughter, mother, Relation.PARENT, T0)]
    assert links_seen_by(mother, stored) == (
        PersonLink(daughter, Standing(Relation.CHILD), T0),)
    assert links_seen_by(daughter, stored) == (
        PersonLink(mother, Standing(Relation.PARENT), T0),)


def test_a_family_link_stored_one_way_reads_right_from_the_other_side() -> None:
    stored = [StoredLink(1, 2, Relation.GRANDCHILD, T0)]
    assert links_seen_by(2, stored) == (PersonLink(1, Standing(Relation.GRANDPARENT), T0),)


def test_a_proxy_link_says_who_acts_for_whom_on_each_record() -> None:
    elder, helper = 5, 9
    stored = [StoredLink(elder, helper, Relation.PROXY, T0)]  # the helper acts for the elder
    assert links_seen_by(elder, stored) == (PersonLink(helper, Standing(Relation.PROXY), T0),)
    assert links_seen_by(helper, stored) == (
        PersonLink(elder, Standing(Relation.PROXY, acts_for_other=True), T0),)


def test_links_are_in_the_order_made_each_dated_by_its_first_stored_link() -> None:
    me = 1
    t = [T0 + timedelta(days=i) for i in range(4)]
    stored = [StoredLink(me, 2, Relation.SPOUSE, t[0]),
              StoredLink(2, me, Relation.SPOUSE, t[1]),  # the same link, the other way
              StoredLink(3, me, Relation.PROXY, t[2]),  # I act for person 3
              StoredLink(me, 3, Relation.SIBLING, t[3])]  # and am their sibling too
    assert links_seen_by(me, stored) == (
        PersonLink(2, Standing(Relation.SPOUSE), t[0]),
        PersonLink(3, Standing(Relation.PROXY, acts_for_other=True), t[2]),
        PersonLink(3, Standing(Relation.SIBLING), t[3]))


def test_at_most_the_first_links_made_are_listed() -> None:
    me = 1
    stored = []
    for other in range(2, 2 + MAX_LINKS_SHOWN + 5):  # each family link stored both ways
        stored += [StoredLink(me, other, Relation.SIBLING, T0),
                   StoredLink(other, me, Relation.SIBLING, T0)]
    shown = links_seen_by(me, stored[:MAX_STORED_READ])
    assert [s.other_id for s in shown] == list(range(2, 2 + MAX_LINKS_SHOWN))
    assert links_seen_by(me, stored, limit=3) == shown[:3]
    with pytest.raises(InvariantViolation):
        links_seen_by(me, stored, limit=MAX_LINKS_SHOWN + 1)
    with pytest.raises(InvariantViolation):
        links_seen_by(me, stored, limit=0)


def test_a_stored_link_that_is_not_the_persons_is_a_bug() -> None:
    with pytest.raises(InvariantViolation):
        links_seen_by(1, [StoredLink(2, 3, Relation.SPOUSE, T0)])
    with pytest.raises(InvariantViolation):
        links_seen_by(1, [StoredLink(1, 1, Relation.SPOUSE, T0)])
