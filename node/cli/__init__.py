"""The operator's command line for a district node: ``timebank node ...``.

Two kinds of command live here:

* commands on the node's own files and database (``init``, ``migrate``, ``serve``,
  ``check``), given the node's configuration file;
* operator commands that talk gRPC to a running node (``--node HOST:PORT``), exactly as
  the district's app or a service point would: enrol people, walk orders through the
  service loop, read balances and history.

Every mutating call sends an idempotency key (a fresh UUID unless ``--idempotency-key``
is given), so a command retried with the same key never does the work twice.

An operator's mistake or a refusal by the node is one line on stderr (the gRPC status
name and the node's message) and a non-zero exit code, never a traceback.

The modules, one concept each: ``common`` (console, errors, ``guarded``, option types),
``client`` (the gRPC client), ``render`` (text and JSON), and the commands in ``admin``,
``people``, ``orders``, ``consent``, ``ledger``, ``claims`` (claims with other
districts) and ``settlement`` (settlement statements, read from the node's database).
This module builds ``app`` from them.

The gRPC commands need neither SQLAlchemy nor the node's use-cases, and every one of
them is a new process: the commands that open the database import what they need in
their own body (tests/node/test_cli_imports.py keeps it so).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from node.cli import accounts, admin, backup, claims, ledger, people, statement, status
from node.cli.client import NodeClient, use_tls, use_token
from node.cli.common import CliError, describe_error, echo, guarded, print_error, print_json
from node.cli.config import config_app
from node.cli.consent import consent_app
from node.cli.orders import order_app
from node.cli.people import service_point_app, staff_app
from node.cli.render import (
    fmt_time,
    history_table,
    hm,
    render_order,
    render_report,
    report_from_view,
    to_json,
)
from node.cli.settlement import settlement_app

__all__ = [
    "CliError",
    "NodeClient",
    "app",
    "describe_error",
    "echo",
    "fmt_time",
    "guarded",
    "history_table",
    "hm",
    "print_error",
    "print_json",
    "render_order",
    "render_report",
    "report_from_view",
    "to_json",
]

app = typer.Typer(
    name="node",
    help="Run a district node and operate it: init, migrate, serve, check, the service "
         "loop by hand (enrol, order, verify, balance, history), and claims with other "
         "districts (move, claims, positions).",
    no_args_is_help=True,
    add_completion=False,
)
@app.callback()
def _reach(
    ca: Annotated[Path | None, typer.Option(
        "--ca", envvar="TIMEBANK_CA", metavar="FILE",
        help="The city CA's certificate the node's TLS certificate is checked against "
             "(env TIMEBANK_CA).")] = None,
    insecure: Annotated[bool, typer.Option(
        "--insecure", envvar="TIMEBANK_INSECURE",
        help="Reach nodes that serve plaintext (`node serve --insecure`); env "
             "TIMEBANK_INSECURE=1.")] = False,
    cert: Annotated[Path | None, typer.Option(
        "--cert", envvar="TIMEBANK_CERT", metavar="FILE",
        help="A client certificate for the clearinghouse (the node's, or an observer's; env "
             "TIMEBANK_CERT): district names and positions come from there.")] = None,
    key: Annotated[Path | None, typer.Option(
        "--key", envvar="TIMEBANK_KEY", metavar="FILE",
        help="Its private key, mode 0600 (env TIMEBANK_KEY).")] = None,
    token: Annotated[str, typer.Option(
        "--token", envvar="TIMEBANK_TOKEN", metavar="TOKEN", show_default=False,
        help="Send this token (a program's, or a session) instead of the session "
             "`timebank node login` kept (env TIMEBANK_TOKEN).")] = "",
) -> None:
    """How the commands below reach a node: TLS checked against --ca, or --insecure;
    and who they act as: the session `node login` kept, or --token."""
    if (cert is None) != (key is None):
        raise typer.BadParameter("--cert and --key go together")
    use_tls(ca, insecure, cert, key)
    use_token(token)


app.add_typer(service_point_app, name="service-point")
app.add_typer(accounts.account_app, name="account")
app.add_typer(accounts.token_app, name="token")
app.add_typer(staff_app, name="staff")
app.add_typer(order_app, name="order")
app.add_typer(consent_app, name="consent")
app.add_typer(settlement_app, name="settlement")
app.add_typer(config_app, name="config")

# Top-level commands, in the order `timebank node --help` lists them.
app.command("init")(admin.init_command)
app.command("migrate")(admin.migrate_command)
app.command("serve")(admin.serve_command)
app.command("check")(admin.check_command)
app.command("status")(status.status_command)
backup.register(app)
app.command("login")(accounts.login_command)
app.command("logout")(accounts.logout_command)
app.command("whoami")(accounts.whoami_command)
app.command("enrol")(people.enrol)
app.add_typer(people.person_app, name="person")
app.command("link")(people.link)
app.command("donate")(ledger.donate)
app.command("grant")(ledger.grant)
app.command("reverse")(ledger.reverse)
app.command("balance")(ledger.balance)
app.command("history")(ledger.history)
app.command("policy")(ledger.policy_show)
app.command("move")(claims.move)
app.command("claim")(claims.claim_show)
app.command("claims")(claims.claims_list)
app.command("positions")(claims.positions)
app.command("checkpoint")(statement.checkpoint_command)
app.command("statement")(statement.statement_command)
