"""The one `timebank` command: ``timebank node ...`` for a district, ``timebank
clearinghouse ...`` for the city bureau, ``timebank monitor ...`` for anyone watching
the city from outside, ``timebank demo``.

``main()`` is the console script. It makes stdout and stderr UTF-8 (Chinese names print
on any locale), runs the command, and turns every error an operator can act on into one
red line on stderr with a non-zero exit code: usage mistakes exit 2, refusals and
unreachable nodes exit 1, and a bug prints one line too (the traceback only with
TIMEBANK_DEBUG=1).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated

import typer

from city import observer, protocli
from runtime.console import describe_error, guarded, print_error
from runtime.helptext import plain_help

# Typer ships its own copy of click; reach its exception classes through public names.
_USAGE_ERROR: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
_CLICK_EXCEPTION: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")



@guarded
def demo(
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", metavar="DIR",
        help="Keep what the demo made here (must be empty or new). Default: a temporary "
             "directory, removed at the end.")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Also print a machine-readable summary as the last line of stdout.")
    ] = False,
    serve: Annotated[bool, typer.Option(
        "--serve", help="With --data-dir: serve again the city an earlier run kept there, "
        "on its own simulated clock, until Ctrl-C or SIGTERM.")] = False,
) -> None:
    """A whole city on this machine: the clearinghouse and three district nodes.

    Four processes on 127.0.0.1 (江宁区, 鼓楼区, 栖霞区, each with its own SQLite file).
    Hours earned in 江宁区 pay for a mother's meals in 鼓楼区, then their owner moves to
    栖霞区 with her balance; time is simulated; every invariant is checked across the
    city at the end, and any failure makes the exit code 1. `--data-dir DIR` keeps the
    city; `--data-dir DIR --serve` serves it again later, its clock where it was.
    """
    from city.demo import run_demo, serve_demo

    if serve:
        if data_dir is None or as_json:
            raise typer.BadParameter("--serve serves the city an earlier run kept: give "
                                     "--data-dir DIR (and no --json)")
        code = serve_demo(data_dir)
    else:
        code = run_demo(data_dir, as_json=as_json)
    if code:
        raise typer.Exit(code)


@guarded
def audit(
    configs: Annotated[list[Path] | None, typer.Option(
        "--config", "-c", metavar="FILE",
        help="A configuration of the city (read-only): the clearinghouse's "
             "clearinghouse.toml and every district's node.toml, one --config each, "
             "wherever they live; their databases (SQLite or PostgreSQL) and keys are "
             "read from them.")] = None,
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", metavar="DIR",
        help="Audit the data directory `timebank demo --data-dir` kept (read-only).")
    ] = None,
    clearinghouse: Annotated[str | None, typer.Option(
        "--clearinghouse", metavar="HOST:PORT",
        help="Audit a running clearinghouse over gRPC instead.")] = None,
    clearinghouse_key: Annotated[str | None, typer.Option(
        "--clearinghouse-key", metavar="HEX",
        help="The clearinghouse's public key (64 hex digits) every head must verify under.")
    ] = None,
    nodes: Annotated[list[str] | None, typer.Option(
        "--node", metavar="HOST:PORT",
        help="With --clearinghouse: a district node whose tree heads must all be of the "
             "clearinghouse's log (repeat for every district; a split view fails).")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Also print a machine-readable summary as the last line of stdout.")
    ] = False,
    ca: observer.Ca = None,
    cert: observer.Cert = None,
    key: observer.Key = None,
    insecure: observer.Insecure = False,
) -> None:
    """Audit a city: ledgers, anchors, the transparency log, claims, receipts, positions.

    Offline, given its configuration files (--config, repeated) or the demo's data
    directory; or a running city over gRPC (--clearinghouse). Exit code 0 if every check
    passes, 1 naming the first bad record (file, table, entry).
    """
    from city.audit import run_audit

    tls = (observer.observer_tls(ca, cert, key, insecure) if clearinghouse is not None
           else None)
    code = run_audit(data_dir, clearinghouse, clearinghouse_key, as_json=as_json,
                     nodes=tuple(nodes or ()), tls=tls, configs=tuple(configs or ()))
    if code:
        raise typer.Exit(code)


def _utf8_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", "") or "").lower().replace("-", "")
        reconfigure = getattr(stream, "reconfigure", None)
        if encoding != "utf8" and reconfigure is not None:
            reconfigure(encoding="utf-8", errors="replace")


def _message(e: Exception) -> str:
    format_message = getattr(e, "format_message", None)
    return str(format_message() if callable(format_message) else e)


def _exit_code(e: Exception, default: int) -> int:
    code = getattr(e, "exit_code", default)
    return code if isinstance(code, int) else default


def main(argv: list[str] | None = None) -> None:
    """The `timebank` console script."""
    _utf8_stdio()
    command = typer.main.get_command(build(sys.argv[1:] if argv is None else argv))
    try:
        result = command.main(args=argv, prog_name="timebank", standalone_mode=False)
    except _USAGE_ERROR as e:
        ctx = getattr(e, "ctx", None)
        path = ctx.command_path if ctx is not None else "timebank"
        if _message(e).strip():  # empty when the help was shown for a bare group
            print_error(f"{_message(e)} (see `{path} --help`)")
        sys.exit(_exit_code(e, 2))
    except _CLICK_EXCEPTION as e:
        print_error(_message(e))
        sys.exit(_exit_code(e, 1))
    except typer.Abort:
        print_error("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        print_error("interrupted")
        sys.exit(130)
    except Exception as e:
        message = describe_error(e)
        if message is not None:
            print_error(message)
            sys.exit(1)
        if os.environ.get("TIMEBANK_DEBUG") == "1":
            raise
        print_error(f"unexpected error (a bug; set TIMEBANK_DEBUG=1 to see the traceback): "
                    f"{type(e).__name__}: {e}")
        sys.exit(70)
    sys.exit(result if isinstance(result, int) else 0)


# ------------------------------------------------------------------ the command tree
#
# Every `timebank` process (each command an operator types, each served node) starts by
# building the command tree, and importing every group's module costs seconds on a busy
# 2-core machine. A run names its group first (`timebank node ...`), so main() imports
# only that group's module; anything else (`timebank --help`, `--version`, a mistyped
# group) gets the whole tree, as does the module attribute ``app``.


def _report_wanted(group: typer.Typer, rest: Sequence[str]) -> bool:
    """Whether ``timebank GROUP REST...`` may need the group's `report` command: unless
    REST starts with the name of another of its commands, it may (`report`, `--help`,
    a mistyped command that click would suggest `report` for)."""
    if not rest or rest[0].startswith("-") or rest[0] == "report":
        return True
    names = {g.name for g in group.registered_groups if g.name}
    for c in group.registered_commands:
        if c.name:
            names.add(c.name)
        elif c.callback is not None:
            names.add(c.callback.__name__.lower().replace("_", "-"))
    return rest[0] not in names


def _with_report(group: typer.Typer, name: str, rest: Sequence[str]) -> typer.Typer:
    """``group`` with its `report` command, added once and only when the run may need it.
    The reports are the city's renderers; the services never import the city tools."""
    if _report_wanted(group, rest) and not any(
            c.name == "report" for c in group.registered_commands):
        from city.reports import command as report_cli

        group.command("report")(getattr(report_cli, name))
    return group


def _node(rest: Sequence[str]) -> typer.Typer:
    from node import cli as node_cli

    return _with_report(node_cli.app, "node_report_command", rest)


def _clearinghouse(rest: Sequence[str]) -> typer.Typer:
    from clearinghouse import cli as clearinghouse_cli

    return _with_report(clearinghouse_cli.app, "clearinghouse_report_command", rest)


def _monitor(rest: Sequence[str]) -> typer.Typer:
    from city.monitor import app as monitor_app

    return monitor_app


def _pki(rest: Sequence[str]) -> typer.Typer:
    from city.pki.command import app as pki_app

    return pki_app


def _city(rest: Sequence[str]) -> typer.Typer:
    from city import offline as offline_cli

    return offline_cli.app


def _proto(rest: Sequence[str]) -> typer.Typer:
    return protocli.app


def _console(rest: Sequence[str]) -> typer.Typer:
    from web.command import app as console_app

    return console_app


#: The groups in the order `timebank --help` lists them.
_GROUPS: dict[str, Callable[[Sequence[str]], typer.Typer]] = {
    "node": _node, "clearinghouse": _clearinghouse, "monitor": _monitor, "pki": _pki,
    "city": _city, "proto": _proto, "console": _console,
}
_COMMANDS = ("verify-statement", "demo", "audit")


def build(argv: Sequence[str] = ()) -> typer.Typer:
    """The `timebank` command tree for a run with arguments ``argv``: the groups and
    commands it can reach (all of them unless ``argv`` starts with a group's name)."""
    first, rest = (argv[0], argv[1:]) if argv else ("", ())
    whole = first not in _GROUPS and first not in _COMMANDS
    root = typer.Typer(
        name="timebank",
        help="District time banks (时间银行) that work as one city: run a district node, "
             "operate it, run the city's clearinghouse, or watch a whole city at work "
             "(demo).",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    for name, group in _GROUPS.items():
        if whole or name == first:
            root.add_typer(group(rest if name == first else ()), name=name)
    root.callback()(protocli.root)  # --version
    if whole or first == "verify-statement":
        from city import statement as statement_cli

        root.command("verify-statement")(statement_cli.verify_command)
    root.command("demo")(demo)
    root.command("audit")(audit)
    # Last, once every command is registered: `[server]` in a help string reads as written.
    return plain_help(root)


def __getattr__(name: str) -> typer.Typer:
    """``city.cli.app``: the whole command tree (tests and tools that walk it)."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    whole = build()
    globals()["app"] = whole
    return whole


if __name__ == "__main__":
    main()
