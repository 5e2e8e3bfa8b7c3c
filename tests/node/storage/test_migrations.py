"""Alembic owns the schema: migrations reach head and match the models exactly."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from nacl.signing import SigningKey
from sqlalchemy import BigInteger, DateTime, LargeBinary, Text, column, insert, table, text

from node.storage import migrate
from node.storage.db import Database
from node.storage.repo import Repo
from tests.postgres import REQUIRE_POSTGRES, admin_engine, database_url
from timebank.envelope import sign
from timebank.keys import key_id, public_key
from timebank.v1 import clearing_pb2

#: ``log_anchors`` as migration 0003 made it.
ANCHORS_0003 = table(
    "log_anchors", column("entry_count", BigInteger), column("chain_head", LargeBinary),
    column("ledger_root", LargeBinary), column("checkpoint", LargeBinary),
    column("log_index", BigInteger), column("log_entry", LargeBinary),
    column("log_proof", LargeBinary), column("tree_head", Text),
    column("created_at", DateTime), column("anchored_at", DateTime))


def test_migrations_match_models(db_url: str) -> None:
    db = Database(db_url)
    try:
        assert migrate.current_revision(db.writer) == migrate.head_revision()
        migrate.check(db.writer)  # raises if the models and the migrations drift apart
        migrate.upgrade(db.writer)  # running again is harmless
        assert migrate.current_revision(db.writer) == migrate.head_revision()
    finally:
        db.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (no schema at all), once per storage engine."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'node.sqlite3'}"
        return
    try:
        admin = admin_engine()
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:
        if REQUIRE_POSTGRES:
            raise
        pytest.skip("PostgreSQL is not reachable")
    name = f"tb_mig_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield database_url(name)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_anchors_made_before_0004_are_keyed_by_the_key_that_signed_them(
        empty_url: str) -> None:
    db = Database(empty_url)
    key = SigningKey(b"an anchoring node key".ljust(32, b"."))
    signed = sign("node.checkpoint", b"checkpoint body", "320115", key)
    sent = clearing_pb2.Envelope(kind=signed.kind, body=signed.body, signer=signed.signer,
                                 key_id=signed.key_id, signature=signed.signature)
    now = datetime(2026, 12, 1, tzinfo=UTC)
    try:
        migrate.upgrade(db.writer, "0003")
        with db.write() as conn:
            conn.execute(insert(ANCHORS_0003), [
                {"entry_count": 5, "chain_head": b"h" * 32, "ledger_root": b"r" * 32,
                 "checkpoint": sent.SerializeToString(), "log_index": 9, "log_entry": b"leaf",
                 "log_proof": b"", "tree_head": "head", "created_at": now.replace(tzinfo=None),
                 "anchored_at": now.replace(tzinfo=None)},
                {"entry_count": 8, "chain_head": b"i" * 32, "ledger_root": b"s" * 32,
                 "checkpoint": b"queued body", "log_index": None, "log_entry": None,
                 "log_proof": None, "tree_head": None, "created_at": now.replace(tzinfo=None),
                 "anchored_at": None}])
        migrate.upgrade(db.writer)
        migrate.check(db.writer)
        with db.read() as conn:
            repo = Repo(conn)
            assert [a.key_id for a in repo.anchors.at(5)] == [key_id(public_key(key))]
            assert [a.key_id for a in repo.anchors.at(8)] == [""]
            latest = repo.anchors.latest()
            assert latest is not None and latest.entry_count == 5
    finally:
        db.dispose()


def test_0010_keeps_every_claim_unsettled_and_goes_back(empty_url: str) -> None:
    """Claims completed before settlement existed are unsettled (their minutes are in
    the clearing account); 0010 goes back to 0009 without them losing anything."""
    db = Database(empty_url)
    now = datetime(2026, 12, 1)
    claim = {"claim_id": "0190f0e0-0000-7000-8000-000000000001", "kind": "move",
             "role": "creditor", "counterparty": "320106", "person_ref": "ab" * 32,
             "recipient_ref": "", "minutes": 60, "posted_minutes": 60,
             "origins": '[["individual", 60]]', "state": "completed", "reason": "",
             "detail": "", "order_id": None, "person_id": None, "person_priority": False,
             "expires_at": now, "created_at": now, "updated_at": now}
    try:
        migrate.upgrade(db.writer, "0009")
        with db.write() as conn:
            conn.execute(insert(table("claims", *(column(c) for c in claim))), [claim])
        migrate.upgrade(db.writer)
        migrate.check(db.writer)
        with db.read() as conn:
            repo = Repo(conn)
            assert repo.settlements.unsettled_net() == 60
            [found] = repo.settlements.unsettled("320115", 10)
            assert (found.claim_id, found.settled_serial, found.creditor) == (
                claim["claim_id"], 0, "320115")
        migrate.downgrade(db.writer, "0009")
        with db.read() as conn:
            assert conn.execute(text("SELECT minutes FROM claims")).scalar_one() == 60
        migrate.upgrade(db.writer)
    finally:
        db.dispose()
