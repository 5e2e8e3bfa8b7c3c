"""Driving a city of real processes through gRPC, as district staff would, while
processes die under it: a client that retries a call the same way (same request, same
idempotency key) until the process is back, the people a run needs, redemptions walked
from request to verification, and moves.

Used by the crash test (tests/city/test_crash.py); nothing here knows about kills.
"""

from __future__ import annotations

import itertools
import random
import re
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from sqlalchemy import Connection, create_engine
from sqlalchemy.pool import NullPool

from city.launcher import CLEARINGHOUSE, CityLayout, NodeLayout
from clearinghouse.config import load_config as load_ch_config
from node.cli.accounts import local_token
from node.cli.client import node_channel
from node.config import load_config as load_node_config
from node.domain.access import PUBLIC, Role
from node.domain.identity import id_card_with_check_digit
from runtime import devclock
from runtime.console import CliError
from runtime.errors import Refusal
from runtime.rpcerrors import error_reason
from runtime.tls import channel
from tests.node.api.support import named_actor
from timebank.v1 import clearing_pb2, clearing_pb2_grpc, node_pb2, node_pb2_grpc

Resp = TypeVar("Resp")

#: A call that may go through once the process is back: retried with the same request.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
CALL_TIMEOUT = 5.0
RETRY_FOR = 90.0  # a process restarts in a few seconds; this is far beyond
FINAL = frozenset({"completed", "voided", "rejected", "expired"})
#: Reconnect quickly after a restart (gRPC's default backoff grows to two minutes).
CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 100),
                   ("grpc.min_reconnect_backoff_ms", 100),
                   ("grpc.max_reconnect_backoff_ms", 500)]


def key() -> str:
    return str(uuid.uuid4())


class Refused(Exception):
    """A call failed with a status that retrying does not change."""

    def __init__(self, method: str, e: grpc.RpcError) -> None:
        self.code = e.code()
        self.reason = error_reason(e)
        super().__init__(f"{method}: {self.code.name} {self.reason}: {e.details()}")


class ActingTokens:
    """The token each call to one node of a laid-out city sends (ADR 0016): the session
    of whoever its request names as acting (``named_actor``), minted once on the node's
    own database as `timebank node account` does, else the node's operator's."""

    def __init__(self, node: NodeLayout) -> None:
        self.node = node
        self._tokens: dict[tuple[Role, int], str] = {}
        self._lock = threading.Lock()

    def __call__(self, method: str, request: Any) -> str:
        name = method.rpartition("/")[2]
        if name in PUBLIC:
            return ""
        if not isinstance(request, Message):
            return self.node.operator_token
        role, bound = named_actor(name, request, lambda _order: 0)
        if role is Role.OPERATOR:
            return self.node.operator_token
        with self._lock:
            if (role, bound) not in self._tokens:
                try:
                    self._tokens[(role, bound)] = local_token(
                        self.node.config_file, f"{role.value}-{bound}", role,
                        staff_id=bound if role is Role.STAFF else 0,
                        person_id=bound if role is Role.MEMBER else 0)
                except (CliError, Refusal):  # no such record: the operator sends it
                    return self.node.operator_token
            return self._tokens[(role, bound)]


def acting_channel(node: NodeLayout, options: Any = None) -> grpc.Channel:
    """A channel to ``node`` whose calls are made by whoever they name (``ActingTokens``)."""
    return node_channel(node.address, node.client_tls, ActingTokens(node), options)


def cli_token(city: CityLayout, args: tuple[str, ...]) -> str:
    """The token a `timebank node …` command sends to a node of ``city`` (TIMEBANK_TOKEN):
    the staff member its ``--staff`` names, else the node's operator ("" for a command
    that names no node of the city)."""
    given = dict(itertools.pairwise(args))
    node = next((n for n in city.nodes if n.address == given.get("--node")), None)
    if node is None:
        return ""
    staff = given.get("--staff", "")
    if staff.isdigit():
        request = node_pb2.UpdatePersonRequest(staff_id=int(staff))
        return ActingTokens(node)("/timebank.v1.NodeService/UpdatePerson", request)
    return node.operator_token


class CityClient:
    """One channel per process of the city; ``call`` retries what a crash interrupts."""

    def __init__(self, city: CityLayout) -> None:
        self.city = city
        # the clearinghouse as the nodes reach it: every replica, as one target
        self._channels = {CLEARINGHOUSE: channel(city.clearinghouse_target, city.client_tls(),
                                                 options=CHANNEL_OPTIONS)}
        self._channels |= {n.node_id: acting_channel(n, CHANNEL_OPTIONS) for n in city.nodes}
        self.retries = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        for made in self._channels.values():
            made.close()

    def node(self, node_id: str) -> node_pb2_grpc.NodeServiceStub:
        return node_pb2_grpc.NodeServiceStub(self._channels[node_id])

    def clearinghouse(self) -> clearing_pb2_grpc.ClearinghouseServiceStub:
        return clearing_pb2_grpc.ClearinghouseServiceStub(self._channels[CLEARINGHOUSE])

    def call(self, node_id: str, method: str, request: Any, *,
             retry_for: float = RETRY_FOR) -> Any:
        """Call ``method`` on node ``node_id``; on UNAVAILABLE or a deadline, call again
        with the very same request (and so the same idempotency key) until it answers."""
        stub = self.node(node_id)
        return self._retry(f"{node_id}.{method}", getattr(stub, method), request, retry_for)

    def positions(self) -> clearing_pb2.GetPositionsResponse:
        return self._retry("GetPositions", self.clearinghouse().GetPositions,
                           clearing_pb2.GetPositionsRequest(), RETRY_FOR)

    def _retry(self, what: str, method: Callable[..., Resp], request: Any,
               retry_for: float) -> Resp:
        deadline = time.monotonic() + retry_for
        while True:
            try:
                return method(request, timeout=CALL_TIMEOUT)
            except grpc.RpcError as e:
                if e.code() not in RETRYABLE:
                    raise Refused(what, e) from None
                if time.monotonic() > deadline:
                    raise AssertionError(f"{what} still {e.code().name} after "
                                         f"{retry_for:g} s: {e.details()}") from None
                with self._lock:
                    self.retries += 1
                time.sleep(0.1 + random.random() * 0.2)


# ------------------------------------------------------------------ the city's clock


def city_now(city: CityLayout) -> datetime:
    """What every process's clock says now: real time plus the clock file's offset."""
    return datetime.now(UTC) + devclock.read_offset(city.clock_file)


def at(moment: datetime) -> Any:
    from google.protobuf.timestamp_pb2 import Timestamp

    t = Timestamp()
    t.FromDatetime(moment)
    return t


# ------------------------------------------------------------------ people


_serial = iter(range(1, 10**6))


def id_number(district: str, birth_year: int) -> str:
    return id_card_with_check_digit(f"{district}{birth_year:04d}0101{next(_serial) % 1000:03d}")


@dataclass
class Elder:
    """A priority elder whose granted hours are kept at ``home``."""

    home: str
    id_number: str
    ids: dict[str, int] = field(default_factory=dict)  # node id → person id there
    moved: bool = False  # a move away from home completed
    grant: int = 0


@dataclass
class Desk:
    """A district's service point, its staff member and its volunteers."""

    node_id: str
    staff_id: int
    volunteers: list[int]


def setup_desk(client: CityClient, node_id: str, volunteers: int) -> Desk:
    point = client.call(node_id, "RegisterServicePoint", node_pb2.RegisterServicePointRequest(
        idempotency_key=key(), code=f"SP-{node_id}", name=f"{node_id} 社区服务点",
        street="街道")).service_point
    staff = client.call(node_id, "RegisterStaff", node_pb2.RegisterStaffRequest(
        idempotency_key=key(), name="陈静", service_point_id=point.id)).staff
    ids = []
    for i in range(volunteers):
        person = client.call(node_id, "EnrolPerson", node_pb2.EnrolPersonRequest(
            idempotency_key=key(), kind=node_pb2.PERSON_KIND_INDIVIDUAL, name=f"志愿者{i}",
            id_number=id_number(node_id, 1985 + i), phone="13800000000")).person
        ids.append(person.id)
    return Desk(node_id, staff.id, ids)


def enrol_elder(client: CityClient, desks: dict[str, Desk], home: str,
                visiting: list[str], grant: int) -> Elder:
    """Enrol a priority elder at home with a city grant, and as a visitor elsewhere."""
    elder = Elder(home, id_number(home, 1940), grant=grant)
    person = client.call(home, "EnrolPerson", node_pb2.EnrolPersonRequest(
        idempotency_key=key(), kind=node_pb2.PERSON_KIND_INDIVIDUAL, name="老人",
        id_number=elder.id_number, phone="13900000000", priority=True)).person
    elder.ids[home] = person.id
    client.call(home, "Grant", node_pb2.GrantRequest(
        idempotency_key=key(), person_id=person.id, minutes=grant,
        staff_id=desks[home].staff_id, memo="市级时间银行基金"))
    for node_id in visiting:
        visitor = client.call(node_id, "EnrolPerson", node_pb2.EnrolPersonRequest(
            idempotency_key=key(), kind=node_pb2.PERSON_KIND_INDIVIDUAL, name="老人",
            id_number=elder.id_number, phone="13900000000", priority=True,
            home_node_id=home)).person
        elder.ids[node_id] = visitor.id
    return elder


# ------------------------------------------------------------------ claims


@dataclass
class Outcome:
    """What became of one redemption, as its driver saw it."""

    serving: str
    elder: Elder
    order_id: int = 0
    claim_id: str = ""
    claim_state: str = ""  # at the serving node, when the driver stopped waiting
    verified: bool = False
    refused: str = ""
    cancel: str = ""


def wait_claim(client: CityClient, node_id: str, claim_id: str, wanted: set[str],
               timeout: float) -> str:
    """Poll the node's view of a claim until its state is in ``wanted`` (or final)."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = str(client.call(node_id, "GetClaim",
                                node_pb2.GetClaimRequest(claim_id=claim_id)).claim.state)
        if state in wanted or state in FINAL:
            return state
        time.sleep(0.05)
    return state


def redeem(client: CityClient, desk: Desk, elder: Elder, volunteer: int,
           minutes: int = 60, cancel: str = "", accept_timeout: float = 60.0) -> Outcome:
    """An elder visiting ``desk``'s district is served with the hours kept at home:
    request (paid OWN), accept (proposes the claim), wait until home holds the hours,
    check in, out and verify. Recording is left to the wave.

    ``cancel``: "early" cancels the order right after acceptance (the home district may
    not have answered yet), "late" once the hours are held; the claim is then voided."""
    s, out = desk.node_id, Outcome(desk.node_id, elder, cancel=cancel)
    recipient = elder.ids[s]
    order = client.call(s, "RequestOrder", node_pb2.RequestOrderRequest(
        idempotency_key=key(), recipient_id=recipient, category="meals",
        planned_minutes=minutes, payment_source=node_pb2.PAYMENT_SOURCE_OWN,
        requested_by=node_pb2.Actor(staff_id=desk.staff_id))).order
    out.order_id = order.id
    order = client.call(s, "AcceptOrder", node_pb2.AcceptOrderRequest(
        idempotency_key=key(), order_id=order.id, volunteer_id=volunteer)).order
    out.claim_id = order.claim_id
    if cancel == "early":
        _cancel(client, desk, order.id)
        return out
    out.claim_state = wait_claim(client, s, order.claim_id, {"accepted"}, accept_timeout)
    if out.claim_state != "accepted":
        return out
    if cancel == "late":
        _cancel(client, desk, order.id)
        return out
    # the visit is entered when it is over: an hour passes in the city (never a check-in
    # before the order was requested)
    devclock.advance(client.city.clock_file, timedelta(minutes=61))
    now = city_now(client.city)
    try:
        client.call(s, "CheckIn", node_pb2.CheckInRequest(
            idempotency_key=key(), order_id=order.id, at=at(now - timedelta(minutes=61))))
        client.call(s, "CheckOut", node_pb2.CheckOutRequest(
            idempotency_key=key(), order_id=order.id, at=at(now)))
        client.call(s, "VerifyOrder", node_pb2.VerifyOrderRequest(
            idempotency_key=key(), order_id=order.id,
            verifier=node_pb2.Actor(person_id=recipient), rating=5, comment="好"))
    except Refused as e:  # e.g. the claim expired in between: the order was cancelled
        out.refused = str(e)
        return out
    out.verified = True
    return out


def _cancel(client: CityClient, desk: Desk, order_id: int) -> None:
    """Cancel the order, unless the node cancelled it first (the home district refused
    the claim, or it expired, between acceptance and this call): either way it ends
    cancelled, which is what the workload checks."""
    try:
        client.call(desk.node_id, "CancelOrder", node_pb2.CancelOrderRequest(
            idempotency_key=key(), order_id=order_id,
            cancelled_by=node_pb2.Actor(staff_id=desk.staff_id), reason="计划有变"))
    except Refused as e:
        if f"order {order_id} is cancelled" not in str(e):
            raise


def record_due(client: CityClient, node_id: str) -> int:
    answer = client.call(node_id, "RecordDueOrders", node_pb2.RecordDueOrdersRequest(
        idempotency_key=key(), limit=10000))
    return len(answer.recorded)


def list_claims(client: CityClient, node_id: str) -> list[node_pb2.Claim]:
    found: list[node_pb2.Claim] = []
    after = ""
    while True:
        page = client.call(node_id, "ListClaims", node_pb2.ListClaimsRequest(
            after_claim_id=after, limit=1000)).claims
        found += page
        if len(page) < 1000:
            return found
        after = page[-1].claim_id


def quiet(client: CityClient, node_ids: list[str]) -> bool:
    """Every node has sent everything and has no claim open."""
    for node_id in node_ids:
        c = client.call(node_id, "GetClearing", node_pb2.GetClearingRequest())
        if c.unsent_messages or c.open_claims:
            return False
    return True


def wait_quiet(client: CityClient, node_ids: list[str], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if quiet(client, node_ids):
            return True
        time.sleep(0.2)
    return False


def sent_everything(client: CityClient, node_ids: list[str], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(client.call(n, "GetClearing", node_pb2.GetClearingRequest()).unsent_messages
               == 0 for n in node_ids):
            return True
        time.sleep(0.2)
    return False


# ------------------------------------------------------------------ reading the files


@contextmanager
def read_only(path: Path) -> Iterator[sqlite3.Connection]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        yield conn


def node_database(city: CityLayout, node_id: str) -> Path:
    url = load_node_config(city.node(node_id).config_file).effective_database_url
    return Path(url.removeprefix("sqlite:///"))


def clearinghouse_database(city: CityLayout) -> Path:
    url = load_ch_config(city.clearinghouse_config).effective_database_url
    return Path(url.removeprefix("sqlite:///"))


class _Rows:
    """A PostgreSQL connection read as ``sqlite3``'s is: ``execute(sql)`` gives tuples."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def execute(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self._conn.exec_driver_sql(sql).all()]


@contextmanager
def read_clearinghouse(city: CityLayout) -> Iterator[Any]:
    """The clearinghouse's database, its SQLite file or its PostgreSQL database, to read:
    ``execute(sql)`` gives rows as tuples."""
    url = load_ch_config(city.clearinghouse_config).effective_database_url
    if url.startswith("sqlite"):
        with read_only(Path(url.removeprefix("sqlite:///"))) as conn:
            yield conn
        return
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            yield _Rows(conn)
    finally:
        engine.dispose()


# ------------------------------------------------------------------ what must hold at the end

CLAIM_MEMO = re.compile(r"^claim ([0-9a-f-]{36}):")


def check_city(client: CityClient, city: CityLayout, nodes: list[str]) -> None:
    """Every claim final and the same at its two parties and the clearinghouse; every
    ledger checked and conserved, nothing held, no claim posted twice, no overcharge."""
    # ---- every claim final, and the same on creditor, debtor and clearinghouse
    with read_clearinghouse(city) as conn:
        ch = {row[0]: row[1:] for row in conn.execute(
            "SELECT claim_id, kind, creditor, debtor, state, COALESCE(posted_minutes, 0), "
            "minutes FROM claims")}
    views = {n: {c.claim_id: c for c in list_claims(client, n)} for n in nodes}
    for claim_id, (kind, creditor, debtor, state, posted, minutes) in ch.items():
        assert state in FINAL, (claim_id, state)
        for node_id, role in ((creditor, node_pb2.CLAIM_ROLE_CREDITOR),
                              (debtor, node_pb2.CLAIM_ROLE_DEBTOR)):
            mine = views[node_id].get(claim_id)
            assert mine is not None, (claim_id, node_id, "missing")
            assert (mine.kind, mine.role, mine.state, mine.minutes) == (
                kind, role, state, minutes), (claim_id, node_id, mine, state)
            assert mine.posted_minutes == (posted if state == "completed" else 0), (
                claim_id, node_id)
        for other in set(nodes) - {creditor, debtor}:
            assert claim_id not in views[other]
    for node_id, claims in views.items():
        for claim_id, c in claims.items():
            assert c.state in FINAL, (node_id, claim_id, c.state)
            if claim_id not in ch:  # refused by the clearinghouse: nothing recorded there
                assert c.state == "rejected", (node_id, claim_id, c.state)
    # ---- ledgers: checked, conserved, nothing held, no claim posted twice, no overcharge
    positions = {p.node_id: p.net_minutes for p in client.positions().nodes}
    assert set(positions) == set(nodes) and sum(positions.values()) == 0
    clearing_total = 0
    for node_id in nodes:
        report = client.call(node_id, "CheckLedger", node_pb2.CheckLedgerRequest())
        assert report.ok, (node_id, list(report.problems))
        # check_ledger: every account's balance sums to zero over the node, and the
        # issuance and city-grant accounts are the negatives of issued and granted
        assert (report.issued_minutes + report.granted_minutes
                == report.held_by_people_minutes + report.donation_pool_minutes
                + report.consumed_minutes + report.clearing_minutes), node_id
        clearing_total += report.clearing_minutes
        clearing = client.call(node_id, "GetClearing", node_pb2.GetClearingRequest())
        assert clearing.net_minutes == positions[node_id] == -report.clearing_minutes
        assert (clearing.open_claims, clearing.unsent_messages) == (0, 0)
        with read_only(node_database(city, node_id)) as conn:
            assert conn.execute("SELECT COUNT(*) FROM holds WHERE state = 'active'"
                                ).fetchone()[0] == 0, node_id
            assert conn.execute("SELECT COALESCE(SUM(held), 0) FROM accounts").fetchone()[0] == 0
            states = Counter(r[0] for r in conn.execute("SELECT state FROM orders"))
            assert set(states) <= {"recorded", "cancelled"}, (node_id, states)
            assert conn.execute("SELECT COUNT(*) FROM orders WHERE charged_minutes > "
                                "planned_minutes").fetchone()[0] == 0, node_id
            entries: Counter[str] = Counter()
            for (memo,) in conn.execute("SELECT memo FROM entries WHERE kind = 'claim'"):
                found = CLAIM_MEMO.match(memo)
                assert found, memo
                entries[found.group(1)] += 1
            paid = dict(conn.execute(
                "SELECT o.id, o.charged_minutes FROM orders o JOIN claims c "
                "ON c.order_id = o.id AND c.role = 'creditor'"))
            order_of = dict(conn.execute(
                "SELECT claim_id, order_id FROM claims WHERE order_id IS NOT NULL"))
        assert max(entries.values(), default=0) <= 1, (node_id, entries.most_common(3))
        for claim_id, c in views[node_id].items():
            assert entries[claim_id] == (c.state == "completed"), (node_id, claim_id)
            if claim_id in order_of:  # the serving node charged the order what was posted
                assert paid[order_of[claim_id]] == c.posted_minutes, (node_id, claim_id)
    assert clearing_total == 0


def check_people(client: CityClient, city: CityLayout, elders: list[Elder],
                 movers: list[Elder]) -> None:
    """Each elder's home balance is the grant less what their completed claims posted;
    a mover's hours are in one district only, all of them."""
    with read_clearinghouse(city) as conn:
        posted: Counter[str] = Counter()
        for ref, minutes in conn.execute("SELECT payer_ref, posted_minutes FROM claims "
                                         "WHERE state = 'completed' AND kind = 'redemption'"):
            posted[ref] += minutes
    for e in elders:
        home = e.ids[e.home]
        ref = client.call(e.home, "GetPerson", node_pb2.GetPersonRequest(person_id=home)
                          ).person.person_ref
        balance = client.call(e.home, "GetBalance", node_pb2.GetBalanceRequest(person_id=home))
        assert (balance.total_minutes, balance.held_minutes) == (e.grant - posted[ref], 0), ref
    for m in movers:
        balances = [client.call(n, "GetBalance", node_pb2.GetBalanceRequest(person_id=i))
                    for n, i in m.ids.items()]
        assert sorted(b.total_minutes for b in balances) == [0, 600], m
        assert all(b.held_minutes == 0 for b in balances)

