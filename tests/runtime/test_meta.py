"""``runtime.schema`` and ``runtime.meta``: a service's models built on the shared
naming and ``meta`` shape, and the one way to read and write its meta rows."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from runtime import meta
from runtime.schema import MetaColumns, UtcDateTime, named_metadata
from runtime.statements import EXECUTION_OPTION, StatementMode


class Base(DeclarativeBase):
    metadata = named_metadata()


class Meta(MetaColumns, Base):
    """A service's meta table."""


class Stamp(Base):
    __tablename__ = "stamps"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)


@pytest.fixture(params=list(StatementMode))
def engine(request: pytest.FixtureRequest, empty_db_url: str) -> Iterator[Engine]:
    made = create_engine(empty_db_url, execution_options={EXECUTION_OPTION: request.param})
    Base.metadata.create_all(made)
    yield made
    made.dispose()


def test_the_meta_table_has_the_shared_shape_and_names() -> None:
    table = Base.metadata.tables["meta"]
    assert [(c.name, str(c.type), c.primary_key) for c in table.columns] == [
        ("key", "VARCHAR(64)", True), ("value", "TEXT", False)]
    assert table.primary_key.name == "pk_meta"


def test_a_value_is_written_replaced_and_read_in_the_callers_transaction(
        engine: Engine) -> None:
    with engine.begin() as conn:
        assert meta.read(conn, "node_id") is None
        meta.write(conn, "node_id", "320115")
        meta.write(conn, "district", "江宁区")
        assert meta.read(conn, "node_id") == "320115"
    with pytest.raises(RuntimeError), engine.begin() as conn:
        meta.write(conn, "district", "鼓楼区")
        assert meta.read(conn, "district") == "鼓楼区"
        raise RuntimeError("undo")
    with engine.begin() as conn:
        meta.write(conn, "node_id", "320106")
    with engine.connect() as conn:
        rows = sorted(tuple(r) for r in conn.execute(select(Meta.key, Meta.value)))
    assert rows == [("district", "江宁区"), ("node_id", "320106")]


def test_times_are_stored_as_utc_and_come_back_aware(engine: Engine) -> None:
    at = datetime(2026, 11, 25, 8, 30, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(Stamp.__table__.insert().values(id=1, at=at))
        assert conn.execute(select(Stamp.at)).scalar_one() == at
        with pytest.raises(StatementError, match="refusing a naive datetime"):
            conn.execute(Stamp.__table__.insert().values(id=2, at=at.replace(tzinfo=None)))
