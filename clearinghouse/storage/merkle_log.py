"""The clearinghouse's transparency log (RFC 9162) in the database, inside one transaction.

``log_leaves`` holds the entries; ``log_hashes`` the hash of every perfect aligned
subtree (level 0: the leaf hashes), about two rows per leaf. With those, an append of k
leaves reads the O(log n) hashes of the current tree's right edge (its "frontier") and
writes k leaf rows and ~2k hash rows; a root or a proof reads O(log n) hash rows in one
statement. ``rebuild_check`` recomputes the root from the leaves alone, for an auditor.

Writers are serialised by the caller (``Database.write``). Errors: a size or index
outside the log is ``BadLogRange`` (an ``InvalidArgument`` and a ``ValueError``, reason
``BAD_LOG_RANGE``); stored rows that contradict each other are ``LogCorrupted`` (an
``InvariantViolation`` naming the table and the index).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Table,
    and_,
    bindparam,
    func,
    insert,
    or_,
    select,
)

from clearinghouse.storage import schema as s
from runtime.errors import (
    AlreadyExists,
    InvalidArgument,
    InvariantViolation,
    NotFound,
)
from runtime.statements import Prepared
from timebank.merkle import (
    EMPTY_ROOT,
    completed_ranges,
    consistency_path_ranges,
    hash_of_range,
    inclusion_path_ranges,
    leaf_hash,
    node_hash,
    perfect_ranges,
    root_ranges,
)

__all__ = ["MAX_APPEND", "MAX_LEAVES_PER_READ", "BadLogRange", "LeafRow", "LogCorrupted",
           "LogMark", "MerkleLog"]

LEAVES = cast(Table, s.LogLeaf.__table__)
HASHES = cast(Table, s.LogHash.__table__)
HEADS = cast(Table, s.TreeHead.__table__)
COSIGS = cast(Table, s.Cosignature.__table__)

MAX_APPEND = 10_000
"""The most leaves one `append` takes (one transaction's worth)."""
MAX_LEAVES_PER_READ = 1_000
"""The most leaves one `leaves` call returns."""
MAX_KEYS_PER_READ = 400
"""The most subtree hashes one statement fetches (an OR of pairs; SQLite limits how deep
an expression may nest)."""

Key = tuple[int, int]  # (level, idx) of a perfect aligned subtree


class BadLogRange(InvalidArgument, ValueError):
    """A size, index or range that is not in the log."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "BAD_LOG_RANGE")


class LogCorrupted(InvariantViolation):
    """Stored log rows contradict each other or are missing: a bug or tampering."""

    def __init__(self, table: str, index: int, problem: str) -> None:
        super().__init__(f"transparency log corrupted: {table} at index {index}: {problem}")
        self.table = table
        self.index = index


@dataclass(frozen=True, slots=True)
class LeafRow:
    """One entry to append: the leaf bytes as hashed, and what it concerns."""

    data: bytes
    kind: str
    claim_id: str | None = None
    node_id: str | None = None


@dataclass(frozen=True, slots=True)
class LogMark:
    """The log's state at a point of a deferring block (``MerkleLog.mark``)."""

    size: int
    frontier: tuple[tuple[int, bytes], ...] | None
    leaves: int  # rows pending then
    hashes: int


def _key(start: int, end: int) -> Key:
    level = (end - start).bit_length() - 1
    return level, start >> level


# Statements, built once. Hashes are fetched with an OR of (level = ? AND idx = ?) pairs,
# one statement per number of pairs: both engines run it as one primary-key probe per
# pair, where a row-value IN, (level, idx) IN (VALUES ...), scans the table on SQLite.
_SIZE = Prepared(select(func.max(LEAVES.c.idx)))
_LEAF = Prepared(select(LEAVES.c.data).where(LEAVES.c.idx == bindparam("idx")))
_LEAVES = Prepared(select(LEAVES.c.idx, LEAVES.c.data)
                   .where(LEAVES.c.idx >= bindparam("lo"), LEAVES.c.idx < bindparam("hi"))
                   .order_by(LEAVES.c.idx))
_LEAF_SIZES = Prepared(select(LEAVES.c.idx, func.length(LEAVES.c.data))
                       .where(LEAVES.c.idx >= bindparam("lo"), LEAVES.c.idx < bindparam("hi"))
                       .order_by(LEAVES.c.idx))
_CLAIM_LEAVES = Prepared(select(LEAVES.c.idx)
                         .where(LEAVES.c.claim_id == bindparam("claim_id"))
                         .order_by(LEAVES.c.idx))
_INSERT_LEAVES = Prepared(insert(LEAVES))
_INSERT_HASHES = Prepared(insert(HASHES))
_AUDIT_PAGE = Prepared(
    select(LEAVES.c.idx, LEAVES.c.data, HASHES.c.hash)
    .select_from(LEAVES.outerjoin(HASHES, and_(HASHES.c.level == 0,
                                               HASHES.c.idx == LEAVES.c.idx)))
    .where(LEAVES.c.idx >= bindparam("lo"))
    .order_by(LEAVES.c.idx)
    .limit(bindparam("n")))
_HEAD = Prepared(select(HEADS.c.root, HEADS.c.note).where(HEADS.c.size == bindparam("size")))
_LATEST_HEAD = Prepared(select(HEADS.c.size, HEADS.c.root, HEADS.c.note)
                        .order_by(HEADS.c.size.desc()).limit(1))
_INSERT_HEAD = Prepared(insert(HEADS))
_COSIG = Prepared(select(COSIGS.c.line, COSIGS.c.timestamp).where(
    COSIGS.c.size == bindparam("size"), COSIGS.c.witness == bindparam("witness")))
_COSIGS = Prepared(select(COSIGS.c.witness, COSIGS.c.line, COSIGS.c.timestamp)
                   .where(COSIGS.c.size == bindparam("size")).order_by(COSIGS.c.witness))
_INSERT_COSIG = Prepared(insert(COSIGS))
_COSIGNED_SIZES = Prepared(select(COSIGS.c.size).group_by(COSIGS.c.size)
                           .having(func.count() >= bindparam("quorum"))
                           .order_by(COSIGS.c.size.desc()).limit(bindparam("limit")))

_COSIGNED_FROM = Prepared(select(COSIGS.c.size).where(COSIGS.c.size >= bindparam("least"))
                          .group_by(COSIGS.c.size)
                          .having(func.count() >= bindparam("quorum"))
                          .order_by(COSIGS.c.size).limit(bindparam("limit")))

_HASHES_BY_COUNT: dict[int, Prepared] = {}


def _hashes_query(count: int) -> Prepared:
    """SELECT level, idx, hash for `count` (level, idx) pairs; built once per count."""
    query = _HASHES_BY_COUNT.get(count)
    if query is None:
        pairs = [and_(HASHES.c.level == bindparam(f"l{i}"), HASHES.c.idx == bindparam(f"i{i}"))
                 for i in range(count)]
        query = Prepared(select(HASHES.c.level, HASHES.c.idx, HASHES.c.hash)
                         .where(or_(*pairs)))
        _HASHES_BY_COUNT[count] = query
    return query


def _tree_rows(size: int) -> int:
    """How many perfect subtrees a tree of `size` leaves has: 2·size − popcount(size)."""
    return 2 * size - bin(size).count("1")


class MerkleLog:
    """The transparency log as seen by one transaction (``conn``)."""

    def __init__(self, conn: Connection, size: int | None = None) -> None:
        """``size``: the log's size as this transaction found it, if known already (a
        write transaction's stamp: read with its write lock)."""
        self.conn = conn
        if size is not None and size < 0:
            raise InvariantViolation(f"a log holds 0 or more leaves, not {size}")
        self._size: int | None = size  # read once per transaction; append keeps it
        # the size first read: the log's size when this transaction began (it reads under
        # the write lock), beyond which nobody can have published a head but itself
        self._first_size: int | None = size
        self._added_heads: dict[int, tuple[bytes, str]] = {}
        # what this instance appended: the right edge of the tree after it, and the leaves
        # (a batch appends a leaf per envelope, then proves each; neither is read back)
        self._frontier: list[tuple[int, bytes]] | None = None
        self._appended: dict[int, bytes] = {}
        # subtree hashes this instance wrote or read (stored hashes never change)
        self._known: dict[Key, bytes] = {}
        # hashes of tree nodes [start, end) computed (from those) by this instance
        self._nodes: dict[tuple[int, int], bytes] = {}
        # rows appended but not yet written, while deferring (see ``deferring``)
        self._deferring = False
        self._pending_leaves: list[dict[str, Any]] = []
        self._pending_hashes: list[dict[str, Any]] = []

    # reading ---------------------------------------------------------------------------

    def size(self) -> int:
        """How many leaves the log holds."""
        if self._size is None:
            top = _SIZE(self.conn).scalar()
            self._size = 0 if top is None else int(top) + 1
            if self._first_size is None:
                self._first_size = self._size
        return self._size

    def _hashes(self, ranges: Iterable[tuple[int, int]]) -> dict[Key, bytes]:
        """The stored hashes of these perfect subtrees: those not known yet in one
        statement per MAX_KEYS_PER_READ."""
        wanted = {_key(a, b) for a, b in ranges}
        missing = sorted(wanted - self._known.keys())
        for start in range(0, len(missing), MAX_KEYS_PER_READ):
            keys = missing[start:start + MAX_KEYS_PER_READ]
            params: dict[str, int] = {}
            for i, (level, idx) in enumerate(keys):
                params[f"l{i}"] = level
                params[f"i{i}"] = idx
            self._known.update(((int(r[0]), int(r[1])), bytes(r[2]))
                               for r in _hashes_query(len(keys))(self.conn, params))
            for level, idx in keys:
                if (level, idx) not in self._known:
                    raise LogCorrupted("log_hashes", idx << level,
                                       f"no hash stored for level {level}, idx {idx}")
        return {k: self._known[k] for k in wanted}

    def _node_hashes(self, nodes: Sequence[tuple[int, int]]) -> list[bytes]:
        """MTH of each tree node [start, end), reading the pieces not known yet in one
        statement. A node below the log's size never changes, so each is computed once
        per instance (a batch's proofs share most of their nodes)."""
        memo = self._nodes
        todo = [n for n in nodes if n not in memo]
        if todo:
            stored = self._hashes(p for a, b in todo for p in perfect_ranges(a, b))

            def get(start: int, end: int) -> bytes:
                return stored[_key(start, end)]

            for a, b in todo:
                memo[a, b] = hash_of_range(get, a, b)
        return [memo[n] for n in nodes]

    def _check_size(self, size: int, what: str = "size") -> None:
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= self.size():
            raise BadLogRange(f"{what} {size!r} is not in 0..{self.size()} (the log's size)")

    def root(self, size: int | None = None) -> bytes:
        """The root of the first `size` leaves (default: all); EMPTY_ROOT for none."""
        size = self.size() if size is None else size
        self._check_size(size)
        if size == 0:
            return EMPTY_ROOT
        return self._node_hashes([(0, size)])[0]

    def inclusion_proofs(self, indexes: Sequence[int], size: int) -> list[list[bytes]]:
        """``inclusion_proof`` of each index, reading the hashes they need together (a
        batch's receipts are proven in the same head and share most of their paths)."""
        self._check_size(size)
        for index in indexes:
            if not isinstance(index, int) or not 0 <= index < size:
                raise BadLogRange(f"leaf index {index!r} is not in a tree of size {size}")
        paths = [inclusion_path_ranges(index, size) for index in indexes]
        self._node_hashes(list(dict.fromkeys(n for path in paths for n in path)))
        return [self._node_hashes(path) for path in paths]

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """PATH(index, D[0:size]) of RFC 9162 §2.1.3.1."""
        self._check_size(size)
        if not isinstance(index, int) or not 0 <= index < size:
            raise BadLogRange(f"leaf index {index!r} is not in a tree of size {size}")
        return self._node_hashes(inclusion_path_ranges(index, size))

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """PROOF(old_size, D[0:new_size]) of RFC 9162 §2.1.4.1 (empty for 0 or equal)."""
        self._check_size(new_size, "new size")
        if not isinstance(old_size, int) or not 0 <= old_size <= new_size:
            raise BadLogRange(f"old size {old_size!r} is not in 0..{new_size} (the new size)")
        return self._node_hashes(consistency_path_ranges(old_size, new_size))

    def leaf(self, index: int) -> bytes:
        """The data of leaf `index`."""
        if not isinstance(index, int) or not 0 <= index < self.size():
            raise BadLogRange(f"leaf index {index!r} is not in 0..{self.size() - 1}")
        if index in self._appended:
            return self._appended[index]
        data = _LEAF(self.conn, {"idx": index}).scalar()
        if data is None:
            raise LogCorrupted("log_leaves", index, "missing below the log's size")
        return bytes(data)

    def leaves(self, start: int, end: int) -> list[bytes]:
        """The data of leaves [start, end): at most MAX_LEAVES_PER_READ at a time."""
        self._check_size(end, "end")
        if not isinstance(start, int) or not 0 <= start <= end:
            raise BadLogRange(f"start {start!r} is not in 0..{end} (the end)")
        if end - start > MAX_LEAVES_PER_READ:
            raise BadLogRange(f"at most {MAX_LEAVES_PER_READ} leaves at a time, "
                              f"not {end - start}")
        self._written("leaves")
        rows = _LEAVES(self.conn, {"lo": start, "hi": end}).all()
        for expected, row in enumerate(rows, start):
            if row[0] != expected:
                raise LogCorrupted("log_leaves", expected, "missing below the log's size")
        if len(rows) != end - start:
            raise LogCorrupted("log_leaves", start + len(rows), "missing below the log's size")
        return [bytes(row[1]) for row in rows]

    def leaf_sizes(self, start: int, end: int) -> list[int]:
        """The byte length of each leaf in [start, end), without reading the leaves: at
        most MAX_LEAVES_PER_READ at a time (for a reader that pages by bytes)."""
        self._check_size(end, "end")
        if not isinstance(start, int) or not 0 <= start <= end:
            raise BadLogRange(f"start {start!r} is not in 0..{end} (the end)")
        if end - start > MAX_LEAVES_PER_READ:
            raise BadLogRange(f"at most {MAX_LEAVES_PER_READ} leaves at a time, "
                              f"not {end - start}")
        self._written("leaf_sizes")
        rows = _LEAF_SIZES(self.conn, {"lo": start, "hi": end}).all()
        if [int(row[0]) for row in rows] != list(range(start, end)):
            raise LogCorrupted("log_leaves", start, "missing below the log's size")
        return [int(row[1]) for row in rows]

    def leaf_indexes_of_claim(self, claim_id: str) -> list[int]:
        """The indexes of the leaves that concern this claim, in log order."""
        self._written("leaf_indexes_of_claim")
        return [int(i) for i in _CLAIM_LEAVES(self.conn, {"claim_id": claim_id})
                .scalars()]

    # appending ---------------------------------------------------------------------------

    def append(self, entries: Sequence[LeafRow], at: datetime) -> int:
        """Append the entries in order; return the index of the first. At most MAX_APPEND.

        Reads the current frontier (≤ log2 n + 1 hashes); writes each leaf row and the
        hash of every perfect subtree the new leaves complete, in two executemany calls.
        """
        if len(entries) > MAX_APPEND:
            raise BadLogRange(f"at most {MAX_APPEND} leaves per append, not {len(entries)}")
        first = self.size()
        if not entries:
            return first
        # the right edge of the tree as a stack of (level, hash), largest subtree first
        if self._frontier is not None:
            stack = list(self._frontier)
        else:
            frontier_ranges = root_ranges(first)
            stored = self._hashes(frontier_ranges)
            stack = [(_key(a, b)[0], stored[_key(a, b)]) for a, b in frontier_ranges]
        leaf_rows: list[dict[str, Any]] = []
        hash_rows: list[dict[str, Any]] = []
        for index, entry in enumerate(entries, first):
            if not isinstance(entry.data, bytes) or len(entry.kind) > 32:
                raise ValueError(f"leaf {index}: data must be bytes, kind ≤ 32 characters")
            leaf_rows.append({"idx": index, "data": entry.data, "kind": entry.kind,
                              "claim_id": entry.claim_id, "node_id": entry.node_id,
                              "created_at": at})
            h = leaf_hash(entry.data)
            hash_rows.append({"level": 0, "idx": index, "hash": h})
            level = 0
            for start, end in completed_ranges(index)[1:]:
                left_level, left = stack.pop()
                level = left_level + 1
                if (end - start) != 1 << level:
                    raise InvariantViolation(f"append: frontier out of step at leaf {index}")
                h = node_hash(left, h)
                hash_rows.append({"level": level, "idx": start >> level, "hash": h})
            stack.append((level, h))
        new_size = first + len(entries)
        if (len(hash_rows) != _tree_rows(new_size) - _tree_rows(first)
                or [lv for lv, _ in stack] != [_key(a, b)[0] for a, b in root_ranges(new_size)]):
            raise InvariantViolation(f"append: {len(hash_rows)} hashes for {first}->{new_size}")
        self._pending_leaves += leaf_rows
        self._pending_hashes += hash_rows
        if not self._deferring:
            self.flush()
        self._size = new_size
        self._frontier = stack
        self._appended.update((i, e.data) for i, e in enumerate(entries, first))
        self._known.update(((r["level"], r["idx"]), r["hash"]) for r in hash_rows)
        return first

    # deferred writes ---------------------------------------------------------------------

    @contextmanager
    def deferring(self) -> Iterator[None]:
        """Appends inside keep their rows in memory, written together when it ends.

        A batch of envelopes appends a leaf for each: two statements for the batch
        instead of two per envelope. Indexes, roots and proofs answer from memory
        meanwhile; reads of leaf rows by range or claim refuse until the rows are
        written. ``undo_to`` drops what was appended since a ``mark``. If the block
        raises, the unwritten rows are dropped, and this instance reads the log afresh."""
        if self._deferring:
            raise InvariantViolation("the log is deferring its writes already")
        self._deferring = True
        try:
            yield
        except BaseException:  # unwritten rows are dropped: read the log afresh after
            self._pending_leaves.clear()
            self._pending_hashes.clear()
            self._size = self._frontier = None
            self._appended.clear()
            self._known.clear()
            self._nodes.clear()
            raise
        finally:
            self._deferring = False
        self.flush()

    def flush(self) -> None:
        """Write the rows appended and not yet written."""
        if self._pending_leaves:
            _INSERT_LEAVES.send_many(self.conn, self._pending_leaves)
            _INSERT_HASHES.send_many(self.conn, self._pending_hashes)
        self._pending_leaves = []
        self._pending_hashes = []

    def mark(self) -> LogMark:
        """Where the log stands now, to ``undo_to`` (while deferring)."""
        if not self._deferring:
            raise InvariantViolation("a log mark is taken while deferring writes")
        frontier = None if self._frontier is None else tuple(self._frontier)
        return LogMark(self.size(), frontier, len(self._pending_leaves),
                       len(self._pending_hashes))

    def undo_to(self, mark: LogMark) -> None:
        """Forget every leaf appended since ``mark`` (its envelope was undone)."""
        if not self._deferring or len(self._pending_leaves) < mark.leaves:
            raise InvariantViolation("a log mark is undone only while its rows are unwritten")
        for row in self._pending_leaves[mark.leaves:]:
            self._appended.pop(row["idx"], None)
        for row in self._pending_hashes[mark.hashes:]:
            self._known.pop((row["level"], row["idx"]), None)
        del self._pending_leaves[mark.leaves:]
        del self._pending_hashes[mark.hashes:]
        self._size = mark.size
        self._frontier = None if mark.frontier is None else list(mark.frontier)
        self._nodes = {k: v for k, v in self._nodes.items() if k[1] <= mark.size}

    def _written(self, what: str) -> None:
        if self._pending_leaves:
            raise InvariantViolation(f"{what} reads leaf rows; write the deferred ones first")

    # tree heads and cosignatures ---------------------------------------------------------

    def add_tree_head(self, size: int, root: bytes, note: str, at: datetime) -> None:
        """Record a published tree head. Its root must be this log's root at `size`
        (else InvariantViolation: the log would sign what it does not hold). The same
        head again is a no-op; another note for a size already published is AlreadyExists.
        """
        if root != self.root(size):
            raise InvariantViolation(f"tree head of size {size}: root is not the log's root")
        existing = self.tree_head(size)
        if existing is not None:
            if existing != (root, note):
                raise AlreadyExists(f"a different tree head of size {size} is already "
                                    "published", "TREE_HEAD_EXISTS")
            return
        _INSERT_HEAD.send(self.conn, {"size": size, "root": root, "note": note, "created_at": at})
        self._added_heads[size] = (root, note)

    def added_head(self, size: int) -> bool:
        """Whether this transaction added the tree head of ``size``."""
        return size in self._added_heads

    def tree_head(self, size: int) -> tuple[bytes, str] | None:
        """(root, note) of the tree head published at `size`, if any. A size beyond the
        log's when this transaction began is answered without a read: heads are signed
        under the write lock for the log's size then, so only this transaction can have
        signed one (a transaction that appends and signs reads no head back)."""
        if size in self._added_heads:
            return self._added_heads[size]
        if self._first_size is not None and size > self._first_size:
            return None
        row = _HEAD(self.conn, {"size": size}).first()
        return None if row is None else (bytes(row[0]), str(row[1]))

    def latest_tree_head(self) -> tuple[int, bytes, str] | None:
        """(size, root, note) of the largest tree head published, if any."""
        row = _LATEST_HEAD(self.conn).first()
        return None if row is None else (int(row[0]), bytes(row[1]), str(row[2]))

    def add_cosignature(self, size: int, witness: str, line: str, timestamp: int,
                        at: datetime) -> bool:
        """Record a witness's cosignature line for the tree head at `size`.

        True when stored, False when this exact (line, timestamp) was already stored.
        A different line or timestamp for the same (size, witness) is AlreadyExists
        (reason COSIGNATURE_CONFLICT), never a replacement; no tree head at `size` is
        NotFound (reason NO_TREE_HEAD).
        """
        row = _COSIG(self.conn, {"size": size, "witness": witness}).first()
        if row is not None:
            if (str(row[0]), int(row[1])) == (line, timestamp):
                return False
            raise AlreadyExists(f"witness {witness} already cosigned the tree head of size "
                                f"{size} with another line", "COSIGNATURE_CONFLICT")
        if self.tree_head(size) is None:
            raise NotFound(f"no tree head of size {size} was published", "NO_TREE_HEAD")
        _INSERT_COSIG(self.conn, {"size": size, "witness": witness, "line": line,
                                  "timestamp": timestamp, "created_at": at})
        return True

    def cosignatures(self, size: int) -> list[tuple[str, str, int]]:
        """(witness, line, timestamp) of every cosignature of the head at `size`."""
        return [(str(r[0]), str(r[1]), int(r[2]))
                for r in _COSIGS(self.conn, {"size": size})]

    def cosigned_sizes(self, quorum: int, limit: int = 16) -> list[int]:
        """Sizes of the tree heads with at least `quorum` cosignatures (by any stored
        witness, revoked or not), largest first, at most `limit` of them."""
        return [int(size) for size in _COSIGNED_SIZES(
            self.conn, {"quorum": quorum, "limit": limit}).scalars()]

    def cosigned_sizes_from(self, least: int, quorum: int, limit: int = 16) -> list[int]:
        """Sizes of at least ``least`` of the tree heads with at least `quorum`
        cosignatures, smallest first, at most `limit` of them."""
        return [int(size) for size in _COSIGNED_FROM(
            self.conn, {"least": least, "quorum": quorum, "limit": limit}).scalars()]

    # audit ---------------------------------------------------------------------------------

    def rebuild_check(self, batch: int = 50_000) -> tuple[int, bytes]:
        """(size, root) recomputed from the leaf data alone, streamed in pages of `batch`.

        Memory stays O(batch + log n): a stack of the right edge's subtree hashes. Each
        stored leaf hash is checked against its data on the way; the first mismatch,
        missing hash or missing leaf is LogCorrupted naming the table and the index.
        """
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self._written("rebuild_check")
        stack: list[tuple[int, bytes]] = []  # (level, hash)
        expected = 0
        while True:
            rows = _AUDIT_PAGE(self.conn, {"lo": expected, "n": batch}).all()
            for idx, data, stored in rows:
                if idx != expected:
                    raise LogCorrupted("log_leaves", expected, "leaf missing (gap in idx)")
                h = leaf_hash(bytes(data))
                if stored is None:
                    raise LogCorrupted("log_hashes", idx, "no level-0 hash for this leaf")
                if bytes(stored) != h:
                    raise LogCorrupted("log_leaves", idx, "leaf_hash(data) is not the "
                                       "level-0 hash stored in log_hashes")
                level = 0
                while stack and stack[-1][0] == level:
                    h = node_hash(stack.pop()[1], h)
                    level += 1
                stack.append((level, h))
                expected += 1
            if len(rows) < batch:
                break
        if not stack:
            return 0, EMPTY_ROOT
        acc = stack[-1][1]
        for _, left in reversed(stack[:-1]):
            acc = node_hash(left, acc)
        return expected, acc
