"""Backups restored in a real city (issue 17, docs/operations.md): a clearinghouse and two
district nodes, each its own `serve` process with its own SQLite file (city.launcher),
backed up while they run with `timebank node backup`, stopped, restored with `timebank
node restore`, started again.

- A node restored from its latest backup catches up: its outbox is sent again, the
  claims another district started while it was away are delivered, and the city's audit
  and the node's own check pass.
- A node restored from a backup older than its last checkpoint refuses to serve and
  says what is missing; `node check` and `node recover` list the entries and claims the
  log holds and the database does not; a newer backup brings it back.
- A clearinghouse restored from an older backup: every node that verified a larger
  head raises its log alarm.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from city.audit import audit_data_dir
from city.launcher import CLEARINGHOUSE, District, LaunchError, layout
from city.launcher import CityProcesses as Processes
from runtime import devclock
from tests.city.workload import (
    CityClient,
    Elder,
    enrol_elder,
    key,
    record_due,
    sent_everything,
    setup_desk,
    wait_claim,
    wait_quiet,
)
from timebank.v1 import node_pb2

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

ROOT = Path(__file__).resolve().parents[2]
JN, GL = "320115", "320106"
NODES = [JN, GL]
GRANT = 600


def timebank(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMEBANK_")}
    return subprocess.run([sys.executable, "-m", "city", *args], capture_output=True,
                          text=True, encoding="utf-8", timeout=120, cwd=ROOT,
                          env={**env, "COLUMNS": "200"})


def ok(*args: str) -> str:
    done = timebank(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


class Town:
    """The city, its processes and a client; movers enrolled at home and elsewhere."""

    def __init__(self, tmp_path: Path, procs: Processes, client: CityClient) -> None:
        self.tmp_path, self.procs, self.client = tmp_path, procs, client
        self.city = procs.city
        desks = {n: setup_desk(client, n, volunteers=1) for n in NODES}
        self.movers = {home: [enrol_elder(client, desks, home, [other], GRANT)
                              for _ in range(6)]
                       for home, other in ((JN, GL), (GL, JN))}
        assert sent_everything(client, NODES, 60)

    def config(self, node_id: str) -> str:
        return str(self.city.node(node_id).config_file)

    def move(self, home: str) -> str:
        """Start the move of one of ``home``'s movers to the other district."""
        mover: Elder = self.movers[home].pop()
        other = next(n for n in mover.ids if n != home)
        claim = self.client.call(home, "MovePerson", node_pb2.MovePersonRequest(
            idempotency_key=key(), person_id=mover.ids[home], to_node_id=other))
        return str(claim.claim.claim_id)

    def completed(self, claim_id: str, *nodes: str) -> None:
        for n in nodes:
            assert wait_claim(self.client, n, claim_id, {"completed"}, 60) == "completed"

    def backup(self, node_id: str, name: str) -> Path:
        out = self.tmp_path / name
        ok("node", "backup", "--config", self.config(node_id), "--out", str(out))
        return out

    def restore(self, node_id: str, backup: Path) -> None:
        ok("node", "restore", "--config", self.config(node_id), "--from", str(backup),
           "--replace")

    def settle(self) -> None:
        devclock.advance(self.city.clock_file, timedelta(days=8))
        for n in NODES:
            record_due(self.client, n)
        assert wait_quiet(self.client, NODES, 60), "the city did not settle"

    def check(self, node_id: str) -> subprocess.CompletedProcess[str]:
        return timebank("node", "check", "--config", self.config(node_id), "--json")


@pytest.fixture
def town(tmp_path: Path) -> Iterator[Town]:
    city = layout(tmp_path / "city", (District(JN, "江宁区"), District(GL, "鼓楼区")))
    with Processes(city, dev_clock=True) as procs:
        procs.start(CLEARINGHOUSE)
        procs.wait_ready(CLEARINGHOUSE)
        for n in NODES:
            procs.start(n)
        for n in NODES:
            procs.wait_ready(n)
        client = CityClient(city)
        try:
            yield Town(tmp_path, procs, client)
        finally:
            client.close()


def test_a_node_restored_from_its_latest_backup_catches_up_and_the_audit_passes(
        town: Town) -> None:
    procs = town.procs
    first = town.move(GL)
    town.completed(first, GL, JN)
    # 鼓楼区 starts a move while the clearinghouse is away: it waits in the outbox, and
    # the backup taken now (the node running) holds it unsent.
    procs.stop(CLEARINGHOUSE)
    waiting = town.move(GL)
    backup = town.backup(GL, "gl-latest.backup")
    procs.stop(GL)
    town.restore(GL, backup)
    procs.start(CLEARINGHOUSE)
    procs.wait_ready(CLEARINGHOUSE)
    # while 鼓楼区 is down, 江宁区 moves someone to it: delivered when it is back
    incoming = town.move(JN)
    assert sent_everything(town.client, [JN], 60)
    stopped = town.check(GL)  # on the stopped node's database: nothing of its own lost
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    said = json.loads(stopped.stdout)["city_log"]
    assert said["ok"] is True and said["claims_delivered_again"] == [incoming]
    procs.start(GL)
    procs.wait_ready(GL)
    town.completed(waiting, GL, JN)  # the outbox was sent again
    town.completed(incoming, JN, GL)  # the claim started meanwhile was delivered
    town.settle()
    for n in NODES:
        done = town.check(n)
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["city_log"]["ok"] is True
    recovered = timebank("node", "recover", "--config", town.config(GL), "--json")
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert json.loads(recovered.stdout)["cannot_recover"] == []
    procs.stop_all()
    report = audit_data_dir(town.city.data_dir)
    assert report.ok, report.first_bad


def test_a_node_restored_from_before_its_last_checkpoint_refuses_and_says_what_is_missing(
        town: Town) -> None:
    procs = town.procs
    town.completed(town.move(GL), GL, JN)
    old = town.backup(GL, "gl-old.backup")
    held = json.loads(town.check(GL).stdout)["city_log"]["ledger_entries"]
    # after the backup: a move 鼓楼区 starts, and its ledger anchored in the city's log
    lost = town.move(GL)
    town.completed(lost, GL, JN)
    ok("node", "checkpoint", "--config", town.config(GL))
    assert sent_everything(town.client, [GL], 60)
    newer = town.backup(GL, "gl-newer.backup")
    procs.kill(GL)
    town.restore(GL, old)

    # started while the clearinghouse is away, the node serves its district; once its
    # link comes up it compares, and stops as it would have refused to start
    procs.stop(CLEARINGHOUSE)
    procs.start(GL)
    procs.wait_ready(GL)
    procs.start(CLEARINGHOUSE)
    procs.wait_ready(CLEARINGHOUSE)
    deadline = time.monotonic() + 120
    while procs.is_running(GL) and time.monotonic() < deadline:
        time.sleep(0.2)
    said = procs.log_file(GL).read_text(encoding="utf-8")
    assert procs.stop(GL) == 1, said[-3000:]
    assert "could not be read to compare this database" in said
    assert f"ledger entries {held + 1}-" in said and "拒绝服务 / Not serving" in said

    procs.start(GL)
    with pytest.raises(LaunchError, match="exited with code 1") as refused:
        procs.wait_ready(GL)
    assert f"ledger entries {held + 1}-" in str(refused.value)
    assert "数据库比本节点在城市日志中的记录旧" in str(refused.value)
    procs.stop(GL)

    done = town.check(GL)
    assert done.returncode == 1
    found = json.loads(done.stdout)["city_log"]
    assert found["ok"] is False and found["ledger_entries"] == held
    assert found["missing_entries"]["first_seq"] == held + 1
    assert found["anchors_beyond"] and all(a["signature_checked"]
                                           for a in found["anchors_beyond"])
    assert lost in found["claims_missing"]

    evidence = town.tmp_path / "recovered.json"
    recovered = timebank("node", "recover", "--config", town.config(GL), "--json",
                         "--out", str(evidence))
    assert recovered.returncode == 1
    said = json.loads(recovered.stdout)
    assert said["claims_missing"] == found["claims_missing"]
    assert "newer backup" in said["cannot_recover"][0]
    written = json.loads(evidence.read_text(encoding="utf-8"))
    assert {m["claim_id"] for m in written["messages_missing"]} >= {lost}
    assert all(m["envelope_body_b64"] for m in written["messages_missing"])

    town.restore(GL, newer)  # the newer backup holds everything the log anchored
    procs.start(GL)
    procs.wait_ready(GL)
    town.settle()
    done = town.check(GL)
    assert done.returncode == 0, done.stdout + done.stderr
    procs.stop_all()
    report = audit_data_dir(town.city.data_dir)
    assert report.ok, report.first_bad


def test_a_clearinghouse_restored_from_an_older_backup_raises_every_nodes_alarm(
        town: Town) -> None:
    procs = town.procs
    old = town.tmp_path / "ch-old.backup"
    ok("clearinghouse", "backup", "-c", str(town.city.clearinghouse_config), "--out",
       str(old))
    for _ in range(2):
        town.completed(town.move(JN), JN, GL)
    procs.stop(CLEARINGHOUSE)
    ok("clearinghouse", "restore", "-c", str(town.city.clearinghouse_config), "--from",
       str(old), "--replace")
    procs.start(CLEARINGHOUSE)
    procs.wait_ready(CLEARINGHOUSE)
    deadline = time.monotonic() + 60
    while True:
        checks = {n: town.check(n) for n in NODES}
        alarms = {n: json.loads(c.stdout)["log"]["alarms"] for n, c in checks.items()
                  if c.stdout}
        if all(alarms.get(n) for n in NODES) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for n in NODES:
        assert checks[n].returncode == 1, checks[n].stdout + checks[n].stderr
        assert any(a["kind"] == "fork" for a in alarms[n]), checks[n].stdout
