"""Who may call what on a node: roles, principals, the rule of every rpc, and actors.

A call is made by a ``Principal``: an authenticated account (a person at a desk or a
phone) or a program's bearer token. Five roles:

- ``operator``: the district's IT operator; every rpc, every service point and person.
- ``staff``: bound to a staff record and its service point; runs the service loop and
  people's records for the people of that service point (and for people enrolled at no
  service point, whom any of the district's staff serve).
- ``member``: bound to a person (a volunteer, an elder, or their proxy or relative);
  reads and acts only for themself and the people linked to them (family and proxies).
- ``auditor``: reads everything, changes nothing.
- ``program``: an integration, with explicit scopes: ``read`` (every read rpc),
  ``orders`` (the service loop) and ``enrol`` (enrolment and people's records).

``RULES`` names, for every rpc of ``timebank.v1.NodeService``, the roles that may call
it and the scope a program needs; an rpc missing from it is refused to everyone (fail
closed; a test checks every rpc of the contract has a rule or is public). ``PUBLIC``
names the few anyone may call without a credential: logging in, the city's log heads,
and the orders in their publicity period with names masked (社会监督). ``may_call`` is
the first check of a call, ``may_touch`` the second (for staff: the service point of
the person the call touches; for members: which person), ``may_move`` the third when
a call moves a person to another service point, and ``acting`` turns the caller and the
actor a request names into the actor that is recorded.

Pure: no storage, no gRPC. Every refusal is the message for the caller, Chinese first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from runtime.errors import InvariantViolation

#: Longest actor label recorded with an event (the schema's actor columns hold 64).
MAX_ACTOR_CHARS = 64
MAX_PROGRAM_NAME_CHARS = 24
#: A program token's days by default and at most; a local session's at most.
DEFAULT_TOKEN_DAYS = 90
MAX_TOKEN_DAYS = 366


class Role(StrEnum):
    OPERATOR = "operator"
    STAFF = "staff"
    MEMBER = "member"
    AUDITOR = "auditor"
    PROGRAM = "program"


class Scope(StrEnum):
    READ = "read"      # every read rpc (as an auditor)
    ORDERS = "orders"  # the service loop: request, accept, check in/out, verify ...
    ENROL = "enrol"    # enrolment, people's details and links


ROLE_NAMES: Mapping[Role, str] = {
    Role.OPERATOR: "区运维员 operator", Role.STAFF: "服务点工作人员 staff",
    Role.MEMBER: "成员 member", Role.AUDITOR: "审计员 auditor", Role.PROGRAM: "程序 program",
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who makes a call, as their credential says: the account, its role and what the
    role is bound to (a staff record and its service point, or a person), or a program's
    scopes."""

    role: Role
    account_id: int
    staff_id: int = 0
    service_point_id: int = 0
    person_id: int = 0
    program: str = ""  # a program's name (its account's login)
    scopes: frozenset[Scope] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.account_id < 1:
            raise InvariantViolation("a principal is an account")
        staff = self.role is Role.STAFF
        member = self.role is Role.MEMBER
        program = self.role is Role.PROGRAM
        if staff != (self.staff_id > 0 and self.service_point_id > 0):
            raise InvariantViolation("staff, and only staff, are bound to a staff record "
                                     "and its service point")
        if member != (self.person_id > 0):
            raise InvariantViolation("members, and only members, are bound to a person")
        if program != bool(self.program) or (self.scopes and not program):
            raise InvariantViolation("programs, and only programs, have a name and scopes")
        if len(self.program) > MAX_PROGRAM_NAME_CHARS:
            raise InvariantViolation("a program name is short")

    @property
    def label(self) -> str:
        """The actor as events record it: "staff:3", "person:5", "operator:2",
        "auditor:4", "program:name"."""
        if self.role is Role.STAFF:
            return f"staff:{self.staff_id}"
        if self.role is Role.MEMBER:
            return f"person:{self.person_id}"
        if self.role is Role.PROGRAM:
            return f"program:{self.program}"
        return f"{self.role.value}:{self.account_id}"


@dataclass(frozen=True, slots=True)
class Rule:
    """Who may call one rpc: these roles, and programs holding ``scope``."""

    roles: frozenset[Role]
    scope: Scope | None = None


_ALL = frozenset(Role)
_O = Role.OPERATOR
_S = Role.STAFF
_M = Role.MEMBER
_A = Role.AUDITOR
_P = Role.PROGRAM

#: Any authenticated caller (their session, the policy in force).
ANYONE = Rule(_ALL)
#: Reading the district's books and claims: operators, auditors, programs that read.
BOOKS = Rule(frozenset({_O, _A, _P}), Scope.READ)
#: One claim (an order's payment across districts, which the desk follows): also staff.
CLAIM = Rule(frozenset({_O, _S, _A, _P}), Scope.READ)
#: Reading one person's or order's records: also staff and members (``may_touch``).
RECORDS = Rule(_ALL, Scope.READ)
#: The service loop: staff, members for themselves and their people, programs.
LOOP = Rule(frozenset({_O, _S, _M, _P}), Scope.ORDERS)
#: People's records: staff at their service point, programs that enrol.
PEOPLE = Rule(frozenset({_O, _S, _P}), Scope.ENROL)
#: The node's own set-up: operators only.
SETUP = Rule(frozenset({_O}))
#: Hours outside the service loop, given by the district: staff and operators.
DISTRICT = Rule(frozenset({_O, _S}))

#: Calls anyone may make without a credential: logging in (ADR 0016), the city's log
#: heads, public by ADR 0014, and the public supervision page (社会监督): the orders in
#: their publicity period, named only by masked names (``node.domain.publicity``).
#: Health and reflection are other services.
PUBLIC: frozenset[str] = frozenset({"Login", "GetLogHeads", "ListPublicOrders"})

RULES: Mapping[str, Rule] = {
    # sessions and accounts
    "Logout": ANYONE,
    "WhoAmI": ANYONE,
    # service points and staff
    "RegisterServicePoint": SETUP,
    "RegisterStaff": SETUP,
    # people
    "EnrolPerson": PEOPLE,
    "GetPerson": RECORDS,
    # a desk finding a person by name, ID number or phone: staff only among the people
    # they serve (their service point's and those at none); members may not search
    "FindPeople": Rule(frozenset({_O, _S, _A, _P}), Scope.READ),
    # staff correct the people of their service point; moving a person to another
    # service point is also ``may_move``'s: operators anywhere, staff into their own
    "UpdatePerson": PEOPLE,
    "LinkPeople": PEOPLE,
    # the district's service points (codes, names, streets: nothing personal), which a
    # desk chooses from; any caller
    "ListServicePoints": ANYONE,
    # the service loop
    "RequestOrder": LOOP,
    "AcceptOrder": LOOP,
    "CheckIn": LOOP,
    "CheckOut": LOOP,
    "VerifyOrder": LOOP,
    "DisputeOrder": LOOP,
    "ResolveDispute": DISTRICT,
    "CancelOrder": LOOP,
    "RecordOrder": Rule(frozenset({_O, _S, _P}), Scope.ORDERS),
    "RecordDueOrders": Rule(frozenset({_O, _P}), Scope.ORDERS),
    # the volunteer rating the person served (满意度互评): a step of the loop; that the
    # caller is the order's volunteer (or staff acting for them) is the use-case's check
    "RateOrder": LOOP,
    "GetOrder": RECORDS,
    "ListOrders": RECORDS,
    # the requests waiting for a volunteer (志愿接单), recipients' names masked: every
    # role, since any member may take one (staff see only their service point's and
    # those at none: ``node.usecases.orders.open_requests``). Programs: ANYONE, not a
    # scope, because one Rule names one scope and both `orders` (a volunteers' app
    # lists, then accepts) and `read` (every read rpc) must reach it; the third scope,
    # `enrol`, already reaches people's full records, and what this shows any member
    # of the district sees anyway
    "ListOpenRequests": ANYONE,
    # hours outside the service loop
    "Donate": Rule(frozenset({_O, _S, _M})),
    "Grant": DISTRICT,
    "ReverseTransaction": DISTRICT,
    # reading
    "GetBalance": RECORDS,
    "GetHistory": RECORDS,
    # a person's signed passbook: their balance and history, so whoever may read those
    "GetPassbook": RECORDS,
    "GetPolicy": ANYONE,
    "CheckLedger": BOOKS,
    # consent: the payer (a member), or staff or an operator recording it for them
    "GrantConsent": Rule(frozenset({_O, _S, _M})),
    "RevokeConsent": Rule(frozenset({_O, _S, _M})),
    "ListConsents": RECORDS,
    # claims with other districts
    "MovePerson": SETUP,
    "GetClaim": CLAIM,
    "ListClaims": BOOKS,
    "GetClearing": BOOKS,
}


def may_call(rpc: str, who: Principal) -> str | None:
    """Why ``who`` may not call ``rpc`` at all (None: they may, subject to
    ``may_touch``). An rpc without a rule is refused to everyone."""
    rule = RULES.get(rpc)
    if rule is None:
        return (f"调用 {rpc} 无访问规则，拒绝 (there is no access rule for {rpc}: nobody "
                "may call it)")
    if who.role not in rule.roles:
        allowed = ", ".join(ROLE_NAMES[r] for r in Role if r in rule.roles)
        return (f"{ROLE_NAMES[who.role]} 无权调用 {rpc} ({who.label} may not call {rpc}: "
                f"it needs the role {allowed})")
    if who.role is Role.PROGRAM and rule.scope is not None and rule.scope not in who.scopes:
        return (f"程序缺少权限范围 {rule.scope.value} ({who.label} may not call {rpc}: it "
                f"needs the scope {rule.scope.value!r}; the token has "
                f"{', '.join(sorted(who.scopes)) or 'none'})")
    return None


@dataclass(frozen=True, slots=True)
class Subject:
    """A person a call touches: their service point (0: none) and the people linked to
    them (family and proxies, in either direction)."""

    person_id: int
    service_point_id: int = 0
    linked: frozenset[int] = frozenset()


def may_touch(who: Principal, subject: Subject) -> str | None:
    """Why ``who`` may not read or act on ``subject``'s records (None: they may).

    Staff: people of their own service point, or enrolled at none. Members: themself
    and the people linked to them. Operators, auditors and programs: anyone (what they
    may call at all is ``may_call``'s)."""
    if who.role is Role.STAFF:
        if subject.service_point_id in (0, who.service_point_id):
            return None
        return (f"服务点工作人员只能为本服务点的人办理 ({who.label} works at service point "
                f"{who.service_point_id}; person {subject.person_id} belongs to service "
                f"point {subject.service_point_id})")
    if who.role is Role.MEMBER:
        if subject.person_id == who.person_id or who.person_id in subject.linked:
            return None
        return (f"成员只能查看和办理本人及关联亲属的事务 (person {who.person_id} may act "
                f"only for themself and the people linked to them, not for person "
                f"{subject.person_id})")
    return None


def may_move(who: Principal, subject: Subject, to_point: int) -> str | None:
    """Why ``who`` may not move ``subject`` from their service point to ``to_point``
    (0: to none); None: they may. Checked after ``may_touch`` (staff reach only people
    of their own service point or of none).

    A service point's staff serve its people, so a move hands a person from one desk to
    another. Operators move anyone anywhere, to none too: they decide between the
    district's service points. Staff only take a person into their own service point
    (from it, a no-op, or from none: someone who has come to live in its area): never
    into another point, whose staff have not taken the person on, nor to none, which
    would put the person out of any one desk's care; they ask the district's operator.
    Programs move no one: their ``enrol`` scope corrects details, and handing people
    between desks is the district's decision. Leaving a person where they are is no
    move, and anyone who may touch them may do that."""
    if to_point == subject.service_point_id or who.role is Role.OPERATOR:
        return None
    if who.role is Role.STAFF:
        if to_point == who.service_point_id:
            return None
        return (f"服务点工作人员只能把人员转入本服务点，转到其他服务点请联系区运维员 "
                f"({who.label} works at service point {who.service_point_id}: they may move "
                f"person {subject.person_id} into it, not to "
                f"{f'service point {to_point}' if to_point else 'no service point'}; the "
                "district's operator moves people between service points)")
    return (f"只有区运维员可以在服务点之间转移人员 ({who.label} may not move person "
            f"{subject.person_id} between service points: the district's operator does, "
            "or staff into their own service point)")


@dataclass(frozen=True, slots=True)
class Actor:
    """Who performs an act, as recorded with it: an enrolled person or a staff member,
    and ``by``: the authenticated caller acting for that person ("staff:3" acting for
    an elder without a phone), or acting alone ("operator:1", "program:app") when
    neither a person nor a staff member acts."""

    person_id: int = 0
    staff_id: int = 0
    by: str = ""

    def __post_init__(self) -> None:
        if len(self.label) > MAX_ACTOR_CHARS:
            raise InvariantViolation("an actor label fits the actor columns")

    @property
    def label(self) -> str:
        own = (f"person:{self.person_id}" if self.person_id
               else f"staff:{self.staff_id}" if self.staff_id else "")
        if self.by and own:
            return f"{self.by} for {own}"
        return self.by or own

    @property
    def district(self) -> bool:
        """Acts for the district (staff, or an operator or program acting alone), not
        as a person."""
        return bool(self.staff_id) or (bool(self.by) and not self.person_id)


def _mismatch(named: str, who: Principal) -> str:
    return (f"请求中的办理人与登录身份不符 (the actor in the request ({named}) is not "
            f"the caller ({who.label.replace(':', ' ')}))")


def acting(who: Principal, person_id: int = 0, staff_id: int = 0) -> Actor | str:
    """The actor recorded for a call by ``who`` whose request names ``person_id`` or
    ``staff_id`` as its actor (both 0: none named); or why the request's actor is
    refused. A staff id must be the caller's own; a person is the caller themself (a
    member), or the person staff, an operator or a program act for."""
    if person_id and staff_id:
        raise InvariantViolation("a request names one actor")
    if staff_id:
        if who.role is Role.STAFF and who.staff_id == staff_id:
            return Actor(staff_id=staff_id)
        return _mismatch(f"staff {staff_id}", who)
    if who.role is Role.MEMBER:
        if person_id in (0, who.person_id):
            return Actor(person_id=who.person_id)
        return _mismatch(f"person {person_id}", who)
    if who.role is Role.STAFF:
        return (Actor(person_id=person_id, by=who.label) if person_id
                else Actor(staff_id=who.staff_id))
    return Actor(person_id=person_id, by=who.label)


@dataclass(frozen=True, slots=True)
class LoginRules:
    """How long sessions and one-time codes last and how guessing is slowed (the node's
    ``[auth]`` settings): ``max_failures`` failed logins in a row lock an account for
    ``lock_minutes``; ``address_max_failures`` failed logins from one client address
    within ``address_window_minutes`` refuse that address until the window passes."""

    session_hours: int = 12
    code_minutes: int = 15
    max_failures: int = 5
    lock_minutes: int = 15
    address_max_failures: int = 20
    address_window_minutes: int = 10

    def __post_init__(self) -> None:
        if min(self.session_hours, self.code_minutes, self.max_failures, self.lock_minutes,
               self.address_max_failures, self.address_window_minutes) < 1:
            raise ValueError("every login rule is a positive number")


__all__ = ["ANYONE", "MAX_ACTOR_CHARS", "PUBLIC", "RULES", "Actor", "LoginRules", "Principal",
           "Role", "Rule", "Scope", "Subject", "acting", "may_call", "may_move", "may_touch"]
