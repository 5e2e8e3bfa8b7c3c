"""Migration 0012 (the passbooks a node issued), on SQLite and PostgreSQL: a passbook is
kept once per digest, byte for byte, and given back by it; the schema refuses a digest
that is not 32 bytes and an empty or oversized file; it goes back to 0011 keeping the
people."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, column, func, insert, select, table, text
from sqlalchemy.exc import IntegrityError

from node.storage import migrate
from node.storage.db import Database
from node.storage.passbooks import MAX_FILE_BYTES
from node.storage.repo import Repo
from node.storage.tables import PASSBOOKS
from node.usecases.statement import MAX_SERVED_BYTES
from runtime.errors import InvariantViolation
from tests.node.storage.test_migrations import empty_url  # noqa: F401 - the fixture

NOW = datetime(2026, 12, 14, 9, 0)
PERSON = {"id": 1, "person_ref": "ab" * 32, "kind": "individual", "name": "张桂兰",
          "id_number": "320115194001010012", "phone": "", "birth_date": None,
          "priority": True, "service_point_id": None, "enrolled_at": NOW,
          "home_node_id": None}
FILE = '{"format": "timebank-statement/v1", "statement": {"person": "张桂兰"}}\n'.encode()


def _insert(conn: Connection, name: str, row: dict[str, object]) -> None:
    conn.execute(insert(table(name, *(column(c) for c in row))), [row])


def test_every_passbook_the_api_sends_fits_what_is_kept() -> None:
    assert MAX_SERVED_BYTES <= MAX_FILE_BYTES


def test_0012_keeps_each_passbook_once_by_its_digest_and_goes_back(
        empty_url: str) -> None:  # noqa: F811
    db = Database(empty_url)
    try:
        migrate.upgrade(db.writer, "0011")
        with db.write() as conn:
            _insert(conn, "people", PERSON)
        migrate.upgrade(db.writer)
        assert migrate.current_revision(db.writer) == "0012"
        migrate.check(db.writer)
        code, made = bytes(range(32)), datetime(2026, 12, 14, 9, 30, tzinfo=UTC)
        for _ in range(2):  # the same statement kept twice is one row
            with db.write() as conn:
                Repo(conn).passbooks.add(code, 1, made, "", FILE)
        with db.read() as conn:
            kept = Repo(conn).passbooks.get(code)
            assert conn.execute(select(func.count()).select_from(PASSBOOKS)).scalar_one() == 1
            assert Repo(conn).passbooks.get(bytes(32)) is None
        assert kept is not None
        assert (kept.digest, kept.person_id, kept.made_at, kept.warning,
                kept.statement_file) == (code, 1, made, "", FILE)

        with pytest.raises(InvariantViolation), db.write() as conn:
            Repo(conn).passbooks.add(code, 2, made, "", FILE)  # one digest, one person
        for bad in (code[:31], code + b"\x00"):
            with pytest.raises(InvariantViolation), db.write() as conn:
                Repo(conn).passbooks.add(bad, 1, made, "", FILE)
        with pytest.raises(InvariantViolation), db.write() as conn:
            Repo(conn).passbooks.add(bytes(31) + b"\x01", 1, made, "", b"")
        # and the schema itself refuses what the repository would not write
        for digest, size in ((b"\x01" * 31, 10), (b"\x02" * 32, 0),
                             (b"\x03" * 32, MAX_FILE_BYTES + 1)):
            with pytest.raises(IntegrityError), db.write() as conn:
                conn.execute(insert(PASSBOOKS).values(
                    digest=digest, person_id=1, made_at=made, warning="",
                    statement_file=b"x" * size))
        with pytest.raises(IntegrityError), db.write() as conn:  # nobody's passbook
            conn.execute(insert(PASSBOOKS).values(digest=b"\x04" * 32, person_id=99,
                                                  made_at=made, statement_file=FILE))

        migrate.downgrade(db.writer, "0011")
        with db.read() as conn:
            assert conn.execute(text("SELECT name FROM people")).one() == ("张桂兰",)
        migrate.upgrade(db.writer)
        migrate.check(db.writer)
    finally:
        db.dispose()
