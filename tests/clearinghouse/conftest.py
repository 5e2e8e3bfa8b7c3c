"""Clearinghouse fixtures: every storage test runs on SQLite and on a real PostgreSQL.

The same pattern as tests/conftest.py, for the clearinghouse's own schema: PostgreSQL
tests get a fresh database made from a migrated template and drop it afterwards. With
TIMEBANK_REQUIRE_POSTGRES=1 (as in CI) an unreachable PostgreSQL fails the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from nacl.signing import SigningKey
from sqlalchemy import select

from clearinghouse.storage import migrate
from clearinghouse.storage.db import Database
from clearinghouse.storage.schema import Base
from clearinghouse.usecases.app import ClearinghouseApp
from clearinghouse.usecases.clock import ManualClock
from runtime.errors import Refusal
from tests.postgres import fresh_database, migrated_template
from tests.sqlite import migrated_sqlite
from timebank.envelope import CITY, Signed, sign
from timebank.keys import public_key
from timebank.v1 import clearing_pb2


@pytest.fixture(scope="session")
def ch_pg_template() -> Iterator[str | None]:
    """A migrated clearinghouse template database, or None when PostgreSQL is unreachable."""
    yield from migrated_template("tb_chtpl", migrate.upgrade)


@pytest.fixture
def ch_pg_url(ch_pg_template: str | None) -> Iterator[str]:
    """A fresh, migrated clearinghouse PostgreSQL database for one test."""
    yield from fresh_database(ch_pg_template, "tb_ch")


@pytest.fixture(params=["sqlite", "postgres"])
def ch_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated clearinghouse database URL, once per storage engine."""
    if request.param == "sqlite":
        return migrated_sqlite(tmp_path / "clearinghouse.sqlite3", "clearinghouse")
    pg_url: str = request.getfixturevalue("ch_pg_url")
    return pg_url


@pytest.fixture
def ch_clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def ch_app(ch_db_url: str, ch_clock: ManualClock) -> Iterator[ClearinghouseApp]:
    db = Database(ch_db_url)
    yield ClearinghouseApp(db, ch_clock)
    db.dispose()


def snapshot(app: ClearinghouseApp) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every clearinghouse table, to show a refusal changed nothing."""
    with app.db.read() as conn:
        return {table.name: sorted(tuple(row) for row in conn.execute(select(table)))
                for table in Base.metadata.sorted_tables}


# signed messages ---------------------------------------------------------------------

CITY_KEY = SigningKey(bytes(range(32)))
CITY_PUBLIC = public_key(CITY_KEY)


def node_key(node_id: str, generation: int = 0) -> SigningKey:
    """A deterministic key per node and key generation (tests only)."""
    return SigningKey(f"{node_id}/{generation}".encode().ljust(32, b"."))


def stamp(at: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


def certificate(node_id: str, district: str, key: SigningKey | bytes, serial: int = 1, *,
                not_before: datetime | None = None, signer_key: SigningKey = CITY_KEY,
                kind: str = "admission") -> Signed:
    pk = key if isinstance(key, bytes) else public_key(key)
    body = clearing_pb2.AdmissionCertificate(node_id=node_id, district=district,
                                             public_key=pk, serial=serial)
    if not_before is not None:
        body.not_before.CopyFrom(stamp(not_before))
    return sign(kind, body.SerializeToString(), CITY, signer_key)


def revocation(node_id: str, key_id: str, reason: str = "key compromised", *,
               signer_key: SigningKey = CITY_KEY) -> Signed:
    body = clearing_pb2.Revocation(node_id=node_id, key_id=key_id, reason=reason)
    return sign("revocation", body.SerializeToString(), CITY, signer_key)


def registration(person_ref: str, home: str, signer: str, key: SigningKey, *,
                 kind: str = "directory.register") -> Signed:
    body = clearing_pb2.DirectoryRegistration(person_ref=person_ref, home_node_id=home)
    return sign(kind, body.SerializeToString(), signer, key)


def refused(app: ClearinghouseApp, fn: Callable[..., object], *args: object,
            ) -> Refusal:
    """Run a use-case that must be refused; check it changed no row, return the error."""
    before = snapshot(app)
    with pytest.raises(Refusal) as caught:
        app.execute(fn, *args)
    assert snapshot(app) == before
    return caught.value
