"""An RFC 9162 Merkle tree read leaf by leaf, its root known at every size: O(log n)
memory and O(log n) work a root.

The auditor reads long sequences once, in order: the clearinghouse's log leaves, and
each district's ledger entry hashes, whose roots it must know at every size a checkpoint
or tree head names. Recomputing ``merkle.root`` over a prefix for each of those sizes
would cost O(n) a size; a ``Frontier`` keeps the hashes of the perfect subtrees that make
up the tree so far (its compact range, ``merkle.root_ranges(size)``), so appending a leaf
folds the subtrees it completes (``merkle.completed_ranges``) and a root folds at most
log2(n) + 1 hashes (``merkle.hash_of_range``). Both are the contract's own range
helpers, so the roots are the contract's.
"""

from __future__ import annotations

from timebank import merkle


class Frontier:
    """The compact range [0, size) of a tree being read leaf by leaf."""

    __slots__ = ("_hashes", "size")

    def __init__(self) -> None:
        self._hashes: list[bytes] = []  # of merkle.root_ranges(size), left to right
        self.size = 0

    def append(self, data: bytes) -> None:
        """Read the next leaf's data (it is hashed as a leaf, RFC 9162 §2.1.1)."""
        h = merkle.leaf_hash(data)
        # The first range appending completes is the leaf itself; each larger one joins
        # the subtree to its left, the last of the compact range so far.
        for _ in merkle.completed_ranges(self.size)[1:]:
            h = merkle.node_hash(self._hashes.pop(), h)
        self._hashes.append(h)
        self.size += 1

    def root(self) -> bytes:
        """MTH of the leaves read so far (the empty tree's root before any)."""
        pieces = dict(zip(merkle.root_ranges(self.size), self._hashes, strict=True))
        return merkle.hash_of_range(lambda start, end: pieces[start, end], 0, self.size)
