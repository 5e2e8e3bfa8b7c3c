"""What every ``timebank node`` command shares: the console, one-line errors, ``guarded``,
and the typer option types.

An operator's mistake or a refusal by the node is one line on stderr (the gRPC status
name and the node's message) and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

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

from node.config import ConfigError
from node.domain.policy import PolicyError
from runtime.errors import Refusal

P = ParamSpec("P")
R = TypeVar("R")

INT64_MAX = 2**63 - 1
#: Output width when stdout is not a terminal (and COLUMNS is not set).
PIPE_WIDTH = 120


# ------------------------------------------------------------------ output and errors


class CliError(Exception):
    """An operator's mistake or a refusal: shown as one red line, exit code 1."""


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


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def describe_error(e: BaseException) -> str | None:
    """The one-line message for an error an operator can act on; None for a bug."""
    if isinstance(e, CliError):
        return str(e)
    if isinstance(e, ConfigError | PolicyError):
        return str(e)
    if isinstance(e, Refusal):
        return f"{e.status}: {e.message}"
    if isinstance(e, PermissionError):
        return f"permission denied: {e.filename or e}"
    if isinstance(e, FileNotFoundError):
        return f"no such file or directory: {e.filename or e}"
    if isinstance(e, OSError):
        return f"{e.strerror or e}: {e.filename}" if e.filename else str(e)
    try:
        from sqlalchemy.exc import SQLAlchemyError
    except ImportError:  # pragma: no cover - sqlalchemy is a dependency
        return None
    if isinstance(e, SQLAlchemyError):
        orig = getattr(e, "orig", None)
        return f"the database cannot be used: {_first_line(str(orig or e))}"
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


# ------------------------------------------------------------------ options

NodeAddress = Annotated[str, typer.Option(
    "--node", envvar="TIMEBANK_NODE_ADDRESS", metavar="HOST:PORT",
    help="The node's gRPC address (env TIMEBANK_NODE_ADDRESS).")]
IdempotencyKey = Annotated[str, typer.Option(
    "--idempotency-key", metavar="KEY",
    help="Repeat a call safely: the same key returns the first result. Default: a new UUID.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ConfigFile = Annotated[Path, typer.Option(
    "--config", "-c", metavar="FILE", help="The node's configuration (node.toml).")]
PersonId = Annotated[int, typer.Argument(min=1, max=INT64_MAX, metavar="PERSON_ID",
                                         help="The person's id on this node.")]
OrderId = Annotated[int, typer.Argument(min=1, max=INT64_MAX, metavar="ORDER_ID")]
ByPerson = Annotated[int, typer.Option("--by-person", metavar="ID", min=0, max=INT64_MAX,
                                       help="The person acting (recipient, family, proxy).")]
ByStaff = Annotated[int, typer.Option("--by-staff", metavar="ID", min=0, max=INT64_MAX,
                                      help="The staff member acting.")]
Minutes = Annotated[int, typer.Option("--minutes", "-m", min=-INT64_MAX - 1, max=INT64_MAX,
                                      help="Whole minutes (60 = 1 h).")]
