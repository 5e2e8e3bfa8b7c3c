"""A node's ledger checkpoint (ADR 0007): the ledger only grows; the same ledger again is
taken, under a rotated key too, so that a district can re-anchor after a rotation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from nacl.signing import SigningKey

from clearinghouse.usecases import admission, checkpoints, submit, wire
from clearinghouse.usecases.app import ClearinghouseApp
from clearinghouse.usecases.clock import ManualClock
from tests.clearinghouse.conftest import CITY_PUBLIC, certificate, node_key, refused, snapshot
from tests.clearinghouse.usecases.test_submit import seal
from timebank.envelope import Signed, sign
from timebank.v1 import clearing_pb2

JN = "320115"
HEAD, ROOT = b"h" * 32, b"r" * 32


@pytest.fixture
def jn(ch_app: ClearinghouseApp) -> ClearinghouseApp:
    ch_app.execute(admission.admit, certificate(JN, "江宁区", node_key(JN)), CITY_PUBLIC)
    return ch_app


def checkpoint(app: ClearinghouseApp, count: int, key: SigningKey, *, head: bytes = HEAD,
               root: bytes = ROOT) -> Signed:
    body = clearing_pb2.NodeCheckpoint(node_id=JN, entry_count=count, chain_head=head,
                                       ledger_root=root)
    body.at.FromDatetime(app.clock.now())
    return sign(checkpoints.CHECKPOINT, body.SerializeToString(), JN, key)


def anchor(app: ClearinghouseApp, envelope: Signed) -> clearing_pb2.Receipt:
    done = app.execute(submit.submit, wire.to_bytes(envelope), seal)
    return clearing_pb2.Receipt.FromString(wire.from_bytes(done.receipt).body)


def logged_checkpoints(app: ClearinghouseApp) -> list[str]:
    """The key id of each checkpoint leaf, in log order."""
    from clearinghouse.usecases import log

    found = []
    size = app.query(lambda tx: log.log_of(tx).size())
    for raw in app.query(log.entries, 0, size):
        entry = clearing_pb2.LogEntry.FromString(raw)
        if entry.kind == "checkpoint":
            found.append(wire.from_bytes(entry.envelope).key_id)
    return found


def test_the_same_ledger_is_anchored_again_under_a_rotated_key(
        jn: ClearinghouseApp, ch_clock: ManualClock) -> None:
    old, new = node_key(JN), node_key(JN, 1)
    anchor(jn, checkpoint(jn, 5, old))
    jn.execute(admission.admit, certificate(JN, "江宁区", new, serial=2), CITY_PUBLIC)
    ch_clock.advance(timedelta(minutes=1))
    # the old key signs nothing now, the new one the same ledger again
    error = refused(jn, submit.submit, wire.to_bytes(checkpoint(jn, 5, old)), seal)
    assert error.reason == "REVOKED_KEY"
    receipt = anchor(jn, checkpoint(jn, 5, new))
    assert receipt.log_index > 0
    assert logged_checkpoints(jn) == [checkpoint(jn, 5, old).key_id,
                                      checkpoint(jn, 5, new).key_id]
    anchor(jn, checkpoint(jn, 7, new, head=b"i" * 32, root=b"s" * 32))  # and it grows on


@pytest.mark.parametrize(("count", "head", "root"), [
    (4, HEAD, ROOT),  # fewer entries
    (5, b"x" * 32, ROOT),  # as many, another head
    (5, HEAD, b"x" * 32),  # as many, the same head but another root
])
def test_a_ledger_that_shrinks_or_changes_is_refused(
        jn: ClearinghouseApp, ch_clock: ManualClock, count: int, head: bytes,
        root: bytes) -> None:
    anchor(jn, checkpoint(jn, 5, node_key(JN)))
    ch_clock.advance(timedelta(minutes=1))
    before = snapshot(jn)
    error = refused(jn, submit.submit,
                    wire.to_bytes(checkpoint(jn, count, node_key(JN), head=head, root=root)),
                    seal)
    assert error.reason == "LEDGER_REWRITTEN"
    assert snapshot(jn) == before


def test_a_checkpoint_remembered_before_roots_were_kept_is_still_compared(
        jn: ClearinghouseApp) -> None:
    jn.execute(lambda tx: tx.repo.set_meta(f"checkpoint:{JN}", f"5:{HEAD.hex()}"))
    error = refused(jn, submit.submit,
                    wire.to_bytes(checkpoint(jn, 5, node_key(JN), head=b"x" * 32)), seal)
    assert error.reason == "LEDGER_REWRITTEN"
    anchor(jn, checkpoint(jn, 5, node_key(JN)))  # the same head: any root was never kept
    assert jn.query(lambda tx: tx.repo.meta(f"checkpoint:{JN}")) == (
        f"5:{HEAD.hex()}:{ROOT.hex()}")
