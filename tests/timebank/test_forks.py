"""Split views of the log (``timebank.forks``) on their own: real Ed25519 keys, real RFC
9162 trees, real C2SP notes. Two histories signed by one key are told apart by every
kind of evidence, consistent heads never are, and the evidence re-checks from its JSON
with the clearinghouse's public key alone; whatever was edited in it is refused."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from timebank import checkpoint as notes
from timebank import forks, merkle, transparency
from timebank.forks import EvidenceError, Kind, Strength
from timebank.keys import public_key
from timebank.transparency import LogError

CH = SigningKey(hashlib.sha256(b"clearinghouse (forks)").digest())
CH_PUBLIC = public_key(CH)
ORIGIN = transparency.clearinghouse_origin(CH_PUBLIC)
OTHER_CH = SigningKey(hashlib.sha256(b"another city's clearinghouse").digest())
WITNESS = SigningKey(hashlib.sha256(b"district 320115").digest())

COMMON = [f"leaf {i}".encode() for i in range(40)]
A = [*COMMON, *(f"history A {i}".encode() for i in range(40))]
B = [*COMMON, *(f"history B {i}".encode() for i in range(40))]


def note(leaves: list[bytes], key: SigningKey = CH, *, cosigned: bool = False) -> str:
    origin = transparency.clearinghouse_origin(public_key(key))
    body = notes.Checkpoint(origin, len(leaves), merkle.root(leaves),
                            (transparency.districts_line(3),)).body()
    signed = notes.sign_note(body, origin, key)
    if cosigned:
        line = notes.cosign(body, transparency.witness_name("320115"), WITNESS, 1_700_000_000)
        signed = notes.add_signatures(signed, line)
    return signed


def proof(leaves: list[bytes], old: int, new: int) -> list[bytes]:
    return merkle.consistency_proof(leaves[:new], old)


# ------------------------------------------------------------ one history

@pytest.mark.parametrize(("old", "new"), [(1, 2), (7, 40), (32, 80), (40, 41), (5, 5)])
def test_heads_of_one_history_are_consistent(old: int, new: int) -> None:
    assert forks.compare(CH_PUBLIC, note(A[:old]), note(A[:new]), proof(A, old, new)) is None
    # in either order, and whatever cosignatures the notes carry
    assert forks.compare(CH_PUBLIC, note(A[:new], cosigned=True), note(A[:old]),
                         proof(A, old, new)) is None


def test_a_note_not_signed_by_the_clearinghouse_is_no_fork_but_refused() -> None:
    with pytest.raises(LogError, match="not signed by the clearinghouse"):
        forks.compare(CH_PUBLIC, note(A[:50], OTHER_CH), note(B[:50]))


# ------------------------------------------------------------ the three kinds

def test_two_roots_at_one_size_are_conclusive() -> None:
    evidence = forks.compare(CH_PUBLIC, note(A[:50]), note(B[:50]), None,
                             seen=("node 320115 (verified)", "node 320106 (final)"))
    assert evidence is not None and evidence.kind is Kind.SAME_SIZE
    assert evidence.strength is Strength.CONCLUSIVE and evidence.conclusive
    assert {h.root for h in evidence.heads} == {merkle.root(A[:50]), merkle.root(B[:50])}
    assert "two different tree heads of 50 leaves" in evidence.summary()


@pytest.mark.parametrize(("old", "new"), [(45, 70), (41, 42), (50, 80), (63, 65)])
def test_a_path_of_the_larger_tree_proves_its_prefix_is_another_tree(old: int,
                                                                     new: int) -> None:
    """B's smaller head, and A's path from that size to A's larger head: the path
    reproduces A's root and folds to A's own prefix root, which is not B's."""
    evidence = forks.compare(CH_PUBLIC, note(B[:old]), note(A[:new]), proof(A, old, new))
    assert evidence is not None and evidence.kind is Kind.PREFIX and evidence.conclusive
    assert evidence.prefix_root == merkle.root(A[:old])
    assert [h.size for h in evidence.heads] == [old, new]


def test_from_a_power_of_two_size_the_prefix_root_comes_from_an_inclusion_path() -> None:
    """A consistency path from 64 leaves does not carry the root of those 64; the
    inclusion path of leaf 64 does, and only a true one is taken."""
    old, new = 64, 80
    path = proof(A, old, new)
    weak = forks.compare(CH_PUBLIC, note(B[:old]), note(A[:new]), path)
    assert weak is not None and weak.kind is Kind.UNPROVEN
    hint = forks.prefix_root_from_inclusion(old, new, merkle.inclusion_proof(A[:new], old))
    assert hint == merkle.root(A[:old])
    strong = forks.compare(CH_PUBLIC, note(B[:old]), note(A[:new]), path, prefix_root=hint)
    assert strong is not None and strong.kind is Kind.PREFIX
    # a made-up prefix root does not pass: the path must reproduce A's root with it
    fake = forks.compare(CH_PUBLIC, note(B[:old]), note(A[:new]), path,
                         prefix_root=b"\x07" * 32)
    assert fake is not None and fake.kind is Kind.UNPROVEN
    assert forks.prefix_root_from_inclusion(63, 80, merkle.inclusion_proof(A[:80], 63)) is None


def test_no_proof_or_a_bad_one_is_only_refutable() -> None:
    # the larger head is B's; the log asked (A) cannot prove anything about it
    absent = forks.compare(CH_PUBLIC, note(A[:45]), note(B[:70]), None)
    assert absent is not None and absent.kind is Kind.UNPROVEN
    assert absent.strength is Strength.REFUTABLE and not absent.conclusive
    assert "gave none" in absent.summary()
    # a path for another pair of sizes proves nothing either way
    junk = forks.compare(CH_PUBLIC, note(A[:45]), note(B[:70]), proof(A, 44, 70))
    assert junk is not None and junk.kind is Kind.UNPROVEN
    assert "does not verify" in junk.summary()


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 80), st.integers(1, 80), st.booleans())
def test_any_two_heads_of_two_histories_after_the_fork_are_told_apart(
        old: int, new: int, swap: bool) -> None:
    old, new = min(old, new), max(old, new)
    small, large = (A, B) if swap else (B, A)
    evidence = forks.compare(CH_PUBLIC, note(small[:old]), note(large[:new]),
                             proof(large, old, new))
    if old <= len(COMMON):  # the smaller head is of the common history
        assert evidence is None
        return
    assert evidence is not None
    if old == new:
        assert evidence.kind is Kind.SAME_SIZE
    elif old & (old - 1):
        assert evidence.kind is Kind.PREFIX
    else:  # 64: the path does not carry the prefix root, and no hint was given
        assert evidence.kind is Kind.UNPROVEN
    assert forks.check(evidence.to_json(), CH_PUBLIC).kind is evidence.kind


# ------------------------------------------------------------ the document

def _evidence() -> forks.Evidence:
    found = forks.compare(CH_PUBLIC, note(B[:45], cosigned=True), note(A[:70]),
                          proof(A, 45, 70), seen=("node 320106 verified", "log at :7400"))
    assert found is not None
    return found


def test_evidence_round_trips_through_json_and_checks_with_the_key_alone() -> None:
    evidence = _evidence()
    text = evidence.dumps(found_at=1_700_000_000)
    doc = json.loads(text)
    assert doc["format"] == forks.FORMAT and doc["kind"] == "prefix"
    assert doc["strength"] == "conclusive"
    assert [h["size"] for h in doc["heads"]] == [45, 70]
    assert doc["heads"][0]["seen"] == "node 320106 verified"
    checked = forks.check(forks.load(text), CH_PUBLIC)
    assert checked.kind is Kind.PREFIX and checked.id == evidence.id
    # the id names the fork: the same two heads without cosignatures give the same id
    bare = forks.compare(CH_PUBLIC, note(B[:45]), note(A[:70]), proof(A, 45, 70))
    assert bare is not None and bare.id == evidence.id


def _edited(change: Any) -> dict[str, Any]:
    doc = _evidence().to_json()
    change(doc)
    return doc


@pytest.mark.parametrize(("change", "match"), [
    (lambda d: d.update(format="x"), "format"),
    (lambda d: d.update(kind="same-size"), "says same-size"),
    (lambda d: d.update(kind="nonsense"), "kind is not one of"),
    (lambda d: d["heads"].pop(), "two heads"),
    (lambda d: d["heads"][1].update(note=note(B[:70])), "proves|says prefix"),
    (lambda d: d["heads"][1].update(note=note(A[:70], OTHER_CH)), "not the clearinghouse"),
    (lambda d: d["heads"][0].update(note=note(A[:45])), "consistent"),
    (lambda d: d["consistency"]["path"].__setitem__(0, "AAAA"), "32-byte hash"),
    (lambda d: d["consistency"].update(path=["!"]), "not base64"),
    (lambda d: d["consistency"].update(path=[d["consistency"]["path"][0]] * 200),
     "at most"),
    (lambda d: d.update(consistency=None), "says prefix"),
])
def test_edited_evidence_is_refused(change: Any, match: str) -> None:
    with pytest.raises(EvidenceError, match=match):
        forks.check(_edited(change), CH_PUBLIC)


def test_evidence_under_another_key_is_refused() -> None:
    with pytest.raises(EvidenceError, match="not the clearinghouse"):
        forks.check(_evidence().to_json(), public_key(OTHER_CH))


@pytest.mark.parametrize("raw", [b"\xff", b"[1, 2", b"{" * 100_000, b" " * (1 << 20)])
def test_junk_is_not_evidence(raw: bytes) -> None:
    with pytest.raises(EvidenceError):
        forks.check(forks.load(raw), CH_PUBLIC)


def test_consistency_old_root_is_the_prefix_root_only_for_a_path_that_reproduces() -> None:
    for old in (3, 5, 6, 7, 9, 33, 45):
        path = proof(A, old, 80)
        assert merkle.consistency_old_root(old, 80, merkle.root(A), path) == merkle.root(A[:old])
        assert merkle.consistency_old_root(old, 80, merkle.root(B), path) is None
    assert merkle.consistency_old_root(8, 80, merkle.root(A), proof(A, 8, 80)) is None
    assert merkle.consistency_old_root(0, 80, merkle.root(A), []) == merkle.EMPTY_ROOT
    assert merkle.consistency_old_root(5, 5, merkle.root(A), []) is None
    assert merkle.consistency_old_root(5, 80, merkle.root(A), ["x"]) is None  # type: ignore[list-item]
