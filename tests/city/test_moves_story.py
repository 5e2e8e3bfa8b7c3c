"""Issue 14's story end to end: a move reaches every district.

A real city: the clearinghouse and three district nodes, each its own `serve` process
with its own SQLite file (city.launcher), one simulated clock file. 李秀英 earns hours in
江宁区; her mother lives in 鼓楼区, which enrolled 李秀英 as a visitor whose hours are kept
in 江宁区. 李秀英 moves to 栖霞区, a priority elder (重点老人) by then. 鼓楼区 still names
江宁区 as her home when it serves her mother, paid from her hours: the clearinghouse
refuses that claim (NOT_HOME_DISTRICT), 鼓楼区 asks the city directory, asks 栖霞区 with a
fresh claim, and the meals are paid from her hours in 栖霞区. Along the way the operator
commands run as real subprocesses: `person update`, an enrolment the directory refuses,
`order` and `claim` as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from city.launcher import CLEARINGHOUSE, CityLayout, CityProcesses, layout
from node.cli.client import NodeClient
from runtime import devclock
from tests.city.workload import ActingTokens, cli_token
from tests.helpers import id_card
from timebank.v1 import clearing_pb2, clearing_pb2_grpc, node_pb2

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
JN, GL, QX = "320115", "320106", "320113"  # 江宁区, 鼓楼区, 栖霞区
WAIT_SECONDS = 30.0


def key() -> str:
    return str(uuid.uuid4())


#: How the commands reach the city (its CA and observer certificate), set by ``town``.
CITY_ENV: dict[str, str] = {}
#: The city the commands talk to, once laid out.
CITY: dict[str, CityLayout] = {}


def timebank(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMEBANK_")}
    token = cli_token(CITY["city"], args) if CITY else ""
    return subprocess.run([sys.executable, "-m", "city", *args], capture_output=True,
                          text=True, encoding="utf-8", timeout=60, cwd=ROOT,
                          env={**env, **CITY_ENV, "COLUMNS": "200", "TIMEBANK_TOKEN": token})


def ok_json(*args: str) -> Any:
    result = timebank(*args, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


@dataclass
class Town:
    city: CityLayout
    nodes: dict[str, NodeClient]
    staff: dict[str, int]

    def address(self, node_id: str) -> str:
        return self.city.node(node_id).address

    def call(self, node_id: str, method: str, request: Any) -> Any:
        client = self.nodes[node_id]
        return client.call(getattr(client.stub, method), request)

    def advance(self, delta: timedelta) -> None:
        devclock.advance(self.city.clock_file, delta)

    def enrol(self, node_id: str, name: str, number: str, home: str = "",
              priority: bool = False) -> node_pb2.Person:
        return self.call(node_id, "EnrolPerson", node_pb2.EnrolPersonRequest(
            idempotency_key=key(), kind=node_pb2.PERSON_KIND_INDIVIDUAL, name=name,
            id_number=number, phone="13912340000", priority=priority, home_node_id=home)).person

    def link(self, node_id: str, person: int, other: int) -> None:
        self.call(node_id, "LinkPeople", node_pb2.LinkPeopleRequest(
            idempotency_key=key(), person_id=person, other_id=other,
            kind=node_pb2.LINK_KIND_PARENT, staff_id=self.staff[node_id]))

    def balance(self, node_id: str, person_id: int) -> node_pb2.GetBalanceResponse:
        return self.call(node_id, "GetBalance", node_pb2.GetBalanceRequest(person_id=person_id))

    def order(self, node_id: str, order_id: int) -> node_pb2.Order:
        return self.call(node_id, "GetOrder", node_pb2.GetOrderRequest(order_id=order_id)).order

    def claim(self, node_id: str, claim_id: str) -> node_pb2.Claim | None:
        try:
            return self.nodes[node_id].stub.GetClaim(
                node_pb2.GetClaimRequest(claim_id=claim_id), timeout=10).claim
        except grpc.RpcError as e:
            if e.code() is grpc.StatusCode.NOT_FOUND:
                return None
            raise

    def serve(self, node_id: str, recipient: int, volunteer: int, minutes: int,
              source: node_pb2.PaymentSource.ValueType, payer: int = 0) -> node_pb2.Order:
        """Request and accept an order (the payment is asked for at acceptance)."""
        order = self.call(node_id, "RequestOrder", node_pb2.RequestOrderRequest(
            idempotency_key=key(), recipient_id=recipient, category="meals",
            planned_minutes=minutes, payment_source=source, payer_id=payer,
            requested_by=node_pb2.Actor(staff_id=self.staff[node_id]))).order
        return self.call(node_id, "AcceptOrder", node_pb2.AcceptOrderRequest(
            idempotency_key=key(), order_id=order.id, volunteer_id=volunteer)).order

    def carry_out(self, node_id: str, order_id: int, minutes: int, verifier: int) -> None:
        """Check in, serve ``minutes``, check out, verify, wait out the publicity period
        and record."""
        self.call(node_id, "CheckIn", node_pb2.CheckInRequest(idempotency_key=key(),
                                                              order_id=order_id))
        self.advance(timedelta(minutes=minutes))
        self.call(node_id, "CheckOut", node_pb2.CheckOutRequest(idempotency_key=key(),
                                                                order_id=order_id))
        self.call(node_id, "VerifyOrder", node_pb2.VerifyOrderRequest(
            idempotency_key=key(), order_id=order_id, rating=5,
            verifier=node_pb2.Actor(person_id=verifier)))
        self.advance(timedelta(days=7, minutes=10))
        # the node's own recording loop may get there first: either way it is recorded
        self.call(node_id, "RecordDueOrders", node_pb2.RecordDueOrdersRequest(
            idempotency_key=key()))
        assert self.order(node_id, order_id).state == node_pb2.ORDER_STATE_RECORDED

    def settled(self) -> bool:
        views = [self.call(n, "GetClearing", node_pb2.GetClearingRequest()) for n in self.nodes]
        return all(v.unsent_messages == 0 and v.open_claims == 0
                   and v.orders_awaiting_home == 0 for v in views)


def wait_for(what: str, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting: {what}")
        time.sleep(0.1)


@pytest.fixture
def town(tmp_path: Path) -> Iterator[Town]:
    city = layout(tmp_path / "city")
    CITY_ENV.update(city.client_env())
    with CityProcesses(city, dev_clock=True) as processes:
        processes.start_all()
        CITY["city"] = city
        nodes = {n.node_id: NodeClient(n.address, city.client_tls(), timeout=15.0,
                                       token=ActingTokens(n))
                 for n in city.nodes}
        try:
            staff = {}
            for node_id, client in nodes.items():
                point = client.call(client.stub.RegisterServicePoint,
                                    node_pb2.RegisterServicePointRequest(
                                        idempotency_key=key(), code=f"SP-{node_id}",
                                        name=f"{node_id} 社区服务点")).service_point
                staff[node_id] = client.call(client.stub.RegisterStaff,
                                             node_pb2.RegisterStaffRequest(
                                                 idempotency_key=key(), name="陈静",
                                                 service_point_id=point.id)).staff.id
            yield Town(city, nodes, staff)
        finally:
            for client in nodes.values():
                client.close()


def test_a_relative_is_served_from_hours_that_moved_to_a_third_district(town: Town) -> None:
    daughter_no, mother_no = id_card(1963), id_card(1939, GL)

    # 江宁区: 李秀英 earns 120 min serving a priority elder there
    daughter = town.enrol(JN, "李秀英", daughter_no)
    elder = town.enrol(JN, "王建国", id_card(1938), priority=True)
    town.call(JN, "Grant", node_pb2.GrantRequest(
        idempotency_key=key(), person_id=elder.id, minutes=600, staff_id=town.staff[JN],
        memo="市级时间银行基金"))
    earning = town.serve(JN, elder.id, daughter.id, 120, node_pb2.PAYMENT_SOURCE_OWN)
    town.carry_out(JN, earning.id, 120, elder.id)
    assert town.balance(JN, daughter.id).total_minutes == 120

    # 鼓楼区: her mother at home; 李秀英 a visitor whose hours (it believes) 江宁区 keeps
    mother = town.enrol(GL, "张桂兰", mother_no)
    helper = town.enrol(GL, "刘洋", id_card(1991, GL))
    daughter_gl = town.enrol(GL, "李秀英", daughter_no, home=JN)
    wait_for("every enrolment reached the directory", town.settled)

    # 栖霞区 cannot make her its own while the directory homes her in 江宁区
    refused = timebank("node", "enrol", "--name", "李秀英", "--id-number", daughter_no,
                       "--node", town.address(QX))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    line = " ".join(refused.stderr.split())
    assert line.startswith("error: FAILED_PRECONDITION:"), line
    assert f"district {JN}" in line and f"--home-node {JN}" in line
    assert line.endswith("[HOMED_ELSEWHERE]") and "Traceback" not in refused.stderr
    # ... so it enrols her as a visitor, and the mother too, with their family link:
    # family links are checked where the payer's hours are kept, and they will be here
    daughter_qx = town.enrol(QX, "李秀英", daughter_no, home=JN)
    mother_qx = town.enrol(QX, "张桂兰", mother_no, home=GL)
    town.link(QX, daughter_qx.id, mother_qx.id)

    # 江宁区's staff record that she is now a priority elder (`node person update`)
    updated = ok_json("node", "person", "update", str(daughter.id), "--staff",
                      str(town.staff[JN]), "--priority", "--reason", "独居，民政局复核",
                      "--node", town.address(JN))
    assert updated["priority"] is True
    assert updated["changes"][-1]["actor"] == f"staff:{town.staff[JN]}"

    # she moves to 栖霞区, balance and status together
    move = town.call(JN, "MovePerson", node_pb2.MovePersonRequest(
        idempotency_key=key(), person_id=daughter.id, to_node_id=QX)).claim
    wait_for("the move completed", lambda: (c := town.claim(QX, move.claim_id)) is not None
             and c.state == "completed")
    arrived = town.call(QX, "GetPerson", node_pb2.GetPersonRequest(person_id=daughter_qx.id)).person
    assert arrived.home_node_id == "" and arrived.priority  # 重点老人 in 栖霞区 too
    # her enrolment and link, by 栖霞区's operator and staff, and the move
    assert {c.actor for c in arrived.changes} == {"operator:1", f"staff:{town.staff[QX]}",
                                                  "clearinghouse"}
    assert town.balance(QX, daughter_qx.id).total_minutes == 120
    assert town.balance(JN, daughter.id).total_minutes == 0

    # at her new home she consents that her hours pay for her mother's services (a
    # consent stays with the district that granted it; ADR 0017)
    town.call(QX, "GrantConsent", node_pb2.GrantConsentRequest(
        idempotency_key=key(), payer_id=daughter_qx.id, grantee_ref=mother.person_ref,
        kind=node_pb2.CONSENT_KIND_STANDING,
        granted_by=node_pb2.Actor(person_id=daughter_qx.id)))
    # 鼓楼区 serves her mother, paid from her hours: it still names 江宁区 as her home
    meals = town.serve(GL, mother.id, helper.id, 60, node_pb2.PAYMENT_SOURCE_RELATIVE,
                       payer=daughter_gl.id)
    first = meals.claim_id
    asked = town.claim(GL, first)
    assert asked is not None and asked.counterparty_node_id == JN
    wait_for("栖霞区 holds the payment", lambda: town.order(GL, meals.id).held_minutes == 60)
    refused_claim = town.claim(GL, first)
    assert refused_claim is not None
    assert (refused_claim.state, refused_claim.reason) == ("rejected", "NOT_HOME_DISTRICT")
    held = town.order(GL, meals.id)
    assert held.state == node_pb2.ORDER_STATE_ACCEPTED and held.claim_id != first
    fresh = town.claim(GL, held.claim_id)
    assert fresh is not None and (fresh.counterparty_node_id, fresh.state) == (QX, "accepted")
    assert town.balance(QX, daughter_qx.id).held_minutes == 60
    assert town.claim(JN, first) is None  # 江宁区 never saw it: the clearinghouse refused
    # 鼓楼区's cached home for her is corrected, and says who corrected it
    shown = ok_json("node", "person", str(daughter_gl.id), "--node", town.address(GL))
    assert shown["home_node_id"] == QX
    assert shown["changes"][-1]["actor"] == "directory"
    assert f"district {QX}" in shown["changes"][-1]["detail"]

    # the meals are served and recorded; 栖霞区 pays
    town.carry_out(GL, meals.id, 45, mother.id)
    wait_for("the redemption completed", lambda: getattr(
        town.claim(GL, held.claim_id), "state", "") == "completed" and town.settled())
    order = ok_json("node", "order", "show", str(meals.id), "--node", town.address(GL))
    assert order["state"] == "recorded" and order["charged_minutes"] == 45
    assert order["held_minutes"] == 0 and order["cancel_reason"] == ""
    assert order["claim_id"] == held.claim_id
    left = town.balance(QX, daughter_qx.id)
    assert (left.total_minutes, left.held_minutes) == (75, 0)
    nets = {n.node_id: n.net_minutes for n in clearing_pb2_grpc.ClearinghouseServiceStub(
        town.city.channel(CLEARINGHOUSE)).GetPositions(
        clearing_pb2.GetPositionsRequest(), timeout=10).nodes}
    # 江宁区 sent 120 min to 栖霞区; 栖霞区 paid 45 of them to 鼓楼区
    assert nets == {JN: -120, QX: 75, GL: 45}
    for node_id in (JN, GL, QX):
        assert town.call(node_id, "CheckLedger", node_pb2.CheckLedgerRequest()).ok, node_id
        view = town.call(node_id, "GetClearing", node_pb2.GetClearingRequest())
        assert view.net_minutes == nets[node_id], node_id
