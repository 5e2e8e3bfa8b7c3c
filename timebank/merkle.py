"""Merkle tree hashing of RFC 9162 (Certificate Transparency v2), §2.1.1–§2.1.4.

Two layers. The leaf-based functions (`root`, `inclusion_proof`, `consistency_proof`) take the
raw leaf data and are what a test or a small in-memory log wants. Underneath them, the
*range* functions say which subtrees a root or a proof is made of, as [start, end) leaf
ranges, so a log that stores the hash of every perfect aligned subtree (size 2^k starting
at a multiple of 2^k) can append, compute roots and build proofs by fetching O(log n)
stored hashes instead of reading the whole tree. The leaf-based functions are built on the
range functions, so both layers are one implementation.

The verifiers (`verify_inclusion`, `verify_consistency`) follow the RFC's iterative
algorithms and return False, never raise, on any malformed input: what they check comes
from the other side of a trust boundary.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "completed_ranges",
    "consistency_old_root",
    "consistency_path_ranges",
    "consistency_proof",
    "hash_of_range",
    "inclusion_path_ranges",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "perfect_ranges",
    "root",
    "root_ranges",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
"""MTH({}): the root of the empty tree."""

Range = tuple[int, int]


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 ‖ data): the prefix keeps a leaf from passing for an interior node."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 ‖ left ‖ right): an interior node, domain-separated from leaves."""
    return hashlib.sha256(b"\x01" + left + right).digest()


# -- ranges ---------------------------------------------------------------------------------


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1): where the RFC splits a tree of n."""
    return 1 << ((n - 1).bit_length() - 1)


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def perfect_ranges(start: int, end: int) -> list[Range]:
    """The perfect aligned subtrees that make up the tree node [start, end), left to right.

    Their hashes folded right to left with `node_hash` give MTH(D[start:end]), because the
    RFC splits a node at the largest power of two below its size. Only ranges that are
    nodes of some tree (their largest piece aligned) can be built from stored perfect
    subtrees, so any other range is a ValueError.
    """
    if not (_is_int(start) and _is_int(end)) or start < 0 or end < start:
        raise ValueError(f"not a leaf range: [{start}, {end})")
    out: list[Range] = []
    if end == start:
        return out
    if start % (1 << ((end - start).bit_length() - 1)):
        raise ValueError(f"[{start}, {end}) is not a node of a Merkle tree (unaligned)")
    pos = start
    for bit in reversed(range((end - start).bit_length())):
        if (end - start) >> bit & 1:
            out.append((pos, pos + (1 << bit)))
            pos += 1 << bit
    return out


def root_ranges(size: int) -> list[Range]:
    """The perfect subtrees whose hashes, folded right to left, are the root of `size` leaves."""
    return perfect_ranges(0, size)


def completed_ranges(index: int) -> list[Range]:
    """The perfect subtrees that appending leaf `index` completes, smallest first.

    A log appending leaf `index` stores the leaf hash, then each larger one as the
    `node_hash` of its two halves, both already stored: O(log n) hashes per append.
    """
    if not _is_int(index) or index < 0:
        raise ValueError(f"leaf index must be a non-negative int, got {index!r}")
    end = index + 1
    out: list[Range] = []
    width = 1
    while end % width == 0:
        out.append((end - width, end))
        width <<= 1
    return out


def inclusion_path_ranges(index: int, size: int) -> list[Range]:
    """The nodes whose hashes form PATH(index, D[0:size]) (§2.1.3.1), in proof order.

    Each is a sibling on the way from the root down to the leaf; a sibling is on the
    left of the path exactly when its start is below `index`.
    """
    if not (_is_int(index) and _is_int(size)) or not 0 <= index < size:
        raise ValueError(f"leaf index {index!r} is not in a tree of size {size!r}")
    out: list[Range] = []
    start, end = 0, size
    while end - start > 1:
        mid = start + _split(end - start)
        if index < mid:
            out.append((mid, end))
            end = mid
        else:
            out.append((start, mid))
            start = mid
    out.reverse()
    return out


def consistency_path_ranges(old_size: int, new_size: int) -> list[Range]:
    """The nodes whose hashes form PROOF(old_size, D[0:new_size]) (§2.1.4.1), in proof order.

    Empty when old_size is 0 or equals new_size: there is nothing to prove.
    """
    if not (_is_int(old_size) and _is_int(new_size)) or not 0 <= old_size <= new_size:
        raise ValueError(f"old size {old_size!r} is not in 0..new size {new_size!r}")
    out: list[Range] = []
    if old_size in (0, new_size):
        return out
    # SUBPROOF(m, D[start:end], b), unrolled: m = old_size - start.
    start, end, whole_old_tree = 0, new_size, True
    while old_size != end:
        mid = start + _split(end - start)
        if old_size <= mid:
            out.append((mid, end))
            end = mid
        else:
            out.append((start, mid))
            start, whole_old_tree = mid, False
    if not whole_old_tree:
        out.append((start, end))
    out.reverse()
    return out


def hash_of_range(get_perfect: Callable[[int, int], bytes], start: int, end: int) -> bytes:
    """MTH(D[start:end]) for a tree node, from the stored hashes of perfect aligned subtrees.

    `get_perfect(s, e)` must return the hash of the perfect subtree [s, e); it is called
    once per piece of `perfect_ranges(start, end)`, at most log2(end - start) + 1 times.
    """
    pieces = perfect_ranges(start, end)
    if not pieces:
        return EMPTY_ROOT
    acc = get_perfect(*pieces[-1])
    for piece in reversed(pieces[:-1]):
        acc = node_hash(get_perfect(*piece), acc)
    return acc


# -- leaf-based -----------------------------------------------------------------------------


def _perfect_getter(leaves: Sequence[bytes]) -> Callable[[int, int], bytes]:
    """A `get_perfect` that hashes perfect subtrees straight from the leaf data."""
    hashes = [leaf_hash(d) for d in leaves]

    def get(start: int, end: int) -> bytes:
        if end - start == 1:
            return hashes[start]
        mid = (start + end) // 2
        return node_hash(get(start, mid), get(mid, end))

    return get


def root(leaves: Sequence[bytes]) -> bytes:
    """The Merkle Tree Hash of the raw leaf data (§2.1.1); SHA-256(b"") for no leaves."""
    return hash_of_range(_perfect_getter(leaves), 0, len(leaves))


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """The audit path that proves leaves[index] is in the tree of these leaves (§2.1.3.1)."""
    ranges = inclusion_path_ranges(index, len(leaves))
    get = _perfect_getter(leaves)
    return [hash_of_range(get, s, e) for s, e in ranges]


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """The proof that the tree of leaves[:old_size] is a prefix of this one (§2.1.4.1)."""
    ranges = consistency_path_ranges(old_size, len(leaves))
    get = _perfect_getter(leaves)
    return [hash_of_range(get, s, e) for s, e in ranges]


# -- verifiers ------------------------------------------------------------------------------


def _is_hash(x: object) -> bool:
    return isinstance(x, bytes) and len(x) == HASH_SIZE


def _hash_list(proof: object) -> list[bytes] | None:
    """The proof as a list of well-formed hashes, or None if it is anything else."""
    if not isinstance(proof, Sequence) or isinstance(proof, str | bytes | bytearray):
        return None
    items = list(proof)
    return items if all(_is_hash(p) for p in items) else None


def verify_inclusion(
    data: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Whether `proof` shows `data` is leaf `index` of the tree of `size` with this root.

    The algorithm of RFC 9162 §2.1.3.2; False, never an exception, for malformed input.
    """
    path = _hash_list(proof)
    if path is None or not isinstance(data, bytes) or not _is_hash(root):
        return False
    if not (_is_int(index) and _is_int(size)) or not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    r = leaf_hash(data)
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether `proof` shows the tree (old_size, old_root) is a prefix of (new_size, new_root).

    The algorithm of RFC 9162 §2.1.4.2, plus the cases it leaves out: equal sizes need
    equal roots and an empty proof; an old size of 0 needs the empty tree's root and an
    empty proof. False, never an exception, for malformed input.
    """
    path = _hash_list(proof)
    if path is None or not _is_hash(old_root) or not _is_hash(new_root):
        return False
    if not (_is_int(old_size) and _is_int(new_size)) or not 0 <= old_size <= new_size:
        return False
    if old_size == 0:
        return not path and old_root == EMPTY_ROOT and (new_size > 0 or new_root == EMPTY_ROOT)
    if old_size == new_size:
        return not path and old_root == new_root
    if not path:
        return False
    if old_size & (old_size - 1) == 0:
        path = [old_root, *path]
    folded = _fold_consistency(old_size, new_size, path)
    return folded is not None and folded == (old_root, new_root)


def _fold_consistency(old_size: int, new_size: int,
                      path: Sequence[bytes]) -> tuple[bytes, bytes] | None:
    """The (old root, new root) a non-empty consistency path folds to (RFC 9162 2.1.4.2);
    None if the path is too long for the sizes. The path starts with the old root's
    first subtree hash (the caller prepends the old root for a power-of-two size)."""
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return (fr, sr) if sn == 0 else None


def consistency_old_root(
    old_size: int, new_size: int, new_root: bytes, proof: Sequence[bytes]
) -> bytes | None:
    """The root of the first `old_size` leaves of the tree (new_size, new_root), as a
    consistency proof from `old_size` shows it; None if the proof does not reproduce
    `new_root` or does not carry that root.

    Any proof that reproduces the new root is made of that tree's own subtree hashes
    (short of a SHA-256 collision), so the old root it folds to is the only one the
    tree has at `old_size`: a signed head of that size with another root cannot be of
    the same history (``timebank.forks``). A proof from a power-of-two size does not
    carry the old root (the verifier supplies it), and gives None here.
    """
    path = _hash_list(proof)
    if path is None or not _is_hash(new_root):
        return None
    if not (_is_int(old_size) and _is_int(new_size)) or not 0 <= old_size < new_size:
        return None
    if old_size == 0:
        return EMPTY_ROOT if not path else None
    if not path or old_size & (old_size - 1) == 0:
        return None
    folded = _fold_consistency(old_size, new_size, path)
    return folded[0] if folded is not None and folded[1] == new_root else None
