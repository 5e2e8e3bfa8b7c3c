"""The driver-cursor implementation of ``runtime.statements`` (ADR 0008, ADR 0011).

SQLAlchemy Core spends about 30 µs of Python on every ``Connection.execute`` (cache key,
execution context, result set-up), several times what SQLite itself takes for a lookup
by key; a claim runs dozens of statements on each side. Here a statement is compiled
once per dialect (and, for an INSERT or UPDATE, per set of parameter names; for a
caller's IN list, per length) into its SQL text, parameter order and type processors,
then runs straight on the DBAPI cursor of the caller's connection, inside its
transaction. What it gives back is what the Core path gives: the same values (through
the same type processors), the same Row and Result types, ``rowcount``, and errors as
Core raises them.

What it takes from SQLAlchemy, and how public each piece is:
- compiling: ``ClauseElement.compile(dialect=, column_keys=, for_executemany=)``,
  ``SQLCompiler.bind_names``, ``insert_prefetch``/``update_prefetch``, and
  ``SQLCompiler.construct_expanded_state``, which renders IN lists and gives every
  parameter's final name and order (documented API);
- types: ``TypeEngine.dialect_impl(dialect).bind_processor`` and ``.result_processor``
  (documented), with the result columns' types from the statement's
  ``exported_columns`` and their names from the driver's ``cursor.description``;
- events: the connection's ``before_cursor_execute`` and ``after_cursor_execute``
  listeners, called as Core calls them, through its ``dispatch`` and behind its own
  cheap test for listeners (``_has_events``, private);
- errors: ``Connection._handle_dbapi_exception``, the one place where Core turns a
  driver error into SQLAlchemy's exception, runs the ``handle_error`` listeners, and
  invalidates the connection (and the pool's older connections) on a disconnect. It is
  private; tests/runtime/test_statements.py shows on real PostgreSQL that a killed
  connection is invalidated and that ``handle_error`` sees errors from this path.

Outside a transaction (where Core would begin one) and for an empty or longer IN list
than MAX_IN_LIST, a statement runs through the Core path instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.sql.expression import BindParameter, Executable
from sqlalchemy.types import TypeEngine

from runtime import _pipeline
from runtime._core import (
    MAX_VARIANTS,
    CoreStatement,
    Params,
    caller_lists,
    compile_checked,
    takes_columns,
)
from runtime._pipeline import Pipeline
from runtime._results import Result, Row, row_type
from runtime.errors import InvariantViolation

#: The longest caller IN list compiled into a statement of its own.
MAX_IN_LIST = 32

Processor = Callable[[Any], Any] | None


def _python_type(type_: TypeEngine[Any]) -> type | None:
    try:
        return type_.python_type
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


def _bind_processor(bind: BindParameter[Any], dialect: Dialect) -> Processor:
    process: Processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
    if process is not None and _python_type(bind.type) is datetime:
        process = _last_remembered(process)
    return process


class _Reader:
    """How to turn the driver's rows into Rows: made at the first read, from the
    cursor's description (the column names as Core keys them) and the column types."""

    __slots__ = ("converted", "make")

    def __init__(self, description: Sequence[Sequence[Any]],
                 types: tuple[TypeEngine[Any], ...] | None, dialect: Dialect) -> None:
        names = tuple(str(column[0]) for column in description)
        self.make = row_type(names)
        if types is None:  # a textual statement: values as the driver gives them
            self.converted: tuple[tuple[int, Callable[[Any], Any]], ...] = ()
            return
        if len(types) != len(names):
            raise RuntimeError(f"a prepared statement compiled {len(types)} result columns "
                               f"but the driver returned {len(names)}: {names}")
        processors = (t.dialect_impl(dialect).result_processor(dialect, column[1])
                      for t, column in zip(types, description, strict=True))
        self.converted = tuple((i, p) for i, p in enumerate(processors) if p is not None)

    def rows(self, fetched: list[Any]) -> list[Row]:
        make, converted = self.make, self.converted
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


#: Per parameter of a compiled statement, in its order: the caller's parameter it takes
#: (and the index in it, for an item of an IN list; else -1) and its type's processor;
#: or, for a value fixed in the statement, ("", -1, True, the value processed once).
_Plan = tuple[tuple[str, int, bool, Any], ...]


class _Compiled:
    """One compiled form of a statement, and running it on the cursor."""

    __slots__ = ("_plan", "_reader", "dialect", "names", "positional", "sql", "types")

    def __init__(self, sql: str, positional: bool, names: tuple[str, ...], plan: _Plan,
                 types: tuple[TypeEngine[Any], ...] | None, dialect: Dialect) -> None:
        self.sql = sql
        self.positional = positional
        self.names = names  # the parameters' names in the SQL, in its order
        self._plan = plan
        self.types = types  # () reads no rows; None: rows if the driver returns any
        self.dialect = dialect
        self._reader: _Reader | None = None

    def parameters(self, params: Params) -> tuple[Any, ...] | dict[str, Any]:
        values = []
        for source, item, constant, process in self._plan:
            if constant:
                values.append(process)
                continue
            value = params[source] if item < 0 else params[source][item]
            values.append(value if process is None or value is None else process(value))
        if self.positional:
            return tuple(values)
        return dict(zip(self.names, values, strict=True))

    def _values(self, conn: Connection, params: Params) -> Any:
        """The driver's parameters, or the error Core raises for the caller's (a missing
        one, a value its type refuses: a StatementError, as from Core)."""
        try:
            return self.parameters(params)
        except KeyError as e:
            missing = InvalidRequestError(
                f"A value is required for bind parameter {e.args[0]!r}", code="cd3x")
            conn._handle_dbapi_exception(missing, self.sql, params, None, None)
        except Exception as e:
            conn._handle_dbapi_exception(e, self.sql, params, None, None)

    def _read(self, cursor: Any) -> list[Row]:
        if not self.types and (self.types is not None or cursor.description is None):
            return []
        reader = self._reader
        if reader is None:
            reader = self._reader = _Reader(cursor.description, self.types, self.dialect)
        return reader.rows(cursor.fetchall())

    def run(self, conn: Connection, params: Params) -> Result:
        return self._execute(conn, self._values(conn, params), many=False)

    def run_many(self, conn: Connection, rows: Sequence[Params]) -> int:
        return self._execute(conn, [self._values(conn, r) for r in rows], many=True).rowcount

    def send(self, conn: Connection, params: Params, pipeline: Pipeline, rows: int | None,
             otherwise: str) -> None:
        """Queue the statement in ``pipeline``; its row count is checked against ``rows``
        when its answer arrives."""
        values = self._values(conn, params)
        cursor = conn.connection.cursor()
        sql = self.sql
        try:
            pipeline.enter()
            sql, values = self._before(conn, cursor, sql, values, False)
            cursor.execute(sql, values)
            pipeline.sent(cursor, rows, otherwise)
            if pipeline.full:
                pipeline.sync()
        except InvariantViolation:
            raise
        except BaseException as e:
            conn._handle_dbapi_exception(e, sql, values, cursor, None)

    def send_many(self, conn: Connection, rows: Sequence[Params], pipeline: Pipeline,
                  changed: int | None, otherwise: str) -> None:
        """Queue one statement per parameter set in ``pipeline``; the rows they change
        together are checked against ``changed`` when their answers arrive."""
        values = [self._values(conn, r) for r in rows]
        cursor = conn.connection.cursor()
        sql = self.sql
        try:
            pipeline.enter()
            sql, values = self._before(conn, cursor, sql, values, True)
            cursor.executemany(sql, values)
            pipeline.sent(cursor, changed, otherwise)
            if pipeline.full:
                pipeline.sync()
        except InvariantViolation:
            raise
        except BaseException as e:
            conn._handle_dbapi_exception(e, sql, values, cursor, None)

    @staticmethod
    def _before(conn: Connection, cursor: Any, sql: str, values: Any,
                many: bool) -> tuple[str, Any]:
        # Core's own test for listeners: cheap, where asking the dispatcher is not
        if conn._has_events or conn.engine._has_events:
            for before in conn.dispatch.before_cursor_execute:
                sql, values = before(conn, cursor, sql, values, None, many)
        return sql, values

    def _execute(self, conn: Connection, values: Any, *, many: bool) -> Result:
        cursor = conn.connection.cursor()
        sql = self.sql
        # Core's own test for listeners: cheap, where asking the dispatcher is not
        listened = conn._has_events or conn.engine._has_events
        pipeline = _pipeline.of(conn)
        try:
            if listened:
                for before in conn.dispatch.before_cursor_execute:
                    sql, values = before(conn, cursor, sql, values, None, many)
            if many:
                cursor.executemany(sql, values)
            else:
                cursor.execute(sql, values)
            if pipeline is not None and pipeline.active:
                pipeline.sync()  # this one's answer, and those of the statements sent
            if listened:
                conn.dispatch.after_cursor_execute(conn, cursor, sql, values, None, many)
            rowcount = cursor.rowcount  # read when Core reads it: before the rows
            done = Result([] if many else self._read(cursor), rowcount)
        except InvariantViolation:
            cursor.close()
            raise
        except BaseException as e:  # as Core: even an interrupt leaves the connection unsure
            conn._handle_dbapi_exception(e, sql, values, cursor, None)
        cursor.close()
        return done


def _compile(statement: Executable, dialect: Dialect, keys: Sequence[str] | None,
             many: bool, lengths: Mapping[str, int]) -> _Compiled:
    if dialect.paramstyle not in ("qmark", "pyformat"):
        raise ValueError(f"prepared statements take qmark or pyformat parameters, not "
                         f"{dialect.paramstyle} ({dialect.name})")
    compiled = compile_checked(statement, dialect, keys, many)
    binds = {name: bind for bind, name in compiled.bind_names.items()}
    sample: dict[str, Any] = {}  # a stand-in for each value the caller gives
    for name, bind in binds.items():
        if bind.callable is not None:
            raise ValueError(f"a prepared statement cannot compute the parameter {name!r}")
        if bind.required:
            if bind.literal_execute:
                raise ValueError(f"a prepared statement cannot render {name!r} into its SQL")
            sample[name] = [None] * lengths[name] if bind.expanding else None
    state = compiled.construct_expanded_state(sample)
    item_of = {part: (name, i) for name, parts in state.parameter_expansion.items()
               for i, part in enumerate(parts)}
    for name in sample:
        if name not in state.parameters and name not in state.parameter_expansion:
            raise ValueError(f"a prepared statement takes plain parameter names, not {name!r}")
    names = tuple(state.positiontup if state.positiontup is not None else state.parameters)
    plan = []
    for name in names:
        source, item = item_of.get(name, (name, -1))
        process = _bind_processor(binds[source], dialect)
        if source in sample:  # the caller's: by name, or an item of its IN list
            plan.append((source, item, False, process))
        else:
            value = state.parameters[name]
            plan.append(("", -1, True,
                         value if process is None or value is None else process(value)))
    columns = getattr(statement, "exported_columns", None)
    types = None if columns is None else tuple(column.type for column in columns)
    if many and types:
        raise ValueError("executemany returns no rows")
    return _Compiled(state.statement, state.positiontup is not None, names, tuple(plan),
                     types, dialect)


class DriverStatement:
    """A Core statement compiled once per dialect and run on the DBAPI cursor."""

    __slots__ = ("_core", "_lists", "_plain", "_takes_columns", "_variants", "statement")

    def __init__(self, statement: Executable, core: CoreStatement) -> None:
        self.statement = statement
        self._core = core  # for what this path leaves to Core
        self._variants: dict[Any, _Compiled] = {}
        self._plain: dict[str, _Compiled] = {}  # per dialect: no columns, lists or many
        self._takes_columns = takes_columns(statement)
        self._lists = caller_lists(statement)

    def _variant(self, dialect: Dialect, params: Params | None, many: bool,
                 lengths: Mapping[str, int]) -> _Compiled:
        keys = tuple(params) if self._takes_columns and params is not None else None
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

    def run(self, conn: Connection, params: Params) -> Result:
        """Run once with ``params`` and read every row it returns."""
        dialect = conn.dialect
        if self._lists:
            lengths = {name: len(params.get(name) or ()) for name in self._lists}
            if not all(0 < n <= MAX_IN_LIST for n in lengths.values()):
                return self._core.run(conn, params)
            return self._variant(dialect, params, False, lengths).run(conn, params)
        if self._takes_columns:
            return self._variant(dialect, params, False, {}).run(conn, params)
        compiled = self._plain.get(dialect.name) or self._variant(dialect, None, False, {})
        return compiled.run(conn, params)

    def many(self, conn: Connection, rows: Sequence[Params]) -> int:
        """Run once per parameter set (``executemany``); return the rows changed."""
        if self._lists:
            raise ValueError("executemany takes no IN lists")
        return self._variant(conn.dialect, rows[0], True, {}).run_many(conn, rows)

    def send(self, conn: Connection, params: Params, pipeline: Pipeline, rows: int | None,
             otherwise: str) -> None:
        """Queue once with ``params`` in ``pipeline`` (``runtime._pipeline``)."""
        if self._lists:
            raise ValueError("a statement sent takes no IN lists")
        keys = params if self._takes_columns else None
        self._variant(conn.dialect, keys, False, {}).send(conn, params, pipeline, rows,
                                                          otherwise)

    def send_many(self, conn: Connection, rows: Sequence[Params], pipeline: Pipeline,
                  changed: int | None, otherwise: str) -> None:
        """Queue once per parameter set in ``pipeline`` (``changed``: see ``send``)."""
        if self._lists:
            raise ValueError("executemany takes no IN lists")
        self._variant(conn.dialect, rows[0], True, {}).send_many(conn, rows, pipeline,
                                                                 changed, otherwise)

