"""What a node's clearing link checks of a receipt's log leaf before acting on it: the
leaf records exactly the bytes sent and the state the receipt states, and is proven in
the clearinghouse's head; and every head extends the last one verified."""

from __future__ import annotations

import hashlib

import pytest
from nacl.signing import SigningKey

from node.api.clearing_link import ClearingLink, ReceiptError
from timebank import checkpoint as notes
from timebank import merkle, transparency
from timebank.keys import public_key
from timebank.v1 import clearing_pb2 as pb

CH = SigningKey(hashlib.sha256(b"clearinghouse (log checks)").digest())
ORIGIN = transparency.clearinghouse_origin(public_key(CH))
SENT = b"the envelope bytes the node sent"
CLAIM = "019a0000-0000-7000-8000-0000000000aa"


def entry(envelope: bytes = SENT, state: int = pb.CLAIM_STATE_ACCEPTED,
          claim_id: str = CLAIM) -> bytes:
    return pb.LogEntry(kind="claim", envelope=envelope, claim_id=claim_id,
                       state=state).SerializeToString(deterministic=True)


def note_of(leaves: list[bytes], key: SigningKey = CH) -> str:
    body = notes.Checkpoint(ORIGIN, len(leaves), merkle.root(leaves)).body()
    return notes.sign_note(body, ORIGIN, key)


def head_of(leaves: list[bytes]) -> transparency.Head:
    return transparency.check_head(note_of(leaves), public_key(CH))


LEAVES = [b"admission", b"limit", entry(), b"later"]
HEAD = head_of(LEAVES)
RECEIPT = pb.Receipt(claim_id=CLAIM, state=pb.CLAIM_STATE_ACCEPTED, log_index=2)


def logged(index: int = 2, data: bytes | None = None) -> pb.LogInclusion:
    return pb.LogInclusion(index=index, entry=LEAVES[index] if data is None else data,
                           path=merkle.inclusion_proof(LEAVES, index))


def test_a_proven_leaf_of_what_was_sent_passes() -> None:
    ClearingLink._check_logged(logged(), RECEIPT, SENT, HEAD)


@pytest.mark.parametrize("inclusion, receipt, sent", [
    (logged(), RECEIPT, b"other bytes than were sent"),
    (logged(data=entry(state=pb.CLAIM_STATE_REJECTED)), RECEIPT, SENT),
    (logged(data=entry(claim_id="019a0000-0000-7000-8000-0000000000bb")), RECEIPT, SENT),
    (logged(), pb.Receipt(claim_id=CLAIM, state=pb.CLAIM_STATE_ACCEPTED, log_index=3), SENT),
    (pb.LogInclusion(index=2, entry=entry(), path=[bytes(32)] * 2), RECEIPT, SENT),
    (pb.LogInclusion(index=2, entry=b"\xff not a LogEntry"), RECEIPT, SENT),
], ids=["other bytes", "other state", "other claim", "other index", "forged path", "junk"])
def test_a_leaf_that_does_not_record_what_was_sent_or_is_not_proven_is_refused(
        inclusion: pb.LogInclusion, receipt: pb.Receipt, sent: bytes) -> None:
    with pytest.raises(ReceiptError):
        ClearingLink._check_logged(inclusion, receipt, sent, HEAD)


def test_a_head_not_signed_by_the_clearinghouse_is_refused() -> None:
    forged = note_of(LEAVES, SigningKey(bytes(32)))
    with pytest.raises(transparency.LogError, match="not signed by the clearinghouse"):
        transparency.check_head(forged, public_key(CH))


def test_a_head_must_extend_the_last_one_verified() -> None:
    old = head_of(LEAVES[:2])
    proof = merkle.consistency_proof(LEAVES, 2)
    transparency.check_extends(old, HEAD, proof)
    other = head_of([b"admission", b"rewritten", entry(), b"later"])
    with pytest.raises(transparency.LogError, match="not consistent"):
        transparency.check_extends(old, other, merkle.consistency_proof(LEAVES, 2))
    with pytest.raises(transparency.LogError, match="shrank"):
        transparency.check_extends(HEAD, old, [])
    with pytest.raises(transparency.LogError, match="forked"):
        transparency.check_extends(head_of(LEAVES[:2]), head_of([b"x", b"y"]), [])
