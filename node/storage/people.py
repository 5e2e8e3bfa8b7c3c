"""People enrolled on this node and the links between them (family, proxies).

A person's name, ID number and phone never leave the node; other districts know them
only by their PersonRef.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import Connection, bindparam, insert, or_, select, update

from node.domain.links import MAX_STORED_READ, StoredLink
from node.domain.policy import Relation
from node.storage.tables import LINKS, PEOPLE, PERSON_EVENTS, changed, record, values
from runtime.errors import InvariantViolation, NotFound
from runtime.statements import Prepared


@dataclass(frozen=True, slots=True)
class NewPerson:
    """A person (or group) as enrolled, before the node numbers them."""

    person_ref: str
    kind: str
    name: str
    id_number: str
    phone: str
    birth_date: date | None
    priority: bool
    service_point_id: int | None
    enrolled_at: datetime
    home_node_id: str | None = None  # None: this node keeps the person's hours


@dataclass(frozen=True, slots=True)
class PersonRecord:
    id: int
    person_ref: str
    kind: str
    name: str
    id_number: str
    phone: str
    birth_date: date | None
    priority: bool
    service_point_id: int | None
    enrolled_at: datetime
    home_node_id: str | None = None  # None: this node keeps the person's hours

    @property
    def visitor(self) -> bool:
        """Whether the person's hours are kept in another district."""
        return self.home_node_id is not None


@dataclass(frozen=True, slots=True)
class PersonEvent:
    """One change of a person's record after enrolment: who made it (``staff:3``, the
    city ``directory``, the ``clearinghouse`` completing a move), what kind of change
    (``update``, ``home``, ``move``) and what changed, in words."""

    person_id: int
    at: datetime
    actor: str
    kind: str
    detail: str


class PeopleRepo:
    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, person: NewPerson) -> int:
        return int(_INSERT(self.conn, values(person)).scalar_one())

    def get(self, person_id: int) -> PersonRecord:
        row = _BY_ID(self.conn, {"pid": person_id}).first()
        if row is None:
            raise NotFound(f"no person {person_id} is enrolled on this node", "UNKNOWN_PERSON")
        return record(PersonRecord, row)

    def by_ref(self, person_ref: str) -> PersonRecord | None:
        row = _BY_REF(self.conn, {"ref": person_ref}).first()
        return None if row is None else record(PersonRecord, row)

    def by_id_number(self, id_number: str) -> PersonRecord | None:
        row = self.conn.execute(
            select(PEOPLE).where(PEOPLE.c.id_number == id_number)).one_or_none()
        return None if row is None else record(PersonRecord, row)

    def by_ids(self, person_ids: Sequence[int]) -> dict[int, PersonRecord]:
        rows = self.conn.execute(select(PEOPLE).where(PEOPLE.c.id.in_(list(person_ids))))
        return {r.id: record(PersonRecord, r) for r in rows}

    def find(self, *, id_number: str = "", phone: str = "", name_part: str = "",
             service_point_id: int = 0, within: Collection[int] | None = None,
             after_id: int = 0, limit: int) -> list[PersonRecord]:
        """People after ``after_id``, in id order, at most ``limit``: those whose whole ID
        number (normalised, as enrolled) is ``id_number``, whose whole phone (as enrolled)
        is ``phone``, or whose name contains ``name_part`` taken literally (``%``, ``_``
        and ``\\`` are no wildcards; case-insensitive where the engine folds case); at
        most one of the three, none: everyone. ``service_point_id``: only the people of
        that service point (0: of any or none). ``within``: only the people of these
        service points or of none (a staff member's view; None: everyone)."""
        if sum(map(bool, (id_number, phone, name_part))) > 1:
            raise InvariantViolation("people are found by one of ID number, phone or name")
        where = [PEOPLE.c.id > after_id]
        if id_number:
            where.append(PEOPLE.c.id_number == id_number)
        elif phone:
            where.append(PEOPLE.c.phone == phone)
        elif name_part:
            where.append(PEOPLE.c.name.ilike(f"%{_literal(name_part)}%", escape="\\"))
        if service_point_id:
            where.append(PEOPLE.c.service_point_id == service_point_id)
        if within is not None:
            where.append(or_(PEOPLE.c.service_point_id.in_(sorted(within)),
                             PEOPLE.c.service_point_id.is_(None)))
        rows = self.conn.execute(select(PEOPLE).where(*where).order_by(PEOPLE.c.id)
                                 .limit(limit))
        return [record(PersonRecord, r) for r in rows]

    def update(self, before: PersonRecord, after: PersonRecord) -> None:
        """Write the fields of ``after`` that differ from ``before`` (as read in this
        transaction). A person's id, PersonRef, ID number and enrolment never change."""
        if (before.id, before.person_ref, before.id_number, before.enrolled_at) != (
                after.id, after.person_ref, after.id_number, after.enrolled_at):
            raise InvariantViolation(f"person {before.id}'s identity cannot change")
        columns = changed(before, after)
        if columns:
            self.conn.execute(update(PEOPLE).where(PEOPLE.c.id == before.id)
                              .values({c: getattr(after, c) for c in columns}))

    def add_event(self, event: PersonEvent) -> None:
        _INSERT_EVENT(self.conn, values(event))

    def events(self, person_id: int, limit: int) -> list[PersonEvent]:
        """A person's latest ``limit`` changes, oldest first."""
        rows = list(self.conn.execute(
            select(PERSON_EVENTS).where(PERSON_EVENTS.c.person_id == person_id)
            .order_by(PERSON_EVENTS.c.id.desc()).limit(limit)))
        return [PersonEvent(r.person_id, r.at, r.actor, r.kind, r.detail)
                for r in reversed(rows)]

    def set_home(self, person_id: int, home_node_id: str | None) -> None:
        """Where the person's hours are kept from now on (None: here)."""
        _SET_HOME(self.conn, {"pid": person_id, "b_home": home_node_id})

    def add_link(self, person_id: int, other_id: int, relation: Relation,
                 staff_id: int | None, at: datetime) -> None:
        self.conn.execute(insert(LINKS).values(
            person_id=person_id, other_id=other_id, relation=relation.value,
            staff_id=staff_id, created_at=at))

    def relations(self, person_id: int, other_id: int) -> set[Relation]:
        """How ``other`` stands to ``person``, by every link recorded."""
        rows = _RELATIONS(self.conn, {"pid": person_id, "oid": other_id}).scalars()
        return {Relation(r) for r in rows}

    def links_naming(self, person_id: int, limit: int) -> list[StoredLink]:
        """The first ``limit`` links stored that name ``person_id`` at either end, in the
        order they were stored."""
        if not 1 <= limit <= MAX_STORED_READ:
            raise InvariantViolation(f"read 1 to {MAX_STORED_READ} links at a time, "
                                     f"not {limit}")
        rows = self.conn.execute(
            select(LINKS.c.person_id, LINKS.c.other_id, LINKS.c.relation, LINKS.c.created_at)
            .where(or_(LINKS.c.person_id == person_id, LINKS.c.other_id == person_id))
            .order_by(LINKS.c.id).limit(limit))
        return [StoredLink(r.person_id, r.other_id, Relation(r.relation), r.created_at)
                for r in rows]


def _literal(text: str) -> str:
    """``text`` in a LIKE pattern escaped with a backslash: matched as written."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


_INSERT = Prepared(insert(PEOPLE).returning(PEOPLE.c.id))
_BY_ID = Prepared(select(PEOPLE).where(PEOPLE.c.id == bindparam("pid")))
_BY_REF = Prepared(select(PEOPLE).where(PEOPLE.c.person_ref == bindparam("ref")))
_RELATIONS = Prepared(select(LINKS.c.relation).where(LINKS.c.person_id == bindparam("pid"),
                                                     LINKS.c.other_id == bindparam("oid")))
_INSERT_EVENT = Prepared(insert(PERSON_EVENTS))
_SET_HOME = Prepared(update(PEOPLE).where(PEOPLE.c.id == bindparam("pid"))
                     .values(home_node_id=bindparam("b_home")))
