"""Accounts, program tokens and sessions (ADR 0016).

``timebank node account …`` and ``timebank node token …`` work on the node's database
directly (``--config``): local access to it is the root of trust, so the operator at the
node's machine makes the first accounts. A new account gets a one-time code (printed
once) or, with ``--password``, a password asked for twice.

``timebank node login`` logs in to a running node and keeps the session token in a
file only its owner can read (``$XDG_STATE_HOME/timebank/sessions/`` or
``~/.local/state/timebank/sessions/``, one file per node address); every later
``timebank node …`` command to that node sends it. ``--token`` / ``TIMEBANK_TOKEN``
send another token (a program's) instead. ``logout`` ends the session, ``whoami`` says
who the node takes you for.
"""

from __future__ import annotations

import os
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from node.cli.client import DEFAULT_NODE_ADDRESS, NodeClient, cli_tls, forget_session, keep_session
from node.cli.common import (
    INT64_MAX,
    AsJson,
    ConfigFile,
    NodeAddress,
    echo,
    fail,
    guarded,
    print_json,
)
from node.config import load_config
from node.domain.access import DEFAULT_TOKEN_DAYS, MAX_TOKEN_DAYS, Role
from runtime.errors import ConfigError
from timebank.v1 import node_pb2

if TYPE_CHECKING:
    from node.usecases.app import NodeApp

account_app = typer.Typer(help="Accounts of people on this node (--config: local).",
                          no_args_is_help=True)
token_app = typer.Typer(help="Bearer tokens of programs (--config: local).",
                        no_args_is_help=True)

Login = Annotated[str, typer.Option("--login", help="The account's login name.")]
PASSWORD_ENV = "TIMEBANK_PASSWORD"


def _open(config_file: Path) -> NodeApp:
    from node.bootstrap import open_app

    try:
        return open_app(load_config(config_file))
    except ConfigError as e:
        fail(str(e))


def local(config_file: Path) -> NodeApp:
    """The node's use-cases on its own database (close with ``app.db.dispose()``)."""
    return _open(config_file)


def local_token(config_file: Path, login: str = "operator", role: Role = Role.OPERATOR,
                days: int = MAX_TOKEN_DAYS, *, staff_id: int = 0,
                person_id: int = 0) -> str:
    """A session token for ``login`` (made with ``role`` and bound to ``staff_id`` or
    ``person_id`` if missing), minted on the node's own database: how a city laid out
    on one machine gets its operators and staff in."""
    from node.usecases import logins

    app = _open(config_file)
    try:
        return app.execute(logins.local_session, login, role, days, staff_id=staff_id,
                           person_id=person_id)
    finally:
        app.db.dispose()


@account_app.command("add")
@guarded
def account_add(
    config_file: ConfigFile,
    role: Annotated[Role, typer.Option("--role", help="operator, staff, member or auditor.")],
    login: Login,
    staff: Annotated[int, typer.Option("--staff", min=0, max=INT64_MAX, metavar="ID",
                                       help="A staff account's staff record.")] = 0,
    person: Annotated[int, typer.Option("--person", min=0, max=INT64_MAX, metavar="ID",
                                        help="A member account's person.")] = 0,
    expires_days: Annotated[int, typer.Option("--expires-days", min=0, max=3660,
                                              help="The account ends after N days "
                                                   "(0: it does not).")] = 0,
    password: Annotated[bool, typer.Option("--password", help="Ask for a password "
                                           "instead of printing a one-time code.")] = False,
    as_json: AsJson = False,
) -> None:
    """Make an account, and print its one-time code (or ask for a password)."""
    from node.usecases import logins

    app = _open(config_file)
    try:
        made = app.execute(logins.add_account, login, role, staff_id=staff, person_id=person,
                           expires_days=expires_days)
        if not as_json:
            echo(f"account {made.id}  {made.role}  {made.login}")
        found = _credential(app, made.login, password, as_json)
    finally:
        app.db.dispose()
    if as_json:
        print_json({"id": made.id, "login": made.login, "role": made.role,
                    "staff_id": made.staff_id, "person_id": made.person_id, **found})


def _credential(app: NodeApp, login: str, password: bool,
                as_json: bool = False) -> dict[str, object]:
    """Set the account's password (asked for) or issue it a one-time code; with
    ``as_json`` print nothing and return what a JSON answer says of it."""
    from node.usecases import logins

    if password:
        secret = os.environ.get(PASSWORD_ENV) or typer.prompt(
            "password", hide_input=True, confirmation_prompt=True, err=as_json)
        app.execute(logins.set_password, login, secret)
        if not as_json:
            echo("password set")
        return {"password_set": True}
    code = app.execute(logins.issue_code, login)
    minutes = app.node.logins.code_minutes
    if not as_json:
        echo(f"one-time code {code}  (valid {minutes} minutes, once: "
             f"`timebank node login --login {login} --code`)")
    return {"one_time_code": code, "code_valid_minutes": minutes}


@account_app.command("code")
@guarded
def account_code(config_file: ConfigFile, login: Login, as_json: AsJson = False) -> None:
    """A new one-time code for an account (the previous one ends)."""
    app = _open(config_file)
    try:
        found = _credential(app, login, False, as_json)
    finally:
        app.db.dispose()
    if as_json:
        print_json({"login": login, **found})


@account_app.command("password")
@guarded
def account_password(config_file: ConfigFile, login: Login) -> None:
    """Set an account's password (asked for twice, or TIMEBANK_PASSWORD)."""
    app = _open(config_file)
    try:
        _credential(app, login, True)
    finally:
        app.db.dispose()


@account_app.command("list")
@guarded
def account_list(config_file: ConfigFile, as_json: AsJson = False) -> None:
    """Every account: role, what it is bound to, and whether it is live."""
    from node.usecases import logins
    from node.usecases.app import city_time

    app = _open(config_file)
    try:
        found = app.query(logins.list_accounts)
    finally:
        app.db.dispose()
    if as_json:
        print_json([{"id": a.id, "login": a.login, "role": a.role, "staff_id": a.staff_id,
                     "person_id": a.person_id, "scopes": list(a.scopes),
                     "revoked": a.revoked_at is not None} for a in found])
        return
    for a in found:
        bound = (f"staff {a.staff_id}" if a.staff_id else f"person {a.person_id}"
                 if a.person_id else ",".join(a.scopes) or "-")
        state = ("revoked" if a.revoked_at else
                 f"locked until {city_time(a.locked_until)}" if a.locked_until else "live")
        echo(f"{a.id:>4}  {a.role:<9} {a.login:<24} {bound:<16} {state}")


@account_app.command("revoke")
@guarded
def account_revoke(config_file: ConfigFile, login: Login) -> None:
    """End an account and all its sessions (kept, for the record)."""
    from node.usecases import logins

    app = _open(config_file)
    try:
        done = app.execute(logins.revoke_account, login)
    finally:
        app.db.dispose()
    echo(f"account {done.id} ({done.login}) revoked")


@token_app.command("issue")
@guarded
def token_issue(
    config_file: ConfigFile,
    program: Annotated[str, typer.Option("--program", help="The program's name.")],
    scope: Annotated[list[str], typer.Option("--scope", help="read, orders or enrol; "
                                             "repeat for more.")],
    expires_days: Annotated[int, typer.Option(
        "--expires-days", min=1, max=MAX_TOKEN_DAYS)] = DEFAULT_TOKEN_DAYS,
    as_json: AsJson = False,
) -> None:
    """Issue a program a bearer token (printed once; the node keeps only its hash)."""
    from node.usecases import logins

    app = _open(config_file)
    try:
        account, token = app.execute(logins.issue_token, program, tuple(scope), expires_days)
    finally:
        app.db.dispose()
    if as_json:
        print_json({"id": account.id, "program": account.login, "scopes": list(account.scopes),
                    "expires_days": expires_days, "token": token})
        return
    echo(f"program {account.login} ({', '.join(account.scopes)}), "
         f"valid {expires_days} days; its token (shown once):")
    echo(token)


@token_app.command("revoke")
@guarded
def token_revoke(config_file: ConfigFile,
                 program: Annotated[str, typer.Option("--program")]) -> None:
    """End a program: every token of it."""
    from node.usecases import logins

    app = _open(config_file)
    try:
        app.execute(logins.revoke_tokens, program)
    finally:
        app.db.dispose()
    echo(f"program {program}: every token revoked")


# ------------------------------------------------------------------ sessions, over gRPC


@guarded
def login_command(
    login: Login,
    node: NodeAddress = DEFAULT_NODE_ADDRESS,
    code: Annotated[bool, typer.Option("--code", help="Log in with a one-time code "
                                       "(asked for) instead of a password.")] = False,
) -> None:
    """Log in to a node; later commands to it send the session (file readable only by
    you)."""
    from node.usecases.app import city_time

    secret = ("" if code else os.environ.get(PASSWORD_ENV, "")) or typer.prompt(
        "one-time code" if code else "password", hide_input=True)
    request = (node_pb2.LoginRequest(login=login, code=secret) if code
               else node_pb2.LoginRequest(login=login, password=secret))
    with NodeClient(node, cli_tls(), token="") as client:
        session = client.call(client.stub.Login, request)
    path = keep_session(node, session.token)
    until = city_time(session.expires_at.ToDatetime(tzinfo=UTC))
    echo(f"logged in as {session.caller.actor} ({session.caller.role}) until {until}; "
         f"session kept in {path}")


@guarded
def logout_command(node: NodeAddress = DEFAULT_NODE_ADDRESS) -> None:
    """End this session on the node and forget it here."""
    with NodeClient(node, cli_tls()) as client:
        try:
            client.call(client.stub.Logout, node_pb2.LogoutRequest())
        finally:
            forget_session(node)
    echo("logged out")


@guarded
def whoami_command(node: NodeAddress = DEFAULT_NODE_ADDRESS, as_json: AsJson = False) -> None:
    """Who the node takes this session (or --token) for."""
    with NodeClient(node, cli_tls()) as client:
        me = client.call(client.stub.WhoAmI, node_pb2.WhoAmIRequest()).caller
    if as_json:
        print_json({"role": me.role, "actor": me.actor, "account_id": me.account_id,
                    "staff_id": me.staff_id, "service_point_id": me.service_point_id,
                    "person_id": me.person_id, "scopes": list(me.scopes)})
        return
    echo(f"{me.actor} ({me.role}, account {me.account_id})")


__all__ = ["account_app", "local", "local_token", "login_command",
           "logout_command", "token_app", "whoami_command"]
