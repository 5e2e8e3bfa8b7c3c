"""RFC 9162 Merkle trees: roots and proofs against a naive reference written from the RFC's
recursive definitions, published Certificate Transparency vectors, verifiers that refuse
every forgery and all junk without raising, and the range functions a log stores by."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import cache
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from timebank import merkle

MAX = 64
LEAVES = tuple(f"leaf {i}".encode() * (i % 3) + bytes([i]) for i in range(MAX))
OTHER = b"\xab" * 32


# -- the reference: RFC 9162 §2.1.1, §2.1.3.1 and §2.1.4.1 as written, nothing shared --------


def _sha(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def _k(n: int) -> int:
    """The largest power of two smaller than n, found by counting up as the RFC says it."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


@cache
def ref_mth(d: tuple[bytes, ...]) -> bytes:
    if not d:
        return _sha(b"")
    if len(d) == 1:
        return _sha(b"\x00" + d[0])
    k = _k(len(d))
    return _sha(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def ref_path(m: int, d: tuple[bytes, ...]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: tuple[bytes, ...], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = _k(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def ref_proof(m: int, d: tuple[bytes, ...]) -> list[bytes]:
    return [] if m in (0, len(d)) else ref_subproof(m, d, True)


# -- a log that stores only perfect subtree hashes, appended through completed_ranges --------


class PerfectStore:
    def __init__(self) -> None:
        self.size = 0
        self.hashes: dict[tuple[int, int], bytes] = {}
        self.fetches = 0

    def append(self, data: bytes) -> None:
        for s, e in merkle.completed_ranges(self.size):
            if e - s == 1:
                self.hashes[s, e] = merkle.leaf_hash(data)
            else:
                mid = (s + e) // 2
                self.hashes[s, e] = merkle.node_hash(self.hashes[s, mid], self.hashes[mid, e])
        self.size += 1

    def get(self, start: int, end: int) -> bytes:
        self.fetches += 1
        return self.hashes[start, end]  # KeyError: asked for a subtree that is not stored


def _cost_bound(n: int) -> int:
    return 2 * n.bit_length() + 1


# -- the reference, for every size, index and old size ----------------------------------------


def test_reference_agrees_with_itself_on_the_published_root() -> None:
    """Guards the reference: a wrong reference would make every comparison below vacuous."""
    assert ref_mth(CT_LEAVES).hex() == CT_ROOTS[8]


def test_roots_and_proofs_match_the_reference_for_every_size_index_and_old_size() -> None:
    store = PerfectStore()
    for n in range(1, MAX + 1):
        d = LEAVES[:n]
        store.append(d[-1])
        want_root = ref_mth(d)
        assert merkle.root(d) == want_root, n
        assert merkle.hash_of_range(store.get, 0, n) == want_root, n
        assert merkle.root(list(d)) == want_root  # any Sequence
        for i in range(n):
            want = ref_path(i, d)
            assert merkle.inclusion_proof(d, i) == want, (i, n)
            store.fetches = 0
            via_store = [
                merkle.hash_of_range(store.get, s, e) for s, e in merkle.inclusion_path_ranges(i, n)
            ]
            assert via_store == want, (i, n)
            assert store.fetches <= _cost_bound(n), (i, n, store.fetches)
            assert merkle.verify_inclusion(d[i], i, n, want, want_root), (i, n)
        for m in range(0, n + 1):
            want = ref_proof(m, d)
            assert merkle.consistency_proof(d, m) == want, (m, n)
            store.fetches = 0
            via_store = [
                merkle.hash_of_range(store.get, s, e)
                for s, e in merkle.consistency_path_ranges(m, n)
            ]
            assert via_store == want, (m, n)
            assert store.fetches <= _cost_bound(n), (m, n, store.fetches)
            assert merkle.verify_consistency(m, n, ref_mth(d[:m]), want_root, want), (m, n)


def test_empty_tree() -> None:
    assert merkle.root([]) == merkle.EMPTY_ROOT == _sha(b"")
    assert merkle.root_ranges(0) == []
    assert merkle.hash_of_range(PerfectStore().get, 0, 0) == merkle.EMPTY_ROOT
    assert merkle.consistency_proof([], 0) == []
    assert merkle.verify_consistency(0, 0, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, [])
    assert merkle.verify_consistency(0, 3, merkle.EMPTY_ROOT, ref_mth(LEAVES[:3]), [])
    assert not merkle.verify_consistency(0, 3, OTHER, ref_mth(LEAVES[:3]), [])
    assert not merkle.verify_consistency(0, 0, merkle.EMPTY_ROOT, OTHER, [])
    assert not merkle.verify_consistency(0, 3, merkle.EMPTY_ROOT, OTHER, [OTHER])


def test_equal_sizes_need_equal_roots_and_an_empty_proof() -> None:
    r5, r6 = ref_mth(LEAVES[:5]), ref_mth(LEAVES[:6])
    assert merkle.verify_consistency(5, 5, r5, r5, [])
    assert merkle.verify_consistency(5, 5, r5, r5, ())
    assert not merkle.verify_consistency(5, 5, r5, r6, [])
    assert not merkle.verify_consistency(5, 5, r5, r5, [r5])
    assert not merkle.verify_consistency(5, 5, r5, r5, [r5, r5])


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    assert merkle.leaf_hash(b"x") == _sha(b"\x00x")
    assert merkle.node_hash(b"a" * 32, b"b" * 32) == _sha(b"\x01" + b"a" * 32 + b"b" * 32)
    assert merkle.root([b"x"]) == merkle.leaf_hash(b"x") != _sha(b"x")


# -- published vectors ---------------------------------------------------------------------------
# From transparency-dev/merkle proof/verify_test.go (the same data as google/certificate-
# transparency's merkle tree tests). Their leaf numbers are 1-based; ours are 0-based.

CT_LEAVES = tuple(
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
)
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = [  # (0-based index, tree size, proof)
    (0, 8, [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]),
    (5, 8, [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ]),
    (0, 1, []),
]  # fmt: skip
CT_CONSISTENCY = [  # (old size, new size, proof)
    (1, 1, []),
    (1, 8, [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]),
    (6, 8, [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ]),
    (2, 5, [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ]),
    (6, 7, [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ]),
]  # fmt: skip


def test_published_roots() -> None:
    for n, want in enumerate(CT_ROOTS):
        assert merkle.root(CT_LEAVES[:n]).hex() == want, n
    empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert merkle.root([]).hex() == empty
    assert merkle.root(CT_LEAVES).hex() == (
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    )


@pytest.mark.parametrize(("index", "size", "proof"), CT_INCLUSION)
def test_published_inclusion_proofs(index: int, size: int, proof: list[str]) -> None:
    want = [bytes.fromhex(h) for h in proof]
    assert merkle.inclusion_proof(CT_LEAVES[:size], index) == want
    root = bytes.fromhex(CT_ROOTS[size])
    assert merkle.verify_inclusion(CT_LEAVES[index], index, size, want, root)


@pytest.mark.parametrize(("old", "new", "proof"), CT_CONSISTENCY)
def test_published_consistency_proofs(old: int, new: int, proof: list[str]) -> None:
    want = [bytes.fromhex(h) for h in proof]
    assert merkle.consistency_proof(CT_LEAVES[:new], old) == want
    old_root, new_root = bytes.fromhex(CT_ROOTS[old]), bytes.fromhex(CT_ROOTS[new])
    assert merkle.verify_consistency(old, new, old_root, new_root, want)


# -- forgeries ------------------------------------------------------------------------------------


def _flips(proof: list[bytes]) -> list[list[bytes]]:
    """The proof with one byte flipped, for every element and a few byte positions."""
    out = []
    for i, h in enumerate(proof):
        for pos in (0, 17, 31):
            bad = bytearray(h)
            bad[pos] ^= 0x01
            out.append([*proof[:i], bytes(bad), *proof[i + 1 :]])
    return out


def _structural(proof: list[bytes], good: bytes) -> list[list[Any]]:
    """Truncated, extended, reordered, wrong-length and non-bytes variants of a proof."""
    out: list[list[Any]] = [[*proof, OTHER], [OTHER, *proof], [*proof, good], [good, *proof]]
    if proof:
        out += [proof[:-1], proof[1:], [*proof[:-1], proof[-1][:31]], [*proof, proof[-1]]]
        out += [[*proof[:-1], proof[-1] + b"\x00"], [*proof[:-1], bytearray(proof[-1])]]
        out += [[*proof[:-1], proof[-1].hex()], [*proof[:-1], None], [*proof[:-1], 7]]
    if len(proof) > 1:
        out += [[proof[1], proof[0], *proof[2:]], [proof[0], OTHER, *proof[1:]]]
    return out


def _shape(index: int, size: int) -> list[bool]:
    """Which side each sibling of the audit path is on: all that a verifier checks a size by."""
    return [s < index for s, _ in merkle.inclusion_path_ranges(index, size)]


def _consistency_shape(old: int, new: int) -> tuple[bool, list[bool]] | None:
    """Whether the old root leads the proof, and which side of the old tree each other node
    is on: all that a verifier checks sizes by. None for sizes with nothing to prove."""
    if not 0 < old < new:
        return None
    ranges = merkle.consistency_path_ranges(old, new)
    leads = old & (old - 1) == 0
    return leads, [s < old for s, _ in (ranges if leads else ranges[1:])]


def test_inclusion_verifier_refuses_every_forgery() -> None:
    for n in range(1, MAX + 1):
        d = LEAVES[:n]
        good_root = ref_mth(d)
        for i in range(n):
            proof = ref_path(i, d)
            v = merkle.verify_inclusion
            for bad in _flips(proof) + _structural(proof, good_root):
                assert v(d[i], i, n, bad, good_root) is False, (i, n, bad)
            for wrong_root in (OTHER, ref_mth(d[: n - 1]), good_root[:31], good_root + b"\x00"):
                assert v(d[i], i, n, proof, wrong_root) is False, (i, n)
            assert v(d[i], i, n, proof, cast(bytes, bytearray(good_root))) is False
            assert v(d[i] + b"!", i, n, proof, good_root) is False
            for j in (i - 1, i + 1, i ^ 2, -1, n):
                if j != i:
                    assert v(d[i], j, n, proof, good_root) is False, (i, j, n)
            # An audit path commits to the size only through its shape: a size with the same
            # shape (e.g. index 0 of 5 and of 6) accepts the same path, every other refuses.
            for m in {n - 1, n + 1, 2 * n, n // 2, i, 0, -n}:
                if m != n:
                    same_shape = 0 <= i < m and _shape(i, m) == _shape(i, n)
                    assert v(d[i], i, m, proof, good_root) is same_shape, (i, n, m)


def test_consistency_verifier_refuses_every_forgery() -> None:
    v = merkle.verify_consistency
    for n in range(2, MAX + 1):
        d = LEAVES[:n]
        new_root = ref_mth(d)
        for m in range(1, n):
            old_root = ref_mth(d[:m])
            proof = ref_proof(m, d)
            for bad in _flips(proof) + _structural(proof, old_root) + [[]]:
                assert v(m, n, old_root, new_root, bad) is False, (m, n, bad)
            wrong_roots: list[tuple[Any, Any]] = [
                (OTHER, new_root),
                (old_root, OTHER),
                (new_root, old_root),
                (old_root[:31], new_root),
                (old_root, new_root + b"\x00"),
                (bytearray(old_root), new_root),
                (old_root, new_root.hex()),
            ]
            for r1, r2 in wrong_roots:
                assert v(m, n, r1, r2, proof) is False, (m, n)
            # Like an audit path, a consistency proof commits to the sizes only through its
            # shape (1 -> 3 and 1 -> 4 are alike); sizes of another shape are all refused.
            for m2, n2 in [(m - 1, n), (m + 1, n), (m ^ 2, n), (m, n - 1), (m, n + 1),
                           (m, 2 * n), (m, n // 2), (n, m), (-m, n), (m, -n)]:  # fmt: skip
                if (m2, n2) != (m, n):
                    same_shape = _consistency_shape(m2, n2) == _consistency_shape(m, n)
                    got = v(m2, n2, old_root, new_root, proof)
                    assert got is same_shape, (m, n, m2, n2)


# -- junk never raises -----------------------------------------------------------------------------

_junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.builds(bytearray, st.binary(max_size=40)),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=3),
    st.lists(st.integers(), max_size=3),
)
_hashlike = st.one_of(
    st.binary(min_size=32, max_size=32),
    st.sampled_from([merkle.EMPTY_ROOT, OTHER, bytes.fromhex(CT_ROOTS[3])]),
    st.binary(max_size=40),
    _junk,
)
_size = st.one_of(st.integers(min_value=-3, max_value=70), st.integers(), _junk)
_proof = st.one_of(
    st.lists(_hashlike, max_size=10),
    st.tuples(_hashlike, _hashlike),
    _junk,
)


@settings(max_examples=400, deadline=None)
@given(data=st.one_of(st.binary(max_size=20), _junk), index=_size, size=_size,
       proof=_proof, root=_hashlike)  # fmt: skip
def test_inclusion_verifier_returns_false_on_junk(
    data: Any, index: Any, size: Any, proof: Any, root: Any
) -> None:
    assert merkle.verify_inclusion(data, index, size, proof, root) is False


@settings(max_examples=400, deadline=None)
@given(old=_size, new=_size, old_root=_hashlike, new_root=_hashlike, proof=_proof)
def test_consistency_verifier_returns_false_on_junk(
    old: Any, new: Any, old_root: Any, new_root: Any, proof: Any
) -> None:
    got = merkle.verify_consistency(old, new, old_root, new_root, proof)
    # The only inputs junk can get right are the ones with nothing to prove.
    trivially_true = (
        type(old) is int
        and type(new) is int
        and isinstance(proof, list | tuple)
        and len(proof) == 0
        and isinstance(old_root, bytes)
        and isinstance(new_root, bytes)
        and len(old_root) == len(new_root) == 32
        and (
            (0 < old == new and old_root == new_root)
            or (old == 0 < new and old_root == merkle.EMPTY_ROOT)
            or (old == new == 0 and old_root == new_root == merkle.EMPTY_ROOT)
        )
    )
    assert got is trivially_true


# -- builders refuse what is out of range ------------------------------------------------------


@pytest.mark.parametrize("index", [-1, 5, 6, 100])
def test_inclusion_proof_refuses_an_index_outside_the_tree(index: int) -> None:
    with pytest.raises(ValueError, match="not in a tree of size 5"):
        merkle.inclusion_proof(LEAVES[:5], index)


def test_inclusion_proof_of_an_empty_tree_is_refused() -> None:
    with pytest.raises(ValueError, match="not in a tree of size 0"):
        merkle.inclusion_proof([], 0)


@pytest.mark.parametrize("old", [-1, 6, 100])
def test_consistency_proof_refuses_an_old_size_outside_the_tree(old: int) -> None:
    with pytest.raises(ValueError, match="old size"):
        merkle.consistency_proof(LEAVES[:5], old)


@pytest.mark.parametrize(
    "call",
    [
        lambda: merkle.inclusion_path_ranges(True, 2),
        lambda: merkle.consistency_path_ranges(1, cast(int, 1.5)),
        lambda: merkle.perfect_ranges(3, 5),  # a piece of 2 leaves starting at 3: unaligned
        lambda: merkle.perfect_ranges(4, 3),
        lambda: merkle.completed_ranges(-1),
    ],
)
def test_range_functions_refuse_bad_ranges(call: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        call()


# -- ranges: O(log n) stored hashes, at sizes no test could build -------------------------------


def _is_perfect(s: int, e: int) -> bool:
    w = e - s
    return w > 0 and w & (w - 1) == 0 and s % w == 0


def test_range_examples() -> None:
    assert merkle.root_ranges(13) == [(0, 8), (8, 12), (12, 13)]
    assert merkle.perfect_ranges(8, 13) == [(8, 12), (12, 13)]
    assert merkle.completed_ranges(0) == [(0, 1)]
    assert merkle.completed_ranges(6) == [(6, 7)]
    assert merkle.completed_ranges(7) == [(7, 8), (6, 8), (4, 8), (0, 8)]
    assert merkle.inclusion_path_ranges(5, 7) == [(4, 5), (6, 7), (0, 4)]
    assert merkle.consistency_path_ranges(6, 8) == [(4, 6), (6, 8), (0, 4)]
    assert merkle.consistency_path_ranges(4, 8) == [(4, 8)]


@settings(max_examples=300, deadline=None)
@given(size=st.integers(min_value=1, max_value=2**48), data=st.data())
def test_proofs_at_any_size_fetch_only_log_n_perfect_subtrees(size: int, data: Any) -> None:
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    old = data.draw(st.integers(min_value=0, max_value=size))
    fetched: list[tuple[int, int]] = []

    def get(s: int, e: int) -> bytes:
        assert _is_perfect(s, e) and e <= size, (s, e)
        fetched.append((s, e))
        return _sha(f"{s},{e}".encode())

    for ranges in (
        merkle.root_ranges(size),
        merkle.inclusion_path_ranges(index, size),
        merkle.consistency_path_ranges(old, size),
    ):
        assert len(ranges) <= size.bit_length() + 1
        fetched.clear()
        for s, e in ranges:
            assert 0 <= s < e <= size
            merkle.hash_of_range(get, s, e)
        assert len(fetched) <= _cost_bound(size)
    # Only the rightmost node of a proof can be ragged; every other one is stored as it is.
    for ranges in (
        merkle.inclusion_path_ranges(index, size),
        merkle.consistency_path_ranges(old, size),
    ):
        ragged = [r for r in ranges if not _is_perfect(*r)]
        assert all(e == size for _, e in ragged) and len(ragged) <= 1
    assert len(merkle.completed_ranges(index)) <= size.bit_length()
