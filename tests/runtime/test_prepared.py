"""``runtime.prepared``: a statement run on the driver's cursor gives what Core would.

Each test runs on SQLite and on a real PostgreSQL (a database of its own, dropped after).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from clearinghouse.storage.schema import UtcDateTime
from runtime.prepared import MAX_IN_LIST, Prepared
from tests.postgres import REQUIRE_POSTGRES, admin_engine, database_url

metadata = MetaData()
PEOPLE = Table(
    "prepared_people", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False),
    Column("district", String(16)),
    Column("minutes", BigInteger, nullable=False),
    Column("card", LargeBinary),
    Column("at", UtcDateTime, nullable=False),
)
WITH_DEFAULT = Table(
    "prepared_defaults", metadata,
    Column("id", Integer, primary_key=True),
    Column("note", String(16), default="none"),
)

AT = datetime(2026, 11, 25, 8, 30, 15, 123456, tzinfo=UTC)
ROWS = [
    {"id": 1, "name": "王秀英", "district": "江宁区", "minutes": 90_000, "card": b"\x00\xff",
     "at": AT},
    {"id": 2, "name": "张伟", "district": None, "minutes": 2**40, "card": None,
     "at": AT + timedelta(days=1)},
    {"id": 3, "name": "李娜", "district": "鼓楼区", "minutes": 0, "card": b"",
     "at": AT - timedelta(hours=8)},
]

BY_ID = Prepared(select(PEOPLE).where(PEOPLE.c.id == bindparam("id")))
IN_TWO_DISTRICTS = Prepared(select(PEOPLE.c.name).where(
    PEOPLE.c.district.in_(["江宁区", "鼓楼区"])).order_by(PEOPLE.c.id))
INSERT = Prepared(insert(PEOPLE))
INSERT_RETURNING = Prepared(insert(PEOPLE).returning(PEOPLE.c.id, PEOPLE.c.at))
ADD = Prepared(update(PEOPLE).where(PEOPLE.c.minutes >= bindparam("floor"))
               .values(minutes=PEOPLE.c.minutes + bindparam("delta")))
COUNT = Prepared(select(func.count()).select_from(PEOPLE))


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        made = create_engine(f"sqlite:///{tmp_path / 'prepared.sqlite3'}")
        metadata.create_all(made)
        yield made
        made.dispose()
        return
    name = f"tb_prep_{uuid.uuid4().hex[:12]}"
    admin = admin_engine()
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as e:  # any failure means no PostgreSQL here
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL is required but unreachable: {e}")
        pytest.skip("PostgreSQL is not reachable (set TIMEBANK_REQUIRE_POSTGRES=1 to fail)")
    made = create_engine(database_url(name))
    metadata.create_all(made)
    yield made
    made.dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_reads_back_what_core_reads_type_for_type(engine: Engine) -> None:
    with engine.begin() as conn:
        assert INSERT.many(conn, ROWS) == len(ROWS)
    with engine.connect() as conn:
        for row in ROWS:
            mine = BY_ID(conn, {"id": row["id"]}).one()
            core = conn.execute(BY_ID.statement, {"id": row["id"]}).one()
            assert tuple(mine) == tuple(core)
            assert mine._mapping == dict(core._mapping) == row
            assert (mine.name, mine.at, mine.card) == (row["name"], row["at"], row["card"])
            assert mine.at.tzinfo is not None
        assert BY_ID(conn, {"id": 99}).first() is None
        assert IN_TWO_DISTRICTS(conn).scalars() == ["王秀英", "李娜"]
        assert COUNT(conn).scalar_one() == 3


def test_writes_take_part_in_the_callers_transaction(engine: Engine) -> None:
    with engine.begin() as conn:
        INSERT(conn, ROWS[0])
        returned = INSERT_RETURNING(conn, ROWS[1]).one()
        assert (returned.id, returned.at) == (2, ROWS[1]["at"])
    with pytest.raises(RuntimeError), engine.begin() as conn:
        assert ADD(conn, {"floor": 0, "delta": 5}).rowcount == 2
        assert INSERT(conn, ROWS[2]).rowcount == 1
        raise RuntimeError("undo")
    with engine.connect() as conn:
        assert COUNT(conn).scalar() == 2
        assert [r.minutes for r in conn.execute(select(PEOPLE).order_by(PEOPLE.c.id))] == [
            90_000, 2**40]
    with engine.begin() as conn:
        assert ADD(conn, {"floor": 100_000, "delta": -1}).rowcount == 1
        assert BY_ID(conn, {"id": 2}).one().minutes == 2**40 - 1


def test_driver_errors_come_out_as_sqlalchemy_errors_and_change_nothing(
        engine: Engine) -> None:
    with engine.begin() as conn:
        INSERT(conn, ROWS[0])
    with pytest.raises(IntegrityError, match="prepared_people"), engine.begin() as conn:
        INSERT(conn, ROWS[1])
        INSERT(conn, {**ROWS[0], "name": "重复"})
    with engine.connect() as conn:
        assert [r.name for r in conn.execute(select(PEOPLE))] == ["王秀英"]


def test_one_time_object_written_many_times_is_stored_right_each_time(engine: Engine) -> None:
    """A transaction writes its one ``now`` on many rows: the conversion is remembered for
    that object, and still made afresh for any other time, aware or refused if naive."""
    shanghai = timezone(timedelta(hours=8), "Asia/Shanghai")
    same = AT.astimezone(shanghai)
    rows = [{**ROWS[0], "id": i, "at": same} for i in (1, 2)]
    rows.append({**ROWS[0], "id": 3, "at": AT + timedelta(microseconds=1)})
    rows.append({**ROWS[0], "id": 4, "at": same})
    with engine.begin() as conn:
        for row in rows:
            INSERT(conn, row)
        with pytest.raises(ValueError, match="naive"):
            INSERT(conn, {**ROWS[0], "id": 5, "at": AT.replace(tzinfo=None)})
    with engine.connect() as conn:
        stored = {r.id: r.at for r in conn.execute(select(PEOPLE))}
    assert stored == {1: AT, 2: AT, 3: AT + timedelta(microseconds=1), 4: AT}


def test_an_insert_compiles_once_per_set_of_columns(engine: Engine) -> None:
    fewer = {k: v for k, v in ROWS[1].items() if k not in ("district", "card")}
    with engine.begin() as conn:
        INSERT(conn, ROWS[0])
        INSERT(conn, fewer)
        got = BY_ID(conn, {"id": 2}).one()
    assert (got.district, got.card, got.minutes) == (None, None, 2**40)


def test_listeners_see_every_statement(engine: Engine) -> None:
    seen: list[str] = []

    def before(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        seen.append(statement.split()[0])

    with engine.begin() as conn:
        event.listen(conn, "before_cursor_execute", before)
        INSERT.many(conn, ROWS)
        BY_ID(conn, {"id": 1})
    assert seen == ["INSERT", "SELECT"]


def test_an_in_list_from_the_caller_of_any_length(engine: Engine) -> None:
    names = Prepared(select(PEOPLE.c.name).where(
        PEOPLE.c.id.in_(bindparam("ids", expanding=True)),
        PEOPLE.c.minutes >= bindparam("floor")).order_by(PEOPLE.c.id))
    with engine.begin() as conn:
        INSERT.many(conn, ROWS)
        assert names(conn, {"ids": [3], "floor": 0}).scalars() == ["李娜"]
        assert names(conn, {"ids": [3, 1, 7], "floor": 0}).scalars() == ["王秀英", "李娜"]
        assert names(conn, {"ids": [1, 2, 3], "floor": 1}).scalars() == ["王秀英", "张伟"]
        assert names(conn, {"ids": [], "floor": 0}).scalars() == []  # through Core
        many = list(range(-MAX_IN_LIST, 3))  # longer than any compiled: through Core
        assert names(conn, {"ids": many, "floor": 0}).scalars() == ["王秀英", "张伟"]
        core = [tuple(r) for r in conn.execute(names.statement, {"ids": many, "floor": 0})]
        assert [tuple(r) for r in names(conn, {"ids": many, "floor": 0})] == core


def test_refuses_what_it_cannot_do_as_core_would(engine: Engine) -> None:
    needs_default = Prepared(insert(WITH_DEFAULT))
    with engine.connect() as conn:
        with pytest.raises(ValueError, match="Python-side column defaults"):
            needs_default(conn, {"id": 1})
        with pytest.raises(KeyError):
            BY_ID(conn, {})
