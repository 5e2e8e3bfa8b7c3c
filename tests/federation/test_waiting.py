"""A claim the clearinghouse refuses for now (LIMIT_REACHED) says so: its reason, how often
it was tried and when it is tried next, through the serving node's real gRPC server
(GetClaim, ListClaims) and the operator's `node claim` and `node claims` (real
subprocesses); and it says nothing more once it is taken."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from clearinghouse.usecases import claims as ch_claims
from node.api.server import start_server
from node.cli.client import authorized
from node.domain.access import Role
from node.domain.claims import ClaimState
from node.usecases import claims, logins
from runtime.server import RunningServer
from tests.federation.conftest import LIMIT, City
from tests.federation.support import GL, JN, family, node_claim, order_for_mother
from timebank.v1 import node_pb2, node_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def gulou(city: City) -> Iterator[RunningServer]:
    """鼓楼区's NodeService on 127.0.0.1, with its clearing link."""
    running = start_server(city[GL].app, link=city[GL].link)
    try:
        yield running
    finally:
        running.stop(1)


#: The session the CLI sends (an auditor of 鼓楼区: claims are the district's books).
_TOKEN: dict[str, str] = {}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMEBANK_")}
    return subprocess.run([sys.executable, "-m", "city", "node", *args], capture_output=True,
                          text=True, encoding="utf-8", timeout=60, cwd=ROOT,
                          env={**env, "COLUMNS": "220",
                               "TIMEBANK_INSECURE": "1",  # the in-process node: plaintext
                               "TIMEBANK_TOKEN": _TOKEN.get("token", "")})


def _ok(*args: str) -> str:
    result = _cli(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _json(*args: str) -> Any:
    return json.loads(_ok(*args, "--json"))


def test_a_claim_over_the_limit_says_why_it_waits_and_when_it_is_tried_again(
        city: City, gulou: RunningServer) -> None:
    f = family(city, earned=120)
    city.ch.execute(ch_claims.set_net_debit_limit, JN, 30)  # 江宁区 may owe 30 min
    order = order_for_mother(city, f, minutes=60)
    claim_id = order.record.claim_id or ""

    def waiting() -> bool:
        return city[GL].app.query(claims.get_claim, claim_id).waiting is not None

    city.wait_for(waiting)
    view = city[GL].app.query(claims.get_claim, claim_id)
    assert view.state is ClaimState.PROPOSED and view.reason == ""  # nothing final
    assert view.waiting is not None
    assert (view.waiting.reason, view.waiting.attempts) == ("LIMIT_REACHED", 1)
    assert view.waiting.next_attempt_at > city.clock.now()
    assert "limit" in view.waiting.detail

    address = f"127.0.0.1:{gulou.port}"
    _TOKEN["token"] = city[GL].app.execute(logins.local_session, "auditor", Role.AUDITOR, 366)
    with grpc.insecure_channel(address) as channel:
        stub = node_pb2_grpc.NodeServiceStub(authorized(channel, _TOKEN["token"]))
        got = stub.GetClaim(node_pb2.GetClaimRequest(claim_id=claim_id), timeout=10).claim
        listed = stub.ListClaims(node_pb2.ListClaimsRequest(limit=10), timeout=10).claims
    assert (got.state, got.waiting_reason, got.attempts) == ("proposed", "LIMIT_REACHED", 1)
    assert got.next_attempt_at.ToDatetime(tzinfo=UTC) == view.waiting.next_attempt_at
    assert [c.waiting_reason for c in listed if c.claim_id == claim_id] == ["LIMIT_REACHED"]

    shown = " ".join(_ok("claim", claim_id, "--node", address).split())
    assert "waiting LIMIT_REACHED (temporary: not taken yet, 1 try; next try" in shown
    table = _ok("claims", "--node", address)
    assert "waiting: LIMIT_REACHED (T), next try" in " ".join(table.split())
    assert _json("claim", claim_id, "--node", address)["waiting_reason"] == "LIMIT_REACHED"
    # Chinese first, then English; and the clearinghouse's own words reach the order
    assert "付款人户籍区的结算额度已满" in shown and f"district {JN} has reached" in shown
    told = " ".join(_ok("order", "show", str(order.record.id), "--node", address).split())
    assert "付款等待中 payment waiting: 付款人户籍区的结算额度已满" in told
    assert "[LIMIT_REACHED]" in told and "limit" in view.waiting.detail
    assert view.waiting.detail.split(":")[-1].strip()[:20] in told
    assert "Asia/Shanghai" in told

    # tried again past the backoff, still over the limit: counted
    city.clock.advance(timedelta(minutes=5))
    city.wait_for(lambda: getattr(city[GL].app.query(claims.get_claim, claim_id).waiting,
                                  "attempts", 0) >= 2)

    # the bureau raises the limit: taken, accepted, and nothing waits any more
    city.ch.execute(ch_claims.set_net_debit_limit, JN, LIMIT)
    city.clock.advance(timedelta(minutes=5))
    city.settle()
    assert node_claim(city, GL, claim_id) is ClaimState.ACCEPTED
    assert city[GL].app.query(claims.get_claim, claim_id).waiting is None
    taken = _json("claim", claim_id, "--node", address)
    assert (taken["state"], taken["waiting_reason"], taken["next_attempt_at"]) == (
        "accepted", "", None)
    assert not [n for n in _json("order", "show", str(order.record.id), "--node", address
                                 )["notices"] if "payment waiting" in n]
