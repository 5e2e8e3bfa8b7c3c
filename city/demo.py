"""`timebank demo`: a whole city on this machine — 通存通兑 end to end.

The demo lays out a city (``city.launcher``): the civil-affairs bureau's clearinghouse
and three district nodes, 江宁区 320115, 鼓楼区 320106 and 栖霞区 320113, each its own
process with its own SQLite file under one data directory, talking gRPC on 127.0.0.1.
Time is simulated: every process reads one clock file (``runtime.devclock``), so the
7-day publicity period passes without sleeping. The bureau signs the city policy with
the city root key; every district fetches it and runs it. Then it plays one story,
through the same client the `timebank node ...` commands use:

1. in 江宁区, 李秀英 earns hours by cleaning a priority elder's flat (80 min of work,
   recorded as 75 after the publicity period);
2. her mother 张桂兰 lives in 鼓楼区; a volunteer there brings her meals, paid with
   李秀英's hours kept in 江宁区: a redemption claim, held in 江宁区 at acceptance and
   posted on both sides at recording;
3. 李秀英 moves to 栖霞区, and her whole balance moves with her, origins and all;
4. the invariants are checked across the whole city: every ledger, minutes conserved
   per node and city-wide, positions summing to zero, every node agreeing with the
   clearinghouse; every district's tree heads are of the one log (no split view).

Exit code 0 only if every check passes. ``--json`` prints a summary as the last line;
``--data-dir DIR`` keeps the city's files and keys.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table

from city.audit import audit_data_dir
from city.launcher import (
    CLEARINGHOUSE,
    CONFIG_ENV_PREFIXES,
    DEV_CLOCK_ENV,
    METRICS_ENV,
    CityLayout,
    CityProcesses,
    LaunchError,
    NodeLayout,
    console_serving,
    end_process,
    layout,
)
from city.monitor.state import STATUS_FILE
from clearinghouse.bootstrap import open_app as open_ch_app
from clearinghouse.config import load_config as load_ch_config
from clearinghouse.settlecli import clearinghouse_signer, print_settlement
from clearinghouse.usecases import admission
from clearinghouse.usecases import settlement as ch_settlement
from node.bootstrap import open_app as open_node_app
from node.bootstrap import signing_identity
from node.cli import NodeClient, hm, render_report, to_json
from node.config import load_config as load_node_config
from node.domain.access import Role
from node.domain.identity import id_card_with_check_digit
from node.domain.settlement import SettlementState
from node.link.logcheck import locate
from node.usecases import checkpoints, logins
from node.usecases import settlement as node_settlement
from runtime import devclock
from runtime.console import CliError, describe_error, echo, print_error, print_json
from runtime.errors import FailedPrecondition, NotFound
from timebank.citytime import CITY_TZ, CITY_TZ_NAME
from timebank.envelope import decode, identity
from timebank.minutes import format_hours
from timebank.policy import DEFAULT_POLICY_TOML
from timebank.settlement import month_period, parse_statement
from timebank.v1 import clearing_pb2, clearing_pb2_grpc, node_pb2, node_pb2_grpc

Req = TypeVar("Req")
Resp = TypeVar("Resp")

JN, GL, QX = "320115", "320106", "320113"
NAMES = {JN: "江宁区", GL: "鼓楼区", QX: "栖霞区"}
GRANT_MINUTES = 600
STAFF_PASSWORD = "演示密码 demo-only"
#: The staff member at each district's service point.
STAFF = {JN: "陈静", GL: "周敏", QX: "吴刚"}
WAIT_SECONDS = 30.0
#: The city policy the bureau signs in the demo: the published one, with a fund that pays
#: the serving district 1 yuan an hour (as Guandu's does) and the city reserve standing
#: behind a district that does not settle (as Nanjing's fund guarantees redemption).
DEMO_POLICY = DEFAULT_POLICY_TOML + """
[settlement]
rate_fen_per_hour = 100             # 1 yuan an hour of service, from the city fund
on_default = "reserve"              # the city reserve pays for a district that does not
"""
#: The demo's nodes look for a new statement every second (30 s in production): their
#: [clearinghouse] settlement_seconds; the clearinghouse has no such setting and ignores it.
DEMO_ENV = {**METRICS_ENV, "TIMEBANK_CLEARINGHOUSE_SETTLEMENT_SECONDS": "1"}


@dataclass(frozen=True, slots=True)
class Character:
    key: str
    name: str
    id_first17: str  # region, birth date, sequence (odd: male, even: female)
    priority: bool
    role: str

    @property
    def id_number(self) -> str:
        return id_card_with_check_digit(self.id_first17)

    @property
    def phone(self) -> str:
        """A mobile number of her own (made up from her ID number's last digits)."""
        return "139" + self.id_first17[-8:]


DAUGHTER = Character("daughter", "李秀英", "32011519630612024", False,
                     "volunteer in 江宁区; moves to 栖霞区")
NEIGHBOUR = Character("neighbour", "王建国", "32011519480120013", True,
                      "priority elder in 江宁区 (city grant)")
MOTHER = Character("mother", "张桂兰", "32010619390805046", True,
                   "李秀英's mother, a priority elder living in 鼓楼区")
HELPER = Character("helper", "刘洋", "32010619910618035", False, "volunteer in 鼓楼区")


@dataclass
class Node:
    """A district as the story works it: its operator's client (the launcher's session),
    and, once a service point opens, its staff member's, logged in with a password."""

    node_id: str
    client: NodeClient
    config_file: Path
    clock: Path  # the city's clock file
    staff_id: int = 0
    desk: NodeClient | None = None
    desk_login: str = ""
    people: dict[str, node_pb2.Person] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return NAMES[self.node_id]

    def call(self, method: grpc.UnaryUnaryMultiCallable[Req, Resp], request: Req) -> Resp:
        return self.client.call(method, request, getattr(request, "idempotency_key", ""))

    @property
    def stub(self) -> node_pb2_grpc.NodeServiceStub:
        return self.client.stub

    @property
    def staff(self) -> node_pb2_grpc.NodeServiceStub:
        """What the service point's staff member does, as themself."""
        assert self.desk is not None, "no service point yet"
        return self.desk.stub

    def log_in_at_desk(self) -> None:
        """The staff member logs in with her password (again each working day: a session
        lasts hours, and the story's clock moves days)."""
        session = self.call(self.stub.Login, node_pb2.LoginRequest(
            login=self.desk_login, password=STAFF_PASSWORD))
        if self.desk is not None:
            self.desk.close()
        self.desk = NodeClient(self.client.address, self.client.tls, timeout=self.client.timeout,
                               token=session.token)

    def close(self) -> None:
        self.client.close()
        if self.desk is not None:
            self.desk.close()


@dataclass
class City:
    layout: CityLayout
    nodes: dict[str, Node]
    channel: grpc.Channel
    checks: list[tuple[str, bool]] = field(default_factory=list)
    steps: int = 0

    def step(self, text: str, *details: Any) -> None:
        self.steps += 1
        echo(f"[bold cyan]{self.steps:>2}.[/] {text}")
        for d in details:
            echo(Padding(d, (0, 0, 0, 4)))

    def check(self, what: str, ok: bool) -> None:
        self.checks.append((what, ok))

    def now(self) -> datetime:
        return datetime.now(UTC) + devclock.read_offset(self.layout.clock_file)

    def when(self) -> str:
        return self.now().astimezone(CITY_TZ).strftime("%Y-%m-%d %H:%M")

    def advance(self, delta: timedelta) -> None:
        devclock.advance(self.layout.clock_file, delta)
        if delta >= timedelta(hours=1):
            for node in self.nodes.values():
                if node.desk_login:
                    node.log_in_at_desk()

    def positions(self) -> clearing_pb2.GetPositionsResponse:
        stub = clearing_pb2_grpc.ClearinghouseServiceStub(self.channel)
        return stub.GetPositions(clearing_pb2.GetPositionsRequest(), timeout=10)

    def wait(self, what: str, condition: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.05)
        self.check(f"{what} (timed out after {WAIT_SECONDS:.0f} s)", False)
        return False

    def settled(self) -> bool:
        """Every node has sent everything and has no claim in progress."""
        views = [n.call(n.stub.GetClearing, node_pb2.GetClearingRequest())
                 for n in self.nodes.values()]
        return all(v.unsent_messages == 0 and v.open_claims == 0 for v in views)


def key() -> str:
    return str(uuid.uuid4())


# ------------------------------------------------------------------ the story


def enrol(node: Node, c: Character, home: str = "") -> node_pb2.Person:
    person = node.call(node.stub.EnrolPerson, node_pb2.EnrolPersonRequest(
        idempotency_key=key(), kind=node_pb2.PERSON_KIND_INDIVIDUAL, name=c.name,
        id_number=c.id_number, phone=c.phone, priority=c.priority, home_node_id=home)).person
    node.people[c.key] = person
    node.client.remember(person)
    return person


def desk(node: Node, code: str, point_name: str, staff_name: str) -> None:
    point = node.call(node.stub.RegisterServicePoint, node_pb2.RegisterServicePointRequest(
        idempotency_key=key(), code=code, name=point_name, street=point_name[:4])).service_point
    staff = node.call(node.stub.RegisterStaff, node_pb2.RegisterStaffRequest(
        idempotency_key=key(), name=staff_name, service_point_id=point.id)).staff
    node.staff_id = staff.id
    # The operator makes the staff member's account on the node's machine (`timebank node
    # account add --role staff --staff ID --password`); she logs in with her password.
    login = f"staff-{code.lower()}"
    app = local_node(node)
    try:
        app.execute(logins.add_account, login, Role.STAFF, staff_id=staff.id)
        app.execute(logins.set_password, login, STAFF_PASSWORD)
    finally:
        app.db.dispose()
    node.desk_login = login
    node.log_in_at_desk()


def local_node(node: Node) -> Any:
    """The node's use-cases on its own database, on the city's simulated time (what the
    operator's `timebank node account …` does at the node's machine)."""
    clock = devclock.FileClock(node.clock, environ={DEV_CLOCK_ENV: "1"})
    return open_node_app(load_node_config(node.config_file), clock)


def member_login(node: Node, c: Character) -> NodeClient:
    """A member account for ``c`` with a one-time code the service point hands her (she
    has no password), and her session after she logs in with it."""
    login = f"member-{c.key}"
    app = local_node(node)
    try:
        app.execute(logins.add_account, login, Role.MEMBER, person_id=node.people[c.key].id)
        code = app.execute(logins.issue_code, login)
    finally:
        app.db.dispose()
    session = node.call(node.stub.Login, node_pb2.LoginRequest(login=login, code=code))
    return NodeClient(node.client.address, node.client.tls, timeout=node.client.timeout,
                      token=session.token)


def balance(node: Node, c: Character) -> node_pb2.GetBalanceResponse:
    return node.call(node.stub.GetBalance,
                     node_pb2.GetBalanceRequest(person_id=node.people[c.key].id))


def serve(city: City, node: Node, order: node_pb2.Order, volunteer: node_pb2.Person,
          minutes: int, verifier: node_pb2.Actor, comment: str) -> node_pb2.Order:
    node.call(node.staff.CheckIn, node_pb2.CheckInRequest(idempotency_key=key(),
                                                          order_id=order.id))
    city.advance(timedelta(minutes=minutes))
    node.call(node.staff.CheckOut, node_pb2.CheckOutRequest(idempotency_key=key(),
                                                            order_id=order.id))
    return node.call(node.staff.VerifyOrder, node_pb2.VerifyOrderRequest(
        idempotency_key=key(), order_id=order.id, verifier=verifier, rating=5,
        comment=comment)).order


def one_policy(city: City) -> dict[str, Any]:
    """Every district runs the city policy the bureau signed, fetched from the
    clearinghouse and checked under the city key each node was configured with."""
    def policies() -> dict[str, node_pb2.GetPolicyResponse]:
        return {n: node.call(node.stub.GetPolicy, node_pb2.GetPolicyRequest())
                for n, node in city.nodes.items()}

    city.wait("every district runs the city-signed policy",
              lambda: all(p.city_serial >= 1 for p in policies().values()))
    found = policies()
    digests = {p.digest for p in found.values()}
    serials = {p.city_serial for p in found.values()}
    city.check("every district runs the one policy the city signed",
               len(digests) == 1 and serials == {1})
    digest = next(iter(digests))
    publicity = {p.publicity_days for p in found.values()}
    city.step(f"The bureau signed the city policy with the city root key (serial 1, sha256 "
              f"{digest[:12]}…, publicity period {min(publicity)} days); every district "
              "fetched it from the clearinghouse, checked the city's signature with the key "
              "it was configured with and runs it: a claim made under any other policy is "
              "refused (POLICY_NOT_CURRENT)")
    return {"serial": min(serials), "sha256": digest, "districts": sorted(found)}


def earn_in_jiangning(city: City) -> None:
    jn = city.nodes[JN]
    desk(jn, "JN-DS-01", "东山街道佛城西路社区服务点", STAFF[JN])
    daughter, neighbour = enrol(jn, DAUGHTER), enrol(jn, NEIGHBOUR)
    jn.call(jn.staff.Grant, node_pb2.GrantRequest(
        idempotency_key=key(), person_id=neighbour.id, minutes=GRANT_MINUTES,
        staff_id=jn.staff_id, memo="市级时间银行基金: 重点老人服务补贴"))
    order = jn.call(jn.staff.RequestOrder, node_pb2.RequestOrderRequest(
        idempotency_key=key(), recipient_id=neighbour.id, category="助洁", planned_minutes=90,
        payment_source=node_pb2.PAYMENT_SOURCE_OWN,
        requested_by=node_pb2.Actor(staff_id=jn.staff_id))).order
    jn.call(jn.staff.AcceptOrder, node_pb2.AcceptOrderRequest(
        idempotency_key=key(), order_id=order.id, volunteer_id=daughter.id))
    order = serve(city, jn, order, daughter, 80, node_pb2.Actor(person_id=neighbour.id),
                  "打扫得很干净，谢谢小李")
    actors = recorded_actors(jn, order.id)
    for_him = f"staff:{jn.staff_id} for person:{neighbour.id}"
    city.step(f"{NEIGHBOUR.name} has no phone: staff member 陈静 logs in with her password "
              f"and requests, accepts, checks in and out and verifies for him; the node "
              f"records both identities with every step ({', '.join(actors)})")
    city.check("every step is recorded with the authenticated staff member and, when she "
               "acts for someone, that person too",
               actors[0] == f"staff:{jn.staff_id}" and for_him in actors
               and f"staff:{jn.staff_id} for person:{daughter.id}" in actors)
    public = order.public_until.ToDatetime(tzinfo=UTC).astimezone(CITY_TZ)
    city.step(f"[bold]{jn.name}[/]: {DAUGHTER.name} and {NEIGHBOUR.name} enrolled; the city "
              f"fund grants {NEIGHBOUR.name} (a priority elder) {hm(GRANT_MINUTES)}; "
              f"{DAUGHTER.name} cleans his flat (助洁) for {order.measured_minutes} min and he "
              f"verifies it; it is public until {public:%Y-%m-%d %H:%M} (公示期)")
    city.advance(timedelta(days=7, minutes=10))
    done = jn.call(jn.stub.RecordDueOrders, node_pb2.RecordDueOrdersRequest(
        idempotency_key=key()))
    recorded = [o for o in done.recorded if o.id == order.id]
    city.check("the cleaning order was recorded after the publicity period", bool(recorded))
    stored = balance(jn, DAUGHTER)
    worked = hm(recorded[0].measured_minutes) if recorded else "?"
    city.step(f"[bold]Seven simulated days later[/] (now {city.when()}; every process reads "
              f"the same clock file) the order is recorded: {worked} of work stored as "
              f"{hm(stored.total_minutes)} for {DAUGHTER.name} in {jn.name}")
    city.check(f"{DAUGHTER.name} stores 75 min in {jn.name} (80 min rounded to the 15-minute "
               "unit)", stored.total_minutes == 75)


def meals_in_gulou(city: City) -> tuple[node_pb2.Order, node_pb2.Claim]:
    jn, gl = city.nodes[JN], city.nodes[GL]
    desk(gl, "GL-HJ-01", "湖南路街道为老服务中心", STAFF[GL])
    mother, helper = enrol(gl, MOTHER), enrol(gl, HELPER)
    mother_in_jn = enrol(jn, MOTHER, home=GL)
    jn.call(jn.staff.LinkPeople, node_pb2.LinkPeopleRequest(
        idempotency_key=key(), person_id=jn.people[DAUGHTER.key].id,
        other_id=mother_in_jn.id, kind=node_pb2.LINK_KIND_PARENT, staff_id=jn.staff_id))
    daughter_in_gl = enrol(gl, DAUGHTER, home=JN)
    city.step(f"[bold]{gl.name}[/] enrols {MOTHER.name} (her home) and {HELPER.name}; "
              f"{DAUGHTER.name} is enrolled there as a visitor whose hours are kept in "
              f"{jn.name}, and {jn.name} records {MOTHER.name} as her parent (a visitor "
              "record there: family links are checked where the hours are kept)")
    city.wait("every enrolment reached the city directory", city.settled)
    refused_without_consent(city, mother, helper, daughter_in_gl)
    daughter_consents(city, mother_in_jn)
    order = _meals_for_mother(city, mother, helper, daughter_in_gl, "女儿在江宁区存的时间")
    claim_id = order.claim_id
    city.check("accepting the order proposed a redemption claim", bool(claim_id))

    def claim_in(node: Node) -> node_pb2.Claim:
        return node.call(node.stub.GetClaim, node_pb2.GetClaimRequest(claim_id=claim_id)).claim

    city.wait("江宁区 accepted the claim",
              lambda: claim_in(gl).state in ("accepted", "rejected", "expired"))
    held = balance(jn, DAUGHTER)
    claim = claim_in(gl)
    city.step(f"In {gl.name}, {HELPER.name} takes order {order.id} (助餐 for {MOTHER.name}, "
              f"60 min planned, paid with {DAUGHTER.name}'s hours). {gl.name} proposes claim "
              f"{claim_id[:8]}… to {jn.name} through the clearinghouse; {jn.name} checks the "
              f"family link, her consent and the balance and holds the minutes: claim "
              f"[bold]{claim.state}[/]; {DAUGHTER.name} in {jn.name}: "
              f"{hm(held.total_minutes)} stored, {hm(held.held_minutes)} held")
    city.check("the home district accepted and holds 60 min",
               claim.state == "accepted" and held.held_minutes == 60)
    order = serve(city, gl, order, helper, 43, node_pb2.Actor(staff_id=gl.staff_id),
                  "饭菜可口，妈妈很满意")
    city.advance(timedelta(days=7, hours=1))
    done = gl.call(gl.stub.RecordDueOrders, node_pb2.RecordDueOrdersRequest(
        idempotency_key=key()))
    city.check("the meals order was recorded after the publicity period",
               any(o.id == order.id for o in done.recorded))
    city.wait("the claim completed on both sides", lambda: claim_in(gl).state == "completed"
              and claim_in(jn).state == "completed")
    order = gl.call(gl.stub.GetOrder, node_pb2.GetOrderRequest(order_id=order.id)).order
    claim = claim_in(gl)
    after = balance(jn, DAUGHTER)
    city.step(f"{HELPER.name} serves 43 min, recorded as {hm(order.recorded_minutes)}; "
              f"{gl.name} completes the claim for {hm(claim.posted_minutes)} and posts it "
              f"when the clearinghouse confirms; {jn.name} posts its side on delivery: "
              f"{DAUGHTER.name} now has {hm(after.total_minutes)} ({hm(after.held_minutes)} "
              f"held); {HELPER.name} stored {hm(balance(gl, HELPER).total_minutes)} in "
              f"{gl.name}")
    city.check("45 min were charged to the daughter's hours in 江宁区",
               order.charged_minutes == 45 and after.total_minutes == 30
               and after.held_minutes == 0)
    mother_reads_her_own(city, gl)
    return order, claim


def _meals_for_mother(city: City, mother: node_pb2.Person, helper: node_pb2.Person,
                      daughter_in_gl: node_pb2.Person, note: str) -> node_pb2.Order:
    """鼓楼区's desk asks for 60 min of meals for the mother, paid with the daughter's hours
    kept in 江宁区, and the helper takes it (which asks 江宁区 for the hours)."""
    gl = city.nodes[GL]
    order = gl.call(gl.staff.RequestOrder, node_pb2.RequestOrderRequest(
        idempotency_key=key(), recipient_id=mother.id, category="助餐", planned_minutes=60,
        payment_source=node_pb2.PAYMENT_SOURCE_RELATIVE, payer_id=daughter_in_gl.id,
        requested_by=node_pb2.Actor(staff_id=gl.staff_id), note=note)).order
    return gl.call(gl.staff.AcceptOrder, node_pb2.AcceptOrderRequest(
        idempotency_key=key(), order_id=order.id, volunteer_id=helper.id)).order


def refused_without_consent(city: City, mother: node_pb2.Person, helper: node_pb2.Person,
                            daughter_in_gl: node_pb2.Person) -> None:
    """Before the daughter consents, 江宁区 refuses to spend her hours (ADR 0017)."""
    gl = city.nodes[GL]
    order = _meals_for_mother(city, mother, helper, daughter_in_gl, "未经女儿同意")

    def now() -> node_pb2.Order:
        return gl.call(gl.stub.GetOrder, node_pb2.GetOrderRequest(order_id=order.id)).order

    city.wait("江宁区 answered", lambda: now().state == node_pb2.ORDER_STATE_CANCELLED)
    why = now().cancel_reason
    city.step(f"Asked before {DAUGHTER.name} consented, {NAMES[JN]} refuses: order {order.id} "
              f"is cancelled in {gl.name}: {escape(why)}")
    city.check("without her consent the payment is refused (NO_CONSENT)",
               "[NO_CONSENT]" in why)


def daughter_consents(city: City, mother_in_jn: node_pb2.Person) -> None:
    """At her home district the daughter consents that her hours pay for her mother's
    services: standing, at most 2 h an order, for six months."""
    jn = city.nodes[JN]
    until = Timestamp()
    until.FromDatetime(city.now() + timedelta(days=182))
    daughter = jn.people[DAUGHTER.key].id
    herself = member_login(jn, DAUGHTER)  # she logs in as herself: the consent is hers
    try:
        granted = herself.call(herself.stub.GrantConsent, node_pb2.GrantConsentRequest(
            idempotency_key=key(), payer_id=daughter, grantee_id=mother_in_jn.id,
            kind=node_pb2.CONSENT_KIND_STANDING, max_minutes=120, expires_at=until)).consent
    finally:
        herself.close()
    city.step(f"In {jn.name}, {DAUGHTER.name} logs in herself and consents (consent "
              f"{granted.id}, recorded as granted by {granted.granted_by}) that her hours "
              f"pay for {MOTHER.name}'s services: up to 2 h an order, until "
              f"{city_time_of(granted.expires_at)}; revocable at any time")
    city.check("her consent is in force, granted by herself",
               granted.in_force and granted.granted_by == f"person:{daughter}")


def city_time_of(ts: Timestamp) -> str:
    return ts.ToDatetime(tzinfo=UTC).astimezone(CITY_TZ).strftime("%Y-%m-%d")


def mother_reads_her_own(city: City, gl: Node) -> None:
    """An elder without a password logs in with a one-time code and reads her balance;
    the node refuses her someone else's."""
    mine = member_login(gl, MOTHER)
    try:
        own = gl.call(mine.stub.GetBalance, node_pb2.GetBalanceRequest(
            person_id=gl.people[MOTHER.key].id))
        try:
            mine.stub.GetBalance(node_pb2.GetBalanceRequest(
                person_id=gl.people[HELPER.key].id), timeout=mine.timeout)
            refused = ""
        except grpc.RpcError as e:
            refused = e.code().name if isinstance(e, grpc.Call) else "?"
        me = mine.stub.WhoAmI(node_pb2.WhoAmIRequest(), timeout=mine.timeout).caller
    finally:
        mine.close()
    city.step(f"{MOTHER.name} has no password: the service point gives her a one-time code; "
              f"she logs in with it (as {me.actor}, a {me.role}) and reads her own balance "
              f"({hm(own.total_minutes)}); asking for {HELPER.name}'s is refused ({refused})")
    city.check("an elder logs in with a one-time code, reads her own balance and is refused "
               "another's", me.role == "member" and refused == "PERMISSION_DENIED")


def recorded_actors(node: Node, order_id: int) -> list[str]:
    """Who did each step of an order, as the node recorded it (its database)."""
    app = local_node(node)
    try:
        return [e.actor for e in app.query(_order_events, order_id)]
    finally:
        app.db.dispose()


def _order_events(tx: Any, order_id: int) -> list[Any]:
    return list(tx.repo.orders.events(order_id))


def move_to_qixia(city: City) -> node_pb2.Claim:
    jn, qx = city.nodes[JN], city.nodes[QX]
    desk(qx, "QX-XL-01", "仙林街道综合服务站", STAFF[QX])
    arrived = enrol(qx, DAUGHTER, home=JN)
    before = balance(jn, DAUGHTER)
    claim = jn.call(jn.stub.MovePerson, node_pb2.MovePersonRequest(
        idempotency_key=key(), person_id=jn.people[DAUGHTER.key].id, to_node_id=QX)).claim

    def claim_in(node: Node) -> node_pb2.Claim:
        return node.call(node.stub.GetClaim, node_pb2.GetClaimRequest(
            claim_id=claim.claim_id)).claim

    city.wait("the move completed on both sides", lambda: claim_in(jn).state == "completed"
              and claim_in(qx).state == "completed")
    now_in_qx = qx.call(qx.stub.GetBalance, node_pb2.GetBalanceRequest(person_id=arrived.id))
    left = balance(jn, DAUGHTER)
    home = jn.call(jn.stub.GetPerson, node_pb2.GetPersonRequest(
        person_id=jn.people[DAUGHTER.key].id)).person.home_node_id
    lookup = clearing_pb2_grpc.ClearinghouseServiceStub(city.channel).LookupPerson(
        clearing_pb2.LookupPersonRequest(person_ref=arrived.person_ref), timeout=10)
    origins = ", ".join(f"{node_pb2.Origin.Name(o.origin).removeprefix('ORIGIN_').lower()} "
                        f"{format_hours(o.total_minutes)}"
                        for o in now_in_qx.by_origin if o.total_minutes)
    city.step(f"{DAUGHTER.name} moves to [bold]{qx.name}[/]: {qx.name} enrols her, {jn.name} "
              f"sends her whole balance ({hm(before.total_minutes)}) in a move claim; "
              f"{qx.name} takes it in under the 1,500 h cap: {hm(now_in_qx.total_minutes)} "
              f"({origins}); {jn.name} keeps {hm(left.total_minutes)} and now says her hours "
              f"are kept in {home}; the city directory says {lookup.home_node_id}")
    city.check("her balance moved with its origin", now_in_qx.total_minutes == 30
               and left.total_minutes == 0 and origins.startswith("individual"))
    city.check("the directory and 江宁区 both name 栖霞区 her home",
               home == QX and lookup.home_node_id == QX)
    return claim_in(qx)


def city_checks(city: City) -> dict[str, Any]:
    """The invariants across the whole city."""
    city.wait("every claim settled", city.settled)
    reports = {n: node.call(node.stub.CheckLedger, node_pb2.CheckLedgerRequest())
               for n, node in city.nodes.items()}
    views = {n: node.call(node.stub.GetClearing, node_pb2.GetClearingRequest())
             for n, node in city.nodes.items()}
    positions = city.positions()
    nets = {p.node_id: p.net_minutes for p in positions.nodes}
    table = Table(title="the city's positions (minutes)", title_justify="left")
    for col in ("district", "issued+granted", "people+pool", "consumed", "clearing",
                "node says", "clearinghouse says", "agree"):
        table.add_column(col, justify="left" if col == "district" else "right")
    for n, r in reports.items():
        table.add_row(f"{NAMES[n]} {n}", str(r.issued_minutes + r.granted_minutes),
                      str(r.held_by_people_minutes + r.donation_pool_minutes),
                      str(r.consumed_minutes), str(r.clearing_minutes),
                      f"{views[n].net_minutes:+d}", f"{nets.get(n, 0):+d}",
                      "[green]yes[/]" if views[n].net_minutes == nets.get(n) else "[red]no[/]")
    gross = Table(title="gross between districts", title_justify="left")
    for col in ("served in (creditor)", "hours kept in (debtor)", "minutes"):
        gross.add_column(col, justify="right" if col == "minutes" else "left")
    for g in positions.gross:
        gross.add_row(NAMES.get(g.creditor_node_id, g.creditor_node_id),
                      NAMES.get(g.debtor_node_id, g.debtor_node_id), str(g.minutes))
    city.step("Positions across the city, from each node's own ledger and from the "
              "clearinghouse", table, gross)
    for n, r in reports.items():
        city.check(f"{NAMES[n]}: CheckLedger ok (chain, sums, holds, cap)", r.ok)
        city.check(f"{NAMES[n]}: minutes conserved (issued + granted = held by people + "
                   "donation pool + consumed + clearing)",
                   r.issued_minutes + r.granted_minutes == r.held_by_people_minutes
                   + r.donation_pool_minutes + r.consumed_minutes + r.clearing_minutes)
        city.check(f"{NAMES[n]}: the node and the clearinghouse agree on its position",
                   views[n].net_minutes == nets.get(n))
    issued = sum(r.issued_minutes + r.granted_minutes for r in reports.values())
    kept = sum(r.held_by_people_minutes + r.donation_pool_minutes + r.consumed_minutes
               for r in reports.values())
    city.check("city-wide: everything issued is held or consumed", issued == kept)
    city.check("city-wide: the clearing accounts sum to zero",
               sum(r.clearing_minutes for r in reports.values()) == 0)
    city.check("the clearinghouse's positions sum to zero", sum(nets.values()) == 0)
    city.check("positions: 鼓楼区 +45, 栖霞区 +30, 江宁区 -75",
               nets == {GL: 45, QX: 30, JN: -75})
    return {"nets": nets, "ledgers": {n: to_json(r) for n, r in reports.items()},
            "gross": [{"creditor": g.creditor_node_id, "debtor": g.debtor_node_id,
                       "minutes": g.minutes} for g in positions.gross],
            "issued_minutes": issued, "held_or_consumed_minutes": kept}


def anchor_and_witness(city: City) -> dict[str, Any]:
    """Every district anchors its ledger in the clearinghouse's transparency log, and
    the districts, as witnesses, cosign a tree head that includes the anchors."""
    anchored: dict[str, int] = {}
    for n in city.layout.nodes:
        config = load_node_config(n.config_file)
        app = open_node_app(config)
        try:
            requested = app.execute(checkpoints.request, signing_identity(config)[0])
        finally:
            app.db.dispose()
        anchored[n.node_id] = requested.entry_count

    def anchor_indexes() -> dict[str, int] | None:
        found: dict[str, int] = {}
        for n in city.layout.nodes:
            app = open_node_app(load_node_config(n.config_file))
            try:
                row = app.query(lambda tx: tx.repo.anchors.latest())
            finally:
                app.db.dispose()
            if row is None or row.entry_count < anchored[n.node_id]:
                return None
            found[n.node_id] = int(row.log_index)
        return found

    stub = clearing_pb2_grpc.ClearinghouseServiceStub(city.channel)
    indexes: dict[str, int] = {}

    def all_anchored() -> bool:
        nonlocal indexes
        indexes = anchor_indexes() or {}
        return bool(indexes)

    def cosigned() -> clearing_pb2.TreeHead | None:
        try:
            head = stub.GetTreeHead(clearing_pb2.GetTreeHeadRequest(cosigned=True), timeout=10).head
        except grpc.RpcError:
            return None
        return head if head.size > max(indexes.values()) else None

    city.wait("every district's ledger anchored in the log", all_anchored)
    city.check("every district's ledger is anchored in the clearinghouse's log",
               bool(indexes))
    head = None
    if indexes:
        city.wait("a tree head cosigned by a quorum of districts",
                  lambda: cosigned() is not None)
        head = cosigned()
    city.check("a tree head covering the anchors is cosigned by a quorum of districts",
               head is not None)
    table = Table(box=None, padding=(0, 2))
    for col in ("district", "ledger entries anchored", "log leaf"):
        table.add_column(col)
    for node_id, count in anchored.items():
        table.add_row(f"{NAMES[node_id]} {node_id}", str(count),
                      str(indexes.get(node_id, "—")))
    witnessed = (f"tree head of {head.size} leaves, root {head.root.hex()[:16]}…, cosigned "
                 f"by {', '.join(NAMES.get(c, c) for c in head.cosigners)}"
                 if head is not None else "no tree head cosigned by a quorum")
    city.step("Every district anchors its ledger's hash-chain head in the clearinghouse's "
              f"transparency log; the districts witness it: {witnessed}", table)
    return {"anchored_entries": anchored, "anchor_leaves": indexes,
            "cosigned_tree_size": head.size if head is not None else None,
            "cosigners": list(head.cosigners) if head is not None else []}


def compare_views(city: City) -> dict[str, Any]:
    """Every district serves the tree heads it holds (``GetLogHeads``), and each is of
    the one log the clearinghouse serves: no split view. (Each node also compares its
    peers' heads itself, every [peers] check_seconds; a fork would fail `node check`.)"""
    stub = clearing_pb2_grpc.ClearinghouseServiceStub(city.channel)
    key = bytes.fromhex(city.layout.clearinghouse_public_key)
    table = Table(box=None, padding=(0, 2))
    for col in ("district", "verified", "cosigned", "final", "alarms"):
        table.add_column(col)
    forked, alarms, compared = [], [], 0
    for node_id, node in city.nodes.items():
        heads = node.call(node.stub.GetLogHeads, node_pb2.GetLogHeadsRequest())
        sizes = []
        for note in (heads.verified, heads.cosigned, heads.final):
            if not note:
                sizes.append("—")
                continue
            located = locate(stub, key, note, seen=f"district {node_id}")
            compared += 1
            sizes.append(str(located.head.size))
            if located.evidence is not None:
                forked.append(f"{node_id}: {located.evidence.summary()}")
        alarms += [f"{node_id}: {a.kind}" for a in heads.alarms]
        table.add_row(f"{NAMES[node_id]} {node_id}", *sizes,
                      ", ".join(a.kind for a in heads.alarms) or "none")
    city.step("Each district serves the tree heads it holds; all are of the one log the "
              f"clearinghouse serves ({compared} compared), so no district is shown another "
              "history", table)
    city.check("every head every district holds is of the clearinghouse's one log (no split "
               "view)", compared > 0 and not forked)
    city.check("no district raises a log alarm (fork, finality)", not alarms)
    return {"heads_compared": compared, "forks": forked, "alarms": alarms}


def _clearinghouse_app(city: City) -> Any:
    """The clearinghouse's use-cases on its own database, on the city's simulated time
    (what the bureau's `timebank clearinghouse settle …` does at its machine)."""
    clock = devclock.FileClock(city.layout.clock_file, environ={DEV_CLOCK_ENV: "1"})
    return open_ch_app(load_ch_config(city.layout.clearinghouse_config), clock)


def settle_the_month(city: City) -> dict[str, Any]:
    """The month ends; the bureau closes it; every district checks its line against its
    own ledger and countersigns; the statement is final and every district posts it."""
    month = city.now().astimezone(CITY_TZ).strftime("%Y-%m")
    period = month_period(month)
    assert period.ends is not None
    city.advance(timedelta(seconds=int((period.ends - city.now()).total_seconds()))
                 + timedelta(hours=9))
    app = _clearinghouse_app(city)
    try:
        sign = clearinghouse_signer(load_ch_config(city.layout.clearinghouse_config), app)

        def close() -> bool:
            try:
                app.execute(ch_settlement.close, sign, period=month)
            except FailedPrecondition as e:
                if e.reason == "NO_QUORUM_HEAD":  # the witnesses have not cosigned yet
                    return False
                raise
            return True

        city.wait(f"the bureau closes {month} once a quorum has cosigned its end", close)
        city.wait("every district countersigns and the statement is final",
                  lambda: app.query(ch_settlement.get, 1).final)
        city.wait("every district posts the statement in its ledger",
                  lambda: all(_posted(node) for node in city.nodes.values()))
        found = app.query(ch_settlement.get, 1)
        names = {a.node_id: a.district for a in app.query(admission.admissions)}
    finally:
        app.db.dispose()
    statement = parse_statement(decode(found.statements[-1]).body)
    sheet = statement.sheet
    signers = sorted(decode(e).signer for e in found.countersigns)
    city.step(f"[bold]{month} 结算 — the month is over[/] (now {city.when()}). The bureau "
              f"runs `timebank clearinghouse settle close --period {month}`: the "
              f"clearinghouse settles every claim completed in the log's leaves "
              f"[{statement.start}, {statement.end}), signs the statement into its log and "
              "cites a tree head the districts cosigned. Each district fetches it, checks "
              "its own line claim by claim against its own ledger, countersigns, and once "
              "all have, posts it: its clearing account returns to what is carried forward")
    print_settlement(found, names)
    reports = {n: node.call(node.stub.CheckLedger, node_pb2.CheckLedgerRequest())
               for n, node in city.nodes.items()}
    nets = {x.node_id: x.net_minutes for x in sheet.lines}
    city.check(f"{month}: every district countersigned and the statement is final",
               found.final and signers == sorted(city.nodes))
    city.check(f"{month}: the statement's nets are the positions (鼓楼区 +45, 栖霞区 +30, "
               "江宁区 -75) and sum to zero", nets == {GL: 45, QX: 30, JN: -75})
    city.check(f"{month}: netting settles three districts in at most two transfers",
               len(sheet.transfers) <= 2 and sheet.netting.gross == 2)
    city.check(f"{month}: at 1 yuan an hour 江宁区 pays ¥1.25, 鼓楼区 gets ¥0.75 and "
               "栖霞区 ¥0.50", {x.node_id: x.fen for x in sheet.lines}
               == {JN: -125, GL: 75, QX: 50} and sheet.residue_fen == 0)
    city.check(f"{month}: every district posted it; every clearing account is back to 0",
               all(r.clearing_minutes == 0 and r.ok for r in reports.values()))
    city.check("positions start afresh: the clearinghouse's nets are all 0",
               all(p.net_minutes == 0 for p in city.positions().nodes))
    return {"period": month, "serial": statement.serial, "final": found.final,
            "start": statement.start, "end": statement.end,
            "statement_sha256": identity(decode(found.statements[-1])).hex(),
            "nets": nets, "fen": {x.node_id: x.fen for x in sheet.lines},
            "transfers": [{"from": t.payer, "to": t.payee, "minutes": t.amount}
                          for t in sheet.transfers],
            "countersigned": signers,
            "ledgers": {n: to_json(r) for n, r in reports.items()}}


def _posted(node: Node) -> bool:
    app = local_node(node)
    try:
        return bool(app.query(node_settlement.show, 1).record.state
                    == SettlementState.POSTED)
    except NotFound:
        return False
    finally:
        app.db.dispose()


def audit_city(city: City, root: Path) -> dict[str, Any]:
    """With every process stopped, the offline audit of everything the city's files hold
    (what `timebank audit --data-dir` does): ledgers and anchors, the log rebuilt against
    its signed heads and cosignatures, claims on both sides, receipts, positions."""
    report = audit_data_dir(root)
    table = Table(box=None, padding=(0, 1), show_header=False)
    table.add_column()
    table.add_column()
    for c in report.checks:
        table.add_row("[green]✓[/]" if c.ok else "[red]✗[/]",
                      escape(f"{c.name}: {c.detail}"))
    bad = report.first_bad
    verdict = ("the audit passes" if report.ok else
               f"the audit fails at {bad.file}, table {bad.table}, {bad.entry}" if bad else
               "the audit fails")
    city.step(f"The processes stop, and `timebank audit --data-dir {root}` checks every "
              f"file offline: {verdict}", table)
    city.check(f"timebank audit: all {len(report.checks)} checks pass", report.ok)
    return report.summary()


# ------------------------------------------------------------------ running it


@contextmanager
def _isolated_environment() -> Iterator[None]:
    """The demo's processes read only their own files: set aside TIMEBANK_<SECTION>_*
    overrides (an operator's TIMEBANK_NODE_DATABASE_URL must never reach the demo)."""
    saved = {k: v for k, v in os.environ.items() if k.startswith(CONFIG_ENV_PREFIXES)}
    for k in saved:
        del os.environ[k]
    try:
        yield
    finally:
        os.environ.update(saved)


def _prepare(data_dir: Path | None) -> tuple[Path, bool]:
    if data_dir is None:
        return Path(tempfile.mkdtemp(prefix="timebank-demo-")), True
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise CliError(f"{data_dir} is not an empty directory; the demo needs a fresh one "
                       "(give a new path, or remove what is there)")
    return data_dir, False


def run_demo(data_dir: Path | None, *, as_json: bool = False) -> int:
    """Play the story; return the exit code (0 only if every check passed)."""
    started = time.monotonic()
    root, temporary = _prepare(data_dir)
    summary: dict[str, Any] = {"ok": False, "districts": NAMES,
                               "data_dir": None if temporary else str(root.resolve())}
    try:
        with _isolated_environment():
            ok = _play(root, temporary, summary)
    except (LaunchError, CliError, devclock.DevClockError, OSError, ValueError) as e:
        message = describe_error(e) or str(e)
        print_error(f"the demo stopped: {message}")
        summary["error"] = message
        ok = False
    finally:
        if temporary:
            shutil.rmtree(root, ignore_errors=True)
    summary["ok"] = ok
    summary["seconds"] = round(time.monotonic() - started, 3)
    if as_json:
        sys.stdout.flush()
        print_json(summary, indent=None)
    return 0 if ok else 1


def serve_demo(data_dir: Path) -> int:
    """Serve again the city a `timebank demo --data-dir DIR` kept, on its own simulated
    clock (the clock file in DIR: the story moved it weeks ahead, and a process on the
    real clock would write entries dated before the ones it already holds), until Ctrl-C
    or SIGTERM; return the exit code."""
    root = data_dir.resolve()
    if not (root / CLEARINGHOUSE / "clearinghouse.toml").is_file() or not (
            root / "clock").is_file():
        print_error(f"{data_dir} holds no city `timebank demo --data-dir` kept (no "
                    "clearinghouse/clearinghouse.toml or clock file): run the demo first")
        return 1
    stop = {"signal": 0}

    def stopping(signum: int, _frame: object) -> None:
        stop["signal"] = signum

    previous = signal.signal(signal.SIGTERM, stopping)
    try:
        with _isolated_environment():
            tls = load_ch_config(root / CLEARINGHOUSE / "clearinghouse.toml").tls
            city_layout = layout(  # found again, unchanged, with the CA its files name
                root, policy_text=DEMO_POLICY, insecure=tls.ca is None,
                pki_dir=None if tls.ca is None else tls.ca.parent)
            with CityProcesses(city_layout, dev_clock=True, env=DEMO_ENV) as processes, \
                    contextlib.ExitStack() as consoles:
                processes.start_all()
                pages = {n.node_id: consoles.enter_context(_console(n, city_layout))
                         for n in city_layout.nodes}
                home = city_layout.nodes[0]
                status = consoles.enter_context(_monitor(city_layout))
                bureau = consoles.enter_context(_console(home, city_layout, bureau=True,
                                                         monitor_status=status))
                now = datetime.now(UTC) + devclock.read_offset(city_layout.clock_file)
                table = Table(box=None, padding=(0, 2))
                for col in ("process", "pid", "address", "config"):
                    table.add_column(col)
                for name in city_layout.names:
                    label = "clearinghouse (市民政局)" if name == CLEARINGHOUSE else \
                        f"node {name} {NAMES.get(name, '')}"
                    config = (city_layout.clearinghouse_config if name == CLEARINGHOUSE
                              else city_layout.node(name).config_file)
                    table.add_row(label, str(processes.pid(name)), processes.address(name),
                                  str(config))
                echo(table)
                for node_id, url in pages.items():
                    echo(f"网页控制台 console {NAMES.get(node_id, node_id)}: {url}/ "
                         f"(社会监督公示 public page: {url}/public; 全市概况 the city: "
                         f"{url}/bureau)")
                echo(f"民政局控制台 the bureau's console: {bureau}/bureau (结算期间 settlement "
                     f"periods: {bureau}/bureau/settlements; {NAMES.get(home.node_id, '')} "
                     "的管理员登录后可结算期间 / an operator of that district who logs in may "
                     "close a period)")
                echo(f"城市监督程序 the city's monitor (`timebank monitor check --follow`): "
                     f"its findings in {status}, shown on the bureau's page")
                env = " ".join(f"{k}={v}" for k, v in city_layout.client_env().items())
                echo(f"演示城市运行中 the demo city is serving again, on its own clock: now "
                     f"{now.astimezone(CITY_TZ):%Y-%m-%d %H:%M:%S} ({CITY_TZ_NAME}, "
                     f"simulated; {devclock.read_offset(city_layout.clock_file).days} days "
                     f"ahead of the real clock). Reach it with {env}; logs in "
                     f"{city_layout.logs_dir}.")
                echo("Ctrl-C 或 SIGTERM 停止 / Ctrl-C or SIGTERM stops it.")
                sys.stdout.flush()
                while not stop["signal"]:
                    dead = [n for n in city_layout.names if not processes.is_running(n)]
                    if dead:
                        print_error(f"{', '.join(dead)} stopped; see {city_layout.logs_dir}")
                        return 1
                    time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    except (LaunchError, CliError, devclock.DevClockError, OSError, ValueError) as e:
        print_error(f"the demo city did not start: {describe_error(e) or e}")
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    echo("the demo city stopped")
    return 0


@contextmanager
def _console(node: NodeLayout, city_layout: CityLayout, *, bureau: bool = False,
             monitor_status: Path | None = None) -> Iterator[str]:
    """`timebank console serve` for ``node``, trusting the city CA as the node's other
    clients do, with the city's overview read from the clearinghouse as the demo's
    observer (on one machine, everyone is the bureau too) or, with ``bureau``, as the
    bureau's operator, whose console may close a settlement period (and shows what the
    city's monitor found, from ``monitor_status``); its address."""
    client = city_layout.client_tls(bureau=bureau)
    tls = ["--insecure"] if node.client_tls is None or client is None else [
        "--ca", str(node.client_tls.ca), "--cert", str(client.cert),
        "--key", str(client.key)]
    monitor = [] if monitor_status is None else ["--monitor-status", str(monitor_status)]
    log = city_layout.logs_dir / f"console-{'bureau' if bureau else node.node_id}.log"
    with console_serving(node.address, [*tls, "--clearinghouse",
                                        city_layout.clearinghouse_address, *monitor],
                         log) as (url, _):
        yield url


#: Seconds between the demo monitor's rounds.
DEMO_MONITOR_SECONDS = 10


@contextmanager
def _monitor(city_layout: CityLayout) -> Iterator[Path]:
    """`timebank monitor check --follow` on the city, as an outsider runs it: the city's
    two public keys, the addresses and the observer certificate; its directory is
    ``monitor/`` in the city's, its alerts go to ``logs/monitor.log``. Yields the status
    file it rewrites every round; stopped with SIGTERM when the block ends."""
    tls = city_layout.client_tls()
    options = ["--insecure"] if tls is None else [
        "--ca", str(tls.ca), "--cert", str(tls.cert), "--key", str(tls.key)]
    data = city_layout.data_dir / "monitor"
    with (city_layout.logs_dir / "monitor.log").open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "city.cli", "monitor", "check", "--follow",
             "--interval", str(DEMO_MONITOR_SECONDS),
             "--clearinghouse", city_layout.clearinghouse_address,
             "--clearinghouse-key", city_layout.clearinghouse_public_key,
             "--city-key", city_layout.city_public_key, "--data-dir", str(data),
             *(a for n in city_layout.nodes for a in ("--node", n.address)), *options],
            stdout=out, stderr=subprocess.STDOUT)
    try:
        yield data / STATUS_FILE
    finally:
        end_process(process)


def keep_metrics(processes: CityProcesses, city_layout: CityLayout) -> None:
    """Each process's Prometheus metrics at the end, beside its log (``<name>.metrics``):
    what an operator's monitoring would have scraped (and names nobody: ADR 0016)."""
    for name in city_layout.names:
        address = processes.metrics_address(name)
        if address is None:
            continue
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as answer:
            text = answer.read().decode("utf-8")
        (city_layout.logs_dir / f"{name}.metrics").write_text(text, encoding="utf-8")


def _play(root: Path, temporary: bool, summary: dict[str, Any]) -> bool:
    echo("[bold]timebank demo[/] — a city's time banks as one (通存通兑): the clearinghouse "
         "and three district nodes, each its own process")
    city_layout = layout(root, policy_text=DEMO_POLICY)
    with CityProcesses(city_layout, dev_clock=True, env=DEMO_ENV) as processes:
        processes.start_all()
        table = Table(box=None, padding=(0, 2))
        for col in ("process", "pid", "address", "metrics", "data"):
            table.add_column(col)
        for name in city_layout.names:
            label = "clearinghouse (市民政局)" if name == CLEARINGHOUSE else \
                f"node {name} {NAMES.get(name, '')}"
            where = (city_layout.clearinghouse_dir if name == CLEARINGHOUSE
                     else city_layout.node(name).data_dir)
            metrics = processes.metrics_address(name)  # each its own port
            table.add_row(label, str(processes.pid(name)), processes.address(name),
                          f"http://{metrics}/metrics" if metrics else "—", str(where))
        channel = city_layout.channel(CLEARINGHOUSE)
        nodes = {n.node_id: Node(n.node_id, NodeClient(n.address, n.client_tls, timeout=15.0,
                                                        token=n.operator_token),
                                 n.config_file, city_layout.clock_file)
                 for n in city_layout.nodes}
        try:
            city = City(city_layout, nodes, channel)
            kept = "a temporary directory, removed at the end" if temporary else "kept"
            city.step(f"The city is laid out in {root} ({kept}): the bureau's keys, one city "
                      "secret shared by the districts, every node admitted by a certificate "
                      "the city root key signed; four processes serve TLS on 127.0.0.1 with "
                      "certificates the city CA issued, and the clearinghouse lets each node "
                      "act only for the district its certificate names (mutual TLS)", table)
            summary["policy"] = one_policy(city)
            earn_in_jiangning(city)
            order, redemption = meals_in_gulou(city)
            move = move_to_qixia(city)
            summary.update(city_checks(city))
            summary["log"] = anchor_and_witness(city)
            summary["views"] = compare_views(city)
            summary["settlement"] = settled = settle_the_month(city)
            summary["ledgers"] = settled.pop("ledgers")  # as they stand after posting
            reports = {n: node.call(node.stub.CheckLedger, node_pb2.CheckLedgerRequest())
                       for n, node in city.nodes.items()}
            city.step(f"{NAMES[JN]}'s ledger after it all", render_report(reports[JN]))
            keep_metrics(processes, city_layout)
        finally:
            for node in nodes.values():
                node.close()
            channel.close()
    summary["audit"] = audit_city(city, root)
    checks = Table(box=None, padding=(0, 1), show_header=False)
    checks.add_column()
    checks.add_column()
    for what, passed in city.checks:
        checks.add_row("[green]✓[/]" if passed else "[red]✗[/]", escape(what))
    ok = all(passed for _, passed in city.checks)
    city.step("What the story must show", checks)
    summary.update({
        "orders": [to_json(order)],
        "claims": [to_json(redemption), to_json(move)],
        "checks": [{"check": what, "ok": passed} for what, passed in city.checks],
    })
    if ok:
        echo("[bold green]All checks passed.[/] " + (
            "The demo's files are removed." if temporary else
            f"The city's files are kept in {root}. Serve it again on its own clock, with a "
            "web console for each district to click through (its time is weeks ahead of "
            "the real one; `node serve` on the real clock would date new entries before "
            f"old ones): [bold]timebank demo --data-dir {root} --serve[/]; audit it: "
            f"[bold]timebank audit --data-dir {root}[/]; check a node: [bold]timebank node "
            f"check --config {city_layout.node(JN).config_file}[/]."))
    else:
        echo("[bold red]Some checks failed[/] (see ✗ above).")
    return ok
