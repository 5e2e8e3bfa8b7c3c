"""What a node keeps of the forks it found (``node.usecases.log_watch``), on SQLite and
PostgreSQL: evidence stored once per fork, bounded, conclusive evidence preferred, and
everything checked again when read (an edited value is reported, never trusted)."""

from __future__ import annotations

import hashlib
import json

from nacl.signing import SigningKey

from node.usecases import log_watch
from node.usecases.app import NodeApp, Tx
from timebank import checkpoint as notes
from timebank import forks, merkle, transparency
from timebank.keys import public_key

CH = SigningKey(hashlib.sha256(b"clearinghouse (node log watch)").digest())
KEY = public_key(CH)
ORIGIN = transparency.clearinghouse_origin(KEY)


def note(history: str, size: int) -> str:
    leaves = [f"leaf {i}".encode() for i in range(10)]
    leaves += [f"{history} {i}".encode() for i in range(size - 10)]
    return notes.sign_note(notes.Checkpoint(ORIGIN, size, merkle.root(leaves)).body(),
                           ORIGIN, CH)


def evidence(size_a: int, size_b: int, proof: bool = False) -> forks.Evidence:
    path = None
    if proof:  # A's path from B's size: conclusive
        leaves = [f"leaf {i}".encode() for i in range(10)]
        leaves += [f"A {i}".encode() for i in range(size_a - 10)]
        path = merkle.consistency_proof(leaves, size_b)
    found = forks.compare(KEY, note("A", size_a), note("B", size_b), path)
    assert found is not None
    return found


def test_a_fork_is_kept_once_and_read_back_checked(node_app: NodeApp) -> None:
    assert node_app.query(log_watch.status, KEY).ok
    weak = evidence(30, 20)
    assert not weak.conclusive
    assert node_app.execute(log_watch.record_fork, weak, 1_700_000_000)
    assert not node_app.execute(log_watch.record_fork, weak, 1_700_000_100)
    strong = evidence(30, 21, proof=True)
    assert strong.conclusive
    assert node_app.execute(log_watch.record_fork, strong, 1_700_000_200)
    # the same heads again, no stronger: nothing new
    assert not node_app.execute(log_watch.record_fork, evidence(30, 21), 1_700_000_300)
    status = node_app.query(log_watch.status, KEY)
    assert [f.evidence.id for f in status.forks] == [weak.id, strong.id]
    assert [a.kind for a in status.alarms] == [log_watch.FORK, log_watch.FORK]
    assert not status.ok
    assert forks.check(forks.load(status.forks[1].document), KEY).kind is forks.Kind.PREFIX


def test_at_most_max_forks_are_kept_and_conclusive_ones_replace_refutable(
        node_app: NodeApp) -> None:
    for i in range(log_watch.MAX_FORKS):
        assert node_app.execute(log_watch.record_fork, evidence(40 + i, 20 + i), i)
    assert not node_app.execute(log_watch.record_fork, evidence(60, 35), 99)
    strong = evidence(70, 36, proof=True)
    assert node_app.execute(log_watch.record_fork, strong, 100)
    kept = node_app.query(log_watch.status, KEY).forks
    assert len(kept) == log_watch.MAX_FORKS and kept[-1].evidence.id == strong.id


def test_edited_evidence_is_reported_not_trusted(node_app: NodeApp) -> None:
    node_app.execute(log_watch.record_fork, evidence(30, 21, proof=True), 1)

    def edit(tx: Tx) -> None:
        stored = json.loads(tx.repo.meta.get(log_watch.FORKS) or "[]")
        stored[0]["evidence"]["heads"][0]["note"] = note("A", 21)  # now consistent
        tx.repo.meta.set(log_watch.FORKS, json.dumps(stored))

    node_app.execute(edit)
    status = node_app.query(log_watch.status, KEY)
    assert not status.forks and len(status.problems) == 1 and not status.ok
    assert "does not check" in status.alarms[0].detail


def test_the_finality_alarm_is_stored_until_cleared(node_app: NodeApp) -> None:
    alarm = log_watch.FinalityAlarm(size=12, final_size=9, since=1_700_000_000, bound=300)
    assert node_app.execute(log_watch.set_finality, alarm)
    assert not node_app.execute(log_watch.set_finality, alarm)
    status = node_app.query(log_watch.status, KEY)
    assert status.finality == alarm
    assert status.alarms[0].kind == log_watch.FINALITY_KIND
    assert "12 leaves" in status.alarms[0].detail and "300 s" in status.alarms[0].detail
    assert node_app.execute(log_watch.set_finality, None)
    assert node_app.query(log_watch.status, KEY).ok
