"""The one way services run their hot SQL statements: ``Prepared(statement)(conn, params)``.

A statement is built once, at import time, and run many times inside the caller's
SQLAlchemy transaction. Two implementations give the same results (the same values,
Row and Result types, row counts, and errors as Core raises them):

- ``core``: ``Connection.execute``, SQLAlchemy's public API and nothing else;
- ``driver`` (the default): the statement compiled once and run on the DBAPI cursor,
  several times cheaper per call (``runtime._prepared``, ADR 0008 and ADR 0011).

Which one runs is a setting of the engine a connection comes from:
``runtime.db.Database(..., statements=...)`` sets it, and anything else uses the
process's default, from the environment variable ``TIMEBANK_STATEMENTS`` (``core`` or
``driver``). So the whole test suite, a bench or a service can be run in either mode.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.sql.expression import Executable

from runtime import _pipeline
from runtime._core import CoreStatement, Params
from runtime._prepared import MAX_IN_LIST, DriverStatement
from runtime._results import Result, Row
from runtime.errors import InvariantViolation


class StatementMode(StrEnum):
    """Which implementation runs a Prepared statement."""

    CORE = "core"
    DRIVER = "driver"


#: The environment variable naming the process's default mode.
ENVIRONMENT_VARIABLE = "TIMEBANK_STATEMENTS"
#: The engine execution option that carries a Database's mode to its connections.
EXECUTION_OPTION = "timebank_statements"


def mode_from_environment(environ: Mapping[str, str] | None = None) -> StatementMode:
    """The mode ``TIMEBANK_STATEMENTS`` names (unset or empty: driver)."""
    value = (os.environ if environ is None else environ).get(ENVIRONMENT_VARIABLE, "")
    if not value:
        return StatementMode.DRIVER
    try:
        return StatementMode(value.strip().lower())
    except ValueError:
        raise ValueError(f"{ENVIRONMENT_VARIABLE} must be 'core' or 'driver', not "
                         f"{value!r}") from None


DEFAULT_MODE = mode_from_environment()
_NO_PARAMS: Mapping[str, Any] = {}


def mode_of(conn: Connection) -> StatementMode:
    """The mode statements run in on ``conn``: its engine's setting (a StatementMode or
    its name), else the default."""
    return StatementMode(conn.get_execution_options().get(EXECUTION_OPTION, DEFAULT_MODE))


def _on_the_driver(conn: Connection) -> bool:
    """Whether the driver path runs a statement on ``conn`` (``mode_of``, without making a
    StatementMode on every call). Outside a transaction Core begins one (autobegin); the
    driver path leaves that to Core rather than act on a transaction SQLAlchemy does not
    know of."""
    mode = conn.get_execution_options().get(EXECUTION_OPTION, DEFAULT_MODE)
    return bool(mode == StatementMode.DRIVER and conn.in_transaction())


class Prepared:
    """A Core statement built once and run in the connection's statement mode."""

    __slots__ = ("_core", "_driver", "statement")

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._core = CoreStatement(statement)
        self._driver = DriverStatement(statement, self._core)

    def __call__(self, conn: Connection, params: Params | None = None) -> Result:
        """Run once with ``params`` and read every row it returns."""
        params = params or _NO_PARAMS
        if _on_the_driver(conn):
            return self._driver.run(conn, params)
        return self._core.run(conn, params)

    def send(self, conn: Connection, params: Params | None = None, *, rows: int | None = None,
             otherwise: str = "") -> None:
        """Run once with ``params`` where nothing needs its answer now: in a PostgreSQL
        write transaction on the driver path it is only queued (``runtime._pipeline``)
        and answered with the next statement that waits. If ``rows`` is given, the rows
        it changes must be that many, or ``InvariantViolation(otherwise)`` is raised,
        when the answer arrives."""
        params = params or _NO_PARAMS
        if _on_the_driver(conn):
            pipeline = _pipeline.of(conn)
            if pipeline is not None:
                self._driver.send(conn, params, pipeline, rows, otherwise)
                return
            done = self._driver.run(conn, params)
        else:
            done = self._core.run(conn, params)
        if rows is not None and done.rowcount != rows:
            raise InvariantViolation(otherwise)

    def send_many(self, conn: Connection, rows: Sequence[Params], *,
                  changed: int | None = None, otherwise: str = "") -> None:
        """``many`` where nothing needs its answer now (see ``send``). If ``changed`` is
        given, the rows all the runs change together must be that many, or
        ``InvariantViolation(otherwise)`` is raised, when the answers arrive."""
        if not rows:
            return
        pipeline = _pipeline.of(conn) if _on_the_driver(conn) else None
        if pipeline is not None:
            self._driver.send_many(conn, rows, pipeline, changed, otherwise)
        else:
            done = self.many(conn, rows)
            if changed is not None and done != changed:
                raise InvariantViolation(otherwise)

    def many(self, conn: Connection, rows: Sequence[Params]) -> int:
        """Run once per parameter set (``executemany``); return the rows changed."""
        if not rows:
            return 0
        if _on_the_driver(conn):
            return self._driver.many(conn, rows)
        return self._core.many(conn, rows)


__all__ = ["DEFAULT_MODE", "ENVIRONMENT_VARIABLE", "EXECUTION_OPTION", "MAX_IN_LIST",
           "Prepared", "Result", "Row", "StatementMode", "mode_from_environment", "mode_of"]
