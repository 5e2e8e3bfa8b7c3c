"""``runtime.statements``: both implementations, Core and the driver's cursor, give the
same results, refuse the same things and raise the same errors.

Each test runs on SQLite and on a real PostgreSQL (a database of its own, dropped after),
and, where it says ``mode``, once per statement mode.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    ExceptionContext,
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
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.exc import (
    IntegrityError,
    MultipleResultsFound,
    NoResultFound,
    OperationalError,
    StatementError,
)

from runtime.schema import UtcDateTime
from runtime.statements import (
    EXECUTION_OPTION,
    MAX_IN_LIST,
    Prepared,
    Result,
    StatementMode,
    mode_from_environment,
    mode_of,
)
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
IDS_IN = Prepared(select(PEOPLE.c.name).where(
    PEOPLE.c.id.in_(bindparam("ids", expanding=True)),
    PEOPLE.c.minutes >= bindparam("floor")).order_by(PEOPLE.c.id))
INSERT = Prepared(insert(PEOPLE))
INSERT_RETURNING = Prepared(insert(PEOPLE).returning(PEOPLE.c.id, PEOPLE.c.at))
ADD = Prepared(update(PEOPLE).where(PEOPLE.c.minutes >= bindparam("floor"))
               .values(minutes=PEOPLE.c.minutes + bindparam("delta")))
MOVE_AT = Prepared(update(PEOPLE).where(PEOPLE.c.id == bindparam("b_id"))
                   .values(at=bindparam("b_at")))
COUNT = Prepared(select(func.count()).select_from(PEOPLE))
SUMMARY = Prepared(select(func.max(PEOPLE.c.at), func.sum(PEOPLE.c.minutes).label("total"),
                          literal_column("'固定'").label("fixed"),
                          func.min(PEOPLE.c.minutes) + 1)
                   .where(PEOPLE.c.id != 2))
SAVEPOINT = Prepared(text("SAVEPOINT prepared_test"))
ROLLBACK_TO = Prepared(text("ROLLBACK TO SAVEPOINT prepared_test"))

Make = Callable[[str], Engine]  # a StatementMode, or its name


def _sqlite_maker(tmp_path: Path) -> Iterator[Make]:
    made: list[Engine] = []

    def make(mode: str) -> Engine:
        path = tmp_path / f"prepared-{len(made)}.sqlite3"
        engine = create_engine(f"sqlite:///{path}", execution_options={EXECUTION_OPTION: mode})
        metadata.create_all(engine)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.dispose()


def _postgres_maker(**engine_options: Any) -> Iterator[Make]:
    admin = admin_engine()
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as e:  # any failure means no PostgreSQL here
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL is required but unreachable: {e}")
        pytest.skip("PostgreSQL is not reachable (set TIMEBANK_REQUIRE_POSTGRES=1 to fail)")
    made: list[tuple[str, Engine]] = []

    def make(mode: str) -> Engine:
        name = f"tb_prep_{uuid.uuid4().hex[:12]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        engine = create_engine(database_url(name), execution_options={EXECUTION_OPTION: mode},
                               **engine_options)
        made.append((name, engine))
        metadata.create_all(engine)
        return engine

    yield make
    with admin.connect() as conn:
        for name, engine in made:
            engine.dispose()
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def make_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Make]:
    """Engines with the test tables, each on a fresh database, in the mode asked for."""
    if request.param == "sqlite":
        yield from _sqlite_maker(tmp_path)
    else:
        yield from _postgres_maker()


@pytest.fixture(params=list(StatementMode))
def engine(request: pytest.FixtureRequest, make_engine: Make) -> Engine:
    """One engine per storage engine and statement mode."""
    made = make_engine(request.param)
    with made.connect() as conn:
        assert mode_of(conn) is request.param
    return made


def observe(result: Result) -> list[tuple[Any, ...]]:
    """Everything a caller can see of a result: each row's values with their types, its
    attributes and mapping, and the row count."""
    seen: list[tuple[Any, ...]] = [("rowcount", result.rowcount)]
    for row in result:
        seen.append((tuple(row), [type(v) for v in row], row._mapping,
                     [getattr(row, k) for k in row._fields if k.isidentifier()]))
    return seen


def exercise(conn: Connection) -> list[Any]:
    """A bit of every kind of statement, and what each gave back."""
    shanghai = timezone(timedelta(hours=8), "Asia/Shanghai")
    seen: list[Any] = [INSERT.many(conn, ROWS[:2])]
    seen += observe(INSERT_RETURNING(conn, ROWS[2]))
    seen += observe(BY_ID(conn, {"id": 1})) + observe(BY_ID(conn, {"id": 99}))
    seen += observe(IN_TWO_DISTRICTS(conn)) + observe(COUNT(conn)) + observe(SUMMARY(conn))
    for ids in ([3], [3, 1, 7], [], list(range(-MAX_IN_LIST, 3))):
        seen += observe(IDS_IN(conn, {"ids": ids, "floor": 0}))
    seen += observe(ADD(conn, {"floor": 1, "delta": 5}))
    seen += observe(MOVE_AT(conn, {"b_id": 2, "b_at": AT.astimezone(shanghai)}))
    seen += observe(SAVEPOINT(conn)) + observe(ROLLBACK_TO(conn))
    seen += observe(BY_ID(conn, {"id": 2}))
    seen.append(BY_ID(conn, {"id": 1}).one().at.tzinfo)
    seen.append((COUNT(conn).scalar(), COUNT(conn).scalar_one(),
                 IDS_IN(conn, {"ids": [1, 2, 3], "floor": 0}).scalars(), BY_ID(conn, {"id": 5})
                 .first(), len(BY_ID(conn, {"id": 3}).all())))
    return seen


def test_both_modes_give_identical_results(make_engine: Make) -> None:
    seen = {}
    for mode in StatementMode:
        with make_engine(mode).begin() as conn:
            seen[mode] = exercise(conn)
    assert seen[StatementMode.CORE] == seen[StatementMode.DRIVER]
    assert seen[StatementMode.DRIVER][0] == 2  # rows inserted by the executemany


def test_reads_back_what_core_reads_type_for_type(engine: Engine) -> None:
    with engine.begin() as conn:
        assert INSERT.many(conn, ROWS) == len(ROWS)
    with engine.begin() as conn:
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
        core_keys = list(conn.execute(SUMMARY.statement).keys())
        assert list(SUMMARY(conn).one()._mapping) == core_keys
        with pytest.raises(NoResultFound):
            BY_ID(conn, {"id": 99}).one()
        with pytest.raises(MultipleResultsFound):
            IN_TWO_DISTRICTS(conn).one()


def test_writes_take_part_in_the_callers_transaction(engine: Engine) -> None:
    with engine.begin() as conn:
        INSERT(conn, ROWS[0])
        returned = INSERT_RETURNING(conn, ROWS[1]).one()
        assert (returned.id, returned.at) == (2, ROWS[1]["at"])
    with pytest.raises(RuntimeError), engine.begin() as conn:
        assert ADD(conn, {"floor": 0, "delta": 5}).rowcount == 2
        assert INSERT(conn, ROWS[2]).rowcount == 1
        raise RuntimeError("undo")
    with engine.begin() as conn:
        assert COUNT(conn).scalar() == 2
        assert [r.minutes for r in conn.execute(select(PEOPLE).order_by(PEOPLE.c.id))] == [
            90_000, 2**40]
    with engine.begin() as conn:
        assert ADD(conn, {"floor": 100_000, "delta": -1}).rowcount == 1
        assert BY_ID(conn, {"id": 2}).one().minutes == 2**40 - 1


def test_outside_a_transaction_one_begins_as_core_begins_it(engine: Engine) -> None:
    with engine.connect() as conn:
        INSERT(conn, ROWS[0])
        assert conn.in_transaction()
        conn.commit()
        INSERT(conn, ROWS[1])
        conn.rollback()
    with engine.connect() as conn:
        assert COUNT(conn).scalar() == 1


def test_driver_errors_come_out_as_sqlalchemy_errors_and_change_nothing(
        engine: Engine) -> None:
    with engine.begin() as conn:
        INSERT(conn, ROWS[0])
    with pytest.raises(IntegrityError, match="prepared_people"), engine.begin() as conn:
        INSERT(conn, ROWS[1])
        INSERT(conn, {**ROWS[0], "name": "重复"})
    with engine.connect() as conn:
        assert [r.name for r in conn.execute(select(PEOPLE))] == ["王秀英"]


def test_a_handle_error_listener_sees_every_error_and_may_replace_it(engine: Engine) -> None:
    class Duplicate(Exception):
        pass

    seen: list[tuple[str, str, bool]] = []

    @event.listens_for(engine, "handle_error")
    def replace(ctx: ExceptionContext) -> Exception | None:
        seen.append((type(ctx.sqlalchemy_exception).__name__, str(ctx.statement).split()[0],
                     ctx.is_disconnect))
        if isinstance(ctx.sqlalchemy_exception, IntegrityError):
            return Duplicate("already there")
        return None

    with engine.begin() as conn:
        INSERT(conn, ROWS[0])
    with pytest.raises(Duplicate), engine.begin() as conn:
        INSERT(conn, ROWS[0])
    with pytest.raises(StatementError, match="A value is required for bind parameter 'id'"), \
            engine.begin() as conn:
        BY_ID(conn, {})
    assert seen == [("IntegrityError", "INSERT", False), ("StatementError", "SELECT", False)]


def test_values_are_refused_as_core_refuses_them(engine: Engine) -> None:
    """A missing parameter, or a value its type refuses, is Core's StatementError, with
    the type's own error inside; and nothing runs."""
    with pytest.raises(StatementError, match="A value is required for bind parameter"), \
            engine.begin() as conn:
        BY_ID(conn, {})
    with pytest.raises(StatementError, match="naive") as refused, engine.begin() as conn:
        INSERT(conn, {**ROWS[0], "at": AT.replace(tzinfo=None)})
    assert isinstance(refused.value.orig, ValueError)
    with engine.connect() as conn:
        assert COUNT(conn).scalar() == 0


def test_one_time_object_written_many_times_is_stored_right_each_time(engine: Engine) -> None:
    """A transaction writes its one ``now`` on many rows: the conversion is remembered for
    that object, and still made afresh for any other time."""
    shanghai = timezone(timedelta(hours=8), "Asia/Shanghai")
    same = AT.astimezone(shanghai)
    rows = [{**ROWS[0], "id": i, "at": same} for i in (1, 2)]
    rows.append({**ROWS[0], "id": 3, "at": AT + timedelta(microseconds=1)})
    rows.append({**ROWS[0], "id": 4, "at": same})
    with engine.begin() as conn:
        for row in rows:
            INSERT(conn, row)
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
        SAVEPOINT(conn)
    assert seen == ["INSERT", "SELECT", "SAVEPOINT"]


def test_an_in_list_from_the_caller_of_any_length(engine: Engine) -> None:
    with engine.begin() as conn:
        INSERT.many(conn, ROWS)
        assert IDS_IN(conn, {"ids": [3], "floor": 0}).scalars() == ["李娜"]
        assert IDS_IN(conn, {"ids": [3, 1, 7], "floor": 0}).scalars() == ["王秀英", "李娜"]
        assert IDS_IN(conn, {"ids": [1, 2, 3], "floor": 1}).scalars() == ["王秀英", "张伟"]
        assert IDS_IN(conn, {"ids": [], "floor": 0}).scalars() == []  # through Core
        many = list(range(-MAX_IN_LIST, 3))  # longer than any compiled: through Core
        assert IDS_IN(conn, {"ids": many, "floor": 0}).scalars() == ["王秀英", "张伟"]
        core = [tuple(r) for r in conn.execute(IDS_IN.statement, {"ids": many, "floor": 0})]
        assert [tuple(r) for r in IDS_IN(conn, {"ids": many, "floor": 0})] == core
        with pytest.raises(ValueError, match="executemany takes no IN lists"):
            IDS_IN.many(conn, [{"ids": [1], "floor": 0}])


def test_refuses_what_it_cannot_do_in_either_mode(engine: Engine) -> None:
    needs_default = Prepared(insert(WITH_DEFAULT))
    with engine.begin() as conn:
        with pytest.raises(ValueError, match="Python-side column defaults"):
            needs_default(conn, {"id": 1})
        needs_default(conn, {"id": 1, "note": "given"})  # every column given: no default
        assert conn.execute(select(WITH_DEFAULT.c.note)).scalar_one() == "given"


def test_the_engine_setting_chooses_the_implementation(make_engine: Make) -> None:
    """Core runs a statement with an execution context; the driver path has none. The
    setting is a StatementMode or its name."""
    for mode in (*StatementMode, "core", "driver"):
        contexts: list[bool] = []

        def before(_c: Any, _cur: Any, _s: str, _p: Any, context: Any, _many: bool,
                   into: list[bool] = contexts) -> None:
            into.append(context is not None)

        with make_engine(mode).begin() as conn:
            event.listen(conn, "before_cursor_execute", before)
            BY_ID(conn, {"id": 1})
        assert contexts == [mode == StatementMode.CORE]


def test_the_environment_names_the_default_mode() -> None:
    assert mode_from_environment({}) is StatementMode.DRIVER
    assert mode_from_environment({"TIMEBANK_STATEMENTS": "core"}) is StatementMode.CORE
    assert mode_from_environment({"TIMEBANK_STATEMENTS": " Driver "}) is StatementMode.DRIVER
    with pytest.raises(ValueError, match="TIMEBANK_STATEMENTS must be 'core' or 'driver'"):
        mode_from_environment({"TIMEBANK_STATEMENTS": "fast"})


# a connection the server drops ---------------------------------------------------------

@pytest.fixture(params=list(StatementMode))
def pg_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """PostgreSQL with one pooled connection and no ping on checkout: a dead connection
    left in the pool would be handed out again."""
    makers = _postgres_maker(pool_size=1, max_overflow=0, pool_pre_ping=False)
    yield next(makers)(request.param)
    next(makers, None)


def _kill(conn: Connection) -> None:
    pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    admin = admin_engine()
    with admin.connect() as killer:
        assert killer.execute(text("SELECT pg_terminate_backend(:pid)"),
                              {"pid": pid}).scalar_one()
    admin.dispose()


def test_a_killed_connection_is_invalidated_and_the_next_call_works(
        pg_engine: Engine) -> None:
    disconnects: list[bool] = []
    event.listen(pg_engine, "handle_error",
                 lambda ctx: disconnects.append(ctx.is_disconnect))
    with pg_engine.begin() as conn:
        INSERT(conn, ROWS[0])
    for run in (lambda c: BY_ID(c, {"id": 1}), lambda c: INSERT.many(c, ROWS[1:])):
        with pg_engine.connect() as conn:
            conn.begin()
            _kill(conn)
            with pytest.raises(OperationalError) as dropped:
                run(conn)
            assert dropped.value.connection_invalidated and conn.invalidated
            assert disconnects.pop() is True
            conn.rollback()
            with conn.begin():  # the same Connection, on a new driver connection
                assert COUNT(conn).scalar() == 1
        with pg_engine.begin() as conn:  # the pool's one connection works
            assert BY_ID(conn, {"id": 1}).one().name == "王秀英"
    assert disconnects == []
