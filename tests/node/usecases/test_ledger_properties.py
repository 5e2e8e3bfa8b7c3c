"""A hypothesis state machine over the whole node, on SQLite and on PostgreSQL.

It enrols individuals, priority elders and groups, links families and proxies, walks
orders partway or fully through the loop (paid by the city grant, the donation pool,
the recipient's own hours or a relative's), donates, grants, records, disputes,
cancels and reverses — and tries calls that must be refused. A small model predicts
what must succeed and what must be refused. After every step the ledger's invariants
are checked through ``check_ledger`` and directly in SQL: every transaction sums to
zero, no balance or available balance is negative, the cap holds, the chain verifies,
cached balances equal the postings, holds match the orders that hold them. Every
refused call must leave every row of every table as it was; a step made only of such
calls (or a tick of the clock) therefore leaves the very database that last passed, and
the checks are not repeated for it.

Each example starts from a fresh database (a copied SQLite file; a PostgreSQL database
emptied and reused, see ``db_factory``) seeded with a small district. Run with ``-s`` to
see how many steps ran and what was done or refused, by reason.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import text

from node.domain.clock import ManualClock
from node.domain.consent import ConsentKind
from node.domain.orders import PaymentSource, PersonKind, round_to_unit
from node.domain.policy import Relation, load_policy
from node.storage.db import Database
from node.storage.repo import Repo
from node.usecases import consent as consent_uc
from node.usecases import ledger, orders, people
from node.usecases.app import NodeApp, NodeIdentity, Tx
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
from tests.conftest import CITY_SECRET, DISTRICT, NODE_ID
from tests.helpers import (
    account_balance,
    credit_code,
    id_card,
    ledger_problems,
    policy_toml,
    snapshot,
)
from timebank.citytime import CITY_TZ

#: Small caps and budgets, so that the cap, the reserve and the budget are all reached.
POLICIES = {
    "small": policy_toml(cap_hours=3, donation_priority_reserve_hours=1, grant_budget_hours=20),
    "tight": policy_toml(cap_hours=2, donation_priority_reserve_hours=0, grant_budget_hours=10),
    "daily": policy_toml(cap_hours=4, daily_cap_minutes=120, donation_priority_reserve_hours=0,
                         grant_budget_hours=20, group_hours_donate_only=False,
                         publicity_days=2, rounding_unit_minutes=30,
                         redeem={"relatives": ["spouse", "child", "parent"]}),
}
SOURCES = list(PaymentSource)
RELATIONS = list(Relation)
STATS: Counter[str] = Counter()
HOLDING = ("accepted", "checked_in", "checked_out", "verified", "disputed")


@dataclass
class PersonModel:
    id: int
    group: bool
    birth_year: int
    priority: bool


@dataclass
class OrderModel:
    id: int
    state: str
    recipient: int
    payer: int
    source: PaymentSource
    planned: int
    volunteer: int = 0
    checked_in_at: datetime | None = None
    measured: int = 0
    public_until: datetime | None = None


idx = st.integers(0, 1000)
#: Mostly act on something the action is allowed on; now and then on anything.
WILD = st.sampled_from([False, False, True])


class LedgerMachine(RuleBasedStateMachine):
    """One fresh node per example; ``make_db`` is set per storage engine by the test."""

    make_db: ClassVar[Callable[[], tuple[str, Callable[[], None]]]]

    def __init__(self) -> None:
        super().__init__()
        self.url, self.release = type(self).make_db()
        self.clock = ManualClock()
        self.app: NodeApp | None = None
        self.people: list[PersonModel] = []
        self.links: set[tuple[int, int, Relation]] = set()
        self.orders: list[OrderModel] = []
        self.staff = 0
        self.consents: set[tuple[int, int]] = set()
        self.head = 0  # transactions in the ledger after the last step
        self.changed = True  # whether anything may have changed since the last check
        self.unchanged_since: dict[str, list[tuple[object, ...]]] | None = None

    # ------------------------------------------------------------ set-up and tear-down

    @initialize(variant=st.sampled_from(sorted(POLICIES)))
    def open_node(self, variant: str) -> None:
        policy = load_policy(POLICIES[variant])
        node = NodeIdentity(NODE_ID, DISTRICT, CITY_SECRET)
        db = Database(self.url)
        with db.write() as conn:
            ledger.initialise(Repo(conn), node, policy.digest)
        self.app = NodeApp(db, policy, self.clock, node)
        STATS["examples"] += 1
        self._seed()

    def _seed(self) -> None:
        """A small district to start from, in five transactions (seeding step by step would
        cost more than the steps that follow): seven people, a family, a proxy, stored,
        granted and donated hours, and an order left open at every step of the loop."""
        kinds = (("priority", 1932), ("priority", 1941), ("elder", 1950), ("elder", 1958),
                 ("young", 1980), ("young", 1992), ("group", 0))
        links = ((2, 4, Relation.CHILD), (3, 5, Relation.PROXY), (0, 2, Relation.CHILD))
        earning = ((2, 0, 90), (4, 1, 120), (6, 0, 60))  # (volunteer, elder, minutes)
        open_orders = ((0, None, PaymentSource.CITY_GRANT, 5, "requested"),
                       (1, None, PaymentSource.CITY_GRANT, 5, "accepted"),
                       (2, 4, PaymentSource.RELATIVE, 5, "checked_in"),
                       (2, None, PaymentSource.OWN, 5, "checked_out"),
                       (1, None, PaymentSource.CITY_GRANT, 3, "verified"))

        def first(tx: Tx) -> tuple[int, list[int], list[int]]:
            point = people.register_service_point(tx, "SP-1", "服务站", "东山街道")
            staff = people.register_staff(tx, "王芳", point.id).id
            ids = [people.enrol_person(
                tx, PersonKind.GROUP if kind == "group" else PersonKind.INDIVIDUAL, "某人",
                credit_code() if kind == "group" else id_card(year), "", kind == "priority",
                0).id for kind, year in kinds]
            for person, other, relation in links:
                people.link_people(tx, ids[person], ids[other], relation, staff)
            made = []
            for volunteer, elder, minutes in earning:
                made.append(self._open_in(tx, staff, ids[elder], 0, PaymentSource.CITY_GRANT,
                                          ids[volunteer], minutes, "verified"))
            ledger.grant(tx, ids[0], 60, staff, "低保独居")
            return staff, ids, made

        def served(tx: Tx, made: list[int], span: int) -> None:
            for order_id, (_, elder, minutes) in zip(made, earning, strict=True):
                self._close_in(tx, order_id, ids[elder], minutes, span, "verified")

        def second(tx: Tx, staff: int, ids: list[int], earned: list[int]) -> list[int]:
            for order_id in earned:
                orders.record_order(tx, order_id)
            ledger.donate(tx, ids[6], 60)
            opened = []
            for recipient, payer, source, volunteer, state in open_orders:
                if payer is not None and (ids[payer], ids[recipient]) not in self.consents:
                    consent_uc.grant_consent(tx, ids[payer], ids[recipient], "",
                                             ConsentKind.STANDING, 0, 0, None, 0,
                                             Actor(staff_id=staff))
                    self.consents.add((ids[payer], ids[recipient]))
                opened.append(self._open_in(
                    tx, staff, ids[recipient], 0 if payer is None else ids[payer], source,
                    ids[volunteer], 30, state))
            return opened

        def left_open(tx: Tx, opened: list[int]) -> None:
            for order_id, (recipient, *_, state) in zip(opened, open_orders, strict=True):
                self._close_in(tx, order_id, ids[recipient], 30, 30, state)

        # a check-in comes after the request: the services are entered as they end
        self.staff, ids, earned = self.a.execute(first)
        span = max(minutes for *_, minutes in earning)
        self.clock.advance(timedelta(minutes=span))
        self.a.execute(served, earned, span)
        self.clock.advance(timedelta(days=self.a.policy.publicity_days))
        opened = self.a.execute(second, self.staff, ids, earned)
        self.clock.advance(timedelta(minutes=30))
        self.a.execute(left_open, opened)
        for (kind, year), pid in zip(kinds, ids, strict=True):
            self.people.append(PersonModel(pid, kind == "group", year, kind == "priority"))
        for person, other, relation in links:
            self.links.add((ids[person], ids[other], relation))
            inverse = relation.inverse()
            if inverse is not None:
                self.links.add((ids[other], ids[person], inverse))
        for r in self.a.query(orders.list_orders, 0, None, 0, 100):
            o = r.record
            self.orders.append(OrderModel(
                o.id, o.state, o.recipient_id, o.payer_id or 0, PaymentSource(o.payment_source),
                o.planned_minutes, o.volunteer_id or 0, o.checked_in_at, o.measured_minutes,
                o.public_until))
        assert [o.state for o in self.orders] == ["recorded"] * 3 + [
            state for *_, state in open_orders]

    _STEPS = ("requested", "accepted", "checked_in", "checked_out", "verified")

    @staticmethod
    def _open_in(tx: Tx, staff: int, recipient: int, payer: int, source: PaymentSource,
                 volunteer: int, minutes: int, to: str) -> int:
        """Within one transaction: request ``minutes``, accept and check in now, as far
        as ``to``."""
        o = orders.request_order(tx, recipient, "cleaning", minutes, source, payer,
                                 Actor(staff_id=staff), "")
        n = LedgerMachine._STEPS.index(to)
        if n >= 1:
            orders.accept_order(tx, o.record.id, volunteer)
        if n >= 2:
            orders.check_in(tx, o.record.id)
        return o.record.id

    @staticmethod
    def _close_in(tx: Tx, order_id: int, recipient: int, minutes: int, span: int,
                  to: str) -> None:
        """``span`` minutes after ``_open_in``: check out ``minutes`` after the check-in
        and verify, as far as ``to``."""
        n = LedgerMachine._STEPS.index(to)
        if n >= 3:
            orders.check_out(tx, order_id, tx.now - timedelta(minutes=span - minutes))
        if n >= 4:
            orders.verify_order(tx, order_id, Actor(person_id=recipient), 5, "")

    def teardown(self) -> None:
        if self.app is not None:
            self.app.db.dispose()
        self.release()

    # ------------------------------------------------------------ helpers

    @property
    def a(self) -> NodeApp:
        assert self.app is not None
        return self.app

    def age(self, p: PersonModel) -> int:
        return 0 if p.group else self.clock.now().astimezone(CITY_TZ).year - p.birth_year

    def person(self, i: int) -> PersonModel:
        return self.people[i % len(self.people)]

    def available(self) -> dict[int, dict[str, int]]:
        """{person id: {origin: balance - held}} straight from the accounts table; the pool
        and the city fund under person id 0."""
        out: dict[int, dict[str, int]] = {p.id: {} for p in self.people}
        out[0] = {}
        with self.a.db.read() as conn:
            for pid, code, origin, avail in conn.execute(text(
                    "SELECT person_id, code, origin, balance - held FROM accounts "
                    "WHERE person_id IS NOT NULL OR code IN ('donation_pool', 'city_grant')")):
                out[pid or 0][origin if pid else code] = int(avail)
        return out

    def can_cover(self, source: PaymentSource, recipient: PersonModel,
                  payer: PersonModel | None, minutes: int,
                  avail: dict[int, dict[str, int]]) -> bool:
        if source is PaymentSource.OWN:
            mine = avail[recipient.id]
            return mine.get("granted", 0) + mine.get("individual", 0) >= minutes
        if source is PaymentSource.RELATIVE:
            assert payer is not None
            return avail[payer.id].get("group" if payer.group else "individual", 0) >= minutes
        policy = self.a.policy
        if source is PaymentSource.DONATION_POOL:  # donated hours serve priority elders first
            reserve = 0 if recipient.priority else policy.donation_priority_reserve_minutes
            return avail[0].get("donation_pool", 0) - reserve >= minutes
        return policy.grant_budget_minutes + avail[0].get("city_grant", 0) >= minutes

    def pick(self, i: int, wild: bool, *states: str) -> OrderModel:
        """Mostly an order the action is allowed on; when ``wild``, any order at all."""
        fitting = [o for o in self.orders if o.state in states]
        chosen = self.orders if wild or not fitting else fitting
        return chosen[i % len(chosen)]

    def related(self, person: int, other: int) -> bool:
        return any(p == person and o == other for p, o, _ in self.links)

    def family(self, person: int, other: int) -> Relation | None:
        """How ``other`` stands to ``person`` as family, as the use-case picks it."""
        found = sorted(r for p, o, r in self.links if p == person and o == other and r.is_family)
        # the use-case prefers a relation the city's policy allows, when the pair has several
        allowed = [r for r in found if r in self.a.policy.relative_kinds]
        return (allowed or found)[0] if found else None

    def acts_for(self, actor: Actor, person: int) -> bool:
        return bool(actor.staff_id) or actor.person_id == person or self.related(
            person, actor.person_id)

    def attempt(self, label: str, call: Callable[[], Any], expect: bool | None,
                errors: tuple[type[Refusal], ...] = (Refusal,)) -> Any:
        """Run a call; ``expect`` True: must work, False: must be refused, None: either.

        A refusal must be one of ``errors`` and leave the database exactly as it was.
        """
        before = None
        if expect is not True:  # a snapshot is still good while only refusals follow it
            before = self.unchanged_since or snapshot(self.a)
        self.unchanged_since = None
        try:
            result = call()
        except Refusal as e:
            assert expect is not True, f"{label} was refused: {type(e).__name__} {e.reason}: {e}"
            assert isinstance(e, errors), f"{label}: {type(e).__name__} {e.reason}: {e}"
            after = snapshot(self.a)
            assert after == before, f"{label} was refused but changed the database"
            self.unchanged_since = after
            STATS[f"refused {label}: {e.reason}"] += 1
            return None
        self.changed = True
        assert expect is not False, f"{label} was not refused"
        STATS[f"ok {label}"] += 1
        return result

    # ------------------------------------------------------------ people

    def _enrol(self, kind: str, birth: int) -> None:
        self.changed, self.unchanged_since = True, None
        if kind == "group":
            view = self.a.execute(people.enrol_person, PersonKind.GROUP, "某公司", credit_code(),
                                  "", False, 0)
            self.people.append(PersonModel(view.id, True, 0, False))
            return
        view = self.a.execute(people.enrol_person, PersonKind.INDIVIDUAL, "某人", id_card(birth),
                              "13800000000", kind == "priority", 0)
        assert view.age == self.clock.now().astimezone(CITY_TZ).year - birth
        self.people.append(PersonModel(view.id, False, birth, kind == "priority"))

    def _link(self, p: PersonModel, o: PersonModel, relation: Relation,
              staff: bool = True) -> None:
        ok = p.id != o.id and not p.group and not o.group and (p.id, o.id, relation) not in (
            self.links)
        done = self.attempt("link", lambda: self.a.execute(
            people.link_people, p.id, o.id, relation, self.staff if staff else 0), ok)
        if done is not None:
            self.links.add((p.id, o.id, relation))
            inverse = relation.inverse()
            if inverse is not None:
                self.links.add((o.id, p.id, inverse))

    @precondition(lambda self: len(self.people) < 14)
    @rule(kind=st.sampled_from(["priority", "elder", "young", "group"]), year=idx)
    def enrol(self, kind: str, year: int) -> None:
        birth = {"priority": 1928 + year % 18, "elder": 1946 + year % 20,
                 "young": 1970 + year % 36, "group": 0}[kind]
        self._enrol(kind, birth)

    @rule(i=idx, j=idx, relation=st.sampled_from(RELATIONS), by_staff=st.booleans())
    def link(self, i: int, j: int, relation: Relation, by_staff: bool) -> None:
        self._link(self.person(i), self.person(j), relation, by_staff)

    # ------------------------------------------------------------ the loop

    def _may_pay(self, source: PaymentSource, recipient: PersonModel,
                 payer: PersonModel | None) -> bool:
        """The city's rules of who may be served from which hours (not whether they suffice)."""
        policy = self.a.policy
        if recipient.group:
            return False
        if source in (PaymentSource.OWN, PaymentSource.DONATION_POOL):
            return recipient.priority or self.age(recipient) >= policy.own_min_age
        if source is PaymentSource.CITY_GRANT:
            return recipient.priority
        assert payer is not None
        if payer.group:
            return not policy.group_hours_donate_only
        relation = self.family(payer.id, recipient.id)
        return (payer.id != recipient.id and relation is not None
                and relation in policy.relative_kinds
                and self.age(recipient) >= policy.relative_min_age)

    @precondition(lambda self: len(self.orders) < 40)
    @rule(i=idx, j=idx, source=st.sampled_from(SOURCES), minutes=st.sampled_from(
        [15, 30, 45, 60, 90, 120, 240]), requester=st.sampled_from(["self", "payer", "staff",
                                                                     "other"]), k=idx,
        wild=WILD, walk=st.sampled_from([0, 0, 1, 3, 7]))
    def request(self, i: int, j: int, source: PaymentSource, minutes: int, requester: str,
                k: int, wild: bool, walk: int) -> None:
        """Ask for a service, and maybe walk the new order some or all of the way."""
        pairs = [(r, p) for r in self.people
                 for p in (self.people if source is PaymentSource.RELATIVE else [None])]
        if not wild:  # mostly, ask for something the rules allow, and the hours cover
            avail = self.available()
            pairs = [(r, p) for r, p in pairs if self._may_pay(source, r, p)
                     and self.can_cover(source, r, p, minutes, avail)] or pairs
        recipient, payer = pairs[(i + j) % len(pairs)]
        actor = {"self": Actor(person_id=recipient.id), "staff": Actor(staff_id=self.staff),
                 "payer": Actor(person_id=payer.id if payer else recipient.id),
                 "other": Actor(person_id=self.person(k).id)}[requester]
        if self._request(recipient, payer, source, minutes, actor) and walk:
            self._walk(self.orders[-1], i, 60 + 15 * (k % 6), walk)

    def _request(self, recipient: PersonModel, payer: PersonModel | None,
                 source: PaymentSource, minutes: int, actor: Actor) -> bool:
        allowed = (self.acts_for(actor, recipient.id) and self._may_pay(source, recipient, payer)
                   # a relative's hours are spent only by them, their proxy or family, or staff
                   and (payer is None or self.acts_for(actor, payer.id)))
        covered = self.can_cover(source, recipient, payer, minutes, self.available())
        if (allowed and payer is not None and payer.id != recipient.id
                and (payer.id, recipient.id) not in self.consents):
            # staff record the payer's standing consent first (ADR 0017)
            self.attempt("consent", lambda: self.a.execute(
                consent_uc.grant_consent, payer.id, recipient.id, "", ConsentKind.STANDING,
                0, 0, None, 0, Actor(staff_id=self.staff)), True)
            self.consents.add((payer.id, recipient.id))
        view = self.attempt(f"request {source}", lambda: self.a.execute(
            orders.request_order, recipient.id, "cleaning", minutes, source,
            payer.id if payer else 0, actor, ""), allowed and covered,
            ((ResourceExhausted,) if source is PaymentSource.CITY_GRANT else
             (FailedPrecondition,)) if allowed else (PermissionDenied, InvalidArgument))
        if view is not None:
            self.orders.append(OrderModel(view.record.id, "requested", recipient.id,
                                          payer.id if payer else 0, source, minutes))
        return view is not None

    @precondition(lambda self: any(o.state not in ("recorded", "cancelled")
                                   for o in self.orders))
    @rule(i=idx, minutes=st.sampled_from([30, 45, 60, 80, 150]),
          steps=st.sampled_from([1, 2, 6]))
    def progress(self, i: int, minutes: int, steps: int) -> None:
        """Take an open order a few steps further (or to the end) with valid arguments."""
        live = [o for o in self.orders if o.state not in ("recorded", "cancelled")]
        self._walk(live[i % len(live)], i, minutes, steps)

    def _walk(self, o: OrderModel, i: int, minutes: int, steps: int) -> None:
        for _ in range(steps):
            state = o.state
            self._step(o, i, minutes)
            if o.state == state or o.state in ("recorded", "cancelled"):
                return  # refused (not enough hours to hold) or done

    def _step(self, o: OrderModel, i: int, minutes: int) -> None:
        if o.state == "requested":
            volunteers = [p for p in self.people if p.id not in (o.recipient, o.payer)]
            self._accept(o, volunteers[i % len(volunteers)])
        elif o.state == "accepted":
            self._check_in(o)
        elif o.state == "checked_in":
            assert o.checked_in_at is not None
            spent = int((self.clock.now() - o.checked_in_at).total_seconds() // 60)
            self._check_out(o, max(1, minutes - spent))
        elif o.state == "checked_out":
            self._verify(o, "recipient", 0, 5)
        elif o.state == "verified":
            assert o.public_until is not None
            if self.clock.now() < o.public_until:
                self.clock.advance(o.public_until - self.clock.now())
            self._record(o)
        else:
            self._resolve(o, True, 0)

    @precondition(lambda self: self.orders)
    @rule(action=st.sampled_from(["accept", "check_in", "check_out", "verify", "dispute",
                                  "resolve", "cancel", "record"]), data=st.data())
    def act(self, action: str, data: st.DataObject) -> None:
        """One step of the loop on an order: mostly one it is allowed on, now and then any."""
        i, wild = data.draw(idx, label="order"), data.draw(WILD, label="wild")
        by = st.sampled_from(["recipient", "staff", "volunteer", "someone"])
        if action == "accept":
            self.accept(i, data.draw(idx, label="volunteer"), wild)
        elif action == "check_in":
            self.check_in(i, wild)
        elif action == "check_out":
            self.check_out(i, data.draw(st.sampled_from([0, 20, 45, 61, 95, 130, 180]),
                                        label="minutes"), wild)
        elif action == "verify":
            self.verify(i, data.draw(by, label="by"), data.draw(idx, label="someone"),
                        data.draw(st.sampled_from([1, 3, 5, 0, 6]), label="rating"), wild)
        elif action == "dispute":
            self.dispute(i, data.draw(idx, label="someone"),
                         data.draw(st.booleans(), label="by staff"), wild)
        elif action == "resolve":
            self.resolve(i, data.draw(st.booleans(), label="uphold"),
                         data.draw(st.sampled_from([0, 0, 30, 45, 2000]), label="corrected"),
                         wild)
        elif action == "cancel":
            self.cancel(i, data.draw(by, label="by"), data.draw(idx, label="someone"), wild)
        else:
            self.record(i, wild)

    def accept(self, i: int, j: int, wild: bool) -> None:
        self._accept(self.pick(i, wild, "requested"), self.person(j))

    def _accept(self, o: OrderModel, v: PersonModel) -> None:
        payer = o.payer or (o.recipient if o.source is PaymentSource.OWN else 0)
        ok = o.state == "requested" and v.id not in (o.recipient, o.payer)
        people = {p.id: p for p in self.people}
        covered = ok and self.can_cover(o.source, people[o.recipient], people.get(o.payer),
                                        o.planned, self.available())
        view = self.attempt("accept", lambda: self.a.execute(orders.accept_order, o.id, v.id),
                            covered, ((ResourceExhausted,) if o.source is
                                      PaymentSource.CITY_GRANT else (FailedPrecondition,))
                            if ok else (FailedPrecondition, PermissionDenied))
        if view is not None:
            assert v.id != payer and view.record.held_minutes == o.planned
            o.state, o.volunteer = "accepted", v.id

    def check_in(self, i: int, wild: bool) -> None:
        self._check_in(self.pick(i, wild, "accepted"))

    def _check_in(self, o: OrderModel) -> None:
        ok = o.state == "accepted"
        if self.attempt("check in", lambda: self.a.execute(orders.check_in, o.id), ok,
                        (FailedPrecondition,)) is not None:
            o.state, o.checked_in_at = "checked_in", self.clock.now()

    def check_out(self, i: int, minutes: int, wild: bool) -> None:
        self._check_out(self.pick(i, wild, "checked_in"), minutes)

    def _check_out(self, o: OrderModel, minutes: int) -> None:
        self.clock.advance(timedelta(minutes=minutes))
        ok: bool = o.state == "checked_in"
        measured = 0
        if ok:
            assert o.checked_in_at is not None
            measured = int((self.clock.now() - o.checked_in_at).total_seconds() // 60)
            ok = 1 <= measured <= self.a.policy.max_order_minutes
        view = self.attempt("check out", lambda: self.a.execute(orders.check_out, o.id), ok,
                            (FailedPrecondition, InvalidArgument))
        if view is not None:
            assert view.record.measured_minutes == measured
            o.state, o.measured = "checked_out", measured

    def verify(self, i: int, by: str, j: int, rating: int, wild: bool) -> None:
        self._verify(self.pick(i, wild, "checked_out"), by, j, rating)

    def _verify(self, o: OrderModel, by: str, j: int, rating: int) -> None:
        actor = {"recipient": Actor(person_id=o.recipient), "staff": Actor(staff_id=self.staff),
                 "volunteer": Actor(person_id=o.volunteer or o.recipient),
                 "someone": Actor(person_id=self.person(j).id)}[by]
        ok = (o.state == "checked_out" and 1 <= rating <= 5 and self.acts_for(actor, o.recipient)
              and not (actor.person_id and actor.person_id == o.volunteer))
        view = self.attempt("verify", lambda: self.a.execute(
            orders.verify_order, o.id, actor, rating, "好"), ok)
        if view is not None:
            o.state, o.public_until = "verified", view.record.public_until
            assert o.public_until == self.clock.now() + timedelta(
                days=self.a.policy.publicity_days)

    def dispute(self, i: int, j: int, by_staff: bool, wild: bool) -> None:
        o = self.pick(i, wild, "verified")
        actor = Actor(staff_id=self.staff) if by_staff else Actor(person_id=self.person(j).id)
        ok = o.state == "verified" and o.public_until is not None and (
            self.clock.now() < o.public_until)
        if self.attempt("dispute", lambda: self.a.execute(
                orders.dispute_order, o.id, actor, "有疑问"), ok,
                (FailedPrecondition,)) is not None:
            o.state = "disputed"

    def resolve(self, i: int, uphold: bool, corrected: int, wild: bool) -> None:
        self._resolve(self.pick(i, wild, "disputed"), uphold, corrected)

    def _resolve(self, o: OrderModel, uphold: bool, corrected: int) -> None:
        ok = o.state == "disputed" and (corrected == 0 or (uphold and corrected <= 1440))
        view = self.attempt("resolve", lambda: self.a.execute(
            orders.resolve_dispute, o.id, self.staff, uphold, corrected, "核实"), ok)
        if view is not None:
            o.state = "verified" if uphold else "cancelled"
            if uphold and corrected:
                # a corrected record is public again for a full period, from now
                o.measured = corrected
                assert view.record.public_until == self.clock.now() + timedelta(
                    days=self.a.policy.publicity_days)
                o.public_until = view.record.public_until
            assert view.record.measured_minutes == o.measured

    def cancel(self, i: int, by: str, j: int, wild: bool) -> None:
        o = self.pick(i, wild, "requested", "accepted", "checked_in")
        actor = {"recipient": Actor(person_id=o.recipient), "staff": Actor(staff_id=self.staff),
                 "volunteer": Actor(person_id=o.volunteer or o.recipient),
                 "someone": Actor(person_id=self.person(j).id)}[by]
        ok = o.state in ("requested", "accepted", "checked_in") and (
            (actor.person_id and actor.person_id == o.volunteer)
            or self.acts_for(actor, o.recipient))
        if self.attempt("cancel", lambda: self.a.execute(
                orders.cancel_order, o.id, actor, "不需要"), bool(ok)) is not None:
            o.state = "cancelled"

    def _check_recorded(self, o: OrderModel, record: Any) -> None:
        recorded = round_to_unit(o.measured, self.a.policy.rounding_unit_minutes)
        assert record.state == "recorded"
        assert record.recorded_minutes == recorded
        assert record.banked_minutes + record.excess_to_pool_minutes + (
            record.unbanked_minutes) == recorded
        assert record.charged_minutes == min(recorded, o.planned)
        with self.a.db.read() as conn:
            entries = conn.execute(text(
                "SELECT COUNT(*) FROM entries WHERE order_id = :o AND kind = 'service'"),
                {"o": o.id}).scalar_one()
        minted = record.banked_minutes + record.excess_to_pool_minutes
        assert entries == (1 if minted or record.charged_minutes else 0)
        o.state = "recorded"
        STATS[f"recorded {o.source}"] += 1
        if record.excess_to_pool_minutes:
            STATS["cap excess to the pool"] += 1
        if record.unbanked_minutes:
            STATS["over the daily cap"] += 1

    def record(self, i: int, wild: bool) -> None:
        self._record(self.pick(i, wild, "verified"))

    def _record(self, o: OrderModel) -> None:
        if o.state == "recorded":  # again: no refusal, and nothing changes
            before = self.unchanged_since or snapshot(self.a)
            again = self.attempt("record again",
                                 lambda: self.a.execute(orders.record_order, o.id), True)
            assert snapshot(self.a) == before, "recording again changed the database"
            assert again.record.state == "recorded"
            assert "[ALREADY_RECORDED]" in again.notices[0]
            self.unchanged_since = before
            return
        ok = o.state == "verified" and o.public_until is not None and (
            self.clock.now() >= o.public_until)
        view = self.attempt("record", lambda: self.a.execute(orders.record_order, o.id), ok,
                            (FailedPrecondition,))
        if view is not None:
            self._check_recorded(o, view.record)

    @rule(limit=st.sampled_from([1, 3, 100]))
    def record_due(self, limit: int) -> None:
        now = self.clock.now()
        due = sorted((o.public_until, o.id) for o in self.orders
                     if o.state == "verified" and o.public_until is not None
                     and o.public_until <= now)
        expected = {order_id for _, order_id in due[:limit]}
        self.changed, self.unchanged_since = True, None
        done = self.a.execute(orders.record_due_orders, limit)
        assert {v.record.id for v in done} == expected
        by_id = {o.id: o for o in self.orders}
        for v in done:
            self._check_recorded(by_id[v.record.id], v.record)

    @rule(step=st.sampled_from([timedelta(minutes=10), timedelta(hours=1), timedelta(days=1),
                                timedelta(days=3), timedelta(days=8)]))
    def advance_clock(self, step: timedelta) -> None:
        self.clock.advance(step)

    # ------------------------------------------------------------ hours outside the loop

    @precondition(lambda self: self.people)
    @rule(i=idx, minutes=st.sampled_from([15, 30, 60, 240]), wild=WILD)
    def donate(self, i: int, minutes: int, wild: bool) -> None:
        avail = self.available()

        def own(p: PersonModel) -> int:
            return avail[p.id].get("group" if p.group else "individual", 0)

        donors = [p for p in self.people if own(p) >= minutes]
        p = self.person(i) if wild or not donors else donors[i % len(donors)]
        ok = own(p) >= minutes
        self.attempt("donate", lambda: self.a.execute(ledger.donate, p.id, minutes), ok,
                     (FailedPrecondition,))

    @rule(i=idx, minutes=st.sampled_from([30, 60, 240]), wild=st.booleans())
    def grant(self, i: int, minutes: int, wild: bool) -> None:
        elders = [p for p in self.people if p.priority]
        self._grant(self.person(i) if wild or not elders else elders[i % len(elders)], minutes)

    def _grant(self, p: PersonModel, minutes: int) -> None:
        policy = self.a.policy
        fund, fund_held = account_balance(self.a, "city_grant")
        total = self.a.query(ledger.balance, p.id).total
        errors: tuple[type[Refusal], ...]
        if not p.priority:
            expect, errors = False, (PermissionDenied,)
        elif policy.grant_budget_minutes + fund - fund_held < minutes:
            expect, errors = False, (ResourceExhausted,)
        elif total + minutes > policy.cap_minutes:
            expect, errors = False, (FailedPrecondition,)
        else:
            expect, errors = True, ()
        self.attempt("grant", lambda: self.a.execute(ledger.grant, p.id, minutes, self.staff,
                                                     "低保独居"), expect, errors)

    @precondition(lambda self: self.head > 0)
    @rule(i=idx, wild=WILD)
    def reverse(self, i: int, wild: bool) -> None:
        seq = i % (self.head + 2)  # 0 and head + 1 do not exist
        with self.a.db.read() as conn:
            if not wild:  # mostly an entry that may still be corrected
                open_seqs = conn.execute(text(
                    "SELECT seq FROM entries e WHERE kind <> 'reversal' AND NOT EXISTS "
                    "(SELECT 1 FROM entries r WHERE r.reverses_seq = e.seq) ORDER BY seq"
                )).scalars().all()
                seq = open_seqs[i % len(open_seqs)] if open_seqs else seq
            row = conn.execute(text("SELECT kind, (SELECT COUNT(*) FROM entries r "
                                    "WHERE r.reverses_seq = e.seq) FROM entries e "
                                    "WHERE e.seq = :s"), {"s": seq}).one_or_none()
        expect: bool | None
        errors: tuple[type[Refusal], ...]
        if row is None:
            expect, errors = False, (NotFound,)
        elif row[0] == "reversal":
            expect, errors = False, (FailedPrecondition,)
        elif row[1]:
            expect, errors = False, (AlreadyExists,)
        else:  # it depends on whether the minutes are still there, and on the cap
            expect, errors = None, (FailedPrecondition,)
        self.attempt(f"reverse {row[0] if row else 'nothing'}", lambda: self.a.execute(
            ledger.reverse, seq, self.staff, "更正"), expect, errors)

    @rule(which=st.integers(0, 11))
    def invalid(self, which: int) -> None:
        """Calls that are wrong whatever the state: refused, and nothing changes."""
        a, unknown = self.a, 10**6
        pid = self.people[0].id if self.people else unknown
        oid = self.orders[0].id if self.orders else unknown
        calls: list[Callable[[], Any]] = [
            lambda: a.execute(orders.request_order, pid, "cleaning", 0,
                              PaymentSource.CITY_GRANT, 0, Actor(staff_id=self.staff), ""),
            lambda: a.execute(orders.request_order, pid, "cleaning", 2**63,
                              PaymentSource.CITY_GRANT, 0, Actor(staff_id=self.staff), ""),
            lambda: a.execute(orders.request_order, pid, "不存在", 30,
                              PaymentSource.CITY_GRANT, 0, Actor(staff_id=self.staff), ""),
            lambda: a.execute(orders.request_order, unknown, "cleaning", 30,
                              PaymentSource.CITY_GRANT, 0, Actor(staff_id=self.staff), ""),
            lambda: a.execute(orders.accept_order, unknown, pid),
            lambda: a.execute(orders.verify_order, oid, Actor(staff_id=self.staff), 9, ""),
            lambda: a.execute(ledger.donate, pid, -30),
            lambda: a.execute(ledger.grant, pid, 0, self.staff, ""),
            lambda: a.execute(people.enrol_person, PersonKind.INDIVIDUAL, "某人",
                              "32011519600101001Y", "", False, 0),
            lambda: a.execute(people.link_people, pid, unknown, Relation.CHILD, 0),
            lambda: a.execute(orders.record_due_orders, 0),
            lambda: a.execute_once("", "Donate", hashlib.sha256(b"x").digest(),
                                   lambda tx: ledger.donate(tx, pid, 15), lambda e: b""),
        ]
        self.attempt("invalid", calls[which], False)

    # ------------------------------------------------------------ after every step

    @invariant()
    def ledger_holds(self) -> None:
        if self.app is None:
            return
        STATS["steps"] += 1
        if not self.changed:
            # Only refused calls (each shown to leave every row of every table as it was)
            # or a clock tick since the last check: the database is the one that passed.
            STATS["steps that changed nothing"] += 1
            return
        self.changed = False
        problems = ledger_problems(self.app)
        assert not problems, problems
        policy, cap = self.app.policy, self.app.policy.cap_minutes
        with self.app.db.read() as conn:
            states = {int(i): str(st) for i, st in conn.execute(
                text("SELECT id, state FROM orders"))}
            assert states == {o.id: o.state for o in self.orders}
            self.head = Repo(conn).ledger.head()[0]
            tx = Tx(Repo(conn), policy, self.clock.now(), self.app.node)
            for p in self.people:
                b = ledger.balance(tx, p.id)
                assert 0 <= b.held <= b.total <= cap, (p, b)
                assert b.available >= 0
                assert all(0 <= x.held <= x.total for x in b.by_origin), b
                origins = {x.origin.value for x in b.by_origin}
                assert origins <= ({"group"} if p.group else {"individual", "granted"}), b


#: Examples per engine. SQLite keeps the full count. On PostgreSQL an example takes about
#: four times as long; a third as many still walk every rule there, for what differs
#: between the engines (types, constraints, locking), in a quarter of the time.
EXAMPLES = {"sqlite": 30, "postgres": 10}


#: A failing run spends up to five minutes shrinking (each example opens a node): let it
#: finish and print the smallest failing sequence rather than time out.
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ledger_state_machine(db_factory: Callable[[], tuple[str, Callable[[], None]]],
                              request: Any) -> None:
    engine = request.node.callspec.params["db_factory"]
    examples = EXAMPLES[engine]
    machine = type(f"LedgerMachine_{engine}", (LedgerMachine,),
                   {"make_db": staticmethod(db_factory)})
    STATS.clear()
    started = time.perf_counter()
    run_state_machine_as_test(machine, settings=settings(  # type: ignore[no-untyped-call]
        max_examples=examples, stateful_step_count=100, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.filter_too_much]))
    elapsed = time.perf_counter() - started
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(STATS.items()))
    print(f"\n{engine}: {STATS['steps']} steps in {STATS['examples']} examples, "
          f"{elapsed:.1f} s\n{summary}")
    assert STATS["steps"] >= 50 * examples, summary  # 1500 steps on SQLite
