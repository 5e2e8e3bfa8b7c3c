"""``Repo.claims_newest_first``, the storage of ListClaims: newest first by claim id, a
district's walks as creditor and as debtor merged, and on SQLite each walk read down an
index with no sort, so a page costs the same however many claims the city has (the
planner's own word, EXPLAIN QUERY PLAN, on the statements the repository runs)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import Table, event, insert

from clearinghouse.domain.claims import ClaimState
from clearinghouse.storage import schema
from clearinghouse.storage.db import Database
from clearinghouse.storage.repo import Repo
from clearinghouse.usecases import admission
from clearinghouse.usecases.app import ClearinghouseApp
from clearinghouse.usecases.clock import ManualClock
from runtime.errors import InvariantViolation
from tests.clearinghouse.conftest import CITY_PUBLIC, certificate
from tests.clearinghouse.usecases.test_claims import GL, JN, KEYS, QX
from tests.sqlite import migrated_sqlite

CLAIMS = cast(Table, schema.ClaimRow.__table__)
STATES = ("proposed", "accepted", "completed", "voided", "rejected", "expired")


def _claim_id(i: int) -> str:
    """A UUIDv7 whose time part grows with ``i``."""
    return str(uuid.UUID(int=((1_700_000_000_000 + i) << 80) | (0x7 << 76) | (0x2 << 62) | i))


def _fill(app: ClearinghouseApp, count: int) -> list[dict[str, Any]]:
    """``count`` claims among three districts in every state, written straight into the
    table (what a listing reads, not how claims are made)."""
    for node, district in ((JN, "江宁区"), (GL, "鼓楼区"), (QX, "栖霞区")):
        app.execute(admission.admit, certificate(node, district, KEYS[node]), CITY_PUBLIC)
    now = app.clock.now()
    pairs = ((JN, GL), (GL, QX), (QX, JN), (GL, JN))
    rows = []
    for i in range(count):
        state = STATES[i % len(STATES)]
        creditor, debtor = pairs[i % len(pairs)]
        rows.append(dict(
            claim_id=_claim_id(i), kind="redemption", creditor=creditor, debtor=debtor,
            payer_ref=f"{i:064x}", minutes=10 + i % 1000, state=state,
            posted_minutes=10 + i % 1000 if state == "completed" else None,
            reason={"voided": "CANCELLED", "rejected": "POLICY",
                    "expired": "EXPIRED"}.get(state),
            created_at=now, expires_at=now + timedelta(days=1),
            updated_at=now, proposal=b"p",
            completed_index=i if state == "completed" else None))
    with app.db.write() as conn:
        conn.execute(insert(CLAIMS), rows)
    return rows


@pytest.fixture
def filled(ch_app: ClearinghouseApp) -> tuple[ClearinghouseApp, list[dict[str, Any]]]:
    return ch_app, _fill(ch_app, 90)


@pytest.mark.parametrize("state", [None, *ClaimState])
@pytest.mark.parametrize("party", [None, JN, QX])
@pytest.mark.parametrize("before", [None, 60])
def test_newest_first_as_filtered(filled: tuple[ClearinghouseApp, list[dict[str, Any]]],
                                  state: ClaimState | None, party: str | None,
                                  before: int | None) -> None:
    app, rows = filled
    expected = [r["claim_id"] for r in reversed(rows)
                if (state is None or r["state"] == state.value)
                and (party is None or party in (r["creditor"], r["debtor"]))
                and (before is None or r["claim_id"] < _claim_id(before))][:7]
    with app.db.read() as conn:
        found = Repo(conn).claims_newest_first(
            state=state, party=party, before=None if before is None else _claim_id(before),
            limit=7)
    assert [c.claim.claim_id for c in found] == expected
    for listed in found:
        row = rows[int(listed.claim.claim_id[-12:], 16)]
        assert listed.claim.minutes == row["minutes"]
        assert listed.completed_index == row["completed_index"]
        assert listed.settled_serial is None


def test_a_listing_reads_a_bounded_number(filled: tuple[ClearinghouseApp,
                                                        list[dict[str, Any]]]) -> None:
    app, _ = filled
    with app.db.read() as conn:
        for limit in (0, 1001, True):
            with pytest.raises(InvariantViolation):
                Repo(conn).claims_newest_first(state=None, party=None, before=None,
                                               limit=limit)


@pytest.fixture
def sqlite_app(tmp_path: Path) -> Iterator[ClearinghouseApp]:
    db = Database(migrated_sqlite(tmp_path / "clearinghouse.sqlite3", "clearinghouse"))
    yield ClearinghouseApp(db, ManualClock())
    db.dispose()


@pytest.mark.parametrize(("state", "party", "index"), [
    (None, None, None),
    (ClaimState.REJECTED, None, "ix_claims_state_claim_id"),
    (None, QX, "ix_claims_(creditor|debtor)_claim_id"),
    (ClaimState.PROPOSED, JN, "ix_claims_(state|creditor|debtor)_claim_id"),
])
def test_sqlite_walks_an_index_and_sorts_nothing(sqlite_app: ClearinghouseApp,
                                                 state: ClaimState | None, party: str | None,
                                                 index: str | None) -> None:
    _fill(sqlite_app, 300)
    ran: list[tuple[str, Any]] = []

    def seen(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and " claims" in statement:
            ran.append((statement, parameters))

    event.listen(sqlite_app.db.reader, "before_cursor_execute", seen)
    try:
        with sqlite_app.db.read() as conn:
            Repo(conn).claims_newest_first(state=state, party=party,
                                           before=_claim_id(250), limit=51)
    finally:
        event.remove(sqlite_app.db.reader, "before_cursor_execute", seen)
    assert len(ran) == (1 if party is None else 2)
    with sqlite_app.db.read() as conn:
        for statement, parameters in ran:
            plan = " | ".join(str(row[-1]) for row in conn.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {statement}", parameters))
            assert "TEMP B-TREE" not in plan, plan  # read in order: no sort of all matches
            assert plan.startswith("SEARCH"), plan  # a range of an index, not the table
            if index is None:
                assert "PRIMARY KEY" in plan or "sqlite_autoindex_claims_1" in plan, plan
            else:
                assert re.search(index, plan), plan
