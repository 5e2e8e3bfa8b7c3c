"""What every ``timebank`` command shares: the console, one-line errors, ``guarded``.

An operator's mistake or a refusal is one red line on stderr and exit code 1, never a
traceback: a ``Refusal`` as its status name, message and reason code; a configuration
that cannot be used, a file that cannot be read or a database that cannot be reached,
as what is wrong with it. Anything else is a bug and is raised on.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from runtime.devclock import DevClockError, FileClock
from runtime.errors import ConfigError, Refusal
from runtime.tls import TlsSettings

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

#: Output width when stdout is not a terminal (and COLUMNS is not set).
PIPE_WIDTH = 120


class CliError(Exception):
    """An operator's mistake: shown as one red line, exit code 1."""


_consoles: dict[tuple[int, bool], Console] = {}


def console(stderr: bool = False) -> Console:
    """A rich console on the current stdout/stderr (which tests may have replaced)."""
    stream = sys.stderr if stderr else sys.stdout
    key = (id(stream), stderr)
    found = _consoles.get(key)
    if found is None:
        found = _consoles[key] = Console(stderr=stderr, highlight=False)
        if not found.is_terminal and "COLUMNS" not in os.environ:
            found.width = PIPE_WIDTH  # a file or a pipe: no need to wrap at 80
    return found


def echo(*renderables: Any) -> None:
    console().print(*renderables)


def print_error(message: str) -> None:
    """One line, red, on stderr. ``message`` is plain text, not rich markup."""
    line = " ".join(message.split())
    console(stderr=True).print(f"[bold red]error:[/] [red]{escape(line)}[/]", soft_wrap=True)


def print_json(value: Any, *, indent: int | None = 2) -> None:
    """JSON on stdout, bypassing rich so that nothing is wrapped or coloured."""
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=indent) + "\n")
    sys.stdout.flush()


def fail(message: str) -> NoReturn:
    raise CliError(message)


def label_grid() -> Table:
    """Two columns without borders, the first bold: label, then value."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    return table


def masked_url(url: str) -> str:
    """A database URL fit to show: its password hidden."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # only for display
        return url


def describe_error(e: BaseException) -> str | None:
    """The one-line message for an error an operator can act on; None for a bug."""
    if isinstance(e, CliError | ConfigError | DevClockError):
        return str(e)
    if isinstance(e, Refusal):
        reason = f" ({e.reason})" if e.reason != e.status else ""
        return f"{e.status}: {e.message}{reason}"
    if isinstance(e, PermissionError):
        return f"permission denied: {e.filename or e}"
    if isinstance(e, FileNotFoundError):
        return f"no such file or directory: {e.filename or e}"
    if isinstance(e, OSError):
        return f"{e.strerror or e}: {e.filename}" if e.filename else str(e)
    from sqlalchemy.exc import SQLAlchemyError

    if isinstance(e, SQLAlchemyError):
        text = str(getattr(e, "orig", None) or e).strip()
        return f"the database cannot be used: {text.splitlines()[0] if text else type(e).__name__}"
    return None


def guarded(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn every error an operator can act on into one red line and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as e:
            message = describe_error(e)
            if message is None:
                raise
            print_error(message)
            raise typer.Exit(1) from None

    return wrapper


# ------------------------------------------------------------------ serving

DevClockFile = Annotated[Path | None, typer.Option(
    "--dev-clock", metavar="FILE", hidden=True,
    help="Development only: simulated time shared through FILE (runtime.devclock); "
         "refused unless TIMEBANK_DEV_CLOCK_ALLOWED=1.")]


Insecure = Annotated[bool, typer.Option(
    "--insecure",
    help="Serve plaintext, without TLS (a warning is logged at every start). Only for a "
         "machine nobody else can reach.")]
TlsCa = Annotated[Path | None, typer.Option(
    "--tls-ca", metavar="FILE", help="The city CA's certificate (`timebank pki init`).")]
TlsCert = Annotated[Path | None, typer.Option(
    "--tls-cert", metavar="FILE", help="This service's certificate (`timebank pki issue-…`).")]
TlsKey = Annotated[Path | None, typer.Option(
    "--tls-key", metavar="FILE", help="This service's TLS private key (mode 0600).")]


def tls_settings(ca: Path | None, cert: Path | None, key: Path | None, crl: Path | None,
                 insecure: bool) -> TlsSettings:
    """``[tls]`` for ``init`` from its options (paths made absolute)."""
    def absolute(path: Path | None) -> Path | None:
        return None if path is None else path.expanduser().resolve()

    return TlsSettings(absolute(ca), absolute(cert), absolute(key), absolute(crl), insecure)


def insecure_config(config: T, insecure: bool) -> T:
    """``config`` with ``[tls] insecure`` set when the operator said ``--insecure``."""
    if not insecure:
        return config
    tls = dataclasses.replace(config.tls, insecure=True)  # type: ignore[attr-defined]
    return dataclasses.replace(config, tls=tls)  # type: ignore[type-var]


def dev_clock(path: Path | None) -> FileClock | None:
    """The simulated clock ``--dev-clock`` names (None without one); DevClockError, one
    line under ``guarded``, unless simulated time is allowed here."""
    return None if path is None else FileClock(path)


__all__ = [
    "PIPE_WIDTH",
    "CliError",
    "DevClockFile",
    "Insecure",
    "TlsCa",
    "TlsCert",
    "TlsKey",
    "console",
    "describe_error",
    "dev_clock",
    "echo",
    "fail",
    "guarded",
    "insecure_config",
    "label_grid",
    "masked_url",
    "print_error",
    "print_json",
    "tls_settings",
]
