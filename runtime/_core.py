"""The plain implementation of ``runtime.statements``: ``Connection.execute``.

It relies on nothing but SQLAlchemy's public API, so it is the one to fall back on when
the driver-cursor path (``runtime._prepared``) is in doubt, e.g. on a SQLAlchemy release
the project has not been tested with. Both paths refuse the same things: a statement that
needs a Python-side column default (the driver path cannot compute one) is refused here
too, so that code written in one mode runs in the other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement, visitors
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import BindParameter, Executable

from runtime._results import Result, row_type

Params = Mapping[str, Any]

#: Ways one statement may be compiled (dialects × INSERT/UPDATE column sets × IN list
#: lengths); a bound on a cache that grows with the code, not with the data.
MAX_VARIANTS = 128
#: Core reads ``rowcount`` after an INSERT only when asked to (the driver path always does).
_KEEP_ROWCOUNT = {"preserve_rowcount": True}


def takes_columns(statement: Executable) -> bool:
    """Whether the parameters' names choose the statement's columns, as for an INSERT or
    an UPDATE (Core compiles those once per set of names: ``column_keys``)."""
    return bool(getattr(statement, "is_insert", False) or getattr(statement, "is_update", False))


def caller_lists(statement: Executable) -> tuple[str, ...]:
    """The names of the IN lists the caller passes (``bindparam(name, expanding=True)``)."""
    return tuple(dict.fromkeys(
        e.key for e in visitors.iterate(cast(ClauseElement, statement))
        if isinstance(e, BindParameter) and e.expanding and e.required))


def compile_checked(statement: Executable, dialect: Dialect, keys: Sequence[str] | None,
                    many: bool) -> SQLCompiler:
    """``statement`` compiled as Core compiles it for parameters named ``keys``
    (``many``: for executemany), refused if it needs a Python-side column default."""
    compiled = cast(ClauseElement, statement).compile(
        dialect=dialect, column_keys=sorted(keys) if keys is not None else None,
        for_executemany=many)
    assert isinstance(compiled, SQLCompiler)
    if compiled.insert_prefetch or compiled.update_prefetch:
        raise ValueError("a prepared statement cannot fill Python-side column defaults; "
                         "pass every column or leave this statement on Connection.execute")
    return compiled


class CoreStatement:
    """A statement run by ``Connection.execute``, its rows read into a Result."""

    __slots__ = ("_checked", "_lists", "_takes_columns", "statement")

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._takes_columns = takes_columns(statement)
        self._lists = caller_lists(statement)
        self._checked: set[tuple[str, tuple[str, ...], bool]] = set()

    def _check(self, dialect: Dialect, params: Params, many: bool) -> None:
        if not self._takes_columns:
            return  # only an INSERT or an UPDATE can need a Python-side default
        key = (dialect.name, tuple(params), many)
        if key not in self._checked:
            if len(self._checked) >= MAX_VARIANTS:
                raise RuntimeError(f"prepared statement compiled {MAX_VARIANTS} ways; "
                                   "is it given a different set of columns each time?")
            compile_checked(self.statement, dialect, tuple(params), many)
            self._checked.add(key)

    def run(self, conn: Connection, params: Params) -> Result:
        self._check(conn.dialect, params, False)
        done = conn.execute(self.statement, params, execution_options=_KEEP_ROWCOUNT)
        if not done.returns_rows:
            return Result([], done.rowcount)
        make = row_type(tuple(done.keys()))
        return Result([make(row) for row in done], done.rowcount)

    def many(self, conn: Connection, rows: Sequence[Params]) -> int:
        if self._lists:
            raise ValueError("executemany takes no IN lists")
        self._check(conn.dialect, rows[0], True)
        return conn.execute(self.statement, list(rows), execution_options=_KEEP_ROWCOUNT).rowcount
