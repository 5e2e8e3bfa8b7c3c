"""What the city directory said of a person's home, as this node heard it.

The directory (the clearinghouse's ``LookupPerson``) maps a PersonRef to the district that
keeps the person's hours. This node asks it in two places: before it enrols someone as
its own (one home per person), and when a district it asked for a payment says it no
longer keeps the payer's hours (they moved). The answer is a hint, not an authority: the
clearinghouse checks its directory again on every claim it records, so a wrong or stale
answer can cost a refused claim, never send hours to the wrong place.
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime.errors import InvariantViolation
from timebank.ids import is_node_id

MAX_DETAIL_CHARS = 200


@dataclass(frozen=True, slots=True)
class HomeLookup:
    """The directory's answer: a home district, no district at all, or no answer."""

    home_node_id: str = ""  # the district named; "" when none registered the person
    reached: bool = True  # False: the directory could not be asked (``detail`` says why)
    detail: str = ""

    def __post_init__(self) -> None:
        if self.home_node_id and not (self.reached and is_node_id(self.home_node_id)):
            raise InvariantViolation(f"a directory answer names a node id, not "
                                     f"{self.home_node_id[:16]!r}")
        if len(self.detail) > MAX_DETAIL_CHARS:
            raise InvariantViolation("a directory answer's detail is short")

    @classmethod
    def at(cls, home_node_id: str) -> HomeLookup:
        return cls(home_node_id)

    @classmethod
    def unregistered(cls) -> HomeLookup:
        return cls()

    @classmethod
    def unreachable(cls, detail: str) -> HomeLookup:
        return cls("", False, " ".join(detail.split())[:MAX_DETAIL_CHARS])

    @property
    def registered(self) -> bool:
        return bool(self.home_node_id)
