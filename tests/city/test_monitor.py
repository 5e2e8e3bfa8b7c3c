"""The outside monitor (``city.monitor``) against a real city: the federation tests'
clearinghouse gRPC server and three nodes with real links, each node serving gRPC.
All is well, then, one at a time, what the monitor must catch besides a split view
(tests/city/test_split_view.py has that, with real processes): a district whose view of
the log goes backwards, anchors in the log that go backwards, a clearinghouse whose log
does not extend the head the monitor verified before (kept as evidence); and the
``check-evidence`` command on good and bad files. After every round, made or not, the
monitor's status file says what it found (``timebank.monitorstatus``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from city.cli import app
from city.monitor import Target, check_once
from city.monitor.state import Directory
from city.monitor.watch import ANCHORS, FORK, LOG, NO_ROUND, ROLLBACK, MonitorError
from clearinghouse.usecases import log
from node.api.server import start_server as start_node
from node.usecases import tree_heads
from runtime.server import RunningServer
from tests.federation.conftest import CH_KEY, CITY_ROOT, City, make_city
from tests.federation.support import GL, JN, QX, enrol_at
from tests.helpers import id_card
from tests.node.link.support import CH_PUBLIC, eventually
from timebank import checkpoint as notes
from timebank import forks, merkle, monitorstatus, transparency
from timebank.keys import public_key
from timebank.v1 import clearing_pb2 as pb

pytestmark = pytest.mark.timeout(120)
NODES = (JN, GL, QX)
ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _status(directory: Directory) -> monitorstatus.MonitorStatus:
    """The status file the monitor keeps, read as the bureau's console reads it."""
    return monitorstatus.parse((directory.path / monitorstatus.FILE_NAME).read_bytes())


@pytest.fixture
def city(tmp_path: Path) -> Iterator[City]:
    yield from make_city(tmp_path, f"sqlite:///{tmp_path / 'ch.sqlite3'}")


@pytest.fixture
def watched(city: City) -> Iterator[tuple[City, Target]]:
    """The city with a shared history, every node serving gRPC, and what a monitor of it
    is given: addresses and public keys."""
    for n in NODES:
        enrol_at(city, n, "王芳", id_card(1965, n))
    city.settle()
    servers: list[RunningServer] = [start_node(city[n].app, "127.0.0.1:0", link=city[n].link)
                                    for n in NODES]
    try:
        yield city, Target(city.address, CH_PUBLIC, public_key(CITY_ROOT),
                           tuple(f"127.0.0.1:{s.port}" for s in servers))
    finally:
        for s in servers:
            s.stop(1)


def _verified(city: City, node_id: str) -> int:
    head = city[node_id].app.query(tree_heads.verified, CH_PUBLIC)
    return 0 if head is None else head.size


def test_all_is_well_then_a_district_view_goes_backwards(watched: tuple[City, Target],
                                                         tmp_path: Path) -> None:
    city, target = watched
    directory = Directory(tmp_path / "monitor")
    assert eventually(lambda: all(_verified(city, n) > 0 for n in NODES), 20)
    first = check_once(target, directory)
    assert first.ok, first.findings
    old = city[GL].app.query(tree_heads.verified, CH_PUBLIC)
    assert old is not None
    assert first.districts == 3 and first.heads_checked >= 3 and first.log_size > 0
    state = json.loads((tmp_path / "monitor" / "state.json").read_text(encoding="utf-8"))
    assert state["leaves"] == first.log_size and set(state["keys"]) == set(NODES)
    status = _status(directory)  # what the round found, for the bureau's console
    assert status.ok and status.findings == () and status.omitted == 0
    assert (status.log_size, status.final_size, status.districts, status.heads_checked) == (
        first.log_size, first.final_size, 3, first.heads_checked)
    assert abs((datetime.now(UTC) - status.checked_at).total_seconds()) < 60
    assert not list((tmp_path / "monitor").glob("*.tmp"))  # written whole, then renamed
    # another round reads only what is new
    enrol_at(city, JN, "李秀英", id_card(1940, JN))
    city.settle()
    assert eventually(lambda: _verified(city, GL) > old.size, 20)  # its witness moved on
    second = check_once(target, directory)
    assert second.ok, second.findings
    assert second.log_size > first.log_size

    # 鼓楼区 restored from an old backup: its verified head is smaller than before
    city[GL].link.stop()  # its witness would move it on again
    city[GL].app.execute(tree_heads.store, old)
    third = check_once(target, directory)
    assert [f.kind for f in third.findings if f.alarm] == [ROLLBACK], third.findings
    assert "went backwards" in third.findings[0].detail
    assert [(f.kind, f.alarm) for f in _status(directory).findings] == [(ROLLBACK, True)]

    # a round that cannot be made says so in the status too (a warning), then fails
    gone = Target("127.0.0.1:1", target.clearinghouse_key, target.city_key, target.nodes)
    with pytest.raises(MonitorError, match="did not answer"):
        check_once(gone, directory)
    failed = _status(directory)
    assert [(f.kind, f.alarm) for f in failed.findings] == [(NO_ROUND, False)], failed
    assert "127.0.0.1:1 did not answer" in failed.findings[0].detail


def test_anchors_that_go_backwards_are_an_alarm(watched: tuple[City, Target],
                                                tmp_path: Path) -> None:
    city, target = watched
    directory = Directory(tmp_path / "monitor")
    assert check_once(target, directory).ok

    def checkpoint(count: int) -> bytes:
        body = pb.NodeCheckpoint(node_id=GL, entry_count=count, chain_head=b"\x01" * 32,
                                 ledger_root=b"\x02" * 32).SerializeToString()
        return pb.Envelope(kind="node.checkpoint", body=body, signer=GL).SerializeToString()

    # a broken clearinghouse logs a checkpoint of fewer entries than one before
    for count in (9, 4):
        city.ch.execute(lambda tx, c=count: log.append(tx, pb.LogEntry(
            kind=log.CHECKPOINT, envelope=checkpoint(c), node_id=GL)))
    found = check_once(target, directory)
    assert [f.kind for f in found.findings if f.alarm] == [ANCHORS], found.findings
    assert f"district {GL} anchored 4 ledger entries" in found.findings[0].detail
    status = _status(directory)
    assert [(f.kind, f.alarm) for f in status.alarms] == [(ANCHORS, True)], status
    assert status.alarms[0].detail == found.findings[0].detail and not status.ok
    # the log holds it for good: the alarm stands in every later round (the leaves are
    # not read again), and a following monitor says it in its status file too
    again = check_once(target, directory)
    assert [f.detail for f in again.findings if f.alarm] == [found.findings[0].detail]
    env = {**os.environ, "TIMEBANK_INSECURE": "1", "PYTHONIOENCODING": "utf-8"}
    status_file = directory.path / monitorstatus.FILE_NAME
    status_file.unlink()
    follow = subprocess.Popen(
        [sys.executable, "-m", "city", "monitor", "check", "--follow", "--interval", "0.2",
         "--clearinghouse", target.clearinghouse, "--clearinghouse-key", CH_PUBLIC.hex(),
         "--city-key", public_key(CITY_ROOT).hex(), "--data-dir", str(directory.path),
         *(a for n in target.nodes for a in ("--node", n))],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        encoding="utf-8")
    try:
        deadline = time.monotonic() + 30
        while not status_file.exists():
            assert follow.poll() is None and time.monotonic() < deadline, follow.stderr
            time.sleep(0.1)
    finally:
        follow.send_signal(signal.SIGTERM)
        _, err = follow.communicate(timeout=30)
    assert follow.returncode == 0, err
    followed = _status(directory)
    assert [f.kind for f in followed.alarms] == [ANCHORS] and "ALARM anchors" in err


def test_a_log_that_does_not_extend_the_head_seen_before_is_kept_as_evidence(
        watched: tuple[City, Target], tmp_path: Path) -> None:
    _, target = watched
    directory = Directory(tmp_path / "monitor")
    assert check_once(target, directory).ok
    # what this monitor saw before was another history of 3 leaves, signed by the key
    origin = transparency.clearinghouse_origin(CH_PUBLIC)
    other = [b"another", b"history", b"of three"]
    seen = notes.sign_note(notes.Checkpoint(origin, 3, merkle.root(other)).body(), origin, CH_KEY)
    state = directory.load(CH_PUBLIC)
    state.head = seen
    directory.save(state)
    found = check_once(target, directory)
    assert [f.kind for f in found.findings if f.alarm] == [FORK], found.findings
    path = Path(found.findings[0].evidence)
    evidence = forks.check(forks.load(path.read_bytes()), CH_PUBLIC)
    [kept] = _status(directory).alarms  # the status names the file in the evidence folder
    assert kept.kind == FORK and kept.evidence == path.name == f"fork-{evidence.id}.json"
    assert evidence.conclusive and evidence.heads[0].note == seen
    # the files check from the command line with the key alone
    ok = runner.invoke(app, ["monitor", "check-evidence", str(path), "--clearinghouse-key",
                             CH_PUBLIC.hex(), "--conclusive"])
    assert ok.exit_code == 0 and "conclusive" in ok.stdout, ok.stdout
    junk = tmp_path / "junk.json"
    junk.write_text(json.dumps({"format": forks.FORMAT, "kind": "same-size",
                                "heads": [{"note": seen}, {"note": seen}]}), encoding="utf-8")
    bad = runner.invoke(app, ["monitor", "check-evidence", str(junk), "--clearinghouse-key",
                              CH_PUBLIC.hex()])
    assert bad.exit_code == 1, bad.stdout


def test_a_wrong_city_key_is_found_in_the_log(watched: tuple[City, Target],
                                              tmp_path: Path) -> None:
    _, target = watched
    wrong = Target(target.clearinghouse, target.clearinghouse_key, CH_PUBLIC, target.nodes)
    found = check_once(wrong, Directory(tmp_path / "monitor"))
    assert found.findings and all(f.kind == LOG for f in found.findings if f.alarm)
    assert "not signed by the city key" in found.findings[0].detail
