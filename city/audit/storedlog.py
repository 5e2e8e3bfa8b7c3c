"""The clearinghouse's transparency log as its tables store it, read by the auditor.

``log_leaves`` holds the leaves; ``log_hashes`` the hash of every perfect aligned subtree
(level 0: the leaf hashes), from which the clearinghouse answers roots and proofs. The
auditor rebuilds the tree from the leaves alone (``rebuild``), checking every stored
leaf hash on the way, and checks that the stored subtree hashes give the rebuilt root at
every signed size (``root``). Stored rows that contradict each other, or are missing,
are a ``StoredLogError`` naming the table and the index.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, and_, or_, select

from city.audit.tables import log_hashes, log_leaves
from timebank import merkle

REBUILD_PAGE = 50_000
"""Leaves a query while rebuilding: memory stays O(page + log n)."""
HASHES_PER_QUERY = 400
"""Subtree hashes one query fetches (an OR of pairs; SQLite limits how deep an
expression may nest)."""

Key = tuple[int, int]  # (level, idx) of a perfect aligned subtree


class StoredLogError(Exception):
    """The log's rows contradict each other or are missing: a bug or tampering."""

    def __init__(self, table: str, index: int, problem: str) -> None:
        super().__init__(f"transparency log corrupted: {table} at index {index}: {problem}")
        self.table = table
        self.index = index


def _key(start: int, end: int) -> Key:
    level = (end - start).bit_length() - 1
    return level, start >> level


class StoredLog:
    """The log's tables as one read-only connection sees them."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._known: dict[Key, bytes] = {}  # stored subtree hashes read so far

    def leaf(self, index: int) -> bytes | None:
        """The data of leaf ``index``; None if there is no such row."""
        data = self.conn.execute(select(log_leaves.c.data)
                                 .where(log_leaves.c.idx == index)).scalar()
        return None if data is None else bytes(data)

    def rebuild(self, page: int = REBUILD_PAGE) -> tuple[int, bytes]:
        """(size, root) recomputed from the leaf data alone, each stored leaf hash checked
        against its leaf; the first gap, missing hash or mismatch is a StoredLogError."""
        level0 = and_(log_hashes.c.level == 0, log_hashes.c.idx == log_leaves.c.idx)
        query = (select(log_leaves.c.idx, log_leaves.c.data, log_hashes.c.hash)
                 .select_from(log_leaves.outerjoin(log_hashes, level0))
                 .order_by(log_leaves.c.idx).limit(page))
        stack: list[tuple[int, bytes]] = []  # the right edge: (level, hash)
        expected = 0
        while True:
            rows = self.conn.execute(query.where(log_leaves.c.idx >= expected)).all()
            for idx, data, stored in rows:
                if idx != expected:
                    raise StoredLogError("log_leaves", expected, "leaf missing (gap in idx)")
                h = merkle.leaf_hash(bytes(data))
                if stored is None:
                    raise StoredLogError("log_hashes", idx, "no level-0 hash for this leaf")
                if bytes(stored) != h:
                    raise StoredLogError("log_leaves", idx, "leaf_hash(data) is not the "
                                         "level-0 hash stored in log_hashes")
                level = 0
                while stack and stack[-1][0] == level:
                    h = merkle.node_hash(stack.pop()[1], h)
                    level += 1
                stack.append((level, h))
                expected += 1
            if len(rows) < page:
                break
        if not stack:
            return 0, merkle.EMPTY_ROOT
        acc = stack[-1][1]
        for _, left in reversed(stack[:-1]):
            acc = merkle.node_hash(left, acc)
        return expected, acc

    def root(self, size: int) -> bytes:
        """The root of the first ``size`` leaves from the stored subtree hashes alone."""
        ranges = merkle.root_ranges(size)
        self._read(_key(a, b) for a, b in ranges)
        return merkle.hash_of_range(lambda a, b: self._known[_key(a, b)], 0, size)

    def _read(self, keys: Iterable[Key]) -> None:
        missing = sorted(set(keys) - self._known.keys())
        for start in range(0, len(missing), HASHES_PER_QUERY):
            chunk = missing[start:start + HASHES_PER_QUERY]
            wanted = or_(*(and_(log_hashes.c.level == level, log_hashes.c.idx == idx)
                           for level, idx in chunk))
            for level, idx, h in self.conn.execute(
                    select(log_hashes.c.level, log_hashes.c.idx, log_hashes.c.hash)
                    .where(wanted)):
                self._known[int(level), int(idx)] = bytes(h)
            for level, idx in chunk:
                if (level, idx) not in self._known:
                    raise StoredLogError("log_hashes", idx << level,
                                         f"no hash stored for level {level}, idx {idx}")
