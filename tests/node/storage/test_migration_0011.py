"""Migration 0011 (the volunteer's rating of the person served), on SQLite and PostgreSQL:
orders made before it are not rated by their volunteer; the schema refuses a rating out
of 1..5 or one without its time; it goes back to 0010 keeping every order."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, column, insert, table, text
from sqlalchemy.exc import IntegrityError

from node.storage import migrate
from node.storage.db import Database
from node.storage.repo import Repo
from tests.node.storage.test_migrations import empty_url  # noqa: F401 - the fixture

NOW = datetime(2026, 12, 1, 9, 0)
PERSON = {"id": 1, "person_ref": "ab" * 32, "kind": "individual", "name": "张桂兰",
          "id_number": "320115194001010012", "phone": "", "birth_date": None,
          "priority": True, "service_point_id": None, "enrolled_at": NOW,
          "home_node_id": None}
ORDER = {"id": 1, "state": "verified", "recipient_id": 1, "volunteer_id": None,
         "category": "cleaning", "planned_minutes": 60, "payment_source": "city_grant",
         "payer_id": None, "requested_by": "staff:1", "note": "", "held_minutes": 60,
         "measured_minutes": 60, "recorded_minutes": 0, "banked_minutes": 0,
         "excess_to_pool_minutes": 0, "unbanked_minutes": 0, "charged_minutes": 0,
         "rating": 5, "comment": "很好", "verified_by": "person:1", "dispute_reason": "",
         "resolution": "", "service_day": None, "requested_at": NOW, "accepted_at": NOW,
         "checked_in_at": NOW, "checked_out_at": NOW, "verified_at": NOW,
         "public_until": NOW, "recorded_at": None, "cancelled_at": None, "claim_id": None,
         "cancel_reason": ""}


def _insert(conn: Connection, name: str, row: dict[str, object]) -> None:
    conn.execute(insert(table(name, *(column(c) for c in row))), [row])


def test_0011_leaves_earlier_orders_unrated_and_goes_back(empty_url: str) -> None:  # noqa: F811
    db = Database(empty_url)
    try:
        migrate.upgrade(db.writer, "0010")
        with db.write() as conn:
            _insert(conn, "people", PERSON)
            _insert(conn, "orders", ORDER)
        migrate.upgrade(db.writer)
        assert migrate.current_revision(db.writer) == migrate.head_revision()
        migrate.check(db.writer)
        with db.read() as conn:
            order = Repo(conn).orders.get(1)
        assert (order.rating, order.comment) == (5, "很好")
        assert (order.rating_by_volunteer, order.comment_by_volunteer,
                order.rated_by_volunteer_at) == (0, "", None)

        # a rating out of 1..5, or one without its time, is refused by the schema itself
        for bad in ("rating_by_volunteer = 6, rated_by_volunteer_at = requested_at",
                    "rating_by_volunteer = 4"):
            with pytest.raises(IntegrityError), db.write() as conn:
                conn.execute(text(f"UPDATE orders SET {bad} WHERE id = 1"))

        rated_at = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
        with db.write() as conn:
            repo = Repo(conn)
            repo.orders.update(order, replace(order, rating_by_volunteer=4,
                                              comment_by_volunteer="老人很热情",
                                              rated_by_volunteer_at=rated_at))
        with db.read() as conn:
            rated = Repo(conn).orders.get(1)
        assert (rated.rating_by_volunteer, rated.comment_by_volunteer,
                rated.rated_by_volunteer_at) == (4, "老人很热情", rated_at)

        migrate.downgrade(db.writer, "0010")
        with db.read() as conn:
            assert conn.execute(text("SELECT rating, comment FROM orders")).one() == (5, "很好")
        migrate.upgrade(db.writer)
        migrate.check(db.writer)
    finally:
        db.dispose()
