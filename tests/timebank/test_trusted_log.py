"""The checks every reader of the log makes (``timebank.trusted_log``), on their own: real
Ed25519 keys, real RFC 9162 trees built with ``timebank.merkle``, real C2SP notes. A
head is accepted only if the clearinghouse signed it for this log and it extends the
held head; a receipt only if it is the clearinghouse's, for the envelope sent (in
whatever encoding), recorded in its canonical encoding and proven in the held head;
every refusal changes nothing."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from tests.reencode import reencoded
from timebank import checkpoint as notes
from timebank import merkle, transparency
from timebank.envelope import CLEARINGHOUSE, encode, identity, sign
from timebank.keys import public_key
from timebank.transparency import LogError
from timebank.trusted_log import TrustedLog
from timebank.v1 import clearing_pb2 as pb

CH = SigningKey(hashlib.sha256(b"clearinghouse (trusted log)").digest())
CH_PUBLIC = public_key(CH)
ORIGIN = transparency.clearinghouse_origin(CH_PUBLIC)
STRANGER = SigningKey(hashlib.sha256(b"not the clearinghouse").digest())
NODE = SigningKey(hashlib.sha256(b"a district (trusted log)").digest())
SENT_ENVELOPE = sign("claim.decide", b"the body the node signed", "320115", NODE)
SENT = encode(SENT_ENVELOPE)
OTHER_SENT = encode(sign("claim.decide", b"another body", "320115", NODE))
CLAIM = "019a0000-0000-7000-8000-0000000000aa"


def entry(envelope: bytes = SENT, state: int = pb.CLAIM_STATE_ACCEPTED,
          claim_id: str = CLAIM) -> bytes:
    return pb.LogEntry(kind="claim", envelope=envelope, claim_id=claim_id,
                       state=state).SerializeToString(deterministic=True)


LEAVES = [b"admission 320115", b"limit 320115", entry(), b"registration", b"admission 320106",
          b"expiry", b"checkpoint", b"claim"]


def note(leaves: list[bytes], *, key: SigningKey = CH, origin: str = ORIGIN,
         name: str = ORIGIN) -> str:
    """A signed checkpoint of the tree over ``leaves``."""
    body = notes.Checkpoint(origin, len(leaves), merkle.root(leaves)).body()
    return notes.sign_note(body, name, key)


def holding(leaves: list[bytes]) -> TrustedLog:
    return TrustedLog(CH_PUBLIC, note(leaves))


def refused(view: TrustedLog, new_note: str, proof: list[bytes], match: str) -> None:
    with pytest.raises(LogError, match=match):
        view.accept(new_note, proof)


# ------------------------------------------------------------ signed heads

def test_the_first_head_is_trusted_on_first_use_and_later_ones_by_consistency() -> None:
    view = TrustedLog(CH_PUBLIC)
    assert view.head is None and view.size == 0 and view.origin == ORIGIN
    first = view.accept(note(LEAVES[:3]), [])
    assert first.size == 3 and first.head is not None
    assert first.head.root == merkle.root(LEAVES[:3])
    later = first.accept(note(LEAVES), merkle.consistency_proof(LEAVES, 3))
    assert later.size == len(LEAVES) and later.head is not None
    assert later.head.root == merkle.root(LEAVES)
    # the same head again, or another note of the same tree, changes nothing
    assert later.accept(note(LEAVES), []).head == later.head
    # views are values: accepting gave new ones and left the old as they were
    assert view.head is None and first.size == 3


def test_a_held_head_is_checked_again_when_read_back() -> None:
    stored = note(LEAVES[:4])
    assert TrustedLog(CH_PUBLIC, stored).size == 4
    tampered = stored.replace("\n4\n", "\n5\n")
    with pytest.raises(LogError, match="not signed by the clearinghouse"):
        TrustedLog(CH_PUBLIC, tampered)
    with pytest.raises(ValueError, match="32 bytes"):
        TrustedLog(CH_PUBLIC[:31])


def test_a_head_the_clearinghouse_did_not_sign_is_refused() -> None:
    view = holding(LEAVES[:3])
    proof = merkle.consistency_proof(LEAVES, 3)
    refused(view, note(LEAVES, key=STRANGER), proof, "not signed by the clearinghouse")
    # a stranger's head with the clearinghouse's key name and origin
    refused(TrustedLog(CH_PUBLIC), note(LEAVES, key=STRANGER), [], "not signed")
    # the clearinghouse's signature line on another note's text
    text = notes.SignedNote.parse(note(LEAVES)).text
    other = notes.SignedNote.parse(note(LEAVES[:5])).signatures
    spliced = notes.SignedNote(text, other).format()
    refused(view, spliced, proof, "not signed by the clearinghouse")
    assert view.size == 3


def test_a_head_for_another_log_is_refused() -> None:
    """Signed by the clearinghouse's key under its key name, but naming another log in
    its origin line (what a second city's log with a reused key would show)."""
    elsewhere = "timebank.clearinghouse/0000000000000000"
    refused(TrustedLog(CH_PUBLIC), note(LEAVES, origin=elsewhere), [],
            "is for log 'timebank.clearinghouse/0000000000000000'")
    # and signed under that other name: no signature this reader knows
    refused(TrustedLog(CH_PUBLIC), note(LEAVES, origin=elsewhere, name=elsewhere), [],
            "not signed by the clearinghouse")


def test_a_smaller_tree_than_the_held_one_is_refused() -> None:
    view = holding(LEAVES[:6])
    refused(view, note(LEAVES[:5]), [], "the log shrank: a head of 5 leaves after one of 6")
    assert view.size == 6


def test_another_root_at_the_held_size_is_a_fork() -> None:
    view = holding(LEAVES[:4])
    forked = [*LEAVES[:2], b"rewritten", LEAVES[3]]
    refused(view, note(forked), [], "two different heads of 4 leaves: the log was forked")


def test_a_larger_tree_without_a_proof_from_the_held_one_is_refused() -> None:
    view = holding(LEAVES[:3])
    rewritten = [LEAVES[0], b"rewritten", *LEAVES[2:]]
    # the rewritten tree's own honest proof does not reach the held root
    refused(view, note(rewritten), merkle.consistency_proof(rewritten, 3), "not consistent")
    # a proof for other sizes, a truncated one, none, junk
    for proof in (merkle.consistency_proof(LEAVES, 2), merkle.consistency_proof(LEAVES, 3)[:-1],
                  [], [bytes(32)] * 3, [b"short"]):
        refused(view, note(LEAVES), proof, "not consistent")
    assert view.head is not None and view.head.root == merkle.root(LEAVES[:3])


@settings(max_examples=60, deadline=None)
@given(st.integers(1, len(LEAVES)), st.integers(1, len(LEAVES)), st.integers(0, len(LEAVES) - 1))
def test_every_honest_growth_is_accepted_and_every_rewrite_of_held_leaves_refused(
        old: int, new: int, changed: int) -> None:
    old, new = min(old, new), max(old, new)
    view = holding(LEAVES[:old])
    grown = view.accept(note(LEAVES[:new]), merkle.consistency_proof(LEAVES[:new], old))
    assert grown.size == new
    if changed < old:
        rewritten = list(LEAVES[:new])
        rewritten[changed] = b"rewritten " + rewritten[changed]
        with pytest.raises(LogError):
            view.accept(note(rewritten), merkle.consistency_proof(rewritten, old))


# ------------------------------------------------------------ reconciling two heads

def test_two_heads_verified_along_different_paths_reconcile_to_the_larger() -> None:
    start = holding(LEAVES[:2])
    by_sender = start.accept(note(LEAVES[:5]), merkle.consistency_proof(LEAVES[:5], 2))
    by_witness = start.accept(note(LEAVES), merkle.consistency_proof(LEAVES, 2))
    proof = merkle.consistency_proof(LEAVES, 5)
    for one, other in ((by_sender, by_witness), (by_witness, by_sender)):
        merged = one.reconcile(other, proof)
        assert merged.head == by_witness.head
    assert by_sender.reconcile(by_sender, []).head == by_sender.head
    nothing = TrustedLog(CH_PUBLIC)
    assert nothing.reconcile(by_sender, []).head == by_sender.head
    assert by_sender.reconcile(nothing, []).head == by_sender.head


def test_two_heads_that_are_not_of_one_history_do_not_reconcile() -> None:
    forked = [*LEAVES[:3], b"another history", *LEAVES[4:]]
    one = TrustedLog(CH_PUBLIC).accept(note(LEAVES[:5]), [])
    other = TrustedLog(CH_PUBLIC).accept(note(forked), [])
    with pytest.raises(LogError, match="not consistent"):
        one.reconcile(other, merkle.consistency_proof(forked, 5))
    with pytest.raises(LogError, match="not consistent"):
        other.reconcile(one, merkle.consistency_proof(LEAVES[:5], 5))
    same_size = TrustedLog(CH_PUBLIC).accept(note(forked[:5]), [])
    with pytest.raises(LogError, match="forked"):
        one.reconcile(same_size, [])
    with pytest.raises(ValueError, match="two different logs"):
        one.reconcile(TrustedLog(public_key(STRANGER)), [])


# ------------------------------------------------------------ inclusion and receipts

def test_a_leaf_is_proven_only_in_the_held_head() -> None:
    view = holding(LEAVES)
    for index, leaf in enumerate(LEAVES):
        view.check_included(leaf, index, merkle.inclusion_proof(LEAVES, index))
    with pytest.raises(LogError, match="log leaf 2 is not proven in the head of 8 leaves"):
        view.check_included(b"other bytes", 2, merkle.inclusion_proof(LEAVES, 2))
    with pytest.raises(LogError, match="not proven"):
        view.check_included(LEAVES[2], 3, merkle.inclusion_proof(LEAVES, 2))
    with pytest.raises(LogError, match="not proven"):  # proven in another tree only
        view.check_included(LEAVES[2], 2, merkle.inclusion_proof(LEAVES[:5], 2))
    with pytest.raises(LogError, match="no tree head is held"):
        TrustedLog(CH_PUBLIC).check_included(LEAVES[0], 0, [])


RECEIPT = pb.Receipt(envelope_sha256=identity(SENT_ENVELOPE), claim_id=CLAIM,
                     state=pb.CLAIM_STATE_ACCEPTED, log_index=2)


def sealed(receipt: pb.Receipt = RECEIPT, *, key: SigningKey = CH,
           kind: str = "receipt") -> bytes:
    e = sign(kind, receipt.SerializeToString(deterministic=True), CLEARINGHOUSE, key)
    return pb.Envelope(kind=e.kind, body=e.body, signer=e.signer, key_id=e.key_id,
                       signature=e.signature).SerializeToString()


def logged(index: int = 2, data: bytes | None = None) -> pb.LogInclusion:
    return pb.LogInclusion(index=index, entry=LEAVES[index] if data is None else data,
                           path=merkle.inclusion_proof(LEAVES, index))


def test_a_receipt_for_what_was_sent_proven_in_the_held_head_is_taken() -> None:
    assert holding(LEAVES).check_receipt(sealed(), SENT, logged()) == RECEIPT


def test_a_receipt_is_for_the_envelope_however_it_was_encoded() -> None:
    rng = random.Random(13)
    for _ in range(20):
        other_encoding = reencoded(SENT, rng)
        assert holding(LEAVES).check_receipt(sealed(), other_encoding, logged()) == RECEIPT


@pytest.mark.parametrize("receipt, sent, inclusion, match", [
    (sealed(key=STRANGER), SENT, logged(), "receipt does not verify"),
    (sealed(kind="deliveries"), SENT, logged(), "expected a receipt"),
    (b"\xff junk", SENT, logged(), "receipt does not verify"),
    (sealed(), OTHER_SENT, logged(), "another envelope than the one sent"),
    (sealed(pb.Receipt(envelope_sha256=hashlib.sha256(SENT).digest(), claim_id=CLAIM,
                       state=pb.CLAIM_STATE_ACCEPTED, log_index=2)), SENT, logged(),
     "another envelope than the one sent"),
    (sealed(), SENT, logged(data=entry(state=pb.CLAIM_STATE_REJECTED)), "does not record"),
    (sealed(), SENT, logged(data=entry(claim_id="019a0000-0000-7000-8000-0000000000bb")),
     "does not record"),
    (sealed(), SENT, logged(data=entry(envelope=OTHER_SENT)), "does not record"),
    (sealed(), SENT, logged(data=entry(envelope=reencoded(SENT, random.Random(1)))),
     "does not record"),
    (sealed(pb.Receipt(envelope_sha256=identity(SENT_ENVELOPE), claim_id=CLAIM,
                       state=pb.CLAIM_STATE_ACCEPTED, log_index=3)), SENT, logged(),
     "does not record"),
    (sealed(), SENT, pb.LogInclusion(index=2, entry=entry(), path=[bytes(32)] * 3),
     "not proven"),
    (sealed(), SENT, pb.LogInclusion(index=2, entry=b"\xff not a LogEntry"), "not a LogEntry"),
], ids=["other key", "other kind", "junk", "other envelope", "digest of the bytes",
        "other state", "other claim", "leaf of another envelope", "leaf not canonical",
        "other index", "forged path", "leaf junk"])
def test_a_receipt_that_is_not_the_clearinghouses_for_what_was_sent_is_refused(
        receipt: bytes, sent: bytes, inclusion: pb.LogInclusion, match: str) -> None:
    with pytest.raises(LogError, match=match):
        holding(LEAVES).check_receipt(receipt, sent, inclusion)


def test_a_receipt_proven_in_a_head_not_yet_accepted_is_refused() -> None:
    """The leaf is in the clearinghouse's latest tree, but this reader holds an older
    head: the receipt waits for the head that proves it."""
    with pytest.raises(LogError, match="not proven in the head of 2 leaves"):
        holding(LEAVES[:2]).check_receipt(sealed(), SENT, logged())
