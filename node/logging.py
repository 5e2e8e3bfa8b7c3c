"""The node's logs: structlog, one JSON object per line (or a console view), UTF-8.

Everything a call binds with ``structlog.contextvars`` (method, order id, person
id ...) appears on every line logged while serving it. Names are written as they
are (``ensure_ascii=False``): an operator reads 张桂兰, not ``\\u5f20\\u6842\\u5170``.
Standard-library log records (gRPC's own, SQLAlchemy's) go through the same
renderer, so the output stays one format. Tracebacks never include local
variables: they would carry ID numbers and the city secret into the logs.
"""

from __future__ import annotations

import io
import logging
import sys
from typing import Any, TextIO

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}
FORMATS = ("json", "console")

_HANDLER_NAME = "timebank-structlog"


def _utf8(stream: TextIO) -> TextIO:
    """Make sure Chinese text can be written: switch a non-UTF-8 text stream to UTF-8."""
    encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
    if isinstance(stream, io.TextIOWrapper) and encoding != "utf8":
        stream.reconfigure(encoding="utf-8", errors="backslashreplace")
    return stream


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def _renderer(fmt: str) -> Any:
    if fmt == "json":
        return structlog.processors.JSONRenderer(ensure_ascii=False)
    return structlog.dev.ConsoleRenderer(colors=False,
                                         exception_formatter=structlog.dev.plain_traceback)


#: Tracebacks as data, without local variables: locals would put people's ID numbers
#: and the city secret into the logs.
_dict_tracebacks = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False))


def configure_logging(level: str = "info", fmt: str = "json",
                      stream: TextIO | None = None) -> None:
    """Configure structlog (and the standard library's logging) for a serving node.

    ``level`` is debug, info, warning or error; ``fmt`` is json (for machines:
    one object per line, tracebacks as dicts) or console (for a terminal).
    """
    if level not in LEVELS:
        raise ValueError(f"log level is one of {', '.join(LEVELS)}, not {level!r}")
    if fmt not in FORMATS:
        raise ValueError(f"log format is json or console, not {fmt!r}")
    out = _utf8(stream if stream is not None else sys.stdout)
    shared = _shared_processors()
    tail: list[Any] = [_dict_tracebacks] if fmt == "json" else []
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
