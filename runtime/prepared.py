"""Hot statements run on the driver's own cursor, inside the caller's SQLAlchemy
transaction.

SQLAlchemy Core spends about 30 µs of Python on every ``Connection.execute`` (cache key,
execution context, result set-up), several times what SQLite itself takes for a lookup
by key; a claim runs dozens of statements on each side. A :class:`Prepared` statement is
compiled once per dialect (and, for an INSERT, per set of columns) into its SQL text,
parameter order and type processors, then runs straight on the DBAPI cursor. What it
gives back is what the Core would: the same values (through the same type processors),
rows readable by attribute and index, ``rowcount``, and the driver's errors as
SQLAlchemy's ``DBAPIError`` subclasses (an ``IntegrityError`` stays one).

Only statements built once at import time should be prepared. A statement that needs a
Python-side column default is refused when it is first compiled: it stays on
``Connection.execute``. An IN list the caller passes (``bindparam(..., expanding=True)``)
compiles once per length up to MAX_IN_LIST; an empty or longer list runs through Core.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, MultipleResultsFound, NoResultFound, StatementError
from sqlalchemy.sql import ClauseElement, visitors
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import BindParameter, Executable

Params = Mapping[str, Any]
Processor = Callable[[Any], Any] | None

#: Statements compiled per Prepared (dialects × INSERT column sets × IN list lengths); a
#: bound on a cache that grows with the code, not with the data.
MAX_VARIANTS = 128
#: The longest caller IN list compiled into a statement of its own.
MAX_IN_LIST = 32


class Row(tuple):  # type: ignore[type-arg]
    """A result row: a tuple whose values are also attributes named by their columns."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    @property
    def _mapping(self) -> dict[str, Any]:
        return dict(zip(self._fields, self, strict=True))

    if TYPE_CHECKING:
        def __getattr__(self, name: str) -> Any: ...  # the columns, made per statement


def _row_type(fields: Sequence[str]) -> type[Row]:
    names = tuple(fields)
    attrs: dict[str, Any] = {"__slots__": (), "_fields": names}
    for i, name in enumerate(names):
        if name.isidentifier() and not name.startswith("_"):
            attrs[name] = property(lambda row, i=i: row[i])  # type: ignore[misc]
    return type("Row", (Row,), attrs)


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    positional: bool
    names: tuple[str, ...]                  # parameters in the order the SQL takes them
    constants: dict[str, Any]               # values fixed in the statement (literals)
    binds: dict[str, Processor]             # type processor per parameter name
    row_type: type[Row] | None              # None when the statement returns no rows
    results: tuple[Processor, ...]
    # the same, arranged for the per-call loops: (name, is constant, processor) and
    # (column index, processor) of the columns that have one
    _plan: tuple[tuple[str, bool, Processor], ...] = ()
    _converted: tuple[tuple[int, Callable[[Any], Any]], ...] = ()

    def __post_init__(self) -> None:
        plan = tuple((n, n in self.constants, self.binds[n]) for n in self.names)
        converted = tuple((i, p) for i, p in enumerate(self.results) if p is not None)
        object.__setattr__(self, "_plan", plan)
        object.__setattr__(self, "_converted", converted)

    def parameters(self, params: Params) -> tuple[Any, ...] | dict[str, Any]:
        constants = self.constants
        values = []
        for name, constant, process in self._plan:
            value = constants[name] if constant else params[name]
            values.append(value if process is None or value is None else process(value))
        if self.positional:
            return tuple(values)
        return dict(zip(self.names, values, strict=True))

    def rows(self, fetched: list[Any]) -> list[Row]:
        """The driver's rows through the result processors, as Rows."""
        make, converted = self.row_type, self._converted
        assert make is not None
        if not converted:
            return [make(raw) for raw in fetched]
        out = []
        for raw in fetched:
            values = list(raw)
            for i, process in converted:
                if values[i] is not None:
                    values[i] = process(values[i])
            out.append(make(values))
        return out


def _python_type(type_: Any) -> type | None:
    try:
        return cast(type, type_.python_type)
    except NotImplementedError:
        return None


def _last_remembered(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``process`` answering again at once for the value it was last given.

    A transaction stamps its one ``now`` on every row it writes; converting it costs
    about 2 µs each time. Datetimes are immutable, and the (value, result) pair is
    replaced as one reference, so threads sharing the statement see a matching pair."""
    last: list[tuple[Any, Any]] = [(object(), None)]

    def remembered(value: Any) -> Any:
        seen, result = last[0]
        if value is seen:
            return result
        result = process(value)
        last[0] = (value, result)
        return result

    return remembered


def _compile(statement: Executable, dialect: Dialect, keys: Sequence[str] | None,
             many: bool, lengths: Mapping[str, int]) -> _Compiled:
    if dialect.paramstyle not in ("qmark", "pyformat"):
        raise ValueError(f"prepared statements take qmark or pyformat parameters, not "
                         f"{dialect.paramstyle} ({dialect.name})")
    # for executemany, without the RETURNING PostgreSQL adds to a single INSERT
    compiled = cast(ClauseElement, statement).compile(
        dialect=dialect, column_keys=list(keys) if keys else None, for_executemany=many)
    assert isinstance(compiled, SQLCompiler)
    if compiled.insert_prefetch or compiled.update_prefetch:
        raise ValueError("a prepared statement cannot fill Python-side column defaults; "
                         "pass every column or leave this statement on Connection.execute")
    by_name = {name: bind for bind, name in compiled.bind_names.items()}
    positional = compiled.positiontup is not None
    order = list(compiled.positiontup) if positional else list(by_name)  # type: ignore[arg-type]
    sql = compiled.string
    names: list[str] = []
    constants: dict[str, Any] = {}
    binds: dict[str, Processor] = {}
    for name in order:
        bind = by_name[name]
        process: Processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None and _python_type(bind.type) is datetime:
            process = _last_remembered(process)
        if bind.expanding:
            # an IN list: each value is a parameter of its own, fixed in the statement
            # (a literal list) or taken from the caller's list (see _flatten)
            if bind.callable is not None:
                raise ValueError(f"a prepared statement cannot compute the IN list {name!r}")
            values = None if bind.required else list(cast(Iterable[Any], bind.value))
            count = lengths[name] if values is None else len(values)
            parts = [_part(name, i) for i in range(count)]
            marks = ", ".join("?" if positional else f"%({p})s" for p in parts)
            sql = sql.replace(f"__[POSTCOMPILE_{name}]", marks)
            for i, part in enumerate(parts):
                names.append(part)
                binds[part] = process
                if values is not None:
                    constants[part] = values[i]
            continue
        names.append(name)
        binds[name] = process
        if not bind.required:
            constants[name] = bind.effective_value
    if "POSTCOMPILE" in sql:
        raise ValueError("a prepared statement must compile to plain SQL")
    columns = compiled._result_columns
    row_type = _row_type([c.keyname for c in columns]) if columns else None
    results = tuple(c.type.dialect_impl(dialect).result_processor(dialect, None)
                    for c in columns)
    return _Compiled(sql, positional, tuple(names), constants, binds, row_type, results)


class Result:
    """The rows a prepared statement returned, read once, and its row count."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Row], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def __iter__(self) -> Iterator[Row]:
        return iter(self._rows)

    def all(self) -> list[Row]:
        return self._rows

    def first(self) -> Row | None:
        return self._rows[0] if self._rows else None

    def one(self) -> Row:
        """The only row, else Core's own NoResultFound or MultipleResultsFound."""
        if not self._rows:
            raise NoResultFound("No row was found when one was required")
        if len(self._rows) > 1:
            raise MultipleResultsFound("Multiple rows were found when exactly one was "
                                       "required")
        return self._rows[0]

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalars(self) -> list[Any]:
        return [row[0] for row in self._rows]


def _part(name: str, i: int) -> str:
    return f"{name}__in{i}"


def _caller_lists(statement: Executable) -> tuple[str, ...]:
    """The names of the IN lists the caller passes."""
    return tuple(dict.fromkeys(
        e.key for e in visitors.iterate(cast(ClauseElement, statement))
        if isinstance(e, BindParameter) and e.expanding and e.required))


class Prepared:
    """A Core statement compiled once per dialect and run on the DBAPI cursor."""

    __slots__ = ("_is_insert", "_lists", "_plain", "_variants", "statement")

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._variants: dict[Any, _Compiled] = {}
        self._plain: dict[str, _Compiled] = {}  # per dialect: no columns, lists or many
        self._is_insert = bool(getattr(statement, "is_insert", False))
        self._lists = _caller_lists(statement)

    def _variant(self, dialect: Dialect, params: Params | None, many: bool,
                 lengths: Mapping[str, int]) -> _Compiled:
        keys = tuple(params) if self._is_insert and params else None
        key = (dialect.name, keys, many, tuple(lengths.values()))
        found = self._variants.get(key)
        if found is None:
            if len(self._variants) >= MAX_VARIANTS:
                raise RuntimeError(f"prepared statement compiled {MAX_VARIANTS} ways; "
                                   "is it given a different set of columns each time?")
            found = self._variants[key] = _compile(self.statement, dialect, keys, many,
                                                   lengths)
            if keys is None and not many and not lengths:
                self._plain[dialect.name] = found
        return found

    def __call__(self, conn: Connection, params: Params | None = None) -> Result:
        """Run once with ``params`` and read every row it returns."""
        dialect = conn.dialect
        params = params or {}
        if self._lists:
            lengths = {name: len(params[name]) for name in self._lists}
            if not all(0 < n <= MAX_IN_LIST for n in lengths.values()):
                return self._through_core(conn, params)
            compiled = self._variant(dialect, params, False, lengths)
            params = _flatten(params, self._lists)
        elif self._is_insert:
            compiled = self._variant(dialect, params, False, {})
        else:  # the common case: one variant per dialect
            compiled = self._plain.get(dialect.name) or self._variant(dialect, None, False, {})
        values = compiled.parameters(params)
        cursor = _cursor(conn)
        try:
            _execute(conn, cursor, compiled.sql, values, many=False)
            rows = [] if compiled.row_type is None else compiled.rows(cursor.fetchall())
            return Result(rows, cursor.rowcount)
        except dialect.loaded_dbapi.Error as e:
            raise _from_driver(dialect, compiled.sql, values, e) from e
        finally:
            cursor.close()

    def _through_core(self, conn: Connection, params: Params) -> Result:
        """An empty or long IN list: Core renders it (a statement per length would not
        stay few)."""
        done = conn.execute(self.statement, params)
        if not done.returns_rows:
            return Result([], done.rowcount)
        make = _row_type(list(done.keys()))
        return Result([make(row) for row in done], done.rowcount)

    def many(self, conn: Connection, rows: Sequence[Params]) -> int:
        """Run once per parameter set (``executemany``); return the rows changed."""
        if not rows:
            return 0
        if self._lists:
            raise ValueError("executemany takes no IN lists")
        compiled = self._variant(conn.dialect, rows[0], True, {})
        assert compiled.row_type is None, "executemany returns no rows"
        values = [compiled.parameters(r) for r in rows]
        cursor = _cursor(conn)
        try:
            _execute(conn, cursor, compiled.sql, values, many=True)
            return int(cursor.rowcount)
        except conn.dialect.loaded_dbapi.Error as e:
            raise _from_driver(conn.dialect, compiled.sql, values, e) from e
        finally:
            cursor.close()


def _flatten(params: Params, lists: Sequence[str]) -> dict[str, Any]:
    """The caller's IN lists as one parameter per value, named as _compile names them."""
    flat = {k: v for k, v in params.items() if k not in lists}
    for name in lists:
        for i, value in enumerate(params[name]):
            flat[_part(name, i)] = value
    return flat


def _cursor(conn: Connection) -> Any:
    """A new cursor of the driver connection under ``conn``'s transaction."""
    return conn.connection.driver_connection.cursor()  # type: ignore[union-attr]


def _execute(conn: Connection, cursor: Any, sql: str, values: Any, *, many: bool) -> None:
    """Run ``sql`` on ``cursor`` (``executemany`` if ``many``).

    ``before_cursor_execute`` listeners hear of it first, as from Core (statement
    counters, tracing; with none this costs one truth test)."""
    listeners = conn.dispatch.before_cursor_execute
    if listeners:
        listeners(conn, cursor, sql, values, None, many)
    if many:
        cursor.executemany(sql, values)
    else:
        cursor.execute(sql, values)


def _from_driver(dialect: Dialect, sql: str, values: Any, e: Exception) -> StatementError:
    """A driver error, while running or reading, as the SQLAlchemy exception Core would
    raise (an ``IntegrityError`` stays one)."""
    return DBAPIError.instance(sql, values, e, dialect.loaded_dbapi.Error, dialect=dialect)


__all__ = ["Prepared", "Result", "Row"]
