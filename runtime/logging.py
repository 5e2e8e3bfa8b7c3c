"""A serving node's or clearinghouse's logs: structlog, one JSON object per line or a
console view, UTF-8.

Everything a call binds with ``structlog.contextvars`` (``runtime.observe``: method, the
ids in the request, what the servicer noted) appears on every line logged while serving
it. Names are written as they are (``ensure_ascii=False``): an operator reads 张桂兰, not
``\\u5f20\\u6842\\u5170``. Standard-library log records (gRPC's own, SQLAlchemy's) go
through the same processors, so the output stays one format. Tracebacks never include
local variables: they would carry ID numbers, PersonRefs and the city secret into the
logs. A service that must keep more out passes ``scrub``: every string of every event,
rendered tracebacks included, goes through it last.

A database error's own text is never logged either: drivers quote the values a
statement carried ("invalid input syntax: \"李秀英…\"", "Key (phone)=(139…)"). Its
traceback is kept, its message replaced by its type and the statement's SQL alone (the
engines hide parameters too: ``runtime.db``).
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, TextIO

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}
FORMATS = ("json", "console")

_HANDLER_NAME = "timebank-structlog"

#: Tracebacks as data, without local variables.
_dict_tracebacks = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False))


def _utf8(stream: TextIO) -> TextIO:
    """Make sure Chinese text can be written: switch a non-UTF-8 text stream to UTF-8."""
    encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
    if isinstance(stream, io.TextIOWrapper) and encoding != "utf8":
        stream.reconfigure(encoding="utf-8", errors="backslashreplace")
    return stream


#: The most characters of a failed statement's SQL a log line keeps.
MAX_STATEMENT_CHARS = 500


class DatabaseErrorWithheld(Exception):
    """Stands in a log line for a database error whose message may quote values."""


def _from_the_database(error: BaseException) -> bool:
    module = type(error).__module__
    return module.startswith(("sqlalchemy.", "psycopg", "sqlite3", "_sqlite3"))


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen and len(seen) < 16:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _database_values_withheld(_logger: Any, _name: str, event: MutableMapping[str, Any],
                              ) -> MutableMapping[str, Any]:
    """Replace a logged database error (anywhere in the exception's chain) by one that
    keeps its traceback and SQL but not the driver's message."""
    info = event.get("exc_info")
    if info is True:
        info = sys.exc_info()
    error = info[1] if isinstance(info, tuple) else info
    if not isinstance(error, BaseException):
        return event
    chain = _chain(error)
    if not any(_from_the_database(e) for e in chain):
        return event
    statement = next((str(s) for e in chain if (s := getattr(e, "statement", None))), "")
    kinds = " <- ".join(type(e).__name__ for e in chain)
    stand_in = DatabaseErrorWithheld(
        f"{kinds}: the database's message is withheld (it may quote a person's data)"
        + (f"; SQL: {' '.join(statement.split())[:MAX_STATEMENT_CHARS]}" if statement else ""))
    event["exc_info"] = (DatabaseErrorWithheld, stand_in.with_traceback(error.__traceback__),
                         error.__traceback__)
    return event


def _scrubbed(value: object, scrub: Callable[[str], str]) -> object:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrubbed(v, scrub) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(v, scrub) for v in value]
    return value


def _scrubber(scrub: Callable[[str], str]) -> Any:
    def processor(_logger: Any, _name: str, event: MutableMapping[str, Any],
                  ) -> MutableMapping[str, Any]:
        return {k: _scrubbed(v, scrub) for k, v in event.items()}

    return processor


def _renderer(fmt: str) -> Any:
    if fmt == "json":
        return structlog.processors.JSONRenderer(ensure_ascii=False)
    return structlog.dev.ConsoleRenderer(colors=False)


def _static(fields: Mapping[str, object]) -> Any:
    """A processor that puts ``fields`` on every line (without overriding a field the
    line already has)."""
    frozen = dict(fields)

    def processor(_logger: Any, _name: str, event: MutableMapping[str, Any],
                  ) -> MutableMapping[str, Any]:
        for key, value in frozen.items():
            event.setdefault(key, value)
        return event

    return processor


def configure_logging(level: str = "info", fmt: str = "json", stream: TextIO | None = None,
                      *, scrub: Callable[[str], str] | None = None,
                      bind: Mapping[str, object] | None = None) -> bool:
    """Configure structlog (and the standard library's logging) for a serving process,
    unless something in this process already configured structlog (a test, an embedding
    program): returns whether it configured anything.

    ``level`` is debug, info, warning or error; ``fmt`` is json (for machines: one object
    per line, tracebacks as dicts) or console (for a terminal: tracebacks as plain text).
    """
    if level not in LEVELS:
        raise ValueError(f"log level is one of {', '.join(LEVELS)}, not {level!r}")
    if fmt not in FORMATS:
        raise ValueError(f"log format is json or console, not {fmt!r}")
    if structlog.is_configured():
        return False
    out = _utf8(stream if stream is not None else sys.stdout)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if bind:
        shared.append(_static(bind))
    tail: list[Any] = [_database_values_withheld,
                       _dict_tracebacks if fmt == "json" else
                       structlog.processors.format_exc_info]
    if scrub is not None:
        tail.append(_scrubber(scrub))
    structlog.configure(
        processors=[*shared, structlog.processors.StackInfoRenderer(), *tail, _renderer(fmt)],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # Records from the standard library (grpc, sqlalchemy) get the same treatment.
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, *tail],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    _renderer(fmt)],
    ))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(LEVELS[level], logging.INFO))  # library debug output is rarely wanted
    return True


__all__ = ["FORMATS", "LEVELS", "configure_logging"]
