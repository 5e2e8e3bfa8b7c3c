"""Use-cases for service points, staff, people and the links between them."""

from __future__ import annotations

from dataclasses import replace

from node.domain.access import Principal, Role
from node.domain.directory import HomeLookup
from node.domain.identity import parse_credit_code, parse_id_card, person_ref
from node.domain.links import MAX_STORED_READ, links_seen_by
from node.domain.names import MAX_NAME_CHARS, person_name
from node.domain.orders import MAX_TEXT_CHARS, PersonFacts, PersonKind, check_text
from node.domain.policy import Relation
from node.storage.people import NewPerson, PersonEvent, PersonRecord
from node.usecases.access import require_call
from node.usecases.app import NodeIdentity, Tx
from node.usecases.views import (
    Actor,
    LinkView,
    PersonChangeView,
    PersonView,
    ServicePointView,
    StaffView,
)
from runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from timebank.ids import is_node_id

MAX_PHONE_CHARS = 20
#: The latest changes of a person's record shown with it.
MAX_CHANGES_SHOWN = 20
#: The longest query of ``find_people``, and the most people one call finds.
MAX_QUERY_CHARS = 64
MAX_FOUND = 100
#: The most service points one ListServicePoints call lists (a district has a few
#: dozen; a desk's choice of them is read in pages of this many).
MAX_POINTS_LISTED = 500
#: A whole phone number as a query: this many of these characters (as ``_phone`` takes).
PHONE_QUERY_CHARS = (7, MAX_PHONE_CHARS)
_PHONE_CHARS = frozenset("0123456789+- ")


def _name(label: str, raw: str, limit: int = MAX_NAME_CHARS) -> str:
    name = check_text(label, raw, limit)
    if not name:
        raise InvalidArgument(f"{label} is required")
    return name


def _phone(raw: str) -> str:
    phone = raw.strip()
    if len(phone) > MAX_PHONE_CHARS or any(c not in "0123456789+- " for c in phone):
        raise InvalidArgument(f"a phone number has at most {MAX_PHONE_CHARS} digits, spaces, "
                              "'+' or '-'", "MALFORMED_PHONE")
    return phone


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


def list_service_points(tx: Tx, after_id: int, limit: int) -> list[ServicePointView]:
    """The district's service points after ``after_id``, in id order, at most ``limit``
    (1..``MAX_POINTS_LISTED``): what a desk chooses a person's service point from. Their
    codes, names and streets are no one's personal data, so any caller may list them."""
    if not 1 <= limit <= MAX_POINTS_LISTED:
        raise InvalidArgument(f"每次最多列出 {MAX_POINTS_LISTED} 个服务点 (list 1 to "
                              f"{MAX_POINTS_LISTED} service points at a time, not {limit})",
                              "LIMIT_OUT_OF_RANGE")
    return [ServicePointView(p.id, p.code, p.name, p.street)
            for p in tx.repo.staff.service_points(after_id, limit)]


def require_service_point(tx: Tx, point_id: int) -> None:
    if tx.repo.staff.service_point(point_id) is None:
        raise NotFound(f"there is no service point {point_id} on this node",
                       "UNKNOWN_SERVICE_POINT")


def require_staff(tx: Tx, staff_id: int) -> None:
    if not staff_id or tx.repo.staff.get(staff_id) is None:
        raise NotFound(f"there is no staff member {staff_id} on this node", "UNKNOWN_STAFF")


def require_actor(tx: Tx, actor: Actor) -> None:
    if (actor.person_id and actor.staff_id) or not (actor.person_id or actor.staff_id
                                                     or actor.by):
        raise InvalidArgument("name exactly one actor: a person id or a staff id")
    if actor.person_id:
        tx.repo.people.get(actor.person_id)
    elif actor.staff_id:
        require_staff(tx, actor.staff_id)


def district_actor(tx: Tx, actor: Actor | None, staff_id: int) -> Actor:
    """The actor of a district's act: the authenticated caller (``actor``), or, for a
    caller inside the node (its CLI on the database, tests), staff ``staff_id``."""
    if actor is None:
        require_staff(tx, staff_id)
        return Actor(staff_id=staff_id)
    require_actor(tx, actor)
    return actor


def city_ref(node: NodeIdentity, kind: PersonKind, id_number: str) -> str:
    """The PersonRef a person enrolled with this ID card (or credit code) has in every
    district of the city; INVALID_ARGUMENT if the number is not one."""
    if kind is PersonKind.INDIVIDUAL:
        return person_ref(node.city_secret, parse_id_card(id_number).number)
    return person_ref(node.city_secret, parse_credit_code(id_number), group=True)


def _check_directory(tx: Tx, answer: HomeLookup, home_node_id: str) -> None:
    """Refuse an enrolment the city directory contradicts: one home per person.

    Enrolling someone as this district's own while the directory names another home
    would give them a second home account (the directory would refuse its registration,
    but the account would already be here). The other district keeps their hours until
    it moves them: only it holds the balance and can release it, so this refusal says
    how to serve them here now (as a visitor) and how to make this their home (that
    district starts the move; ADR 0006). A directory that cannot be asked refuses a home
    enrolment (UNAVAILABLE: try again) and lets a visitor's through (their home is
    checked again by the clearinghouse on every claim)."""
    here, found = tx.node.node_id, answer.home_node_id
    if not answer.reached:
        if home_node_id:
            return
        raise Unavailable(
            f"the city directory cannot be asked now ({answer.detail}); a district becomes "
            "a person's home only once the directory says no other district is: try again "
            "shortly", "DIRECTORY_UNAVAILABLE")
    if not found or found == (home_node_id or here):
        return
    if not home_node_id:
        raise FailedPrecondition(
            f"the city directory names district {found} as this person's home: their "
            f"hours are kept there, and a person has one home. To serve them here, enrol "
            f"them as a visitor (--home-node {found}). To make this district their home, "
            f"enrol them as a visitor and ask district {found} to move them here "
            f"(`timebank node move PERSON_ID --to {here}` there); their hours and status "
            "arrive with the move", "HOMED_ELSEWHERE")
    if found == here:
        raise FailedPrecondition(
            "the city directory names this district as this person's home, not district "
            f"{home_node_id}: enrol them without --home-node", "WRONG_HOME_DISTRICT")
    raise FailedPrecondition(
        f"the city directory names district {found} as this person's home, not district "
        f"{home_node_id}: enrol them with --home-node {found}", "WRONG_HOME_DISTRICT")


def enrol_person(tx: Tx, kind: PersonKind, name: str, id_number: str, phone: str,
                 priority: bool, service_point_id: int, home_node_id: str = "",
                 directory: HomeLookup | None = None, *,
                 actor: Actor | None = None) -> PersonView:
    """Enrol a person here. ``home_node_id``: their hours are kept in that district (a
    visitor served here); empty: this node keeps them, and tells the city directory.
    ``directory``: what the city directory said of this person's home, asked just
    before (None: not asked, e.g. a node with no clearinghouse); an enrolment it
    contradicts is refused (``_check_directory``). ``actor``: who enrolled them (the
    authenticated caller), recorded as the first change of their record."""
    name = person_name(name)
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
    phone = _phone(phone)
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
    if directory is not None and tx.node.federated:
        _check_directory(tx, directory, home_node_id)
    person_id = tx.repo.people.add(NewPerson(
        person_ref=ref, kind=kind.value, name=name, id_number=number, phone=phone,
        birth_date=birth, priority=priority, service_point_id=service_point_id or None,
        enrolled_at=tx.now, home_node_id=home_node_id or None))
    person = tx.repo.people.get(person_id)
    if actor is not None:
        note_change(tx, person_id, actor.label, "enrol",
                    f"enrolled at service point {service_point_id}" if service_point_id
                    else "enrolled")
    if tx.node.federated and not person.visitor:
        from node.usecases.claims import register_home

        register_home(tx, person)
    return person_view(tx, person, with_changes=True)


def get_person(tx: Tx, person_id: int) -> PersonView:
    return person_view(tx, tx.repo.people.get(person_id), with_changes=True)


def find_people(tx: Tx, who: Principal, query: str, service_point_id: int, after_id: int,
                limit: int) -> list[PersonView]:
    """What a service point's desk does when an elder phones: the people after
    ``after_id``, in id order, at most ``limit``, found by ``query`` (a whole ID card
    number, a whole phone number, or else part of a name: ``_terms``) and/or of service
    point ``service_point_id`` (0: any), without their change history.

    Staff find only the people of their own service point and those enrolled at none
    (as ``may_touch``); asking for another service point is PERMISSION_DENIED. Operators,
    auditors and programs that read find everyone; members may not search at all."""
    require_call("FindPeople", who)
    query = query.strip()
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidArgument(f"查找内容最多 {MAX_QUERY_CHARS} 个字符 (a query has at most "
                              f"{MAX_QUERY_CHARS} characters, not {len(query)})",
                              "QUERY_TOO_LONG")
    if any(ord(c) < 32 or ord(c) == 127 for c in query):
        raise InvalidArgument("查找内容不能含控制字符 (a query cannot hold control "
                              "characters)", "MALFORMED_QUERY")
    if not query and not service_point_id:
        raise InvalidArgument("请输入姓名的一部分、完整的身份证号或电话号码，或选择服务点 "
                              "(give part of a name, a whole ID card or phone number, or "
                              "a service point)", "MISSING_QUERY")
    if not 1 <= limit <= MAX_FOUND:
        raise InvalidArgument(f"每次最多查找 {MAX_FOUND} 人 (find 1 to {MAX_FOUND} people at "
                              f"a time, not {limit})", "LIMIT_OUT_OF_RANGE")
    within: tuple[int, ...] | None = None
    if who.role is Role.STAFF:
        within = (who.service_point_id,)
        if service_point_id not in (0, who.service_point_id):
            raise PermissionDenied(
                f"服务点工作人员只能查找本服务点的人 ({who.label} works at service point "
                f"{who.service_point_id}: they find its people and those enrolled at no "
                f"service point, not the people of service point {service_point_id})",
                "NOT_YOUR_SERVICE_POINT")
    if service_point_id:
        require_service_point(tx, service_point_id)
    id_number, phone, name_part = _terms(query)
    found = tx.repo.people.find(id_number=id_number, phone=phone, name_part=name_part,
                                service_point_id=service_point_id, within=within,
                                after_id=after_id, limit=limit)
    return [person_view(tx, p) for p in found]


def _terms(query: str) -> tuple[str, str, str]:
    """(ID number, phone, part of a name): what a stripped query looks for, one of them
    (or none: an empty query). 18 characters (spaces aside), 17 digits and a digit or
    X/x, are an ID card number, normalised as enrolment does (``parse_id_card``); else
    7 to 20 digits, spaces, '+' or '-' are a phone number, as enrolment keeps it
    (``_phone``); anything else is part of a name."""
    number = "".join(query.split()).upper()
    if (len(number) == 18 and number[:17].isascii() and number[:17].isdigit()
            and number[17] in "0123456789X"):
        return number, "", ""
    shortest, longest = PHONE_QUERY_CHARS
    if (shortest <= len(query) <= longest and all(c in _PHONE_CHARS for c in query)
            and any(c.isdigit() for c in query)):
        return "", _phone(query), ""
    return "", "", query


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _masked(phone: str) -> str:
    """A phone number as a person event keeps it: its last four digits only (the number
    itself is on the person's record; an audit trail need not copy it)."""
    digits = "".join(c for c in phone if c.isdigit())
    return "(none)" if not phone else f"…{digits[-4:]}" if len(digits) > 4 else "…"


def _point_text(point_id: int | None) -> str:
    return f"service point {point_id}" if point_id else "(none)"


def update_person(tx: Tx, person_id: int, staff_id: int, priority: bool | None,
                  phone: str | None, reason: str, *, name: str | None = None,
                  service_point_id: int | None = None, actor: Actor | None = None
                  ) -> PersonView:
    """Staff correct a person's mutable details: their name (a typo at enrolment), their
    phone, whether they are a priority elder (重点老人), and their service point (they
    moved house: the point's staff serve them from now on; their orders, links and hours
    go with them, since every rule reads the person's point when it is applied).
    ``None``: leave it as it is; ``service_point_id`` 0: at no service point (as
    enrolment allows). Each change is recorded as one person event naming the actor,
    with the old and the new value (a phone only by its last digits) and the reason
    given; a name correction needs a reason, since the name is how everyone finds the
    person. The same values again change and record nothing. Who may move a person
    between service points is the caller's check (``access.require_move``), made before.

    The ID number (and the PersonRef made from it) never changes here: it is who the
    person is, the one account per person is kept by it, and other districts and the
    city directory know the person by the PersonRef; a wrong number is a different
    person to all of them, so it is corrected by a new enrolment by the district's
    operator, never by editing. ``actor``: the authenticated caller, recorded (else
    staff ``staff_id``)."""
    who = district_actor(tx, actor, staff_id)
    reason = check_text("reason", reason)
    if priority is None and phone is None and name is None and service_point_id is None:
        raise InvalidArgument("请说明要修改什么：姓名、电话、重点老人身份或服务点 (say what "
                              "to change: name, phone, priority, service point)",
                              "NOTHING_TO_UPDATE")
    person = tx.repo.people.get(person_id)
    after, changes = person, []
    if name is not None:
        new_name = person_name(name)
        if new_name != person.name:
            if not reason:
                raise InvalidArgument("更正姓名须说明原因，记入档案 (a name is corrected "
                                      "only with a reason, kept with the record)",
                                      "NAME_NEEDS_REASON")
            after = replace(after, name=new_name)
            changes.append(f"name: {person.name} → {new_name}")
    if priority is not None and priority != person.priority:
        if priority and person.kind == PersonKind.GROUP.value:
            raise InvalidArgument("a group volunteer cannot be a priority elder",
                                  "GROUP_CANNOT_BE_PRIORITY")
        after = replace(after, priority=priority)
        changes.append(f"priority elder (重点老人): {_yes(person.priority)} → {_yes(priority)}")
    if phone is not None:
        new_phone = _phone(phone)
        if new_phone != person.phone:
            after = replace(after, phone=new_phone)
            changes.append(f"phone: {_masked(person.phone)} → {_masked(new_phone)}")
    if service_point_id is not None and service_point_id != (person.service_point_id or 0):
        if service_point_id:
            require_service_point(tx, service_point_id)
        after = replace(after, service_point_id=service_point_id or None)
        changes.append(f"service point: {_point_text(person.service_point_id)} → "
                       f"{_point_text(service_point_id)}")
    if changes:
        tx.repo.people.update(person, after)
        note_change(tx, person.id, who.label, "update",
                    "; ".join(changes) + (f" ({reason})" if reason else ""))
    return person_view(tx, after, with_changes=True)


def note_change(tx: Tx, person_id: int, actor: str, kind: str, detail: str) -> None:
    """Record a change of a person's record: who made it, what kind, what changed."""
    tx.repo.people.add_event(PersonEvent(person_id, tx.now, actor[:64], kind[:16],
                                         detail[:MAX_TEXT_CHARS]))


def move_home(tx: Tx, person: PersonRecord, home_node_id: str | None, actor: str,
              detail: str) -> None:
    """Keep ``person``'s hours in ``home_node_id`` from now on (None: here), recording the
    change as a person event by ``actor`` (the city ``directory``, or the
    ``clearinghouse`` completing a move)."""
    if home_node_id == person.home_node_id:
        return
    tx.repo.people.set_home(person.id, home_node_id)

    def where(home: str | None) -> str:
        return "here" if home is None else f"in district {home}"

    note_change(tx, person.id, actor, "home", f"hours kept {where(home_node_id)} "
                f"(were kept {where(person.home_node_id)}): {detail}")


def age_of(tx: Tx, person: PersonRecord) -> int:
    if person.birth_date is None:
        return 0
    today = tx.local_date(tx.now)
    b = person.birth_date
    return today.year - b.year - int((today.month, today.day) < (b.month, b.day))


def facts(tx: Tx, person: PersonRecord) -> PersonFacts:
    return PersonFacts(person.id, PersonKind(person.kind), age_of(tx, person), person.priority)


def person_view(tx: Tx, p: PersonRecord, *, with_changes: bool = False) -> PersonView:
    """A person as an rpc returns them; ``with_changes``: with the latest changes of
    their record and their links, each from this person's side (``links_seen_by``)."""
    if not with_changes:
        return PersonView(p.id, p.person_ref, p.kind, p.name, p.priority,
                          p.service_point_id or 0, age_of(tx, p), p.enrolled_at,
                          p.home_node_id or "", p.phone)
    changes = tuple(PersonChangeView(e.at, e.actor, e.kind, e.detail)
                    for e in tx.repo.people.events(p.id, MAX_CHANGES_SHOWN))
    links = links_seen_by(p.id, tx.repo.people.links_naming(p.id, MAX_STORED_READ))
    return PersonView(p.id, p.person_ref, p.kind, p.name, p.priority, p.service_point_id or 0,
                      age_of(tx, p), p.enrolled_at, p.home_node_id or "", p.phone, changes,
                      links)


def link_people(tx: Tx, person_id: int, other_id: int, relation: Relation,
                staff_id: int, *, actor: Actor | None = None) -> LinkView:
    """Record that ``other`` stands to ``person`` as ``relation`` (family both ways),
    and who linked them (``actor``, the authenticated caller; else staff ``staff_id``,
    if any) on both people's records."""
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
    if actor is not None:
        for one, two in ((person_id, other_id), (other_id, person_id)):
            note_change(tx, one, actor.label, "link",
                        f"linked to person {two} ({relation.value})")
    return LinkView(person_id, other_id, relation.value)


def acts_for(tx: Tx, actor: Actor, person_id: int) -> bool:
    """Whether the actor may act for the person: themself, their proxy or family, or staff
    (or an operator or program acting for the district)."""
    if actor.district:
        return True
    return (actor.person_id == person_id
            or bool(tx.repo.people.relations(person_id, actor.person_id)))


def require_acts_for(tx: Tx, actor: Actor, person_id: int, what: str) -> None:
    require_actor(tx, actor)
    if not acts_for(tx, actor, person_id):
        raise PermissionDenied(
            f"person {actor.person_id} may not {what} for person {person_id}: only the person, "
            "their registered proxy or family, or staff may", "NOT_AUTHORISED")
