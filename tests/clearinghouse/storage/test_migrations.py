"""The migrations own the clearinghouse's schema, and the models match them on both engines."""

from __future__ import annotations

import hashlib
import random

from sqlalchemy import inspect, text

from clearinghouse.storage import migrate
from clearinghouse.storage.db import Database
from clearinghouse.storage.repo import Repo
from clearinghouse.usecases import admission, log, submit, wire
from clearinghouse.usecases.app import ClearinghouseApp, Tx
from clearinghouse.usecases.clock import ManualClock
from clearinghouse.usecases.directory import REGISTER
from tests.clearinghouse.conftest import CITY_PUBLIC, certificate, registration
from tests.clearinghouse.usecases.test_claims import JN, KEYS
from tests.clearinghouse.usecases.test_submit import seal
from tests.reencode import reencoded
from timebank.envelope import identity
from timebank.v1 import clearing_pb2


def test_migrations_match_models_and_reach_head(ch_db_url: str) -> None:
    db = Database(ch_db_url)
    try:
        migrate.check(db.writer)  # raises if alembic autogenerate finds a difference
        assert migrate.current_revision(db.writer) == migrate.head_revision() == "0011"
        migrate.upgrade(db.writer)  # again: nothing to do
        with db.write() as conn:  # takes the write lock on PostgreSQL
            assert conn.execute(text("SELECT id FROM write_lock")).scalars().all() == [1]
    finally:
        db.dispose()


def test_0005_keys_receipts_by_envelope_identity_and_drops_repeats(ch_db_url: str) -> None:
    """A database from before 0005 keyed receipts by the SHA-256 of the bytes received,
    and a re-encoded replay got a second leaf and receipt. 0005 keys each receipt by its
    logged envelope's identity and keeps only the first receipt of an envelope."""
    db = Database(ch_db_url)
    app = ClearinghouseApp(db, ManualClock())
    try:
        app.execute(admission.admit, certificate(JN, "江宁区", KEYS[JN]), CITY_PUBLIC)
        envelopes = [registration(f"{i:064x}", JN, JN, KEYS[JN]) for i in range(3)]
        for env in envelopes:
            app.execute(submit.submit, wire.to_bytes(env), seal)
        migrate.downgrade(db.writer, "0004")
        legacy = {hashlib.sha256(wire.to_bytes(env)).digest() for env in envelopes}
        assert set(_receipt_keys(app)) == legacy  # the old meaning: the bytes' SHA-256
        # what the old clearinghouse did with a re-encoded replay: another leaf, receipt
        again = reencoded(wire.to_bytes(envelopes[0]), random.Random(5))

        def replayed_the_old_way(tx: Tx) -> None:
            index = log.append(tx, clearing_pb2.LogEntry(kind=log.REGISTRATION,
                                                         envelope=again, node_id=JN))
            sealed = seal(clearing_pb2.Receipt(envelope_sha256=hashlib.sha256(again).digest(),
                                               log_index=index).SerializeToString())
            tx.repo.insert_receipt(hashlib.sha256(again).digest(), JN, REGISTER, sealed,
                                   tx.now)

        # on the old schema, as the old code ran: without this code's write lock, whose
        # stamp reads tables of later revisions
        with db.writer.begin() as conn:
            replayed_the_old_way(Tx(Repo(conn), app.clock.now(), app.key_rings))
        assert len(_receipt_keys(app)) == 4
        migrate.upgrade(db.writer)
        keys = _receipt_keys(app)
        assert set(keys) == {identity(env) for env in envelopes}
        first = keys[identity(envelopes[0])]
        assert clearing_pb2.Receipt.FromString(wire.from_bytes(first).body).log_index < 4
        # and a replay now finds it, in any encoding
        done = app.execute(submit.submit, again, seal)
        assert done.replayed and done.receipt == first
        migrate.downgrade(db.writer, "0004")
        assert set(_receipt_keys(app)) == legacy
        migrate.upgrade(db.writer)
    finally:
        db.dispose()


def _receipt_keys(app: ClearinghouseApp) -> dict[bytes, bytes]:
    with app.db.read() as conn:
        return {bytes(k): bytes(r) for k, r in conn.execute(
            text("SELECT envelope_sha256, receipt FROM receipts"))}


def test_0009_gives_each_completed_claim_its_completing_leaf(ch_db_url: str) -> None:
    """A database from before 0009 knows no claim's completing leaf: the migration finds
    it in the log (the first claim leaf recording the claim completed), and a claim not
    completed gets none."""
    from tests.clearinghouse.settling import complete, found_city
    from tests.clearinghouse.usecases.test_claims import GL, cid

    db = Database(ch_db_url)
    app = ClearinghouseApp(db, ManualClock())
    try:
        found_city(app)
        complete(app, 1, GL, JN)
        complete(app, 2, JN, GL, minutes=30)
        expected = _completed_indexes(app)
        assert set(expected) == {cid(1), cid(2)} and None not in expected.values()
        migrate.downgrade(db.writer, "0008")
        migrate.upgrade(db.writer)
        assert _completed_indexes(app) == expected
        for claim_id, index in expected.items():
            entry = clearing_pb2.LogEntry.FromString(app.query(log.entries, index,
                                                               index + 1)[0])
            assert entry.claim_id == claim_id
            assert entry.state == clearing_pb2.CLAIM_STATE_COMPLETED
    finally:
        db.dispose()


def _completed_indexes(app: ClearinghouseApp) -> dict[str, int | None]:
    with app.db.read() as conn:
        return {str(c): i for c, i in conn.execute(text(
            "SELECT claim_id, completed_index FROM claims WHERE state = 'completed'"))}


_UNUSED = {("claims", "ix_claims_debtor_state"), ("claims", "ix_claims_creditor_state"),
           ("directory", "ix_directory_home_node_id")}


def _indexes(db: Database) -> set[tuple[str, str]]:
    found = inspect(db.writer)
    return {(table, str(ix["name"])) for table in ("claims", "directory")
            for ix in found.get_indexes(table)}


def test_0010_drops_the_unused_indexes_and_goes_back(ch_db_url: str) -> None:
    db = Database(ch_db_url)
    try:
        assert not _indexes(db) & _UNUSED
        migrate.downgrade(db.writer, "0009")
        assert _indexes(db) >= _UNUSED
        migrate.upgrade(db.writer)
        assert not _indexes(db) & _UNUSED
        migrate.check(db.writer)
    finally:
        db.dispose()


_LISTING = {("claims", "ix_claims_state_claim_id"), ("claims", "ix_claims_creditor_claim_id"),
            ("claims", "ix_claims_debtor_claim_id")}


def test_0011_adds_the_listing_indexes_and_goes_back(ch_db_url: str) -> None:
    db = Database(ch_db_url)
    try:
        assert _indexes(db) >= _LISTING
        migrate.downgrade(db.writer, "0010")
        assert not _indexes(db) & _LISTING
        migrate.upgrade(db.writer)
        assert _indexes(db) >= _LISTING
        migrate.check(db.writer)
    finally:
        db.dispose()
