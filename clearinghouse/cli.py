"""The bureau's command line for the clearinghouse: ``timebank clearinghouse ...``.

``init`` creates the clearinghouse's data directory, keys and database; ``admit`` and
``revoke`` are the bureau's signing acts (the city root key signs, the clearinghouse
checks and records); ``nodes`` lists the admitted district nodes; ``serve`` runs the
clearinghouse's gRPC service until SIGTERM.

A refusal or an operator's mistake is one red line on stderr (status, message and
reason code) and exit code 1, never a traceback. The clearinghouse never imports the
node, so the small console helpers below mirror ``node.cli.common``.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from clearinghouse.config import ConfigError, load_config
from clearinghouse.domain.errors import ClearinghouseError, InvalidArgument
from clearinghouse.storage.repo import AdmissionRecord
from timebank import keys
from timebank.keys import PUBLIC_KEY_LEN

P = ParamSpec("P")
R = TypeVar("R")
PIPE_WIDTH = 120
MAX_SERIAL = 2**63 - 1

app = typer.Typer(
    name="clearinghouse",
    help="Run the city's clearinghouse (the civil-affairs bureau): init, admit and revoke "
         "district nodes, list them, serve.",
    no_args_is_help=True,
    add_completion=False,
)


# ------------------------------------------------------------------ output and errors


class CliError(Exception):
    """An operator's mistake: shown as one red line, exit code 1."""


def console(stderr: bool = False) -> Console:
    """A rich console on the current stdout/stderr (which tests may have replaced)."""
    found = Console(stderr=stderr, highlight=False)
    if not found.is_terminal and "COLUMNS" not in os.environ:
        found.width = PIPE_WIDTH  # a file or a pipe: no need to wrap at 80
    return found


def echo(*renderables: Any) -> None:
    console().print(*renderables)


def print_error(message: str) -> None:
    """One line, red, on stderr. ``message`` is plain text, not rich markup."""
    line = " ".join(message.split())
    console(stderr=True).print(f"[bold red]error:[/] [red]{escape(line)}[/]", soft_wrap=True)


def fail(message: str) -> NoReturn:
    raise CliError(message)


def describe_error(e: BaseException) -> str | None:
    """The one-line message for an error an operator can act on; None for a bug."""
    if isinstance(e, CliError | ConfigError):
        return str(e)
    if isinstance(e, ClearinghouseError):
        return f"{e.status}: {e.message} ({e.reason})"
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


def _grid() -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    return grid


def _masked(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # only for display
        return url


def _admission_json(a: AdmissionRecord) -> dict[str, Any]:
    return {
        "node_id": a.node_id, "district": a.district, "key_id": a.key_id,
        "public_key": a.public_key.hex(), "serial": a.serial,
        "admitted_at": a.admitted_at.astimezone(UTC).isoformat(),
        "revoked_at": a.revoked_at.astimezone(UTC).isoformat() if a.revoked_at else None,
    }


def _fmt(a: AdmissionRecord, revoked: bool) -> str:
    at = (a.revoked_at if revoked else a.admitted_at)
    assert at is not None
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _print_admission(a: AdmissionRecord, title: str) -> None:
    grid = _grid()
    grid.add_row("node", f"{a.node_id} {escape(a.district)}")
    grid.add_row("key id", a.key_id)
    grid.add_row("public key", a.public_key.hex())
    grid.add_row("serial", str(a.serial))
    grid.add_row("admitted", _fmt(a, False))
    if a.revoked:
        grid.add_row("revoked", f"[red]{_fmt(a, True)}[/]")
    echo(Panel(grid, title=title, title_align="left", expand=False))


# ------------------------------------------------------------------ options

ConfigFile = Annotated[Path, typer.Option(
    "--config", "-c", metavar="FILE", help="The clearinghouse's configuration "
    "(clearinghouse.toml, written by `timebank clearinghouse init`).")]
NodeId = Annotated[str, typer.Option(
    "--node-id", metavar="CODE",
    help="The district's 6-digit administrative division code, e.g. 320115.")]


def _public_key(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text.strip())
    except ValueError:
        raise InvalidArgument(
            "the node's public key must be hex, as `timebank node init` prints it",
            "MALFORMED_PUBLIC_KEY") from None
    if len(raw) != PUBLIC_KEY_LEN:
        raise InvalidArgument(
            f"the node's public key is {PUBLIC_KEY_LEN} bytes ({2 * PUBLIC_KEY_LEN} hex "
            f"characters), not {len(raw)} bytes", "MALFORMED_PUBLIC_KEY")
    return raw


# ------------------------------------------------------------------ commands


@app.command("init")
@guarded
def init_command(
    data_dir: Annotated[Path, typer.Option(
        "--data-dir", metavar="DIR",
        help="Create the clearinghouse here: clearinghouse.toml, the city root key, the "
             "clearinghouse key and the SQLite database (unless --database-url).")],
    database_url: Annotated[str, typer.Option(
        "--database-url", metavar="URL",
        help="PostgreSQL instead of SQLite, e.g. "
             "postgresql+psycopg://timebank@/tb_clearinghouse.")] = "",
) -> None:
    """Create the city's clearinghouse once: configuration, keys and database.

    Safe to run again: existing files and keys are kept.
    """
    from clearinghouse.bootstrap import init_city, key_info
    from clearinghouse.config import CONFIG_NAME
    from clearinghouse.storage import migrate
    from clearinghouse.storage.db import Database

    before = {p for p in (data_dir / CONFIG_NAME,) if p.exists()}
    existing = load_config(data_dir / CONFIG_NAME) if before else None
    key_files = set() if existing is None else {  # to say which keys were kept
        p for p in (existing.city_key_file, existing.signing_key_file) if p.exists()}
    config_path = init_city(data_dir, database_url=database_url)
    config = load_config(config_path)
    city, own = key_info(config.city_key_file), key_info(config.signing_key_file)
    db = Database(config.effective_database_url)
    try:
        schema = migrate.current_revision(db.writer)
    finally:
        db.dispose()

    def state(path: Path, was: set[Path]) -> str:
        return "[dim]kept (already there)[/]" if path in was else "[green]created[/]"

    grid = _grid()
    grid.add_row("data directory", str(config.data_dir))
    grid.add_row("configuration", f"{config_path}  {state(config_path, before)}")
    grid.add_row("city root key", f"{config.city_key_file}  "
                 f"{state(config.city_key_file, key_files)} (mode 0600)")
    grid.add_row("  key id", city.key_id)
    grid.add_row("  public key", city.public_key.hex())
    grid.add_row("clearinghouse key", f"{config.signing_key_file}  "
                 f"{state(config.signing_key_file, key_files)} (mode 0600)")
    grid.add_row("  key id", own.key_id)
    grid.add_row("  public key", own.public_key.hex())
    grid.add_row("database", _masked(config.effective_database_url))
    grid.add_row("schema", str(schema))
    grid.add_row("listen", config.listen)
    echo(Panel(grid, title="clearinghouse initialised", title_align="left", expand=False))
    echo("[yellow]The city root key signs every admission and revocation.[/] In a real city "
         "it belongs offline with the bureau (not on the clearinghouse's server): move "
         f"{config.city_key_file} away once the nodes are admitted, and bring it back only "
         "to admit or revoke.")
    echo("Every node checks the clearinghouse's signature with the clearinghouse public key "
         f"above (key id {own.key_id}).")
    echo(f"Next: [bold]timebank clearinghouse admit --config {config_path} --node-id CODE "
         "--district NAME --public-key HEX[/] for each district node.")


@app.command("admit")
@guarded
def admit_command(
    config_file: ConfigFile,
    node_id: NodeId,
    district: Annotated[str, typer.Option(
        "--district", metavar="NAME", help="The district's name, e.g. 江宁区.")],
    public_key: Annotated[str, typer.Option(
        "--public-key", metavar="HEX",
        help="The node's Ed25519 public key, as `timebank node init` prints it.")],
    serial: Annotated[int | None, typer.Option(
        "--serial", metavar="N", min=1, max=MAX_SERIAL,
        help="The certificate's serial. Default: 1 for a new node, one more than the "
             "current certificate for a new key or district.")] = None,
) -> None:
    """Admit a district node: sign its admission certificate with the city root key.

    Admitting the same node, district and key again changes nothing. A new key (or
    district) needs a higher serial and retires the old key for ever.
    """
    from clearinghouse.bootstrap import city_key, open_app
    from clearinghouse.bureau import issue_admission
    from clearinghouse.usecases import admission

    key = _public_key(public_key)
    config = load_config(config_file)
    app_ = open_app(config)
    try:
        root = city_key(config, app_)
        old = app_.query(admission.admission, node_id)
        if (old is not None and not old.revoked and old.public_key == key
                and old.district == district and serial in (None, old.serial)):
            _print_admission(old, "already admitted (unchanged)")
            return
        if serial is None:
            serial = 1 if old is None else old.serial + 1
        certificate = issue_admission(root, node_id, district, key, serial,
                                      app_.clock.now())
        record = app_.execute(admission.admit, certificate, keys.public_key(root))
    finally:
        app_.db.dispose()
    _print_admission(record, "node admitted")
    if old is not None and old.key_id != record.key_id:
        echo(f"[yellow]The old key {old.key_id} of {old.node_id} is retired and revoked for "
             "ever.[/]")


@app.command("revoke")
@guarded
def revoke_command(
    config_file: ConfigFile,
    node_id: NodeId,
    key_id: Annotated[str, typer.Option(
        "--key-id", metavar="KEY_ID", help="The node key to revoke (16 hex characters, as "
        "`timebank clearinghouse nodes` lists it).")],
    reason: Annotated[str, typer.Option(
        "--reason", metavar="TEXT", help="Why, for the record (at most 200 characters).")],
) -> None:
    """Revoke a node's key for ever: sign a revocation with the city root key.

    The clearinghouse stops accepting the key at once; the node needs a new certificate
    for a new key (`admit` with its new public key) to sign again.
    """
    from clearinghouse.bootstrap import city_key, open_app
    from clearinghouse.bureau import issue_revocation
    from clearinghouse.usecases import admission

    if not reason.strip():
        fail("say why the key is revoked: --reason TEXT")
    config = load_config(config_file)
    app_ = open_app(config)
    try:
        root = city_key(config, app_)
        act = issue_revocation(root, node_id, key_id, reason.strip(), app_.clock.now())
        app_.execute(admission.revoke, act, keys.public_key(root))
        record = app_.query(admission.admission, node_id)
    finally:
        app_.db.dispose()
    if record is not None and record.key_id == key_id:
        _print_admission(record, "key revoked")
    else:
        echo(f"key {escape(key_id)} of {node_id} (already retired) is revoked; its "
             "revocation is on record")


@app.command("nodes")
@guarded
def nodes_command(
    config_file: ConfigFile,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")
                       ] = False,
) -> None:
    """List the admitted district nodes, their keys, and whether each key is revoked."""
    from clearinghouse.bootstrap import open_app
    from clearinghouse.usecases import admission

    config = load_config(config_file)
    app_ = open_app(config)
    try:
        found = app_.query(admission.admissions)
    finally:
        app_.db.dispose()
    if as_json:
        sys.stdout.write(json.dumps([_admission_json(a) for a in found], ensure_ascii=False,
                                    indent=2) + "\n")
        sys.stdout.flush()
        return
    if not found:
        echo("No district node is admitted yet: `timebank clearinghouse admit`.")
        return
    table = Table(title="admitted district nodes", title_justify="left")
    for column in ("node", "district", "key id", "serial", "admitted", "revoked"):
        table.add_column(column, no_wrap=True)
    for a in found:
        table.add_row(a.node_id, escape(a.district), a.key_id, str(a.serial), _fmt(a, False),
                      f"[red]{_fmt(a, True)}[/]" if a.revoked else "-")
    echo(table)


@app.command("serve")
@guarded
def serve_command(
    config_file: ConfigFile,
    dev_clock: Annotated[Path | None, typer.Option(
        "--dev-clock", metavar="FILE", hidden=True,
        help="Development only: simulated time shared through FILE (timebank.devclock); "
             "refused unless TIMEBANK_DEV_CLOCK_ALLOWED=1.")] = None,
) -> None:
    """Serve the clearinghouse over gRPC until SIGTERM or Ctrl-C.

    Listens on the configuration's `listen` address (plaintext: keep it on loopback or
    behind TLS), signs every receipt and delivery with the clearinghouse key, and
    expires overdue claims every second.
    """
    from clearinghouse.api.server import serve_forever
    from timebank.devclock import DevClockError, FileClock

    try:
        clock = None if dev_clock is None else FileClock(dev_clock)  # refused unless allowed
    except DevClockError as e:
        fail(str(e))
    config = load_config(config_file)

    def ready(port: int) -> None:
        host = config.listen.rpartition(":")[0]
        echo(f"clearinghouse serving on {host}:{port} (Ctrl-C or SIGTERM to stop)")
        if clock is not None:
            echo(f"[yellow]simulated time (--dev-clock): now {clock.now().isoformat()}[/]")

    serve_forever(config, clock=clock, on_ready=ready)
    echo("clearinghouse stopped")
