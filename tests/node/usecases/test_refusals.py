"""Bad input gets a specific error and leaves the database exactly as it was.

One world per storage engine; every refused call is tried against it and the whole
database (every row of every table, and the ledger head) is compared after each one.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest

from node.domain.clock import ManualClock
from node.domain.identity import id_card_with_check_digit
from node.domain.orders import (
    ALLOWED_FROM,
    DONE_IN,
    Action,
    OrderState,
    PaymentSource,
    PersonKind,
    already_done,
)
from node.domain.policy import Relation
from node.usecases import ledger, orders, people
from node.usecases.app import NodeApp
from node.usecases.views import Actor
from runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Refusal,
    ResourceExhausted,
)
from tests.helpers import (
    credit_code,
    earn,
    enrol,
    id_card,
    link,
    request,
    snapshot,
    staff,
    walk,
)

IND, GRP = PersonKind.INDIVIDUAL, PersonKind.GROUP
OWN, RELATIVE = PaymentSource.OWN, PaymentSource.RELATIVE
POOL, GRANT = PaymentSource.DONATION_POOL, PaymentSource.CITY_GRANT


@dataclass
class World:
    app: NodeApp
    staff: int
    point: int
    priority: int
    mother: int
    son: int
    proxy: int
    volunteer: int
    group: int
    young: int
    mother_id_number: str
    group_code: str
    grant_seq: int
    reversal_seq: int
    orders: dict[OrderState, int]


def build_world(app: NodeApp, clock: ManualClock) -> World:
    sid = staff(app)
    point = app.query(lambda tx: tx.repo.staff.get(sid).service_point_id)
    priority = enrol(app, "赵大爷", 1935, priority=True).id
    number = id_card(1950)
    mother = app.execute(people.enrol_person, IND, "王秀兰", number, "", False, 0).id
    son, proxy = enrol(app, "王建国", 1985).id, enrol(app, "李社工", 1988).id
    volunteer, young = enrol(app, "陈志愿", 1990).id, enrol(app, "周小妹", 1995).id
    code = credit_code()
    group = app.execute(people.enrol_person, GRP, "某公司党支部", code, "", False, 0).id
    link(app, mother, son, Relation.CHILD, sid)
    link(app, mother, proxy, Relation.PROXY, sid)
    earn(app, clock, son, 120, priority)
    earn(app, clock, group, 60, priority)
    grant_seq = app.execute(ledger.grant, priority, 60, sid, "grant").seq
    undone = app.execute(ledger.grant, priority, 15, sid, "grant").seq
    reversal_seq = app.execute(ledger.reverse, undone, sid, "误发").seq
    spent = request(app, priority, 45, OWN)  # 45 of the 60 granted minutes
    walk(app, clock, spent.record.id, volunteer, 45, to="recorded")
    by_state: dict[OrderState, int] = {}
    rec = request(app, priority, 30)
    walk(app, clock, rec.record.id, volunteer, 30, to="recorded")
    by_state[OrderState.RECORDED] = rec.record.id
    for state in ("requested", "accepted", "checked_in", "checked_out", "verified", "disputed",
                  "cancelled"):
        o = request(app, priority, 30)
        if state not in ("requested", "cancelled"):
            walk(app, clock, o.record.id, volunteer, 30,
                 to="verified" if state == "disputed" else state)
        if state == "disputed":
            app.execute(orders.dispute_order, o.record.id, Actor(staff_id=sid), "有疑问")
        if state == "cancelled":
            app.execute(orders.cancel_order, o.record.id, Actor(staff_id=sid), "不需要")
        by_state[OrderState(state)] = o.record.id
    return World(app, sid, point, priority, mother, son, proxy, volunteer, group, young,
                 number, code, grant_seq, reversal_seq, by_state)


def _action(w: World, action: Action, order_id: int) -> Callable[[], object]:
    app, staff_actor = w.app, Actor(staff_id=w.staff)
    calls: dict[Action, Callable[[], object]] = {
        Action.ACCEPT: lambda: app.execute(orders.accept_order, order_id, w.son),
        Action.CHECK_IN: lambda: app.execute(orders.check_in, order_id),
        Action.CHECK_OUT: lambda: app.execute(orders.check_out, order_id),
        Action.VERIFY: lambda: app.execute(orders.verify_order, order_id, staff_actor, 5, ""),
        Action.DISPUTE: lambda: app.execute(orders.dispute_order, order_id, staff_actor, "?"),
        Action.RESOLVE: lambda: app.execute(orders.resolve_dispute, order_id, w.staff, True, 0,
                                            "ok"),
        Action.CANCEL: lambda: app.execute(orders.cancel_order, order_id, staff_actor, "x"),
        Action.RECORD: lambda: app.execute(orders.record_order, order_id),
    }
    return calls[action]


Case = tuple[str, Callable[[World], object], type[Refusal], str]


def _cases() -> list[Case]:
    def ex(fn: Callable[..., object], *args: object) -> Callable[[World], object]:
        """A use-case call whose int args may name world attributes ('@son')."""
        def call(w: World) -> object:
            real = [getattr(w, a[1:]) if isinstance(a, str) and a.startswith("@") else a
                    for a in args]
            return w.app.execute(fn, *real)
        return call

    def order(state: str) -> Callable[[World], int]:
        return lambda w: w.orders[OrderState(state)]

    def on(state: str, fn: Callable[..., object], *args: object) -> Callable[[World], object]:
        def call(w: World) -> object:
            real = [getattr(w, a[1:]) if isinstance(a, str) and a.startswith("@") else a
                    for a in args]
            return w.app.execute(fn, order(state)(w), *real)
        return call

    def staff_of(w: World) -> Actor:
        return Actor(staff_id=w.staff)

    req = orders.request_order
    e = InvalidArgument, NotFound, FailedPrecondition, PermissionDenied, AlreadyExists
    bad, missing, precondition, denied, exists = e
    return [
        # --- people
        ("malformed ID", ex(people.enrol_person, IND, "某人", "3201151950010100", "", False, 0),
         bad, "MALFORMED_ID_NUMBER"),
        ("ID check digit", ex(people.enrol_person, IND, "某人", "320115195001010011", "",
                              False, 0), bad, "MALFORMED_ID_NUMBER"),
        ("ID born in the future", ex(people.enrol_person, IND, "某人",
                                     id_card_with_check_digit("32011520990101001"), "", False,
                                     0), bad, "MALFORMED_ID_NUMBER"),
        ("enrolled twice", lambda w: w.app.execute(people.enrol_person, IND, "又一次",
                                                   w.mother_id_number, "", False, 0),
         exists, "ALREADY_ENROLLED"),
        ("group enrolled twice", lambda w: w.app.execute(people.enrol_person, GRP, "又一次",
                                                         w.group_code, "", False, 0),
         exists, "ALREADY_ENROLLED"),
        ("no name", ex(people.enrol_person, IND, "  ", id_card(1960), "", False, 0), bad, ""),
        ("name too long", ex(people.enrol_person, IND, "名" * 65, id_card(1960), "", False, 0),
         bad, ""),
        ("bad phone", ex(people.enrol_person, IND, "某人", id_card(1960), "138-abc", False, 0),
         bad, ""),
        ("group as priority elder", ex(people.enrol_person, GRP, "某公司", credit_code(), "",
                                       True, 0), bad, ""),
        ("bad credit code", ex(people.enrol_person, GRP, "某公司", "91320115MA0000002O", "",
                               False, 0), bad, "MALFORMED_ID_NUMBER"),
        ("unknown service point", ex(people.enrol_person, IND, "某人", id_card(1960), "", False,
                                     999), missing, "UNKNOWN_SERVICE_POINT"),
        ("link to self", ex(people.link_people, "@mother", "@mother", Relation.CHILD, "@staff"),
         bad, ""),
        ("link unknown", ex(people.link_people, "@mother", 999, Relation.CHILD, "@staff"),
         missing, "UNKNOWN_PERSON"),
        ("link twice", ex(people.link_people, "@mother", "@son", Relation.CHILD, "@staff"),
         exists, "ALREADY_LINKED"),
        ("link a group", ex(people.link_people, "@mother", "@group", Relation.CHILD, "@staff"),
         bad, ""),
        ("link by unknown staff", ex(people.link_people, "@mother", "@young", Relation.CHILD,
                                     999), missing, "UNKNOWN_STAFF"),
        ("service point twice", lambda w: w.app.execute(
            people.register_service_point,
            w.app.query(lambda tx: tx.repo.staff.service_point(w.point).code), "x", ""),
         exists, "DUPLICATE_CODE"),
        ("bad service point code", ex(people.register_service_point, "a b", "x", ""), bad, ""),
        ("staff at unknown point", ex(people.register_staff, "某人", 999), missing,
         "UNKNOWN_SERVICE_POINT"),
        # --- requests
        ("zero minutes", ex(req, "@priority", "cleaning", 0, GRANT, 0, Actor(person_id=1), ""),
         bad, "MINUTES_OUT_OF_RANGE"),
        ("negative minutes", ex(req, "@priority", "cleaning", -30, GRANT, 0, Actor(person_id=1),
                                ""), bad, "MINUTES_OUT_OF_RANGE"),
        ("over a day", ex(req, "@priority", "cleaning", 1441, GRANT, 0, Actor(person_id=1), ""),
         bad, "MINUTES_OUT_OF_RANGE"),
        ("over int64", ex(req, "@priority", "cleaning", 2**63, GRANT, 0, Actor(person_id=1),
                          ""), bad, "MINUTES_OUT_OF_RANGE"),
        ("unknown category", ex(req, "@priority", "massage", 30, GRANT, 0, Actor(person_id=1),
                                ""), bad, "UNKNOWN_CATEGORY"),
        ("unknown recipient", ex(req, 999, "cleaning", 30, GRANT, 0, Actor(person_id=1), ""),
         missing, "UNKNOWN_PERSON"),
        ("unknown payer", lambda w: w.app.execute(req, w.mother, "cleaning", 30, RELATIVE, 999,
                                                  Actor(person_id=w.mother), ""),
         missing, "UNKNOWN_PERSON"),
        ("unknown requester", ex(req, "@priority", "cleaning", 30, GRANT, 0,
                                 Actor(person_id=999), ""), missing, "UNKNOWN_PERSON"),
        ("stranger requests", lambda w: w.app.execute(req, w.priority, "cleaning", 30, GRANT, 0,
                                                      Actor(person_id=w.young), ""),
         denied, "NOT_AUTHORISED"),
        ("two actors", lambda w: w.app.execute(req, w.priority, "cleaning", 30, GRANT, 0,
                                               Actor(person_id=w.priority, staff_id=w.staff),
                                               ""), bad, ""),
        ("proxy pays", lambda w: w.app.execute(req, w.mother, "cleaning", 30, RELATIVE, w.proxy,
                                               staff_of(w), ""), denied, "NOT_A_RELATIVE"),
        ("stranger pays", lambda w: w.app.execute(req, w.mother, "cleaning", 30, RELATIVE,
                                                  w.volunteer, staff_of(w), ""),
         denied, "NOT_A_RELATIVE"),
        ("group pays", lambda w: w.app.execute(req, w.mother, "cleaning", 30, RELATIVE, w.group,
                                               staff_of(w), ""),
         denied, "GROUP_HOURS_DONATE_ONLY"),
        ("relative too young", lambda w: w.app.execute(req, w.son, "cleaning", 30, RELATIVE,
                                                       w.mother, staff_of(w), ""),
         denied, "RELATIVE_TOO_YOUNG"),
        ("more than the relative has", lambda w: w.app.execute(
            req, w.mother, "cleaning", 135, RELATIVE, w.son, Actor(person_id=w.son), ""),
         precondition, "INSUFFICIENT_BALANCE"),
        ("without the relative's consent", lambda w: w.app.execute(
            req, w.mother, "cleaning", 30, RELATIVE, w.son, staff_of(w), ""),
         precondition, "NO_CONSENT"),
        ("own hours too young", lambda w: w.app.execute(req, w.son, "cleaning", 30, OWN, 0,
                                                        staff_of(w), ""),
         denied, "TOO_YOUNG_TO_REDEEM"),
        ("own hours not there", lambda w: w.app.execute(req, w.mother, "cleaning", 30, OWN, 0,
                                                        staff_of(w), ""),
         precondition, "INSUFFICIENT_BALANCE"),
        ("grant for a non-priority", lambda w: w.app.execute(req, w.mother, "cleaning", 30,
                                                             GRANT, 0, staff_of(w), ""),
         denied, "NOT_A_PRIORITY_ELDER"),
        ("pool empty", lambda w: w.app.execute(req, w.priority, "cleaning", 30, POOL, 0,
                                               staff_of(w), ""),
         precondition, "INSUFFICIENT_BALANCE"),
        ("payer for own hours", lambda w: w.app.execute(req, w.mother, "cleaning", 30, OWN,
                                                        w.son, staff_of(w), ""),
         bad, "PAYER_MISMATCH"),
        ("group served", lambda w: w.app.execute(req, w.group, "cleaning", 30, POOL, 0,
                                                 staff_of(w), ""), bad, "RECIPIENT_IS_GROUP"),
        ("note too long", lambda w: w.app.execute(req, w.priority, "cleaning", 30, GRANT, 0,
                                                  staff_of(w), "x" * 501), bad, ""),
        # --- the loop, beyond states (the state matrix is its own test)
        ("accept unknown order", ex(orders.accept_order, 999, "@volunteer"), missing,
         "UNKNOWN_ORDER"),
        ("accept by unknown", on("requested", orders.accept_order, 999), missing,
         "UNKNOWN_PERSON"),
        ("serve oneself", on("requested", orders.accept_order, "@priority"), denied,
         "SELF_SERVICE"),
        ("check out before check in", lambda w: w.app.execute(
            orders.check_out, w.orders[OrderState.CHECKED_IN],
            w.app.clock.now() - timedelta(days=1)), bad, "CHECK_OUT_BEFORE_CHECK_IN"),
        ("check in before the request", lambda w: w.app.execute(
            orders.check_in, w.orders[OrderState.ACCEPTED], w.app.query(
                orders.get_order, w.orders[OrderState.ACCEPTED]).record.requested_at
            - timedelta(seconds=1)), bad, "CHECK_IN_BEFORE_REQUEST"),
        ("check in in the future", lambda w: w.app.execute(
            orders.check_in, w.orders[OrderState.ACCEPTED],
            w.app.clock.now() + timedelta(hours=1)), bad, "TIME_IN_FUTURE"),
        ("volunteer verifies", lambda w: w.app.execute(
            orders.verify_order, w.orders[OrderState.CHECKED_OUT], Actor(person_id=w.volunteer),
            5, ""), denied, "NOT_AUTHORISED"),
        ("stranger verifies", lambda w: w.app.execute(
            orders.verify_order, w.orders[OrderState.CHECKED_OUT], Actor(person_id=w.young),
            5, ""), denied, "NOT_AUTHORISED"),
        ("rating 6", lambda w: w.app.execute(
            orders.verify_order, w.orders[OrderState.CHECKED_OUT], staff_of(w), 6, ""),
         bad, "BAD_RATING"),
        ("record before publicity ends", on("verified", orders.record_order), precondition,
         "PUBLICITY_NOT_OVER"),
        ("record batch of 0", ex(orders.record_due_orders, 0), bad, ""),
        ("resolve by unknown staff", on("disputed", orders.resolve_dispute, 999, True, 0, "ok"),
         missing, "UNKNOWN_STAFF"),
        ("stranger cancels", lambda w: w.app.execute(
            orders.cancel_order, w.orders[OrderState.ACCEPTED], Actor(person_id=w.young), ""),
         denied, "NOT_AUTHORISED"),
        ("dispute without reason", on("verified", orders.dispute_order, Actor(person_id=1), " "),
         bad, ""),
        # --- hours outside the loop
        ("donate zero", ex(ledger.donate, "@son", 0), bad, "MINUTES_OUT_OF_RANGE"),
        ("donate negative", ex(ledger.donate, "@son", -60), bad, "MINUTES_OUT_OF_RANGE"),
        ("donate over int64", ex(ledger.donate, "@son", 2**63), bad, "MINUTES_OUT_OF_RANGE"),
        ("donate more than stored", ex(ledger.donate, "@son", 121), precondition,
         "INSUFFICIENT_BALANCE"),
        ("donate unknown", ex(ledger.donate, 999, 15), missing, "UNKNOWN_PERSON"),
        ("grant to non-priority", ex(ledger.grant, "@mother", 60, "@staff", ""), denied,
         "NOT_A_PRIORITY_ELDER"),
        ("grant beyond the budget", ex(ledger.grant, "@priority", 10**12, "@staff", ""),
         ResourceExhausted, "GRANT_BUDGET_EXHAUSTED"),
        ("grant over the cap", ex(ledger.grant, "@priority", 90_000, "@staff", ""),
         precondition, "CAP_EXCEEDED"),
        ("grant by unknown staff", ex(ledger.grant, "@priority", 60, 999, ""), missing,
         "UNKNOWN_STAFF"),
        ("grant without staff", ex(ledger.grant, "@priority", 60, 0, ""), missing,
         "UNKNOWN_STAFF"),
        ("reverse unknown entry", ex(ledger.reverse, 999, "@staff", "x"), missing,
         "UNKNOWN_ENTRY"),
        ("reverse a reversal", ex(ledger.reverse, "@reversal_seq", "@staff", "x"), precondition,
         "REVERSAL_OF_REVERSAL"),
        ("reverse twice", lambda w: w.app.execute(ledger.reverse, w.reversal_seq - 1, w.staff,
                                                  "x"), exists, "ALREADY_REVERSED"),
        ("reverse a spent grant", ex(ledger.reverse, "@grant_seq", "@staff", "x"), precondition,
         "INSUFFICIENT_BALANCE"),
        ("idempotency key reused", lambda w: w.app.execute_once(
            "used-key", "Donate", hashlib.sha256(b"other").digest(),
            lambda tx: ledger.donate(tx, w.son, 15), lambda e: b""), exists,
         "IDEMPOTENCY_KEY_REUSED"),
    ]


@pytest.fixture
def world(node_app: NodeApp, clock: ManualClock) -> World:
    w = build_world(node_app, clock)
    node_app.execute_once("used-key", "Donate", hashlib.sha256(b"first").digest(),
                          lambda tx: ledger.donate(tx, w.son, 15), lambda e: b"ok")
    return w


def _expect_refused(w: World, call: Callable[[], object], error: type[Refusal],
                    reason: str, before: dict[str, list[tuple[object, ...]]],
                    head: tuple[int, bytes]) -> str | None:
    try:
        call()
    except Refusal as e:
        if not isinstance(e, error):
            return f"raised {type(e).__name__} ({e.reason}: {e}), not {error.__name__}"
        if reason and e.reason != reason:
            return f"reason {e.reason}, not {reason} ({e})"
        if not e.message or len(e.message) < 10:
            return f"no useful message: {e.message!r}"
    else:
        return "was not refused"
    report = w.app.query(ledger.check_ledger)
    if (report.transactions, report.head_hash) != head:
        return "moved the ledger head"
    if snapshot(w.app) != before:
        return "changed the database"
    return None


def test_every_bad_call_is_refused_and_changes_nothing(world: World) -> None:
    w = world
    before = snapshot(w.app)
    report = w.app.query(ledger.check_ledger)
    assert report.ok, report.problems
    head = (report.transactions, report.head_hash)
    failures = []
    for name, call, error, reason in _cases():
        problem = _expect_refused(w, functools.partial(call, w), error, reason, before, head)
        if problem:
            failures.append(f"{name}: {problem}")
    assert not failures, "\n".join(failures)


def test_every_action_from_every_state_it_is_not_allowed_from(world: World) -> None:
    w = world
    before = snapshot(w.app)
    report = w.app.query(ledger.check_ledger)
    head = (report.transactions, report.head_hash)
    failures, tried = [], 0
    for state, order_id in w.orders.items():
        assert w.app.query(orders.get_order, order_id).record.state == state
        for action in Action:
            if state in ALLOWED_FROM[action] or already_done(action, state):
                continue
            tried += 1
            problem = _expect_refused(w, _action(w, action, order_id), FailedPrecondition,
                                      "ORDER_STATE", before, head)
            if problem:
                failures.append(f"{action} from {state}: {problem}")
    assert tried == len(OrderState) * len(Action) - sum(
        len(s) for s in ALLOWED_FROM.values()) - len(DONE_IN)
    assert not failures, "\n".join(failures)


def test_the_allowed_actions_do_work_from_the_world(world: World, clock: ManualClock) -> None:
    """The counterpart of the matrix: the same calls succeed from the allowed states."""
    w = world
    for action, states in ALLOWED_FROM.items():
        for state in states:
            if action is Action.RECORD:
                continue  # needs the publicity period over: below
            w2 = w.orders[state]
            if action is Action.CHECK_OUT:
                clock.advance(timedelta(minutes=30))
            _action(w, action, w2)()
            # put a fresh order back in that state for the next action
            o = request(w.app, w.priority, 30)
            if state is not OrderState.REQUESTED:
                walk(w.app, clock, o.record.id, w.volunteer, 30,
                     to="verified" if state is OrderState.DISPUTED else state.value)
            if state is OrderState.DISPUTED:
                w.app.execute(orders.dispute_order, o.record.id, Actor(staff_id=w.staff), "?")
            w.orders[state] = o.record.id
    clock.advance(timedelta(days=8))
    _action(w, Action.RECORD, w.orders[OrderState.VERIFIED])()


def test_a_number_enrolled_as_one_kind_cannot_be_enrolled_as_the_other(
        node_app: NodeApp) -> None:
    from node.domain.identity import credit_code_with_check

    both = next(n for n in (id_card_with_check_digit(f"32011519600101{i:03d}")
                            for i in range(1000))
                if credit_code_with_check(n[:17]) == n)  # valid as an ID card and a credit code
    node_app.execute(people.enrol_person, IND, "某人", both, "", False, 0)
    before = snapshot(node_app)
    with pytest.raises(AlreadyExists) as e:
        node_app.execute(people.enrol_person, GRP, "某公司", both, "", False, 0)
    assert e.value.reason == "ALREADY_ENROLLED"
    assert snapshot(node_app) == before
