"""Queueing a checkpoint of the ledger: once per entry count and signing key, so that a
rotated key anchors the unchanged ledger again; a checkpoint the clearinghouse refused
for good does not stand in the way of the next."""

from __future__ import annotations

from node.usecases import checkpoints, claims
from node.usecases.app import NodeApp
from tests.helpers import earn, enrol
from timebank.v1 import clearing_pb2 as pb

OLD, NEW = "0123456789abcdef", "fedcba9876543210"


def _message(app: NodeApp) -> int:
    [due] = [m for m in app.query(claims.outbox_due, 10) if m.kind == checkpoints.CHECKPOINT]
    return due.id


def test_a_checkpoint_is_queued_once_per_count_and_key(node_app: NodeApp) -> None:
    volunteer, elder = enrol(node_app, "王芳").id, enrol(node_app, "赵大爷", 1938, priority=True).id
    earn(node_app, node_app.clock, volunteer, 60, elder)
    first = node_app.execute(checkpoints.request, OLD)
    assert first.queued and first.entry_count >= 1
    assert not node_app.execute(checkpoints.request, NEW).queued  # one waits to be sent
    # the link sent it signed with OLD, and the log recorded it
    sent = pb.Envelope(kind=checkpoints.CHECKPOINT, signer="320115", key_id=OLD,
                       signature=b"s" * 64)
    message = _message(node_app)
    body = node_app.query(lambda tx: tx.repo.outbox.get(message)).envelope
    node_app.execute(claims.apply_receipt, message, pb.CLAIM_STATE_UNSPECIFIED, 0)
    node_app.execute(checkpoints.anchored, body, sent.SerializeToString(),
                     pb.LogInclusion(index=7, entry=b"leaf"), "head")
    assert not node_app.execute(checkpoints.request, OLD).queued
    # the key was rotated: the same ledger again, under the new key
    again = node_app.execute(checkpoints.request, NEW)
    assert again.queued
    assert (again.entry_count, again.chain_head, again.ledger_root) == (
        first.entry_count, first.chain_head, first.ledger_root)


def test_a_checkpoint_refused_for_good_does_not_block_the_next(node_app: NodeApp) -> None:
    assert node_app.execute(checkpoints.request, OLD).queued
    node_app.execute(claims.apply_refusal, _message(node_app), "PERMISSION_DENIED",
                     "REVOKED_KEY", "key 0123456789abcdef of 320115 is revoked")
    assert node_app.query(lambda tx: tx.repo.anchors.at(0)) == []
    assert node_app.execute(checkpoints.request, NEW).queued
