"""A city policy issued for a future time switches on every node at that time: real
processes (the launcher's city), the bureau's real `policy issue` command, and the
project's dev clock moving every process past the effective time. No process restarts;
a claim made after the switch goes through, because the nodes and the clearinghouse
agree on the policy in force."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from city.launcher import CLEARINGHOUSE, CityProcesses, layout
from city.pki.store import Authority
from runtime import devclock
from tests.city.workload import (
    CityClient,
    city_now,
    enrol_elder,
    redeem,
    sent_everything,
    setup_desk,
)
from timebank.policy import DEFAULT_POLICY_TOML, policy_sha256
from timebank.v1 import node_pb2

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[2]
JN, GL, QX = "320115", "320106", "320113"
THREE_DAYS = DEFAULT_POLICY_TOML.replace("publicity_days = 7", "publicity_days = 3")
WAIT = 30.0


def timebank(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMEBANK_")}
    env |= {devclock.ALLOW_ENV: "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "city", *args], capture_output=True,
                          text=True, encoding="utf-8", timeout=60, cwd=ROOT, env=env)


def policies(client: CityClient) -> dict[str, node_pb2.GetPolicyResponse]:
    return {n: client.call(n, "GetPolicy", node_pb2.GetPolicyRequest())
            for n in (JN, GL, QX)}


def wait_until(what: str, condition: Any) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {WAIT:g} s")
        time.sleep(0.1)


def test_a_policy_issued_for_later_switches_on_every_node_at_that_time(
        tmp_path: Path) -> None:
    city = layout(tmp_path / "city")
    policy_file = tmp_path / "three-days.toml"
    policy_file.write_text(THREE_DAYS, encoding="utf-8")
    first, second = policy_sha256(DEFAULT_POLICY_TOML).hex(), policy_sha256(THREE_DAYS).hex()
    with CityProcesses(city, dev_clock=True) as procs:
        procs.start_all()
        client = CityClient(city)
        try:
            wait_until("every node runs the layout's city policy", lambda: all(
                p.city_serial == 1 and p.digest == first for p in policies(client).values()))
            pids = {name: procs.pid(name) for name in city.names}

            switch = city_now(city) + timedelta(days=2)
            issued = timebank("clearinghouse", "policy", "issue",
                              "--config", str(city.clearinghouse_config),
                              "--file", str(policy_file), "--effective-at", switch.isoformat(),
                              "--dev-clock", str(city.clock_file))
            assert issued.returncode == 0, issued.stdout + issued.stderr
            assert "scheduled" in issued.stdout and second in issued.stdout

            wait_until("every node fetched the scheduled policy", lambda: all(
                p.next_serial == 2 and p.next_digest == second
                for p in policies(client).values()))
            assert {(p.city_serial, p.publicity_days) for p in policies(client).values()} \
                == {(1, 7)}

            ahead = switch - city_now(city)
            devclock.advance(city.clock_file, timedelta(seconds=int(ahead.total_seconds()) + 2))
            wait_until("every node runs the new policy", lambda: all(
                p.city_serial == 2 and p.digest == second and p.publicity_days == 3
                and not p.next_serial for p in policies(client).values()))
            assert {name: procs.pid(name) for name in city.names} == pids  # no restart
            assert city.pki_dir is not None
            told = timebank("node", "--ca", str(Authority(city.pki_dir).ca_cert), "--token",
                            city.node(GL).operator_token, "policy",
                            "--node", city.address(GL))
            assert told.returncode == 0, told.stderr
            assert "the city: serial 2" in told.stdout and "3 days" in told.stdout

            shown = timebank("clearinghouse", "policy", "show", "--json",
                             "--config", str(city.clearinghouse_config),
                             "--dev-clock", str(city.clock_file))
            assert shown.returncode == 0, shown.stderr
            statuses = {p["serial"]: p["status"] for p in json.loads(shown.stdout)["policies"]}
            assert statuses == {1: "replaced", 2: "in force"}

            # the clearinghouse agrees with the nodes: a redemption made now goes through,
            # and its order is public for the new period
            desks = {n: setup_desk(client, n, 1) for n in (JN, GL)}
            elder = enrol_elder(client, desks, JN, [GL], grant=120)
            assert sent_everything(client, [JN], WAIT)
            out = redeem(client, desks[GL], elder, desks[GL].volunteers[0])
            assert out.claim_state == "accepted" and out.verified, out
            order = client.call(GL, "GetOrder", node_pb2.GetOrderRequest(
                order_id=out.order_id)).order
            public_for = order.public_until.ToDatetime().replace(
                tzinfo=city_now(city).tzinfo) - city_now(city)
            assert timedelta(days=3) - timedelta(minutes=5) < public_for <= timedelta(days=3)
            assert procs.is_running(CLEARINGHOUSE)
        finally:
            client.close()
