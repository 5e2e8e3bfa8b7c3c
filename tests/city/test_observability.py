"""What an operator sees of a running city (issue 17, observability), on real processes:

- one cross-district claim's id is on JSON log lines of the clearinghouse and of both
  nodes; every call's line carries a request id, every node line its node id;
- each process's /metrics answers, with the claim counted by state, the link up, the
  outbox and the log; every metric the Grafana dashboards and the alert rules in
  deploy/observability/ use is one the services export;
- a node's health service "timebank.v1.ClearinghouseLink" goes NOT_SERVING when the
  clearinghouse process is killed, and SERVING when it is back, while the node's own
  "" stays SERVING; `timebank node status` says the same.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from city.launcher import CLEARINGHOUSE, CityLayout, CityProcesses, District, layout
from node.api.server import LINK_HEALTH_SERVICE
from tests.city.workload import CityClient, enrol_elder, redeem, setup_desk
from tests.jsonlog import json_lines

pytestmark = [pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy" / "observability"
JN, GL = "320115", "320106"
TWO = (District(JN, "江宁区"), District(GL, "鼓楼区"))
_METRIC = re.compile(r"\btimebank_[a-z0-9_]+")
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
             "summary": ("_count", "_sum")}


def _eventually(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.2)


def _status(city: CityLayout, name: str, service: str) -> str:
    with city.channel(name) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


def scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as answer:
        return str(answer.read().decode("utf-8"))


def exported(text: str) -> set[str]:
    """Every series name a scrape exports or declares (a labelled counter that has not
    counted yet is declared by its HELP and TYPE lines)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + s for s in _SUFFIXES.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def used_by_dashboards_and_rules() -> set[str]:
    """Every metric name the dashboards and the alert rules use (their files parsed)."""
    exprs: list[str] = []
    for path in sorted((OBSERVABILITY / "grafana").glob("*.json")):
        board = json.loads(path.read_text(encoding="utf-8"))
        assert board["panels"], path
        exprs += [t["expr"] for p in board["panels"] for t in p["targets"]]
        exprs += [v.get("query", "") for v in board["templating"]["list"]]
    rules = yaml.safe_load((OBSERVABILITY / "prometheus" / "alerts.yml").read_text("utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["alert"] and rule["expr"] and rule["annotations"]["summary"], rule
            exprs.append(str(rule["expr"]))
    return {m for e in exprs for m in _METRIC.findall(e)}


def _status_cli(city: CityLayout, node_id: str, metrics: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "city", "node", "status", "--config",
         str(city.node(node_id).config_file), "--metrics", metrics, "--json"],
        capture_output=True, text=True, encoding="utf-8", timeout=60, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert isinstance(found, dict)
    return found


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[CityLayout, CityProcesses, CityClient]]:
    city = layout(tmp_path / "city", TWO)
    # on the city's clock: a visit is entered an hour after its order (workload.redeem)
    with CityProcesses(city, dev_clock=True) as procs:
        procs.start_all()
        client = CityClient(city)
        try:
            yield city, procs, client
        finally:
            client.close()


def test_one_claim_is_traced_counted_and_health_follows_the_link(
        running: tuple[CityLayout, CityProcesses, CityClient]) -> None:
    city, procs, client = running
    desks = {n: setup_desk(client, n, 1) for n in (JN, GL)}
    elder = enrol_elder(client, desks, JN, [GL], grant=600)
    # 江宁区's elder is served in 鼓楼区 with hours kept at home: a claim GL → JN.
    outcome = redeem(client, desks[GL], elder, desks[GL].volunteers[0])
    assert outcome.verified and outcome.claim_id

    # ---- logs: the claim's id on each service's JSON lines
    logs = {name: json_lines(procs.log_file(name).read_text(encoding="utf-8"))
            for name in city.names}
    for name, lines in logs.items():
        assert lines, name
        rpcs = [e for e in lines if e["event"] == "rpc"]
        assert rpcs and all(re.fullmatch(r"[0-9a-f]{16}", e["request_id"]) for e in rpcs), name
    claim = outcome.claim_id

    def naming(lines: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
        return [e for e in lines if e["event"] == event
                and (e.get("claim_id") == claim or claim in e.get("claim_ids", ()))]

    # the proposal and the acceptance, each in a SubmitBatch's line
    assert len(naming(logs[CLEARINGHOUSE], "rpc")) >= 2
    for node_id in (JN, GL):
        assert all(e["node_id"] == node_id for e in logs[node_id]), node_id
    # 鼓楼区 sent the proposal and heard of the acceptance; 江宁区 the other way round
    for node_id in (GL, JN):
        assert naming(logs[node_id], "messages taken by the clearinghouse"), node_id
        assert naming(logs[node_id], "deliveries applied"), node_id

    # ---- metrics: each process's endpoint, read from its database at scrape time
    addresses = {name: procs.metrics_address(name) for name in city.names}
    assert all(addresses.values()), addresses
    texts = {name: scrape(str(address)) for name, address in addresses.items()}
    ch = texts[CLEARINGHOUSE]
    assert (sample(ch, "timebank_clearinghouse_claims", state="accepted") or 0) >= 1
    assert (sample(ch, "timebank_clearinghouse_log_size") or 0) > 0
    assert sample(ch, "timebank_clearinghouse_net_debit_limit_minutes", node=JN) == 60_000
    assert sample(ch, "timebank_clearinghouse_database_up") == 1
    for node_id in (JN, GL):
        text = texts[node_id]
        assert sample(text, "timebank_node_link_up") == 1, node_id
        assert sample(text, "timebank_node_database_up") == 1, node_id
        assert sum(s.value for f in text_string_to_metric_families(text)
                   for s in f.samples if s.name == "timebank_node_claims") >= 1, node_id
        assert (sample(text, "timebank_node_last_delivery_seq") or 0) >= 1, node_id
        assert sample(text, "timebank_node_rpc_duration_seconds_count",
                      method="EnrolPerson", code="OK"), node_id
    names = set().union(*(exported(t) for t in texts.values()))
    missing = used_by_dashboards_and_rules() - names
    assert not missing, f"dashboards or rules use metrics nobody exports: {sorted(missing)}"

    # ---- health: the link goes down with the clearinghouse, the node keeps serving
    assert _status(city, JN, LINK_HEALTH_SERVICE) == "SERVING"
    status = _status_cli(city, JN, str(addresses[JN]))
    assert status["link_up"] is True and status["node_id"] == JN
    assert isinstance(status["last_witnessed_head"], dict)
    procs.kill(CLEARINGHOUSE)
    _eventually(lambda: _status(city, JN, LINK_HEALTH_SERVICE) == "NOT_SERVING",
                "the node reports its link down")
    assert _status(city, JN, "") == "SERVING"  # its district keeps working
    assert _status(city, JN, "timebank.v1.NodeService") == "SERVING"
    assert sample(scrape(str(addresses[JN])), "timebank_node_link_up") == 0
    status = _status_cli(city, JN, str(addresses[JN]))
    assert status["link_up"] is False
    procs.start(CLEARINGHOUSE)
    procs.wait_ready(CLEARINGHOUSE)
    _eventually(lambda: _status(city, JN, LINK_HEALTH_SERVICE) == "SERVING",
                "the node reports its link up again")


def test_the_status_command_reads_a_stopped_node(tmp_path: Path) -> None:
    """With the node stopped, its database still answers; the link is unknown."""
    city = layout(tmp_path / "city", TWO[:1])
    done = subprocess.run(
        [sys.executable, "-m", "city", "node", "status", "--config",
         str(city.node(JN).config_file)],
        capture_output=True, text=True, encoding="utf-8", timeout=60, cwd=ROOT, check=False,
        env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    assert "清算链路 / link" in done.stdout and "未知 / unknown" in done.stdout
    assert "待发消息 / outbox" in done.stdout and "0 条 / messages" in done.stdout
