"""A link between two people, as each of them sees it.

LinkPeople records how one person stands to another (a ``Relation``: ``child`` says
that the other is the person's child). The same link reads differently from its two
ends: the person's child sees the person as their parent. A person's record lists each
of their links from their own side, so that no reader has to turn a relation round, and
none turns it the wrong way.

A family relation seen from the other end is its inverse (``Relation.inverse``: a spouse
or a sibling reads the same from both). A proxy link is not family and has no inverse
relation: it is a proxy link from both ends, and says which end acts for which
(``Standing.acts_for_other``).

Family links are stored both ways and a proxy link once, from the represented person's
side (``node.usecases.people.link_people``); ``links_seen_by`` folds the stored links
that name a person, whichever way round each was stored, into one link per other person
and standing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from node.domain.policy import Relation
from runtime.errors import InvariantViolation

#: The most links a person's record shows. Nothing caps how many links a person may
#: have, but a household is a handful of people: the record shows the first 50 made.
MAX_LINKS_SHOWN = 50
#: Each link is stored at most twice (a family link both ways): this many stored links,
#: in the order stored, hold the first ``MAX_LINKS_SHOWN`` links of a person.
MAX_STORED_READ = 2 * MAX_LINKS_SHOWN


@dataclass(frozen=True, slots=True)
class Standing:
    """How another person stands to this one. ``relation`` as LinkPeople names it:
    ``CHILD``, the other is this person's child; ``PROXY``, the other acts for this
    person (their proxy, 委托代理人), unless ``acts_for_other``: then this person acts
    for the other (is their proxy, and the other is the one represented, 委托人).
    A family relation has no direction of its own."""

    relation: Relation
    acts_for_other: bool = False

    def __post_init__(self) -> None:
        if self.acts_for_other and self.relation.is_family:
            raise InvariantViolation(f"a family link ({self.relation.value}) has no "
                                     "direction: only a proxy link acts for someone")


def seen_from_the_other_side(standing: Standing) -> Standing:
    """The same link seen from the other person's side: a family relation's inverse
    (child ↔ parent, grandchild ↔ grandparent; spouse and sibling are their own), a
    proxy link with its direction turned. Turning twice gives the link back."""
    if standing.relation.is_family:
        inverse = standing.relation.inverse()
        if inverse is None:
            raise InvariantViolation(f"the family relation {standing.relation.value} has "
                                     "no inverse")
        return Standing(inverse)
    return Standing(standing.relation, acts_for_other=not standing.acts_for_other)


@dataclass(frozen=True, slots=True)
class StoredLink:
    """One link as LinkPeople stored it: ``other_id`` stands to ``person_id`` as
    ``relation``, since ``at``."""

    person_id: int
    other_id: int
    relation: Relation
    at: datetime


@dataclass(frozen=True, slots=True)
class PersonLink:
    """A link on a person's record: the other person, how they stand to this one, and
    when the link was made."""

    other_id: int
    standing: Standing
    at: datetime


def links_seen_by(person_id: int, stored: Iterable[StoredLink],
                  limit: int = MAX_LINKS_SHOWN) -> tuple[PersonLink, ...]:
    """``person_id``'s links from their own side, each once, in the order made (dated
    by the first of its stored links), at most ``limit``. ``stored``: the stored links
    that name the person at either end, in the order they were stored (at most
    ``MAX_STORED_READ`` of them hold the first ``MAX_LINKS_SHOWN`` links); one that
    names them at neither end, or at both, is a bug."""
    if not 1 <= limit <= MAX_LINKS_SHOWN:
        raise InvariantViolation(f"a record shows 1 to {MAX_LINKS_SHOWN} links, not {limit}")
    shown: dict[tuple[int, Standing], PersonLink] = {}
    for link in stored:
        if (link.person_id == person_id) == (link.other_id == person_id):
            raise InvariantViolation(f"a stored link between {link.person_id} and "
                                     f"{link.other_id} is not one of person {person_id}'s")
        standing = Standing(link.relation)
        if link.person_id == person_id:
            other = link.other_id
        else:
            other, standing = link.person_id, seen_from_the_other_side(standing)
        if (other, standing) in shown:
            continue
        if len(shown) == limit:
            break
        shown[(other, standing)] = PersonLink(other, standing, link.at)
    return tuple(shown.values())
