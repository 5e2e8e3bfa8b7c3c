"""What every ``timebank node`` command shares: the runtime's console helpers
(``runtime.console``: one-line errors, ``guarded``) and the node's typer option types.

An operator's mistake or a refusal by the node is one line on stderr (the gRPC status
name and the node's message) and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from runtime.console import (
    CliError,
    console,
    describe_error,
    echo,
    fail,
    guarded,
    print_error,
    print_json,
)
from runtime.layout import Layout

INT64_MAX = 2**63 - 1


# ------------------------------------------------------------------ options

NodeAddress = Annotated[str, typer.Option(
    "--node", envvar="TIMEBANK_NODE_ADDRESS", metavar="HOST:PORT",
    help="The node's gRPC address (env TIMEBANK_NODE_ADDRESS).")]
IdempotencyKey = Annotated[str, typer.Option(
    "--idempotency-key", metavar="KEY",
    help="Repeat a call safely: the same key returns the first result. Default: a new UUID.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
#: How a list is shown: a table, or one block per row when it does not fit the terminal.
TableLayout = Annotated[Layout, typer.Option(
    "--layout", envvar="TIMEBANK_LAYOUT", case_sensitive=False,
    help="table, records (one block per row: 字段 field: value) or auto: records when "
         "the table does not fit the terminal's width (env TIMEBANK_LAYOUT).")]
ConfigFile = Annotated[Path, typer.Option(
    "--config", "-c", metavar="FILE", help="The node's configuration (node.toml).")]
PersonId = Annotated[int, typer.Argument(min=1, max=INT64_MAX, metavar="PERSON_ID",
                                         help="The person's id on this node.")]
OrderId = Annotated[int, typer.Argument(min=1, max=INT64_MAX, metavar="ORDER_ID")]
ByPerson = Annotated[int, typer.Option(
    "--by-person", metavar="ID", min=0, max=INT64_MAX,
    help="The person acting (recipient, family, proxy): you, or, for staff, the person "
         "you act for. Default: you (the account logged in).")]
ByStaff = Annotated[int, typer.Option(
    "--by-staff", metavar="ID", min=0, max=INT64_MAX,
    help="The staff member acting: must be you. Default: you (the account logged in).")]
#: A staff member named as acting: optional, and checked against the caller (ADR 0016).
ActingStaff = Annotated[int, typer.Option(
    "--staff", metavar="ID", min=0, max=INT64_MAX,
    help="The staff member acting: must be you. Default: you (the account logged in).")]
Minutes = Annotated[int, typer.Option("--minutes", "-m", min=-INT64_MAX - 1, max=INT64_MAX,
                                      help="Whole minutes (60 = 1 h).")]

__all__ = ["INT64_MAX", "ActingStaff", "AsJson", "ByPerson", "ByStaff", "CliError", "ConfigFile",
           "IdempotencyKey", "Layout", "Minutes", "NodeAddress", "OrderId", "PersonId",
           "TableLayout", "console",
           "describe_error", "echo", "fail", "guarded", "print_error", "print_json"]
