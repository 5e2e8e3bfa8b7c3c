"""Benchmark: each web console page's p50 and p99 on one district of ``--people`` people.

Lays out one district node in a temporary directory (``node.bootstrap.init_data_dir``,
its own SQLite file, plaintext), fills it through the node's use-cases in a few
transactions, then runs it and the console as real processes on 127.0.0.1, as an
operator does:

    timebank node serve --config node.toml
    timebank console serve --node 127.0.0.1:PORT --insecure --listen 127.0.0.1:PORT2

and asks every page over HTTP, one request at a time, with real login sessions (a staff
member's and a member's). Prints a table and a JSON summary as the last line. With
``--city`` it times the pages that need a whole city (``bench/console_city.py``).

    python bench/console.py [--people 10000] [--requests 200] [--warm-up 5] [--orders N]
                            [--history 1200] [--engine sqlite|postgresql]
                            [--postgres-url URL] [--only PAGE] [--json]

The district: ``--people`` people over 10 service points, a tenth of them priority
elders (重点老人); a staff member at the first service point and their account; a
member (a volunteer of that service point) with ``--history`` services recorded in her
history (the ledger entries /me reads); ``--orders`` orders (default: 3 for every 10
people) served by other volunteers, 40% recorded, 30% verified (on public display), 25%
requested (waiting for a volunteer), the rest accepted or disputed. The filling runs on a
simulated clock that ends just before now, so the node, serving on the system's clock,
has every verified order in its publicity period. The staff member's pages are about
their own service point's people (staff read no one else's): /people/ID is its elder with
the most orders, /orders/ID one the member served there (the page reads the volunteer's
record too).

Each page gets ``--warm-up`` untimed requests, then ``--requests`` timed ones, page by
page (the time from sending the request to the last byte of the answer, on one kept-alive
connection, as a browser's). Beside the latency, per page: the node rpcs a request makes
and the node's own time in them (from the node's ``rpc`` log lines, which time each call
inside the server), and the CPU the console's and the node's processes spent per request
(from /proc): on this shared machine, whose speed drifts, they say where a page's time
goes better than the latency does.

``--engine postgresql`` puts the node on a new database on the PostgreSQL server of
``--postgres-url`` (created for the run and dropped after).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
from bench_support import bench_database
from grpc_health.v1 import health_pb2, health_pb2_grpc

from city.launcher import end_process
from node.bootstrap import init_data_dir, open_app
from node.config import load_config
from node.domain.access import Role
from node.domain.clock import ManualClock
from node.domain.identity import id_card_with_check_digit
from node.domain.orders import OrderState, PaymentSource, PersonKind
from node.usecases import logins, orders, people
from node.usecases.app import NodeApp, Tx
from node.usecases.views import Actor
from runtime.tls import TlsSettings

NODE_ID, DISTRICT = "320115", "江宁区"
HOST = "127.0.0.1"
PASSWORD = "bench console 1940"
STAFF_LOGIN, MEMBER_LOGIN = "wang.desk", "ouyang.xiuying"
#: The member's name: the only 欧阳 in the district (the other surnames are one character),
#: so the desk's search for it reads every person before finding her alone.
MEMBER_NAME = "欧阳秀英"
COMMON_NAME = "王"
SERVICE_POINTS = 10
ELDER_EVERY = 10  # one person in ten is a priority elder
#: Use-case calls per transaction while filling.
BATCH = 500
START_SECONDS = 60.0
HTTP_TIMEOUT = 60.0
TARGET_MS = 1000.0
POSTGRES_URL = os.environ.get("TIMEBANK_BENCH_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BENCH_DATABASE_PREFIX = "timebank_bench_console_"

SURNAMES = ("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋"
            "蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛")
#: About as common as in China: 王 and 李 one person in fourteen each.
SURNAME_WEIGHTS = (7.1, 7.0, 6.6, 5.4, 4.5, 3.1, 2.2, 2.0, 1.9, 1.9) + (0.55,) * (
    len(SURNAMES) - 10)
GIVEN = ("秀英桂兰玉梅淑珍凤英建国志强伟芳丽敏静海军明华平红霞云燕娟丹春梅秋菊德胜国庆"
         "永福金凤素珍文华俊杰子涵欣怡浩然宇轩思远佳琪雨桐晓东振华立新爱民学军")
STREETS = ("东山街道", "秣陵街道", "汤山街道", "淳化街道", "禄口街道", "江宁街道", "谷里街道",
           "湖熟街道", "横溪街道", "麒麟街道")
CATEGORIES = ("cleaning", "meals", "bathing", "medical", "mobility", "companionship",
              "shopping")

T = TypeVar("T")


# ------------------------------------------------------------------ figures


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank percentile (as bench/claims.py)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process ``pid`` has used so far; 0 without /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------ the district


@dataclass
class Town:
    """What the pages are asked about, once the district is filled."""

    people: int = 0
    orders: dict[str, int] = field(default_factory=dict)
    member_history: int = 0
    member: int = 0  # her person id
    elder: int = 0  # at the staff member's service point, with the most orders
    order: int = 0  # a recorded order of that service point (its volunteer's too)
    public_after: int = 0  # the last order of the public page's 10th page (or the middle)
    #: what the desk is asked (part of a name), and how many it finds (at most 50 a page)
    desk: dict[str, int] = field(default_factory=dict)
    setup_s: dict[str, float] = field(default_factory=dict)


def chunks(items: Sequence[T], size: int = BATCH) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def id_number(born: date, serial: int, node_id: str = NODE_ID) -> str:
    """An ID card number issued in ``node_id``'s district (each district of a city its
    own, so that no person is enrolled at home in two)."""
    return id_card_with_check_digit(f"{node_id}{born:%Y%m%d}{serial % 1000:03d}")


class Filler:
    """Fills the node through its use-cases, many calls to a transaction, on a simulated
    clock (``clock``) that the caller moves between the steps of the service loop."""

    def __init__(self, app: NodeApp, clock: ManualClock, rng: random.Random,
                 node_id: str = NODE_ID) -> None:
        self.app = app
        self.node_id = node_id
        self.clock = clock
        self.rng = rng
        self.points: list[int] = []
        self.staff = 0
        self.elders: list[int] = []
        self.volunteers: list[int] = []
        self.point_of: dict[int, int] = {}
        self.member = 0

    def places(self) -> None:
        def make(tx: Tx) -> tuple[list[int], int]:
            points = [people.register_service_point(tx, f"SP-{i + 1:02d}",
                                                    f"{street}服务站", street).id
                      for i, street in enumerate(STREETS[:SERVICE_POINTS])]
            return points, people.register_staff(tx, "王主任", points[0]).id

        self.points, self.staff = self.app.execute(make)

    def enrol(self, count: int) -> None:
        """``count`` people, a tenth priority elders (born 1935..1945), the rest born
        1950..2005, each at one of the service points; then the member."""
        rows = []
        for i in range(count):
            elder = i % ELDER_EVERY == 0
            first = date(1935, 1, 1) if elder else date(1950, 1, 1)
            span = 365 * (10 if elder else 55)
            born = first + timedelta(days=(i * 7919 + i // 1000) % span)
            # (birth date, serial) is unique: the serial counts the people born that day
            surname = self.rng.choices(SURNAMES, SURNAME_WEIGHTS)[0]
            name = (surname + self.rng.choice(GIVEN[::2]) +
                    self.rng.choice(GIVEN[1::2]))[: self.rng.choice((2, 3, 3, 3))]
            point = self.points[i % len(self.points)]
            rows.append((name, born, f"138{i:08d}", elder, point))
        serials: dict[date, int] = {}

        def enrol_all(tx: Tx, batch: Sequence[tuple[str, date, str, bool, int]],
                      ) -> list[tuple[int, bool, int]]:
            made = []
            for name, born, phone, elder, point in batch:
                serial = serials.get(born, 0)
                serials[born] = serial + 1
                p = people.enrol_person(tx, PersonKind.INDIVIDUAL, name,
                                        id_number(born, serial, self.node_id), phone, elder,
                                        point)
                made.append((p.id, elder, point))
            return made

        for batch in chunks(rows, 1000):
            for person_id, elder, point in self.app.execute(enrol_all, batch):
                (self.elders if elder else self.volunteers).append(person_id)
                self.point_of[person_id] = point
        self.member = self.app.execute(
            people.enrol_person, PersonKind.INDIVIDUAL, MEMBER_NAME,
            id_number(date(1962, 5, 17), 999, self.node_id), "13912345678", False,
            self.points[0]).id
        self.point_of[self.member] = self.points[0]

    def accounts(self) -> None:
        for login, role, bound in ((STAFF_LOGIN, Role.STAFF, {"staff_id": self.staff}),
                                   (MEMBER_LOGIN, Role.MEMBER, {"person_id": self.member})):
            self.app.execute(logins.add_account, login, role, **bound)
            self.app.execute(logins.set_password, login, PASSWORD)

    def serve(self, pairs: Sequence[tuple[int, int]], to: str, minutes: int = 60) -> list[int]:
        """Orders for each (recipient, volunteer) taken to ``to`` (requested, accepted,
        verified, disputed), paid by the city grant, ``minutes`` long; their ids. Each step
        is the use-case the node's rpc calls, ``BATCH`` orders to a transaction; the clock
        moves by the service's length between check-in and check-out."""
        made: list[int] = []

        def arrive(tx: Tx, batch: Sequence[tuple[int, int]]) -> list[int]:
            ids = []
            for recipient, volunteer in batch:
                o = orders.request_order(tx, recipient, self.rng.choice(CATEGORIES), minutes,
                                         PaymentSource.CITY_GRANT, 0,
                                         Actor(person_id=recipient), "")
                if to != "requested":
                    orders.accept_order(tx, o.record.id, volunteer)
                if to in ("verified", "disputed"):
                    orders.check_in(tx, o.record.id)
                ids.append(o.record.id)
            return ids

        def leave(tx: Tx, batch: Sequence[int]) -> None:
            for order_id in batch:
                orders.check_out(tx, order_id)
                order = tx.repo.orders.get(order_id)
                orders.verify_order(tx, order_id, Actor(person_id=order.recipient_id),
                                    self.rng.choice((4, 5, 5, 5)), "")
                if to == "disputed":
                    orders.dispute_order(tx, order_id, Actor(person_id=order.recipient_id),
                                         "时长不对 the time is wrong")

        for batch in chunks(pairs):
            made += self.app.execute(arrive, batch)
        if to in ("verified", "disputed"):
            self.clock.advance(timedelta(minutes=minutes))
            for ids in chunks(made):
                self.app.execute(leave, ids)
        return made

    def pairs(self, count: int, volunteer: int = 0) -> list[tuple[int, int]]:
        """``count`` (recipient, volunteer): elders in turn, volunteers at random (or
        ``volunteer`` every time)."""
        start = self.rng.randrange(len(self.elders))
        return [(self.elders[(start + i) % len(self.elders)],
                 volunteer or self.rng.choice(self.volunteers)) for i in range(count)]

    def record_due(self) -> int:
        recorded = 0
        while done := self.app.execute(orders.record_due_orders, 1000):
            recorded += len(done)
        return recorded


def fill(app: NodeApp, clock: ManualClock, n_people: int, n_orders: int, history: int,
         end: datetime, node_id: str = NODE_ID) -> Town:
    """The district (``node_id``'s), its simulated clock ending before ``end`` (the
    system's now)."""
    town = Town(people=n_people + 1, member_history=history)
    f = Filler(app, clock, random.Random(20261206), node_id)
    t0 = time.perf_counter()
    f.places()
    f.enrol(n_people)
    f.accounts()
    town.setup_s["enrol"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    recorded, on_display = n_orders * 40 // 100, n_orders * 30 // 100
    requested = n_orders * 25 // 100
    accepted = (n_orders - recorded - on_display - requested) // 2
    disputed = n_orders - recorded - on_display - requested - accepted
    # recorded: the member's history and others', over ten days, a month ago
    days = 10
    for day in range(days):
        mine = history // days + (1 if day < history % days else 0)
        theirs = recorded // days + (1 if day < recorded % days else 0)
        f.serve(f.pairs(mine, f.member), "verified", 60)
        for minutes in (30, 60, 90, 120):
            f.serve(f.pairs(theirs // 4 + (1 if minutes == 30 else 0) * (theirs % 4)),
                    "verified", minutes)
        clock.advance(timedelta(days=1))
    clock.advance(timedelta(days=app.policy.publicity_days + 1))
    done = f.record_due()
    # on display: verified over the last four days, some disputed
    clock.advance(max(timedelta(0), end - timedelta(days=4) - clock.now()))
    shown: list[int] = []
    for _ in range(3):
        for minutes in (30, 60, 90, 120):
            shown += f.serve(f.pairs(on_display // 12), "verified", minutes)
        clock.advance(timedelta(hours=24))
    shown += f.serve(f.pairs(on_display - on_display // 12 * 12), "verified", 60)
    shown += f.serve(f.pairs(disputed), "disputed", 60)
    f.serve(f.pairs(accepted), "accepted")
    f.serve(f.pairs(requested), "requested")
    if clock.now() >= end:
        raise SystemExit("the simulated clock passed the system's: the filling took too "
                         "long a time to fit before now")
    town.setup_s["orders"] = round(time.perf_counter() - t0, 1)
    town.orders = {"recorded": done, "on_display": len(shown), "disputed": disputed,
                   "requested": requested, "accepted": accepted}

    # what the pages are asked about
    here = f.points[0]

    def at_the_desk(tx: Tx) -> tuple[int, int]:
        counts: dict[int, int] = {}
        for elder in f.elders:
            if f.point_of[elder] == here:
                counts[elder] = len(tx.repo.orders.list(elder, None, 0, 1000))
        elder = max(counts, key=lambda e: (counts[e], -e))
        # a staff member reads only the people of their own service point (or of none),
        # and the order page reads its volunteer too: both of this service point
        mine = tx.repo.orders.list(f.member, OrderState.RECORDED, 0, 1000)
        served = [o.id for o in mine + tx.repo.orders.list(0, OrderState.RECORDED, 0, 1000)
                  if f.point_of[o.recipient_id] == here
                  and f.point_of.get(o.volunteer_id or 0) == here]
        if not served:
            raise SystemExit("no recorded order of the staff member's service point: give "
                             "--history or --orders more")
        return elder, served[0]
    town.elder, town.order = app.query(at_the_desk)
    town.member = f.member
    shown.sort()
    town.public_after = shown[min(len(shown) // 2, 50 * 10) - 1] if shown else 0

    # the staff member finds the people of their service point and of none: a common
    # surname finds a page of 50 early in the table, the member's (the only one) reads it all
    def found(tx: Tx, query: str) -> int:
        return len(tx.repo.people.find(name_part=query, within=(f.points[0],), limit=50))

    for query in (COMMON_NAME, MEMBER_NAME[:2]):
        town.desk[query] = app.query(found, query)
    return town


# ------------------------------------------------------------------ processes


def wait_for(what: str, ready: Callable[[], bool], process: subprocess.Popen[bytes],
             log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)


def node_serving(address: str) -> bool:
    with grpc.insecure_channel(address) as ch:
        try:
            answer = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=2)
        except grpc.RpcError:
            return False
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def console_serving(url: str) -> bool:
    host, port = url.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=2)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@contextmanager
def running(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` as a process of its own, its output in ``log``; stopped (SIGTERM) after."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMEBANK_")}
    env.update(PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
    with log.open("ab") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, env=env)
    try:
        yield process
    finally:
        end_process(process, grace=20)


# ------------------------------------------------------------------ a browser


_CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


class Browser:
    """One kept-alive HTTP connection and the cookies the console set.

    The console's cookies are Secure: a cookie jar would not send them back over
    http://127.0.0.1, so they are kept here from each Set-Cookie and sent as a browser on
    https would."""

    def __init__(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=HTTP_TIMEOUT)
        self.cookies: dict[str, str] = {}
        self.reconnects = 0

    def ask(self, method: str, path: str, form: dict[str, str] | None = None,
            ) -> tuple[int, bytes]:
        try:
            return self._ask(method, path, form)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            # the server closes a connection left idle (uvicorn: after 5 s); a browser
            # opens another and asks again
            self.conn.close()
            if method != "GET":
                raise
            self.reconnects += 1
            return self._ask(method, path, form)

    def _ask(self, method: str, path: str, form: dict[str, str] | None,
             ) -> tuple[int, bytes]:
        headers = {"Accept-Language": "zh-CN,zh;q=0.9"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, path, body=body, headers=headers)
        answer = self.conn.getresponse()
        content = answer.read()
        for cookie in answer.headers.get_all("set-cookie") or ():
            name, _, rest = cookie.partition("=")
            value = rest.split(";", 1)[0]
            if not value.strip('"') or "max-age=0" in cookie.lower():
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return answer.status, content

    def log_in(self, login: str, password: str) -> None:
        status, page = self.ask("GET", "/login")
        found = _CSRF_FIELD.search(page.decode())
        if status != 200 or found is None or "timebank_login_csrf" not in self.cookies:
            raise SystemExit(f"GET /login answered {status} without its CSRF token")
        status, _ = self.ask("POST", "/login", {"csrf": found.group(1), "login": login,
                                                "password": password})
        if status != 303 or "timebank_session" not in self.cookies:
            raise SystemExit(f"logging in as {login} answered {status}, no session")

    def close(self) -> None:
        self.conn.close()


# ------------------------------------------------------------------ timing


@dataclass(frozen=True)
class Page:
    label: str
    path: str
    who: str  # anyone, staff, member


def pages(town: Town) -> list[Page]:
    return [
        Page("/", "/", "anyone"),
        Page("/public", "/public", "anyone"),
        Page("/public?after=ID", f"/public?after={town.public_after}", "anyone"),
        *(Page(f"/desk?q={query} ({found} found)", "/desk?q=" + urllib.parse.quote(query),
               "staff") for query, found in town.desk.items()),
        Page("/desk?point=mine (a service point's people)", "/desk?point=mine", "staff"),
        Page("/people/ID", f"/people/{town.elder}", "staff"),
        Page("/orders/ID", f"/orders/{town.order}", "staff"),
        Page("/me", "/me", "member"),
        Page("/me/requests", "/me/requests", "member"),
    ]


def node_rpcs(log: Path, offset: int) -> tuple[dict[str, list[float]], int]:
    """The node's ``rpc`` log lines after ``offset``: each method's times (ms, inside
    the server); and the new offset."""
    found: dict[str, list[float]] = {}
    with log.open("rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    for line in data[:end].splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "rpc":
            found.setdefault(str(event.get("method")), []).append(float(event.get("ms", 0)))
    return found, offset + end


@dataclass(frozen=True)
class Watched:
    """Another server a page's requests call (the clearinghouse): its process, its log,
    and the methods its log shows that other clients call (left out)."""

    pid: int
    log: Path
    skip: frozenset[str] = frozenset()


def rpc_figures(rpcs: dict[str, list[float]], n: int, prefix: str = "node") -> dict[str, Any]:
    """A server's rpcs per request, its own time in them per request (mean), and each
    method's mean time (ms), from its ``rpc`` log lines over ``n`` requests."""
    calls = sum(len(v) for v in rpcs.values())
    return {
        f"{prefix}_rpcs_per_request": round(calls / n, 2),
        f"{prefix}_rpc_ms_per_request": round(sum(sum(v) for v in rpcs.values()) / n, 1),
        f"{prefix}_rpc_ms_by_method": {m: round(statistics.fmean(v), 1)
                                       for m, v in sorted(rpcs.items())},
    }


def time_page(page: Page, browser: Browser, n: int, warm_up: int, node_pid: int,
              console_pid: int, node_log: Path, *,
              clearinghouse: Watched | None = None) -> dict[str, Any]:
    """``page`` asked ``warm_up`` times untimed, then ``n`` times timed. With
    ``clearinghouse``, its rpcs and CPU per request too (the bureau's pages read it, and
    a passbook's proof comes from it)."""
    statuses: dict[int, int] = {}
    size = 0
    for _ in range(warm_up):
        browser.ask("GET", page.path)
    time.sleep(0.2)  # the warm-up's log lines written
    _, offset = node_rpcs(node_log, node_log.stat().st_size)
    ch_offset = 0 if clearinghouse is None else clearinghouse.log.stat().st_size
    cpu_node, cpu_console = cpu_seconds(node_pid), cpu_seconds(console_pid)
    cpu_ch = 0.0 if clearinghouse is None else cpu_seconds(clearinghouse.pid)
    reconnects = browser.reconnects
    took: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        status, body = browser.ask("GET", page.path)
        took.append(time.perf_counter() - t0)
        statuses[status] = statuses.get(status, 0) + 1
        size = len(body)
    cpu_node = cpu_seconds(node_pid) - cpu_node
    cpu_console = cpu_seconds(console_pid) - cpu_console
    cpu = {"node": round(cpu_node * 1000 / n, 1), "console": round(cpu_console * 1000 / n, 1)}
    time.sleep(0.2)
    rpcs, _ = node_rpcs(node_log, offset)
    got: dict[str, Any] = {
        "p50_ms": round(percentile(took, 50) * 1000, 1),
        "p99_ms": round(percentile(took, 99) * 1000, 1),
        "max_ms": round(max(took) * 1000, 1),
        "mean_ms": round(statistics.fmean(took) * 1000, 1),
        "n": n,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "bytes": size,
        "reconnects": browser.reconnects - reconnects,  # 0: one kept-alive connection
        # the node's own time in its calls, per request (mean), and by method
        **rpc_figures(rpcs, n),
        "cpu_ms_per_request": cpu,
    }
    if clearinghouse is not None:
        cpu["clearinghouse"] = round((cpu_seconds(clearinghouse.pid) - cpu_ch) * 1000 / n, 1)
        rpcs, _ = node_rpcs(clearinghouse.log, ch_offset)
        got.update(rpc_figures({m: v for m, v in rpcs.items() if m not in clearinghouse.skip},
                               n, "clearinghouse"))
    return got


# ------------------------------------------------------------------ main


def run(args: argparse.Namespace, data_dir: Path, database_url: str) -> dict[str, Any]:
    node_port, console_port = free_port(), free_port()
    node_address, console_address = f"{HOST}:{node_port}", f"{HOST}:{console_port}"
    config_file = init_data_dir(data_dir / "node", NODE_ID, DISTRICT,
                                database_url=database_url, listen=node_address,
                                metrics_listen=f"{HOST}:0", tls=TlsSettings(insecure=True))
    end = datetime.now(UTC).replace(microsecond=0)
    clock = ManualClock(end - timedelta(days=40))
    t0 = time.perf_counter()
    app = open_app(load_config(config_file), clock)
    try:
        n_orders = args.orders if args.orders is not None else args.people * 3 // 10
        town = fill(app, clock, args.people, n_orders, args.history, end)
    finally:
        app.db.dispose()
    town.setup_s["total"] = round(time.perf_counter() - t0, 1)
    print(f"setup            {town.setup_s['total']} s ({town.setup_s['enrol']} s enrolling "
          f"{town.people} people, {town.setup_s['orders']} s for the orders: "
          f"{town.orders}, the member's history {town.member_history})", flush=True)

    results: dict[str, Any] = {"people": town.people, "engine": args.engine,
                               "orders": town.orders, "member_history": town.member_history,
                               "setup_s": town.setup_s}
    node_log, console_log = data_dir / "node.log", data_dir / "console.log"
    python = sys.executable
    with ExitStack() as stack:
        node = stack.enter_context(running(
            [python, "-m", "city", "node", "serve", "--config", str(config_file)], node_log))
        wait_for("the node", lambda: node_serving(node_address), node, node_log)
        console = stack.enter_context(running(
            [python, "-m", "city", "console", "serve", "--node", node_address, "--insecure",
             "--listen", console_address], console_log))
        wait_for("the console", lambda: console_serving(console_address), console,
                 console_log)
        browsers = {"anyone": Browser(console_address), "staff": Browser(console_address),
                    "member": Browser(console_address)}
        for b in browsers.values():
            stack.callback(b.close)
        browsers["staff"].log_in(STAFF_LOGIN, PASSWORD)
        browsers["member"].log_in(MEMBER_LOGIN, PASSWORD)
        measured: dict[str, Any] = {}
        load_at_start = os.getloadavg()[0]
        print(f"{'page':<26}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'rpcs':>6}"
              f"{'node rpc ms':>13}{'CPU node':>10}{'console':>9}  status", flush=True)
        chosen = [p for p in pages(town) if not args.only or p.label in args.only]
        for page in chosen:
            got = time_page(page, browsers[page.who], args.requests, args.warm_up, node.pid,
                            console.pid, node_log)
            measured[page.label] = got
            print(f"{page.label:<26}{got['p50_ms']:>9}{got['p99_ms']:>9}{got['max_ms']:>9}"
                  f"{got['node_rpcs_per_request']:>6}{got['node_rpc_ms_per_request']:>13}"
                  f"{got['cpu_ms_per_request']['node']:>10}"
                  f"{got['cpu_ms_per_request']['console']:>9}  {got['statuses']}", flush=True)
    failures = [line for line in console_log.read_text(errors="replace").splitlines()
                if "Traceback" in line or '"level": "error"' in line]
    results["pages"] = measured
    results["paths"] = {p.label: p.path for p in chosen}
    every_ok = all(set(m["statuses"]) == {"200"} for m in measured.values())
    results["targets"] = {
        f"every_page_p99_ms<{TARGET_MS:.0f}": every_ok and all(
            m["p99_ms"] < TARGET_MS for m in measured.values()),
        "every_answer_200": every_ok,
    }
    results["console_errors"] = len(failures)
    # the machine is shared: how busy it was while the pages were timed
    results["load_average"] = {"start": round(load_at_start, 2),
                               "end": round(os.getloadavg()[0], 2)}
    results["cpu_count"] = os.cpu_count()
    return results


def main() -> None:
    if "--city" in sys.argv[1:]:  # the city's pages: a whole city, bench/console_city.py
        import console_city

        sys.argv = [sys.argv[0], *(a for a in sys.argv[1:] if a != "--city")]
        console_city.main()
        return
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--city", action="store_true",
                    help="time the pages that need a whole city instead (the bureau's, "
                         "the passbooks, an order paid across districts): "
                         "bench/console_city.py, whose options follow")
    ap.add_argument("--people", type=int, default=10000)
    ap.add_argument("--requests", type=int, default=200, help="timed requests per page")
    ap.add_argument("--warm-up", type=int, default=5, help="untimed requests per page first")
    ap.add_argument("--orders", type=int, default=None,
                    help="orders served by other volunteers (default: 3 for 10 people)")
    ap.add_argument("--history", type=int, default=1200,
                    help="services recorded in the member's history")
    ap.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--postgres-url", default=POSTGRES_URL, metavar="URL",
                    help="with --engine postgresql: a server where the bench may create and "
                         "drop a database of its own")
    ap.add_argument("--only", action="append", metavar="PAGE",
                    help="time only this page, as the table names it (again for more; "
                         "e.g. to profile one with py-spy)")
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    args = ap.parse_args()
    if args.people < 100 or args.requests < 1:
        raise SystemExit("--people is at least 100 and --requests at least 1")
    if args.json:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the figures only, at the end
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(
            prefix="timebank-bench-console-")))
        url = (stack.enter_context(bench_database(args.postgres_url, BENCH_DATABASE_PREFIX))
               if args.engine == "postgresql" else "")
        results = run(args, tmp, url)
    sys.stdout = sys.__stdout__
    print(json.dumps(results, ensure_ascii=False))


if __name__ == "__main__":
    main()
