"""`timebank demo`: one district's time bank, end to end, through the real gRPC API.

The demo initialises 江宁区 (node 320115) in a fresh SQLite data directory, starts the
real gRPC server on a loopback port, and plays one story as an operator would, through
the same client the `timebank node ...` commands use:

1. a service point and a staff member are registered; a volunteer, her mother, a
   neighbour and a second volunteer are enrolled; the mother is linked as her parent;
2. the city fund grants the neighbour (a priority elder) hours; the volunteer cleans his
   flat (助洁), paid with his own granted hours; he verifies and rates the service;
3. the order stays public for the 7-day publicity period (公示期), simulated by moving
   the node's clock, not by sleeping; then it is recorded, rounded to the city's unit;
4. the volunteer's relative redeems: her mother receives meals (助餐) paid with the
   volunteer's stored hours;
5. the ledger's invariants are checked, and the story's expected balances compared.

Exit code 0 only if every check passes.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table

from node.cli import (
    CITY_TZ,
    CliError,
    NodeClient,
    describe_error,
    echo,
    fmt_time,
    history_table,
    hm,
    print_error,
    print_json,
    render_order,
    render_report,
    report_from_view,
    to_json,
)
from node.domain.clock import ManualClock
from node.domain.identity import id_card_with_check_digit
from timebank.minutes import format_hours
from timebank.v1 import node_pb2, node_pb2_grpc

Req = TypeVar("Req")
Resp = TypeVar("Resp")

NODE_ID, DISTRICT = "320115", "江宁区"
#: The story starts on a Monday morning in Nanjing.
START = datetime(2026, 3, 2, 9, 0, tzinfo=CITY_TZ)
GRANT_MINUTES = 600


@dataclass(frozen=True, slots=True)
class Character:
    key: str
    name: str
    id_first17: str  # region 320115, birth date, sequence (odd: male, even: female)
    phone: str
    priority: bool
    role: str

    @property
    def id_number(self) -> str:
        return id_card_with_check_digit(self.id_first17)


VOLUNTEER = Character("volunteer", "李秀英", "32011519630612024", "13912340001", False,
                      "volunteer")
MOTHER = Character("mother", "张桂兰", "32011519390805046", "13912340002", True,
                   "priority elder living alone, 李秀英's mother")
NEIGHBOUR = Character("neighbour", "王建国", "32011519480120013", "13912340003", True,
                      "priority elder (semi-disabled, living alone), a neighbour")
HELPER = Character("helper", "刘洋", "32011519910618035", "13912340004", False,
                   "volunteer")
CAST = (VOLUNTEER, MOTHER, NEIGHBOUR, HELPER)

#: What the story must end with, in minutes: (total balance before the relative
#: redemption, total after).
EXPECTED = {
    VOLUNTEER.key: (75, 30),   # 80 min of cleaning recorded as 75; 45 spent on her mother
    MOTHER.key: (0, 0),        # served with her daughter's hours
    NEIGHBOUR.key: (GRANT_MINUTES - 75, GRANT_MINUTES - 75),  # his granted hours paid
    HELPER.key: (0, 45),       # 43 min of meals recorded as 45
}


@dataclass
class Story:
    client: NodeClient
    clock: ManualClock
    people: dict[str, node_pb2.Person] = field(default_factory=dict)
    orders: list[node_pb2.Order] = field(default_factory=list)
    checks: list[tuple[str, bool]] = field(default_factory=list)
    staff_id: int = 0
    steps: int = 0

    # ------------------------------------------------------------ narration

    def step(self, text: str, *details: Any) -> None:
        self.steps += 1
        echo(f"[bold cyan]{self.steps:>2}.[/] {text}")
        for d in details:
            echo(Padding(d, (0, 0, 0, 4)))

    def now(self) -> str:
        return self.clock.now().astimezone(CITY_TZ).strftime("%Y-%m-%d %H:%M")

    def advance(self, delta: timedelta) -> None:
        self.clock.advance(delta)

    def check(self, what: str, ok: bool) -> None:
        self.checks.append((what, ok))

    # ------------------------------------------------------------ calls

    def call(self, method: grpc.UnaryUnaryMultiCallable[Req, Resp], request: Req) -> Resp:
        return self.client.call(method, request, getattr(request, "idempotency_key", ""))

    @property
    def stub(self) -> node_pb2_grpc.NodeServiceStub:
        return self.client.stub

    def id_of(self, c: Character) -> int:
        return self.people[c.key].id

    def balance(self, c: Character) -> node_pb2.Balance:
        return self.call(self.stub.GetBalance,
                         node_pb2.GetBalanceRequest(person_id=self.id_of(c)))

    # ------------------------------------------------------------ the story

    def setting(self) -> None:
        point = self.call(self.stub.RegisterServicePoint, node_pb2.RegisterServicePointRequest(
            idempotency_key=key(), code="JN-DS-01", name="东山街道佛城西路社区服务点",
            street="东山街道"))
        staff = self.call(self.stub.RegisterStaff, node_pb2.RegisterStaffRequest(
            idempotency_key=key(), name="陈静", service_point_id=point.id))
        self.staff_id = staff.id
        self.step(f"Service point {point.id} [bold]{escape(point.name)}[/] ({point.code}) "
                  f"registered; staff member {staff.id} [bold]{escape(staff.name)}[/] works "
                  "there")
        table = Table(box=None, padding=(0, 2))
        for col in ("id", "name", "age", "priority", "who"):
            table.add_column(col, justify="right" if col in ("id", "age") else "left")
        for c in CAST:
            person = self.call(self.stub.EnrolPerson, node_pb2.EnrolPersonRequest(
                idempotency_key=key(), kind=node_pb2.PERSON_KIND_INDIVIDUAL, name=c.name,
                id_number=c.id_number, phone=c.phone, priority=c.priority,
                service_point_id=point.id))
            self.people[c.key] = person
            self.client.remember(person)
            table.add_row(str(person.id), escape(person.name), str(person.age),
                          "yes" if person.priority else "", escape(c.role))
        self.step(f"{len(CAST)} people enrolled at the service point (ID numbers stay on this "
                  "node; each gets a city-wide PersonRef pseudonym)", table)
        link = self.call(self.stub.LinkPeople, node_pb2.LinkPeopleRequest(
            idempotency_key=key(), person_id=self.id_of(VOLUNTEER), other_id=self.id_of(MOTHER),
            kind=node_pb2.LINK_KIND_PARENT, staff_id=self.staff_id))
        self.step(f"{MOTHER.name} linked as {VOLUNTEER.name}'s parent (recorded by staff "
                  f"{self.staff_id}): {VOLUNTEER.name} may now spend her hours on her mother")
        self.check("the family link was recorded", link.kind == node_pb2.LINK_KIND_PARENT)

    def cleaning(self) -> node_pb2.Order:
        neighbour, volunteer = self.people[NEIGHBOUR.key], self.people[VOLUNTEER.key]
        grant = self.call(self.stub.Grant, node_pb2.GrantRequest(
            idempotency_key=key(), person_id=neighbour.id, minutes=GRANT_MINUTES,
            staff_id=self.staff_id, memo="市级时间银行基金: 重点老人服务补贴"))
        self.step(f"The city fund grants {NEIGHBOUR.name}, a priority elder, "
                  f"{hm(GRANT_MINUTES)}, ledger entry {grant.seq}")
        self.advance(timedelta(minutes=30))
        order = self.call(self.stub.RequestOrder, node_pb2.RequestOrderRequest(
            idempotency_key=key(), recipient_id=neighbour.id, category="助洁",
            planned_minutes=90, payment_source=node_pb2.PAYMENT_SOURCE_OWN,
            requested_by=node_pb2.Actor(staff_id=self.staff_id),
            note="王伯伯不会用手机，由服务点代为下单"))
        self.step(f"{self.now()}  Staff enter order {order.id} for {NEIGHBOUR.name} (he has no "
                  f"smartphone): {order.category_name} cleaning, {hm(order.planned_minutes)} "
                  "planned, paid with his own (granted) hours")
        self.advance(timedelta(minutes=12))
        order = self.call(self.stub.AcceptOrder, node_pb2.AcceptOrderRequest(
            idempotency_key=key(), order_id=order.id, volunteer_id=volunteer.id))
        self.step(f"{self.now()}  {VOLUNTEER.name} takes order {order.id}; "
                  f"{format_hours(order.held_minutes)} are held on {NEIGHBOUR.name}'s account")
        self.advance(timedelta(hours=4, minutes=48))
        self.call(self.stub.CheckIn, node_pb2.CheckInRequest(
            idempotency_key=key(), order_id=order.id))
        checked_in = self.now()
        self.advance(timedelta(minutes=80))
        order = self.call(self.stub.CheckOut, node_pb2.CheckOutRequest(
            idempotency_key=key(), order_id=order.id))
        self.step(f"{VOLUNTEER.name} checks in at {checked_in} and out at "
                  f"{self.now()[-5:]}: {order.measured_minutes} min measured")
        self.advance(timedelta(minutes=5))
        order = self.call(self.stub.VerifyOrder, node_pb2.VerifyOrderRequest(
            idempotency_key=key(), order_id=order.id,
            verifier=node_pb2.Actor(person_id=neighbour.id), rating=5,
            comment="打扫得很干净，谢谢小李"))
        self.step(f"{NEIGHBOUR.name} verifies order {order.id}: {'★' * order.rating} "
                  f"“{escape(order.comment)}”; it is public until {fmt_time(order.public_until)} "
                  "(7-day publicity period, 公示期)")
        try:
            self.call(self.stub.RecordOrder, node_pb2.RecordOrderRequest(
                idempotency_key=key(), order_id=order.id))
            refused = ""
        except CliError as e:
            refused = str(e)
        self.step(f"Recording it now is refused, as it must be: [yellow]{escape(refused)}[/]")
        self.check("recording during the publicity period is refused",
                   refused.startswith("FAILED_PRECONDITION"))
        self.advance(timedelta(days=7, minutes=20))
        self.step(f"[bold]The clock moves 7 days forward[/] (simulated: the node's clock is "
                  f"moved, nothing sleeps); it is now {self.now()}; nobody disputed the order")
        order = self.call(self.stub.RecordOrder, node_pb2.RecordOrderRequest(
            idempotency_key=key(), order_id=order.id))
        self.step(f"Order {order.id} recorded: {hm(order.banked_minutes)} stored for "
                  f"{VOLUNTEER.name}, {hm(order.charged_minutes)} paid by {NEIGHBOUR.name}",
                  render_order(order, self.client))
        self.check("80 min of service were recorded as 75 min (15-minute unit)",
                   order.measured_minutes == 80 and order.recorded_minutes == 75)
        self.check("the recording told the volunteer about the rounding", bool(order.notices))
        return order

    def meals(self) -> node_pb2.Order:
        volunteer, mother, helper = (self.people[c.key] for c in (VOLUNTEER, MOTHER, HELPER))
        self.advance(timedelta(hours=19))
        order = self.call(self.stub.RequestOrder, node_pb2.RequestOrderRequest(
            idempotency_key=key(), recipient_id=mother.id, category="meals",
            planned_minutes=60, payment_source=node_pb2.PAYMENT_SOURCE_RELATIVE,
            payer_id=volunteer.id, requested_by=node_pb2.Actor(person_id=volunteer.id)))
        self.step(f"{self.now()}  {VOLUNTEER.name} orders {order.category_name} meals for her "
                  f"mother {MOTHER.name} (order {order.id}), paid with her own stored hours "
                  "(a relative redeems: 取时间)")
        self.advance(timedelta(minutes=20))
        order = self.call(self.stub.AcceptOrder, node_pb2.AcceptOrderRequest(
            idempotency_key=key(), order_id=order.id, volunteer_id=helper.id))
        self.step(f"{HELPER.name} takes it; {format_hours(order.held_minutes)} are held on "
                  f"{VOLUNTEER.name}'s account")
        self.advance(timedelta(hours=1, minutes=40))
        self.call(self.stub.CheckIn, node_pb2.CheckInRequest(
            idempotency_key=key(), order_id=order.id))
        checked_in = self.now()
        self.advance(timedelta(minutes=43))
        order = self.call(self.stub.CheckOut, node_pb2.CheckOutRequest(
            idempotency_key=key(), order_id=order.id))
        self.advance(timedelta(hours=2))
        order = self.call(self.stub.VerifyOrder, node_pb2.VerifyOrderRequest(
            idempotency_key=key(), order_id=order.id,
            verifier=node_pb2.Actor(person_id=volunteer.id), rating=5,
            comment="饭菜可口，妈妈很满意"))
        self.step(f"{HELPER.name} serves lunch from {checked_in} ({order.measured_minutes} min); "
                  f"{VOLUNTEER.name} verifies for her mother: {'★' * order.rating} "
                  f"“{escape(order.comment)}”")
        self.advance(timedelta(days=7, hours=1))
        recorded = self.call(self.stub.RecordDueOrders, node_pb2.RecordDueOrdersRequest(
            idempotency_key=key()))
        done = [o for o in recorded.recorded if o.id == order.id]
        self.check("the daily batch recorded the meals order", len(done) == 1)
        if done:
            order = done[0]
        self.step(f"Seven (simulated) days later, now {self.now()}, the daily batch records "
                  f"order {order.id}: {order.measured_minutes} min → "
                  f"{order.recorded_minutes} min; {hm(order.charged_minutes)} taken from "
                  f"{VOLUNTEER.name}, {hm(order.banked_minutes)} stored for {HELPER.name}",
                  *(f"[yellow]notice:[/] {escape(n)}" for n in order.notices))
        self.check("43 min of meals were recorded as 45 min and paid by the daughter",
                   order.recorded_minutes == 45 and order.charged_minutes == 45
                   and order.payer_id == volunteer.id)
        return order

    def balances(self) -> dict[str, node_pb2.Balance]:
        return {c.key: self.balance(c) for c in CAST}


def key() -> str:
    return str(uuid.uuid4())


def balances_table(before: dict[str, node_pb2.Balance],
                   after: dict[str, node_pb2.Balance] | None, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("person")
    table.add_column("before" if after else "total", justify="right")
    if after:
        table.add_column("after", justify="right")
        table.add_column("change", justify="right")
    table.add_column("available", justify="right")
    table.add_column("origin")
    for c in CAST:
        b = before[c.key]
        a = after[c.key] if after else None
        final = a or b
        origins = ", ".join(f"{_origin(o.origin)} {format_hours(o.total_minutes)}"
                            for o in final.by_origin if o.total_minutes) or "—"
        row = [f"{escape(c.name)} ({final.person_id})", format_hours(b.total_minutes)]
        if a is not None:
            delta = a.total_minutes - b.total_minutes
            row += [format_hours(a.total_minutes),
                    ("+" if delta > 0 else "") + format_hours(delta) if delta else "—"]
        row += [format_hours(final.available_minutes), origins]
        table.add_row(*row)
    return table


def _origin(value: int) -> str:
    name: str = node_pb2.Origin.Name(value)  # type: ignore[arg-type]
    return name.removeprefix("ORIGIN_").lower()


def _order_summary(order: node_pb2.Order, names: dict[int, str]) -> dict[str, Any]:
    data = to_json(order)
    keep = ("id", "state", "category", "category_name", "planned_minutes", "payment_source",
            "measured_minutes", "recorded_minutes", "banked_minutes", "charged_minutes",
            "excess_to_pool_minutes", "rating", "comment", "public_until", "recorded_at",
            "notices")
    summary = {k: data[k] for k in keep}
    summary["recipient"] = names.get(order.recipient_id, "")
    summary["volunteer"] = names.get(order.volunteer_id, "")
    summary["payer"] = names.get(order.payer_id) if order.payer_id else None
    return summary


_ENV_SECTIONS = ("TIMEBANK_NODE_", "TIMEBANK_SERVER_", "TIMEBANK_LOG_")


@contextmanager
def _isolated_environment() -> Iterator[None]:
    """The demo's node reads only its own files: set aside TIMEBANK_<SECTION>_* overrides
    (an operator's TIMEBANK_NODE_DATABASE_URL must never point the demo at a real database)."""
    saved = {k: v for k, v in os.environ.items() if k.startswith(_ENV_SECTIONS)}
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
    summary: dict[str, Any] = {"ok": False, "node_id": NODE_ID, "district": DISTRICT,
                               "data_dir": None if temporary else str(root.resolve())}
    try:
        with _isolated_environment():
            ok = _play(root, temporary, summary)
    except Exception as e:
        message = describe_error(e)
        if message is None:
            raise
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


def _play(root: Path, temporary: bool, summary: dict[str, Any]) -> bool:
    from node.api.server import start_server
    from node.bootstrap import init_data_dir, open_app
    from node.config import load_config
    from node.logging import configure_logging
    from node.usecases.ledger import check_ledger

    # The node's own log lines would interleave with the story: keep warnings, on stderr.
    configure_logging(level="warning", fmt="console", stream=sys.stderr)
    echo(f"[bold]timebank demo[/] — one district's time bank, end to end: "
         f"{DISTRICT} (node {NODE_ID})")
    config_path = init_data_dir(root, NODE_ID, DISTRICT)
    config = load_config(config_path)
    clock = ManualClock(START)
    node_app = open_app(config, clock=clock)
    server: grpc.Server | None = None
    client: NodeClient | None = None
    try:
        server, port = start_server(node_app, "127.0.0.1:0")
        client = NodeClient(f"127.0.0.1:{port}", timeout=10.0)
        story = Story(client, clock)
        where = "a temporary directory, removed at the end" if temporary else "kept afterwards"
        story.step(f"Node {NODE_ID} {DISTRICT} initialised in {root} ({where}): SQLite, "
                   f"city policy sha256 {node_app.policy.digest[:12]}…, a random city secret")
        story.step(f"The real gRPC server listens on 127.0.0.1:{port}; the node's clock is "
                   f"simulated and starts on {story.now()} (Asia/Shanghai)")
        story.setting()
        cleaning = story.cleaning()
        vol = story.balance(VOLUNTEER)
        story.step(f"{VOLUNTEER.name} has stored {hm(vol.total_minutes)}")
        before = story.balances()
        story.step("Balances before the relative redeems",
                   balances_table(before, None, "stored hours"))
        meals = story.meals()
        after = story.balances()
        story.step(f"Balances after {MOTHER.name}'s meals, paid with {VOLUNTEER.name}'s hours",
                   balances_table(before, after, "stored hours"))
        story.step(f"{VOLUNTEER.name}'s passbook (her ledger history)", history_table(
            story.call(story.stub.GetHistory,
                       node_pb2.GetHistoryRequest(person_id=story.id_of(VOLUNTEER))),
            VOLUNTEER.name))
        report = story.call(story.stub.CheckLedger, node_pb2.CheckLedgerRequest())
        direct = report_from_view(node_app.query(check_ledger))
        for c in CAST:
            want_before, want_after = EXPECTED[c.key]
            story.check(f"{c.name}: {format_hours(want_before)} before and "
                        f"{format_hours(want_after)} after the redemption",
                        (before[c.key].total_minutes, after[c.key].total_minutes)
                        == (want_before, want_after))
        story.check("no balance or available balance is negative", all(
            b.total_minutes >= 0 and b.available_minutes >= 0 for b in after.values()))
        story.check("nothing is left on hold", all(b.held_minutes == 0 for b in after.values()))
        story.check("CheckLedger over gRPC: every transaction sums to zero, the hash chain "
                    "verifies, balances equal their postings, holds and the cap hold",
                    report.ok)
        story.check("the same check run directly on the database agrees",
                    direct.ok and direct.head_hash == report.head_hash
                    and direct.transactions == report.transactions)
        story.check("minutes are conserved: issued + granted = held by people + donation "
                    "pool + consumed",
                    report.issued_minutes + report.granted_minutes
                    == report.held_by_people_minutes + report.donation_pool_minutes
                    + report.consumed_minutes)
        story.check(f"issued {format_hours(120)} for 2 services, consumed the same",
                    report.issued_minutes == 120 and report.consumed_minutes == 120)
        story.step("The ledger is checked", render_report(report))
        checks = Table(box=None, padding=(0, 1), show_header=False)
        checks.add_column()
        checks.add_column()
        for what, passed in story.checks:
            checks.add_row("[green]✓[/]" if passed else "[red]✗[/]", escape(what))
        ok = all(passed for _, passed in story.checks)
        story.step("What the story must show", checks)
        names = {p.id: p.name for p in story.people.values()}
        summary.update({
            "people": {p.name: {"id": p.id, "age": p.age, "priority": p.priority,
                                "person_ref": p.person_ref} for p in story.people.values()},
            "orders": [_order_summary(o, names) for o in (cleaning, meals)],
            "balances": {names[b.person_id]: b.total_minutes for b in after.values()},
            "available": {names[b.person_id]: b.available_minutes for b in after.values()},
            "balances_before_redemption": {names[b.person_id]: b.total_minutes
                                           for b in before.values()},
            "ledger": to_json(report),
            "checks": [{"check": what, "ok": passed} for what, passed in story.checks],
            "clock": {"start": START.isoformat(),
                      "end": clock.now().astimezone(CITY_TZ).isoformat()},
        })
        if ok:
            echo("[bold green]All checks passed.[/] "
                 + ("The demo's files are removed." if temporary else
                    f"The node's files are kept in {root}: try "
                    f"`timebank node check --config {config_path}`."))
        else:
            echo("[bold red]Some checks failed[/] (see ✗ above).")
        return ok
    finally:
        if client is not None:
            client.close()
        if server is not None:
            server.stop(grace=None).wait(5)
        node_app.db.dispose()
