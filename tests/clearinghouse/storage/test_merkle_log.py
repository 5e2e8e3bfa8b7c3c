"""``MerkleLog``: the stored transparency log agrees with ``timebank.merkle``'s leaf-based
functions at every size, reads O(log n) rows per root or proof, and its audit finds
tampering. Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from typing import Any

import pytest
from sqlalchemy import Connection, event, text

from clearinghouse.storage.merkle_log import (
    MAX_APPEND,
    MAX_LEAVES_PER_READ,
    BadLogRange,
    LeafRow,
    LogCorrupted,
    MerkleLog,
)
from clearinghouse.storage.repo import AdmissionRecord
from clearinghouse.usecases.app import ClearinghouseApp, Tx
from runtime.errors import AlreadyExists, InvariantViolation, NotFound
from timebank import merkle

AT = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
BATCHES = (1, 2, 3, 7, 64, 100, 3)  # 180 leaves, sizes crossing many powers of two
_rng = random.Random(9162)
DATA = [_rng.randbytes(_rng.randrange(0, 80)) for _ in range(sum(BATCHES))]


@cache
def expected_inclusion(size: int, index: int) -> list[bytes]:
    return merkle.inclusion_proof(DATA[:size], index)


@cache
def expected_consistency(old: int, new: int) -> list[bytes]:
    return merkle.consistency_proof(DATA[:new], old)


def rows(data: list[bytes], *, claim_id: str | None = None) -> list[LeafRow]:
    return [LeafRow(d, "test", claim_id) for d in data]


def append(app: ClearinghouseApp, entries: list[LeafRow]) -> int:
    return app.execute(lambda tx: MerkleLog(tx.repo.conn).append(entries, AT))


@contextmanager
def counting(conn: Connection) -> Iterator[list[int]]:
    """[statements, rows at most]: a hash lookup reads at most one row per (level, idx)
    pair it names (each is a primary-key probe); any other statement here reads one."""
    seen = [0, 0]

    def before(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        seen[0] += 1
        seen[1] += len(params) // 2 if "log_hashes" in statement else 1

    event.listen(conn, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(conn, "before_cursor_execute", before)


def bound(size: int) -> int:
    return 2 * size.bit_length() + 2


def test_matches_the_leaf_based_functions_at_every_size(ch_app: ClearinghouseApp) -> None:
    pos = 0
    for k in BATCHES:
        assert append(ch_app, rows(DATA[pos:pos + k])) == pos
        pos += k

    def check(tx: Tx) -> None:
        log = MerkleLog(tx.repo.conn)
        assert log.size() == len(DATA)
        assert log.root(0) == merkle.EMPTY_ROOT
        for n in range(1, len(DATA) + 1):
            with counting(tx.repo.conn) as seen:
                assert log.root(n) == merkle.root(DATA[:n])
            assert seen[0] == 1 and seen[1] <= bound(n)
            for i in range(n):
                with counting(tx.repo.conn) as seen:
                    assert log.inclusion_proof(i, n) == expected_inclusion(n, i), (i, n)
                assert seen[0] <= 1 and seen[1] <= bound(n)
            for m in range(n + 1):
                with counting(tx.repo.conn) as seen:
                    assert log.consistency_proof(m, n) == expected_consistency(m, n), (m, n)
                assert seen[0] <= 1 and seen[1] <= bound(n)
        assert log.leaves(0, len(DATA)) == DATA
        assert [log.leaf(i) for i in (0, 77, len(DATA) - 1)] == [DATA[0], DATA[77], DATA[-1]]
        assert log.rebuild_check(batch=17) == (len(DATA), log.root())

    ch_app.query(check)


def test_a_batch_of_proofs_is_read_together_and_equals_one_by_one(
        ch_app: ClearinghouseApp) -> None:
    append(ch_app, rows(DATA[:150]))

    def batch(tx: Tx) -> None:
        log = MerkleLog(tx.repo.conn)
        first = log.append(rows(DATA[150:]), AT)  # as a SubmitBatch: append, then prove
        indexes = [*range(first, len(DATA)), 0, 7, 149]
        with counting(tx.repo.conn) as seen:
            proofs = log.inclusion_proofs(indexes, len(DATA))
        assert seen[0] <= 1
        assert proofs == [expected_inclusion(len(DATA), i) for i in indexes]
        assert log.inclusion_proofs([], len(DATA)) == []

    ch_app.execute(batch)


def test_an_append_reads_only_the_frontier(ch_app: ClearinghouseApp) -> None:
    append(ch_app, rows([b"%d" % i for i in range(1000)]))

    def more(tx: Tx) -> None:
        log = MerkleLog(tx.repo.conn)
        with counting(tx.repo.conn) as seen:
            log.append(rows([b"a", b"b", b"c"]), AT)
        # size, the frontier's hashes (one statement), the leaf rows, the hash rows
        assert seen[0] == 4
        assert log.size() == 1003

    ch_app.execute(more)
    data = [b"%d" % i for i in range(1000)] + [b"a", b"b", b"c"]
    assert ch_app.query(lambda tx: MerkleLog(tx.repo.conn).root()) == merkle.root(data)


def test_deferred_appends_are_written_together_and_an_undone_one_leaves_no_trace(
        ch_app: ClearinghouseApp) -> None:
    """As a SubmitBatch appends: one leaf per envelope, written at the end; a refused
    envelope's leaf is undone and the next envelope takes its index."""
    append(ch_app, rows(DATA[:100]))

    def batch(tx: Tx) -> None:
        log = MerkleLog(tx.repo.conn)
        with counting(tx.repo.conn) as seen:
            with log.deferring():
                for i in range(100, 140):
                    before = log.mark()
                    assert log.append(rows([b"refused %d" % i]), AT) == i
                    log.undo_to(before)  # as a refused envelope's savepoint
                    assert log.append(rows([DATA[i]]), AT) == i
                    assert log.root() == merkle.root(DATA[:i + 1])  # from memory
                with pytest.raises(InvariantViolation, match="deferred"):
                    log.leaves(95, 105)
                assert seen[0] <= 2  # the size and the frontier, read once
            assert seen[0] == 4  # then the leaf rows and the hash rows, once each
        assert log.leaves(130, 140) == DATA[130:140]
        assert log.inclusion_proofs([139, 3], 140) == [expected_inclusion(140, 139),
                                                        expected_inclusion(140, 3)]

    ch_app.execute(batch)
    assert ch_app.query(lambda tx: MerkleLog(tx.repo.conn).rebuild_check()) == (
        140, merkle.root(DATA[:140]))


def test_a_deferring_block_that_fails_writes_nothing(ch_app: ClearinghouseApp) -> None:
    append(ch_app, rows(DATA[:10]))

    def failing(tx: Tx) -> None:
        log = MerkleLog(tx.repo.conn)
        with pytest.raises(RuntimeError), log.deferring():
            log.append(rows(DATA[10:20]), AT)
            raise RuntimeError("the batch failed")
        log.flush()  # nothing is left to write
        assert log.leaves(0, 10) == DATA[:10]
        with pytest.raises(BadLogRange):
            log.leaves(0, 11)
        with pytest.raises(InvariantViolation, match="while deferring"):
            log.mark()

    ch_app.execute(failing)


def test_an_empty_log(ch_app: ClearinghouseApp) -> None:
    def check(tx: Tx) -> None:
        log = MerkleLog(tx.repo.conn)
        assert log.size() == 0
        assert log.root() == merkle.EMPTY_ROOT
        assert log.consistency_proof(0, 0) == []
        assert log.leaves(0, 0) == []
        assert log.rebuild_check() == (0, merkle.EMPTY_ROOT)
        assert log.latest_tree_head() is None
        assert log.append([], AT) == 0

    ch_app.execute(check)


def test_out_of_range_is_bad_log_range(ch_app: ClearinghouseApp) -> None:
    append(ch_app, rows([b"x"] * 5))
    calls: list[Callable[[MerkleLog], object]] = [
        lambda log: log.root(6), lambda log: log.root(-1),
        lambda log: log.inclusion_proof(5, 5), lambda log: log.inclusion_proof(0, 6),
        lambda log: log.inclusion_proof(-1, 3), lambda log: log.consistency_proof(4, 3),
        lambda log: log.consistency_proof(0, 6), lambda log: log.leaf(5),
        lambda log: log.leaf(-1), lambda log: log.leaves(3, 6), lambda log: log.leaves(4, 3),
    ]

    def check(tx: Tx) -> None:
        log = MerkleLog(tx.repo.conn)
        for call in calls:
            with pytest.raises(BadLogRange) as caught:
                call(log)
            assert caught.value.reason == "BAD_LOG_RANGE"
            assert isinstance(caught.value, ValueError)

    ch_app.query(check)


def test_batches_are_bounded(ch_app: ClearinghouseApp) -> None:
    with pytest.raises(BadLogRange):
        append(ch_app, rows([b""] * (MAX_APPEND + 1)))
    append(ch_app, rows([b""] * (MAX_LEAVES_PER_READ + 1)))
    with pytest.raises(BadLogRange):
        ch_app.query(lambda tx: MerkleLog(tx.repo.conn).leaves(0, MAX_LEAVES_PER_READ + 1))


def test_leaves_of_a_claim(ch_app: ClearinghouseApp) -> None:
    append(ch_app, rows([b"a", b"b"], claim_id="c1") + rows([b"c"]))
    append(ch_app, rows([b"d"], claim_id="c2") + rows([b"e"], claim_id="c1"))
    found = ch_app.query(lambda tx: [MerkleLog(tx.repo.conn).leaf_indexes_of_claim(c)
                                     for c in ("c1", "c2", "c3")])
    assert found == [[0, 1, 4], [3], []]


def test_the_audit_names_a_tampered_leaf(ch_app: ClearinghouseApp) -> None:
    append(ch_app, rows([b"%d" % i for i in range(40)]))
    ch_app.execute(lambda tx: tx.repo.conn.execute(
        text("UPDATE log_leaves SET data = :d WHERE idx = 13"), {"d": b"forged"}))
    with pytest.raises(LogCorrupted) as caught:
        ch_app.query(lambda tx: MerkleLog(tx.repo.conn).rebuild_check(batch=8))
    assert (caught.value.table, caught.value.index) == ("log_leaves", 13)
    assert "log_leaves" in str(caught.value) and "13" in str(caught.value)


def test_the_audit_names_a_missing_leaf_hash(ch_app: ClearinghouseApp) -> None:
    append(ch_app, rows([b"%d" % i for i in range(10)]))
    ch_app.execute(lambda tx: tx.repo.conn.execute(
        text("DELETE FROM log_hashes WHERE level = 0 AND idx = 6")))
    with pytest.raises(LogCorrupted) as caught:
        ch_app.query(lambda tx: MerkleLog(tx.repo.conn).rebuild_check())
    assert (caught.value.table, caught.value.index) == ("log_hashes", 6)
    with pytest.raises(LogCorrupted):  # a proof that needs it says so too
        ch_app.query(lambda tx: MerkleLog(tx.repo.conn).inclusion_proof(7, 10))


def admit(tx: Tx, node_id: str) -> None:
    tx.repo.insert_admission(AdmissionRecord(
        node_id, "district", node_id.encode().ljust(32, b"k"), f"key-{node_id}", 1,
        b"certificate", AT), 0)


def test_tree_heads_and_cosignatures(ch_app: ClearinghouseApp) -> None:
    append(ch_app, rows([b"a", b"b", b"c"]))
    root = merkle.root([b"a", b"b", b"c"])

    def publish(tx: Tx) -> None:
        admit(tx, "320115")
        admit(tx, "320116")
        log = MerkleLog(tx.repo.conn)
        log.add_tree_head(2, merkle.root([b"a", b"b"]), "note 2\n", AT)
        log.add_tree_head(3, root, "note 3\n", AT)
        log.add_tree_head(3, root, "note 3\n", AT)  # the same head again: no-op
        with pytest.raises(AlreadyExists):
            log.add_tree_head(3, root, "another note\n", AT)
        with pytest.raises(InvariantViolation):
            log.add_tree_head(2, root, "wrong root\n", AT)
        with pytest.raises(BadLogRange):
            log.add_tree_head(4, root, "too big\n", AT)

    ch_app.execute(publish)

    def cosign(tx: Tx) -> None:
        log = MerkleLog(tx.repo.conn)
        assert log.add_cosignature(3, "320115", "— w1 sig", 100, AT) is True
        assert log.add_cosignature(3, "320115", "— w1 sig", 100, AT) is False  # idempotent
        with pytest.raises(AlreadyExists) as caught:
            log.add_cosignature(3, "320115", "— w1 other", 100, AT)
        assert caught.value.reason == "COSIGNATURE_CONFLICT"
        with pytest.raises(NotFound):
            log.add_cosignature(1, "320115", "— w1 sig", 100, AT)
        assert log.add_cosignature(3, "320116", "— w2 sig", 101, AT) is True
        assert log.add_cosignature(2, "320116", "— w2 sig2", 99, AT) is True

    ch_app.execute(cosign)

    def read(tx: Tx) -> None:
        log = MerkleLog(tx.repo.conn)
        assert log.tree_head(3) == (root, "note 3\n")
        assert log.tree_head(1) is None
        assert log.latest_tree_head() == (3, root, "note 3\n")
        assert log.cosignatures(3) == [("320115", "— w1 sig", 100),
                                       ("320116", "— w2 sig", 101)]
        assert log.cosigned_sizes(2) == [3]
        assert log.cosigned_sizes(1) == [3, 2]
        assert log.cosigned_sizes(3) == []

    ch_app.query(read)
