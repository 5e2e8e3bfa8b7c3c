"""`timebank node enrol --home-node`, `move`, `claim`, `claims` and `positions` against a
real city: a clearinghouse and district nodes, each its own `serve` process (city.launcher),
every command a real `python -m city` subprocess.

A second city's clearinghouse, which has seen none of the first city's claims, makes a
node and a clearinghouse disagree on purpose.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from city.launcher import CLEARINGHOUSE, CityLayout, CityProcesses, District, layout
from node.cli.accounts import local_token
from node.domain.access import Role
from tests.helpers import id_card

pytestmark = pytest.mark.timeout(360)

ROOT = Path(__file__).resolve().parents[2]
JN, QX = "320115", "320113"
TWO = (District(JN, "江宁区"), District(QX, "栖霞区"))


#: The city CA the commands trust (TIMEBANK_CA), set by ``town``.
CA_ENV: dict[str, str] = {}
#: The nodes the commands may talk to: their configuration, by address.
NODES: dict[str, Path] = {}


def token_for(args: tuple[str, ...]) -> str:
    """The session a command sends (ADR 0016), minted on the node's own database: the
    staff member its ``--staff`` names, else the node's operator; "" for a command that
    talks to no node it knows."""
    given = dict(itertools.pairwise(args))
    config = NODES.get(given.get("--node", ""))
    if (config is None and args[1:2] == ("positions",)
            and given.get("--config", "").endswith("node.toml")):
        config = Path(given["--config"])  # the node at this configuration's address
    if config is None:
        return ""
    staff = int(given.get("--staff", "0"))
    if staff:
        return local_token(config, f"staff-{staff}", Role.STAFF, staff_id=staff)
    return local_token(config)


def timebank(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMEBANK_")}
    return subprocess.run([sys.executable, "-m", "city", *args], capture_output=True,
                          text=True, encoding="utf-8", timeout=timeout, cwd=ROOT,
                          env={**env, **CA_ENV, "COLUMNS": "200",
                               "TIMEBANK_TOKEN": token_for(args)})


def ok(*args: str) -> str:
    result = timebank(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def ok_json(*args: str) -> Any:
    return json.loads(ok(*args, "--json"))


def refused(*args: str, starts: str) -> str:
    result = timebank(*args)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {starts}"), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@dataclass
class Town:
    city: CityLayout
    processes: CityProcesses
    other: CityLayout  # a second city: only its clearinghouse runs
    other_processes: CityProcesses

    def node(self, node_id: str) -> str:
        return self.city.node(node_id).address

    def config(self, node_id: str) -> str:
        return str(self.city.node(node_id).config_file)


@pytest.fixture(scope="module")
def town(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Town]:
    root = tmp_path_factory.mktemp("cli-claims")
    city = layout(root / "city", TWO)
    other = layout(root / "other", TWO, pki_dir=city.pki_dir)  # one CA trusts both
    assert city.pki_dir is not None
    observer = city.client_tls()  # the launcher's observer certificate
    assert observer is not None and observer.cert is not None and observer.key is not None
    CA_ENV.update(TIMEBANK_CA=str(observer.ca), TIMEBANK_CERT=str(observer.cert),
                  TIMEBANK_KEY=str(observer.key))
    NODES.update({n.address: n.config_file for n in city.nodes})
    with CityProcesses(city) as processes, CityProcesses(other) as other_processes:
        processes.start_all()
        other_processes.start(CLEARINGHOUSE)
        other_processes.wait_ready(CLEARINGHOUSE)
        yield Town(city, processes, other, other_processes)


def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail("the city did not settle in time")


def test_help_names_the_new_commands_and_options() -> None:
    top = ok("node", "--help")
    for command in ("move", "claim", "claims", "positions"):
        assert command in top
    assert "--home-node" in ok("node", "enrol", "--help")
    assert "--to" in ok("node", "move", "--help")
    assert "--state" in ok("node", "claims", "--help")
    helped = ok("node", "positions", "--help")
    for option in ("--check", "--clearinghouse", "--config", "--node-id", "--json"):
        assert option in helped


@pytest.mark.slow
def test_a_visitor_a_move_the_claims_and_both_views_of_the_position(town: Town) -> None:
    jn, qx = town.node(JN), town.node(QX)
    number = id_card(1940)
    ok("node", "service-point", "add", "--code", "JN-01", "--name", "东山街道服务点",
       "--node", jn)
    ok("node", "staff", "add", "--name", "王芳", "--service-point", "1", "--node", jn)
    home = ok_json("node", "enrol", "--name", "孙奶奶", "--id-number", number, "--priority",
                   "--node", jn)
    assert home["home_node_id"] == ""
    assert "here" in ok("node", "person", str(home["id"]), "--node", jn)
    ok("node", "grant", str(home["id"]), "--minutes", "120", "--staff", "1", "--node", jn)

    shown = ok("node", "enrol", "--name", "孙奶奶", "--id-number", number, "--home-node", JN,
               "--node", qx)
    assert "孙奶奶" in shown and f"hours kept in {JN}" in shown
    visitor = ok_json("node", "person", "1", "--node", qx)
    assert visitor["name"] == "孙奶奶" and visitor["home_node_id"] == JN
    assert f"hours kept in {JN}" in ok("node", "person", "1", "--node", qx)

    # Nothing has moved yet: both views agree on zero.
    before = ok_json("node", "positions", "--config", town.config(JN))
    assert before["agree"] is True and before["node"]["net_minutes"] == 0
    assert before["district"] == "江宁区"
    assert before["clearinghouse"]["net_debit_limit_minutes"] == 60_000

    moved = timebank("node", "move", str(home["id"]), "--to", QX, "--node", jn)
    assert moved.returncode == 0, moved.stderr
    assert "孙奶奶" in moved.stdout and "栖霞区" in moved.stdout and "move" in moved.stdout
    claim_id = next(word for word in moved.stdout.split() if word.count("-") == 4
                    and len(word) == 36)

    def completed() -> bool:
        found = ok_json("node", "claims", "--state", "completed", "--node", qx)["claims"]
        return any(c["claim_id"] == claim_id for c in found)

    wait_for(completed)
    [at_home] = [c for c in ok_json("node", "claims", "--node", jn)["claims"]
                 if c["claim_id"] == claim_id]
    assert (at_home["kind"], at_home["role"], at_home["counterparty_node_id"]) == (
        "move", "debtor", QX)
    assert at_home["minutes"] == 120 and at_home["person_id"] == home["id"]
    assert ok_json("node", "claim", claim_id, "--node", qx)["role"] == "creditor"
    table = ok("node", "claims", "--node", jn)
    for text in (claim_id, "move", "debtor", "栖霞区 (320113)", "completed", "孙奶奶 (1)"):
        assert text in table, table
    assert "No proposed claims" in ok("node", "claims", "--state", "proposed", "--node", jn)
    assert ok_json("node", "person", str(home["id"]), "--node", jn)["home_node_id"] == QX

    def agreed() -> bool:
        view = ok_json("node", "positions", "--config", town.config(JN))
        return bool(view["agree"]) and view["node"]["net_minutes"] == -120

    wait_for(agreed)
    shown = ok("node", "positions", "--config", town.config(JN), "--check")
    assert "AGREE" in shown and "江宁区" in shown and "owes 2.00 h (120 min)" in shown
    assert "1000.00 h" in shown and "warning" not in shown
    qx_view = ok_json("node", "positions", "--config", town.config(QX), "--node", qx,
                      "--node-id", QX, "--clearinghouse", town.city.clearinghouse_address)
    assert qx_view["agree"] is True and qx_view["clearinghouse"]["net_minutes"] == 120
    # The node's address is enough: it says which district it is.
    by_address = ok_json("node", "positions", "--node", qx)
    assert (by_address["node_id"], by_address["district"]) == (QX, "栖霞区")
    assert by_address["agree"] is True and by_address["clearinghouse"]["net_minutes"] == 120

    # The bureau lowers 江宁区's limit: 120 of 140 minutes is 85%, a yellow warning.
    ok("clearinghouse", "limit", "--config", str(town.city.clearinghouse_config),
       "--node-id", JN, "--minutes", "140")
    near = ok_json("node", "positions", "--config", town.config(JN))
    assert near["clearinghouse"]["used_percent"] == 85
    assert near["clearinghouse"]["near_limit"] is True
    shown = ok("node", "positions", "--config", town.config(JN))
    assert "warning" in shown and "near its net debit limit" in shown and "85%" in shown
    ch_view = ok_json("clearinghouse", "positions", "--config",
                      str(town.city.clearinghouse_config))
    by_node = {n["node_id"]: n for n in ch_view["nodes"]}
    assert by_node[JN]["near_limit"] is True and by_node[JN]["district"] == "江宁区"
    assert ch_view["gross"] == [{"creditor_node_id": QX, "creditor_district": "栖霞区",
                                 "debtor_node_id": JN, "debtor_district": "江宁区",
                                 "minutes": 120}]

    # Another clearinghouse never saw the move: they disagree with nothing in flight.
    other = town.other.clearinghouse_address
    shown = ok("node", "positions", "--config", town.config(JN), "--clearinghouse", other)
    assert "DISAGREE" in shown and "nothing is in flight" in shown
    result = timebank("node", "positions", "--config", town.config(JN), "--clearinghouse",
                      other, "--check")
    assert result.returncode == 1 and "DISAGREE" in result.stdout, result.stderr
    view = ok_json("node", "positions", "--config", town.config(JN), "--clearinghouse", other)
    assert view["agree"] is False and view["difference_minutes"] == -120

    # With the city's clearinghouse down, a second move waits in the node's outbox:
    # the disagreement is explained as messages in flight.
    second = ok_json("node", "enrol", "--name", "刘洋", "--id-number", id_card(1941),
                     "--priority", "--node", jn)
    ok("node", "grant", str(second["id"]), "--minutes", "30", "--staff", "1", "--node", jn)
    town.processes.stop(CLEARINGHOUSE)
    try:
        ok("node", "move", str(second["id"]), "--to", QX, "--node", jn)
        view = ok_json("node", "positions", "--config", town.config(JN), "--clearinghouse",
                       other)
        assert view["agree"] is False and view["in_flight"] is True
        assert view["node"]["open_claims"] >= 1
        shown = ok("node", "positions", "--config", town.config(JN), "--clearinghouse", other)
        assert "DISAGREE" in shown and "messages in flight" in shown
        line = refused("node", "positions", "--config", town.config(JN),
                       starts="UNAVAILABLE: cannot reach the clearinghouse")
        assert town.city.clearinghouse_address in line
    finally:
        town.processes.start(CLEARINGHOUSE)
        town.processes.wait_ready(CLEARINGHOUSE)


def test_refusals_are_one_line_with_the_status_name(town: Town) -> None:
    jn = town.node(JN)
    refused("node", "claims", "--state", "bogus", "--node", jn,
            starts="INVALID_ARGUMENT: state is one of")
    refused("node", "claim", "not-a-claim", "--node", jn, starts="INVALID_ARGUMENT")
    refused("node", "move", "9999", "--to", QX, "--node", jn, starts="NOT_FOUND")
    refused("node", "enrol", "--name", "赵敏", "--id-number", id_card(1950), "--home-node",
            "12", "--node", jn, starts="INVALID_ARGUMENT")
    refused("node", "positions", "--config", town.config(JN), "--node-id", "320106",
            starts="NOT_FOUND: district 320106 is not admitted")
    # Without a client certificate the clearinghouse cannot be asked.
    ca_only = {"TIMEBANK_CA": CA_ENV["TIMEBANK_CA"],
               "TIMEBANK_TOKEN": token_for(("node", "positions", "--node", jn))}
    result = subprocess.run([sys.executable, "-m", "city", "node", "positions", "--node", jn,
                             "--node-id", JN], capture_output=True, text=True,
                            encoding="utf-8", timeout=60, cwd=ROOT,
                            env={**{k: v for k, v in os.environ.items()
                                    if not k.startswith("TIMEBANK_")}, **ca_only})
    assert result.returncode == 1
    assert result.stderr.startswith("error: UNAVAILABLE: cannot reach the clearinghouse")
    assert "--config" in result.stderr and "Traceback" not in result.stderr


def test_positions_of_a_node_running_alone_is_one_line(tmp_path: Path) -> None:
    from tests.node.test_cli import client_tls, init_node, start_serving, stop

    config = init_node(tmp_path / "alone")
    served = start_serving(config, tmp_path / "serve.log")
    NODES[served.address] = config
    ca = str(client_tls(served.config).ca)
    try:
        line = refused("node", "--ca", ca, "positions", "--node", served.address,
                       starts="FAILED_PRECONDITION")
        assert "not connected to a city clearinghouse" in line
        refused("node", "--ca", ca, "move", "1", "--to", QX, "--node", served.address,
                starts="FAILED_PRECONDITION")
    finally:
        stop(served)
