"""Use-cases for service points, staff, people and the links between them."""

from __future__ import annotations

from node.domain.identity import parse_credit_code, parse_id_card, person_ref
from node.domain.orders import PersonFacts, PersonKind, check_text
from node.domain.policy import Relation
from node.storage.people import NewPerson, PersonRecord
from node.usecases.app import Tx
from node.usecases.views import Actor, LinkView, PersonView, ServicePointView, StaffView
from runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from timebank.ids import is_node_id

MAX_NAME_CHARS = 64


def _name(label: str, raw: str, limit: int = MAX_NAME_CHARS) -> str:
    name = check_text(label, raw, limit)
    if not name:
        raise InvalidArgument(f"{label} is required")
    return name


def register_service_point(tx: Tx, code: str, name: str, street: str) -> ServicePointView:
    code = code.strip()
    if not (1 <= len(code) <= 32 and code.isascii() and code.replace("-", "").isalnum()):
        raise InvalidArgument("a service point code is 1..32 ASCII letters, digits or '-'")
    name, street = _name("service point name", name, 100), check_text("street", street, 100)
    if tx.repo.staff.service_point_by_code(code) is not None:
        raise AlreadyExists(f"service point {code!r} is already registered", "DUPLICATE_CODE")
    point_id = tx.repo.staff.add_service_point(code, name, street, tx.now)
    return ServicePointView(point_id, code, name, street)


def register_staff(tx: Tx, name: str, service_point_id: int) -> StaffView:
    name = _name("staff name", name)
    require_service_point(tx, service_point_id)
    return StaffView(tx.repo.staff.add(name, service_point_id, tx.now), name, service_point_id)


def require_service_point(tx: Tx, point_id: int) -> None:
    if tx.repo.staff.service_point(point_id) is None:
        raise NotFound(f"there is no service point {point_id} on this node",
                       "UNKNOWN_SERVICE_POINT")


def require_staff(tx: Tx, staff_id: int) -> None:
    if not staff_id or tx.repo.staff.get(staff_id) is None:
        raise NotFound(f"there is no staff member {staff_id} on this node", "UNKNOWN_STAFF")


def require_actor(tx: Tx, actor: Actor) -> None:
    if bool(actor.person_id) == bool(actor.staff_id):
        raise InvalidArgument("name exactly one actor: a person id or a staff id")
    if actor.person_id:
        tx.repo.people.get(actor.person_id)
    else:
        require_staff(tx, actor.staff_id)


def enrol_person(tx: Tx, kind: PersonKind, name: str, id_number: str, phone: str,
                 priority: bool, service_point_id: int, home_node_id: str = "") -> PersonView:
    """Enrol a person here. ``home_node_id``: their hours are kept in that district (a
    visitor served here); empty: this node keeps them, and tells the city directory."""
    name = _name("name", name)
    if home_node_id:
        if not is_node_id(home_node_id):
            raise InvalidArgument("a home district is its 6-digit node id, e.g. 320115",
                                  "MALFORMED_NODE_ID")
        if home_node_id == tx.node.node_id:
            home_node_id = ""
        elif not tx.node.federated:
            raise FailedPrecondition("a visitor's hours are reached through the city "
                                     "clearinghouse, and this node is not connected to it",
                                     "NOT_FEDERATED")
    phone = phone.strip()
    if len(phone) > 20 or any(c not in "0123456789+- " for c in phone):
        raise InvalidArgument("a phone number has at most 20 digits, spaces, '+' or '-'")
    if kind is PersonKind.INDIVIDUAL:
        card = parse_id_card(id_number)
        number, birth = card.number, card.birth_date
        if card.age_on(tx.local_date(tx.now)) < 0:
            raise InvalidArgument("the ID card's birth date is in the future",
                                  "MALFORMED_ID_NUMBER")
    else:
        if priority:
            raise InvalidArgument("a group volunteer cannot be a priority elder")
        number, birth = parse_credit_code(id_number), None
    if service_point_id:
        require_service_point(tx, service_point_id)
    ref = person_ref(tx.node.city_secret, number, group=kind is PersonKind.GROUP)
    existing = tx.repo.people.by_ref(ref) or tx.repo.people.by_id_number(number)
    if existing is not None:
        raise AlreadyExists(f"this {'ID card' if birth else 'credit code'} is already enrolled "
                            f"as person {existing.id} (one account per person)",
                            "ALREADY_ENROLLED")
    person_id = tx.repo.people.add(NewPerson(
        person_ref=ref, kind=kind.value, name=name, id_number=number, phone=phone,
        birth_date=birth, priority=priority, service_point_id=service_point_id or None,
        enrolled_at=tx.now, home_node_id=home_node_id or None))
    person = tx.repo.people.get(person_id)
    if tx.node.federated and not person.visitor:
        from node.usecases.claims import register_home

        register_home(tx, person)
    return person_view(tx, person)


def get_person(tx: Tx, person_id: int) -> PersonView:
    return person_view(tx, tx.repo.people.get(person_id))


def age_of(tx: Tx, person: PersonRecord) -> int:
    if person.birth_date is None:
        return 0
    today = tx.local_date(tx.now)
    b = person.birth_date
    return today.year - b.year - int((today.month, today.day) < (b.month, b.day))


def facts(tx: Tx, person: PersonRecord) -> PersonFacts:
    return PersonFacts(person.id, PersonKind(person.kind), age_of(tx, person), person.priority)


def person_view(tx: Tx, p: PersonRecord) -> PersonView:
    return PersonView(p.id, p.person_ref, p.kind, p.name, p.priority, p.service_point_id or 0,
                      age_of(tx, p), p.enrolled_at, p.home_node_id or "")


def link_people(tx: Tx, person_id: int, other_id: int, relation: Relation,
                staff_id: int) -> LinkView:
    """Record that ``other`` stands to ``person`` as ``relation`` (family both ways)."""
    if person_id == other_id:
        raise InvalidArgument("a person cannot be linked to themselves")
    person, other = tx.repo.people.get(person_id), tx.repo.people.get(other_id)
    if staff_id:
        require_staff(tx, staff_id)
    if PersonKind.GROUP.value in (person.kind, other.kind):
        raise InvalidArgument("only individuals can be linked as family or proxies")
    if relation in tx.repo.people.relations(person_id, other_id):
        raise AlreadyExists(f"person {other_id} is already linked to person {person_id} "
                            f"as {relation.value}", "ALREADY_LINKED")
    tx.repo.people.add_link(person_id, other_id, relation, staff_id or None, tx.now)
    inverse = relation.inverse()
    if inverse is not None and inverse not in tx.repo.people.relations(other_id, person_id):
        tx.repo.people.add_link(other_id, person_id, inverse, staff_id or None, tx.now)
    return LinkView(person_id, other_id, relation.value)


def acts_for(tx: Tx, actor: Actor, person_id: int) -> bool:
    """Whether the actor may act for the person: themself, their proxy or family, or staff."""
    if actor.staff_id:
        return True
    return (actor.person_id == person_id
            or bool(tx.repo.people.relations(person_id, actor.person_id)))


def require_acts_for(tx: Tx, actor: Actor, person_id: int, what: str) -> None:
    require_actor(tx, actor)
    if not acts_for(tx, actor, person_id):
        raise PermissionDenied(
            f"person {actor.person_id} may not {what} for person {person_id}: only the person, "
            "their registered proxy or family, or staff may", "NOT_AUTHORISED")
