"""The bureau's command line for the clearinghouse: ``timebank clearinghouse ...``.

``init`` creates the clearinghouse's data directory, keys and database; ``admit``,
``revoke`` and ``policy issue`` are the bureau's signing acts (the city root key signs,
the clearinghouse checks and records); ``policy show`` lists the city policies, in force
and scheduled; ``nodes`` lists the admitted district nodes; ``limit`` sets how far
a district may owe the rest of the city, net; ``positions`` shows what each district is
owed or owes in the open settlement period; ``settle`` closes periods and reads, decides
and defaults on their statements (``clearinghouse.settlecli``); ``serve`` runs the
clearinghouse's gRPC service until SIGTERM.

A refusal or an operator's mistake is one red line on stderr (status, message and
reason code) and exit code 1, never a traceback (``runtime.console``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from clearinghouse import backupcli, issuecli
from clearinghouse.config import load_config
from clearinghouse.configcli import config_app
from clearinghouse.domain.positions import (
    DEFAULT_NET_DEBIT_LIMIT_MINUTES,
    NEAR_LIMIT_PERCENT,
    near_limit,
)
from clearinghouse.settlecli import settle_app
from runtime.console import (
    DevClockFile,
    Insecure,
    TlsCa,
    TlsCert,
    TlsKey,
    dev_clock,
    echo,
    fail,
    guarded,
    insecure_config,
    label_grid,
    masked_url,
    print_json,
    tls_settings,
)
from runtime.errors import FailedPrecondition, InvalidArgument
from timebank import keys
from timebank import settlement as st
from timebank.citytime import CITY_TZ, CITY_TZ_NAME
from timebank.keys import PUBLIC_KEY_LEN
from timebank.minutes import MAX_MINUTES, format_hours
from timebank.policy import MAX_POLICY_BYTES, PolicyError, load_policy

if TYPE_CHECKING:  # the database layer loads only for the commands that open it
    from clearinghouse.storage.repo import AdmissionRecord, PolicyRecord
    from clearinghouse.usecases.app import ClearinghouseApp
    from timebank.actfile import ActFile
    from timebank.roster import Roster

MAX_SERIAL = 2**63 - 1

app = typer.Typer(
    name="clearinghouse",
    help="Run the city's clearinghouse (the civil-affairs bureau): init, admit and revoke "
         "district nodes, list them, issue the city policy, set their net debit limits, "
         "show positions, serve.",
    no_args_is_help=True,
    add_completion=False,
)
policy_app = typer.Typer(
    help="The city policy (时间银行政策): issue it, signed by the city root key, and show "
         "the policies in force and scheduled.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
prepare_app = typer.Typer(
    help="Prepare a city act for the offline city root key (准备待签文件): the bytes to sign "
         "and what they say, in a file for `timebank city sign`; then `timebank "
         "clearinghouse import` the signed file.", no_args_is_help=True)
app.add_typer(prepare_app, name="prepare")
app.add_typer(settle_app, name="settle")
app.add_typer(config_app, name="config")
backupcli.register(app)


# ------------------------------------------------------------------ output


def _admission_json(a: AdmissionRecord) -> dict[str, Any]:
    return {
        "node_id": a.node_id, "district": a.district, "key_id": a.key_id,
        "public_key": a.public_key.hex(), "serial": a.serial,
        "admitted_at": a.admitted_at.astimezone(UTC).isoformat(),
        "revoked_at": a.revoked_at.astimezone(UTC).isoformat() if a.revoked_at else None,
    }


def _fmt(a: AdmissionRecord, revoked: bool, *, zone: bool = True) -> str:
    """When it was admitted (or revoked), as a person in the city reads it: city time,
    the zone named unless a table's title names it (the JSON stays UTC)."""
    at = (a.revoked_at if revoked else a.admitted_at)
    assert at is not None
    return f"{at.astimezone(CITY_TZ):%Y-%m-%d %H:%M}" + (f" ({CITY_TZ_NAME})" if zone else "")


def _print_admission(a: AdmissionRecord, title: str, limit: int | None = None) -> None:
    grid = label_grid()
    grid.add_row("node", f"{a.node_id} {escape(a.district)}")
    grid.add_row("key id", a.key_id)
    grid.add_row("public key", a.public_key.hex())
    grid.add_row("serial", str(a.serial))
    grid.add_row("admitted", _fmt(a, False))
    if a.revoked:
        grid.add_row("revoked", f"[red]{_fmt(a, True)}[/]")
    if limit is not None:
        grid.add_row("net debit limit", _hm(limit) + ("  [yellow](every redemption it "
                     "would owe is refused)[/]" if limit == 0 else ""))
    echo(Panel(grid, title=title, title_align="left", expand=False))


# ------------------------------------------------------------------ options

ConfigFile = Annotated[Path, typer.Option(
    "--config", "-c", metavar="FILE", help="The clearinghouse's configuration "
    "(clearinghouse.toml, written by `timebank clearinghouse init`).")]
AsJson = Annotated[bool, typer.Option(
    "--json", help="Print one JSON object (keys, ids, paths) on stdout, nothing else.")]
NodeId = Annotated[str, typer.Option(
    "--node-id", metavar="CODE",
    help="The district's 6-digit administrative division code, e.g. 320115.")]


def _print_roster(published: Roster | None) -> None:
    if published is not None:
        echo(f"城市名册 city roster: epoch {published.epoch}, "
             f"{len(published.members)} districts (signed by the city root key; every tree "
             "head names it, and a quorum is more than half of it)")


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
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_crl: Annotated[Path | None, typer.Option(
        "--tls-crl", metavar="FILE",
        help="The city CA's revocation list (`timebank pki revoke`), read again when it "
             "changes.")] = None,
    insecure: Annotated[bool, typer.Option(
        "--insecure", help="Write insecure = true: serve plaintext, without TLS.")] = False,
    as_json: AsJson = False,
) -> None:
    """Create the city's clearinghouse once: configuration, keys and database.

    Safe to run again: existing files and keys are kept. A failed init leaves no file
    behind.
    """
    from clearinghouse.bootstrap import init_city, key_info
    from clearinghouse.config import CONFIG_NAME
    from clearinghouse.storage import migrate
    from clearinghouse.storage.db import Database

    before = {p for p in (data_dir / CONFIG_NAME,) if p.exists()}
    existing = load_config(data_dir / CONFIG_NAME) if before else None
    key_files = set() if existing is None else {  # to say which keys were kept
        p for p in (existing.city_key_file, existing.signing_key_file) if p.exists()}
    config_path = init_city(data_dir, database_url=database_url,
                            tls=tls_settings(tls_ca, tls_cert, tls_key, tls_crl, insecure))
    config = load_config(config_path)
    city = key_info(config.city_key_file) if config.city_key_file.exists() else None
    own = key_info(config.signing_key_file)
    db = Database(config.effective_database_url)
    try:
        schema = migrate.current_revision(db.writer)
    finally:
        db.dispose()

    if as_json:
        def key_json(path: Path, info: Any) -> dict[str, Any]:
            return {"file": str(path), "key_id": info.key_id,
                    "public_key": info.public_key.hex(), "created": path not in key_files}

        print_json({
            "data_dir": str(config.data_dir), "config": str(config_path),
            "config_created": config_path not in before,
            "city_key": None if city is None else key_json(config.city_key_file, city),
            "clearinghouse_key": key_json(config.signing_key_file, own),
            "database": masked_url(config.effective_database_url), "schema": schema,
            "listen": config.listen})
        return

    def state(path: Path, was: set[Path]) -> str:
        return "[dim]kept (already there)[/]" if path in was else "[green]created[/]"

    grid = label_grid()
    grid.add_row("data directory", str(config.data_dir))
    grid.add_row("configuration", f"{config_path}  {state(config_path, before)}")
    if city is None:
        grid.add_row("city root key", f"offline (not in {config.city_key_file})")
    else:
        grid.add_row("city root key", f"{config.city_key_file}  "
                     f"{state(config.city_key_file, key_files)} (mode 0600)")
        grid.add_row("  key id", city.key_id)
        grid.add_row("  public key", city.public_key.hex())
    grid.add_row("clearinghouse key", f"{config.signing_key_file}  "
                 f"{state(config.signing_key_file, key_files)} (mode 0600)")
    grid.add_row("  key id", own.key_id)
    grid.add_row("  public key", own.public_key.hex())
    grid.add_row("database", masked_url(config.effective_database_url))
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
    net_debit_limit: Annotated[int | None, typer.Option(
        "--net-debit-limit", metavar="MINUTES", min=0, max=MAX_MINUTES,
        help="How far the district may owe the rest of the city, net, in whole minutes. "
             f"Default for a new district: {DEFAULT_NET_DEBIT_LIMIT_MINUTES} "
             f"({DEFAULT_NET_DEBIT_LIMIT_MINUTES // 60:,} h); a district admitted before "
             "keeps its limit unless this is given. 0 refuses every redemption it would "
             "owe (LIMIT_REACHED). Change it later with `timebank clearinghouse limit`.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Admit a district node: sign its admission certificate with the city root key.

    A new district starts with a net debit limit of 60000 minutes (1,000 h) unless
    --net-debit-limit says otherwise. Admitting the same node, district and key again
    changes nothing. A new key (or district) needs a higher serial and retires the old
    key for ever.
    """
    from clearinghouse.bootstrap import city_key, open_app
    from clearinghouse.bureau import admission_body, import_act, prepared, publish_roster
    from clearinghouse.storage.repo import AdmissionRecord as AdmissionRecordType
    from clearinghouse.usecases import admission, claims
    from clearinghouse.usecases.admission import ADMISSION
    from timebank.actfile import sign_act

    key = _public_key(public_key)
    config = load_config(config_file)
    app_ = open_app(config)
    try:
        root = city_key(config, app_)
        old = app_.query(admission.admission, node_id)
        if (old is not None and not old.revoked and old.public_key == key
                and old.district == district and serial in (None, old.serial)):
            record, changed = old, False
        else:
            if serial is None:
                serial = 1 if old is None else old.serial + 1
            act = prepared(app_, ADMISSION, admission_body(node_id, district, key, serial,
                                                           app_.clock.now()))
            done = import_act(app_, sign_act(act, root))
            assert isinstance(done, AdmissionRecordType)
            record, changed = done, True
        if net_debit_limit is None and old is None:
            net_debit_limit = DEFAULT_NET_DEBIT_LIMIT_MINUTES
        if net_debit_limit is not None:
            app_.execute(claims.set_net_debit_limit, node_id, net_debit_limit)
        limit = app_.query(claims.net_debit_limit, node_id)
        published = publish_roster(app_, root)
    finally:
        app_.db.dispose()
    if as_json:
        print_json({**_admission_json(record), "changed": changed,
                    "net_debit_limit_minutes": limit,
                    "roster_epoch": None if published is None else published.epoch})
        return
    _print_admission(record, "node admitted" if changed else "already admitted (unchanged)",
                     limit)
    _print_roster(published)
    if old is not None and old.key_id != record.key_id:
        echo(f"[yellow]The old key {old.key_id} of {old.node_id} is retired and revoked for "
             "ever.[/]")
    echo(f"Change its net debit limit with [bold]timebank clearinghouse limit --config "
         f"{config_file} --node-id {node_id} --minutes N[/].")


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
    as_json: AsJson = False,
) -> None:
    """Revoke a node's key for ever: sign a revocation with the city root key.

    The clearinghouse stops accepting the key at once; the node needs a new certificate
    for a new key (`admit` with its new public key) to sign again.
    """
    from clearinghouse.bootstrap import city_key, open_app
    from clearinghouse.bureau import import_act, prepared, publish_roster, revocation_body
    from clearinghouse.usecases import admission
    from clearinghouse.usecases.admission import REVOCATION
    from timebank.actfile import sign_act

    if not reason.strip():
        fail("say why the key is revoked: --reason TEXT")
    config = load_config(config_file)
    app_ = open_app(config)
    try:
        root = city_key(config, app_)
        act = prepared(app_, REVOCATION, revocation_body(node_id, key_id, reason.strip(),
                                                         app_.clock.now()))
        import_act(app_, sign_act(act, root))
        record = app_.query(admission.admission, node_id)
        published = publish_roster(app_, root)
    finally:
        app_.db.dispose()
    if as_json:
        current = record is not None and record.key_id == key_id
        print_json({"node_id": node_id, "key_id": key_id, "revoked": True,
                    "admission": _admission_json(record) if current and record else None,
                    "roster_epoch": None if published is None else published.epoch})
        return
    _print_roster(published)
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
        print_json([_admission_json(a) for a in found])
        return
    if not found:
        echo("No district node is admitted yet: `timebank clearinghouse admit`.")
        return
    table = Table(title=f"admitted district nodes (times in {CITY_TZ_NAME})",
                  title_justify="left")
    for column in ("node", "district", "key id", "serial", "admitted", "revoked"):
        table.add_column(column, no_wrap=True)
    for a in found:
        table.add_row(a.node_id, escape(a.district), a.key_id, str(a.serial),
                      _fmt(a, False, zone=False),
                      f"[red]{_fmt(a, True, zone=False)}[/]" if a.revoked else "-")
    echo(table)


# ------------------------------------------------------------------ the city policy


def _city_time(at: datetime) -> str:
    return (f"{at.astimezone(CITY_TZ):%Y-%m-%d %H:%M:%S} ({CITY_TZ_NAME}), "
            f"{at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}")


def _parse_effective_at(text: str) -> datetime:
    """ISO 8601; without a UTC offset the time is taken as Asia/Shanghai."""
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        fail(f"cannot read the time {text!r}: write it like 2027-01-01T00:00 "
             f"({CITY_TZ_NAME}) or 2027-01-01T00:00+08:00")
    return at if at.tzinfo is not None else at.replace(tzinfo=CITY_TZ)


def _read_policy_file(path: Path) -> str:
    """The policy text in ``path``, checked with the rules every node applies."""
    with path.open("rb") as f:
        raw = f.read(MAX_POLICY_BYTES + 1)
    if len(raw) > MAX_POLICY_BYTES:
        fail(f"{path}: a policy is at most {MAX_POLICY_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        fail(f"{path}: a policy file is UTF-8 text")
    try:
        load_policy(text)
    except PolicyError as e:
        fail(f"{path}: {e}")
    return text


def _policy_status(record: PolicyRecord, records: list[PolicyRecord], now: datetime) -> str:
    """in force / scheduled / superseded / replaced, as of ``now``."""
    from timebank import citypolicy

    changes = citypolicy.timeline(r.term for r in records)
    current = citypolicy.in_force((r.term for r in records), now)
    if current is not None and current.serial == record.serial:
        return "in force"
    if all(term.serial != record.serial for _, term in changes):
        return "superseded (never in force)"
    if record.effective_at > now:
        return "scheduled"
    return "replaced"


def _policy_json(record: PolicyRecord, status: str) -> dict[str, Any]:
    return {"serial": record.serial, "sha256": record.sha256.hex(), "status": status,
            "effective_at": record.effective_at.astimezone(UTC).isoformat(),
            "issued_at": record.issued_at.astimezone(UTC).isoformat(),
            "recorded_at": record.recorded_at.astimezone(UTC).isoformat()}


@policy_app.command("issue")
@guarded
def policy_issue_command(
    config_file: ConfigFile,
    file: Annotated[Path, typer.Option(
        "--file", "-f", metavar="FILE", exists=True, dir_okay=False,
        help="The policy TOML every district will run (see deploy/ or `timebank node "
             "policy --source` for the published one).")],
    effective_at: Annotated[str | None, typer.Option(
        "--effective-at", metavar="ISO8601",
        help="When it takes effect for every district, e.g. 2027-01-01T00:00 (Asia/Shanghai "
             "unless an offset is given). Default: now. Never in the past.")] = None,
    serial: Annotated[int | None, typer.Option(
        "--serial", metavar="N", min=1, max=MAX_SERIAL,
        help="The policy's serial. Default: one more than the last issued.")] = None,
    dev_clock_file: DevClockFile = None,
) -> None:
    """Issue the city policy: sign it with the city root key and record it in the log.

    Every district node fetches it, checks the city's signature and runs it from its
    effective time on; from then the clearinghouse refuses claims made under any other
    policy (POLICY_NOT_CURRENT).
    """
    from clearinghouse.bootstrap import city_key, open_app
    from clearinghouse.bureau import import_act, prepared
    from clearinghouse.usecases import policies
    from timebank import citypolicy
    from timebank.actfile import sign_act

    clock = dev_clock(dev_clock_file)
    text = _read_policy_file(file)
    config = load_config(config_file)
    app_ = open_app(config, clock)
    try:
        root = city_key(config, app_)
        now = app_.clock.now()
        at = now if effective_at is None else _parse_effective_at(effective_at)
        if at < now - policies.ISSUE_LEEWAY:
            fail(f"the effective time {_city_time(at)} is in the past (now is "
                 f"{_city_time(now)}); a policy takes effect now or later")
        if serial is None:
            serial = app_.query(lambda tx: tx.repo.last_policy_serial()) + 1
        act = prepared(app_, citypolicy.POLICY_KIND,
                       citypolicy.policy_body(serial, text, max(at, now), now))
        done = import_act(app_, sign_act(act, root))
        assert isinstance(done, policies.Issued)
        records = app_.query(policies.city_policies)
    finally:
        app_.db.dispose()
    record = done.record
    status = _policy_status(record, records, now)
    grid = label_grid()
    grid.add_row("serial", str(record.serial))
    grid.add_row("sha256", record.sha256.hex())
    grid.add_row("effective", _city_time(record.effective_at))
    grid.add_row("issued", _city_time(record.issued_at))
    grid.add_row("status", status)
    grid.add_row("log leaf", "recorded before" if done.log_index is None
                 else str(done.log_index))
    title = "city policy issued" if done.log_index is not None else \
        "city policy already issued (unchanged)"
    echo(Panel(grid, title=title, title_align="left", expand=False))
    superseded = [r.serial for r in records if r.serial < record.serial
                  and _policy_status(r, records, now).startswith("superseded")
                  and r.effective_at > now]
    if superseded:
        echo(f"[yellow]It supersedes scheduled polic{'ies' if len(superseded) > 1 else 'y'} "
             f"{', '.join(map(str, superseded))}: they will never be in force.[/]")
    echo("Every district node fetches it from the clearinghouse and checks the city's "
         "signature; from its effective time, claims made under another policy are refused "
         "(POLICY_NOT_CURRENT).")


@policy_app.command("show")
@guarded
def policy_show_command(
    config_file: ConfigFile,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")
                       ] = False,
    dev_clock_file: DevClockFile = None,
) -> None:
    """The city policies issued: the one in force now and those scheduled, with their
    SHA-256 digests (what every node's `timebank node policy` shows)."""
    from clearinghouse.bootstrap import open_app
    from clearinghouse.usecases import policies

    clock = dev_clock(dev_clock_file)
    config = load_config(config_file)
    app_ = open_app(config, clock)
    try:
        records = app_.query(policies.city_policies)
        now = app_.clock.now()
    finally:
        app_.db.dispose()
    statuses = {r.serial: _policy_status(r, records, now) for r in records}
    if as_json:
        print_json({"now": now.astimezone(UTC).isoformat(),
                    "policies": [_policy_json(r, statuses[r.serial]) for r in records]})
        return
    if not records:
        echo("No city policy is issued yet: every node runs its local policy file. "
             "`timebank clearinghouse policy issue` puts one in force.")
        return
    table = Table(title=f"city policies (now {_city_time(now)})", title_justify="left")
    for column in ("serial", "status", f"effective ({CITY_TZ_NAME})", "sha256"):
        table.add_column(column, no_wrap=True)
    styles = {"in force": "green", "scheduled": "yellow"}
    for r in records:
        status = statuses[r.serial]
        style = styles.get(status, "dim")
        table.add_row(str(r.serial), f"[{style}]{status}[/]",
                      f"{r.effective_at.astimezone(CITY_TZ):%Y-%m-%d %H:%M:%S}",
                      r.sha256.hex())
    echo(table)
    if not any(s == "in force" for s in statuses.values()):
        echo("[yellow]No city policy is in force yet: until the first takes effect, every "
             "node runs its local policy file.[/]")


def _hm(minutes: int) -> str:
    """Hours with two decimals and the exact minutes: '1.25 h (75 min)'."""
    return f"{format_hours(minutes)} ({minutes} min)"


def used_percent(net_minutes: int, limit_minutes: int) -> int | None:
    """The whole percentage of its net debit limit a district has used (0 when it owes
    nothing); None when the limit is 0 and it owes something (no room at all)."""
    owed = max(0, -net_minutes)
    if limit_minutes <= 0:
        return 0 if owed == 0 else None
    return owed * 100 // limit_minutes


@app.command("limit")
@guarded
def limit_command(
    config_file: ConfigFile,
    node_id: NodeId,
    minutes: Annotated[int, typer.Option(
        "--minutes", "-m", metavar="N", min=0, max=MAX_MINUTES,
        help="How far the district may owe the rest of the city, net, in whole minutes "
             "(60000 = 1,000 h). 0 refuses every new debt.")],
) -> None:
    """Set a district's net debit limit: how far it may owe other districts, net.

    Redemptions and moves that would take the district past it are refused
    (LIMIT_REACHED) until settlement or a higher limit makes room. Lowering it below what
    the district already owes undoes nothing.
    """
    from clearinghouse.bootstrap import open_app
    from clearinghouse.usecases import admission, claims

    config = load_config(config_file)
    app_ = open_app(config)
    try:
        before = app_.query(claims.net_debit_limit, node_id)
        app_.execute(claims.set_net_debit_limit, node_id, minutes)
        record = app_.query(admission.admission, node_id)
        net = app_.query(claims.positions).of(node_id)
    finally:
        app_.db.dispose()
    district = f" {escape(record.district)}" if record is not None else ""
    grid = label_grid()
    grid.add_row("node", f"{node_id}{district}")
    grid.add_row("net debit limit", f"{_hm(minutes)}  (was {_hm(before)})")
    grid.add_row("net position", _net_text(net))
    percent = used_percent(net, minutes)
    grid.add_row("limit used", "all of it (the limit is 0)" if percent is None
                 else f"{percent}%")
    echo(Panel(grid, title="net debit limit set", title_align="left", expand=False))
    if percent is None or percent >= 100:
        echo(f"[yellow]{node_id} already owes more than the new limit: its new debts are "
             "refused until settlement brings it under.[/]")
    elif near_limit(net, minutes):
        echo(f"[yellow]{node_id} has used {percent}% of the new limit (warning from "
             f"{NEAR_LIMIT_PERCENT}%).[/]")


def _net_text(net: int) -> str:
    if net > 0:
        return f"[green]owed {_hm(net)}[/] by other districts"
    if net < 0:
        return f"[red]owes {_hm(-net)}[/] to other districts"
    return "even (owes nothing, is owed nothing)"


@app.command("positions")
@guarded
def positions_command(
    config_file: ConfigFile,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")
                       ] = False,
) -> None:
    """Each district's net position against its net debit limit, and who owes whom.

    Positions count the completed claims of the open settlement period (a closed
    period's are on its statement: `settle show`); a district is warned (yellow) once it has
    used 80% of its limit.
    """
    from clearinghouse.bootstrap import open_app
    from clearinghouse.usecases import admission, claims

    config = load_config(config_file)
    app_ = open_app(config)
    try:
        found = app_.query(claims.positions)
        admitted = app_.query(admission.admissions)
        limits = {a.node_id: app_.query(claims.net_debit_limit, a.node_id) for a in admitted}
    finally:
        app_.db.dispose()
    names = {a.node_id: a.district for a in admitted}
    rows = [_PositionRow.of(node_id, names.get(node_id, ""), found.of(node_id),
                            limits.get(node_id, 0))
            for node_id in sorted(set(names) | set(found.net))]
    gross = [(c, d, m) for (c, d), m in sorted(found.gross.items())]
    if as_json:
        doc = {"nodes": [r.json() for r in rows],
               "gross": [{"creditor_node_id": c, "creditor_district": names.get(c, ""),
                          "debtor_node_id": d, "debtor_district": names.get(d, ""),
                          "minutes": m} for c, d, m in gross]}
        print_json(doc)
        return
    if not rows:
        echo("No district node is admitted yet: `timebank clearinghouse admit`.")
        return
    table = Table(title="net positions (+ owed to the district, − it owes)",
                  title_justify="left")
    table.add_column("node", no_wrap=True)
    table.add_column("district", no_wrap=True)
    table.add_column("net", justify="right", no_wrap=True)
    table.add_column("min", justify="right", no_wrap=True)
    table.add_column("net debit limit", justify="right", no_wrap=True)
    table.add_column("used", justify="right", no_wrap=True)
    for r in rows:
        style = "green" if r.net > 0 else "red" if r.net < 0 else ""
        net_text = f"[{style}]{format_hours(r.net)}[/]" if style else format_hours(r.net)
        used = f"[bold yellow]{r.used_text}[/]" if r.near else r.used_text
        table.add_row(r.node_id, escape(r.district), net_text, f"{r.net:+d}",
                      format_hours(r.limit), used)
    echo(table)
    if gross:
        bilateral = Table(title="gross bilateral totals: debtor owes creditor",
                          title_justify="left")
        for column in ("creditor", "debtor"):
            bilateral.add_column(column, no_wrap=True)
        bilateral.add_column("hours", justify="right", no_wrap=True)
        bilateral.add_column("min", justify="right", no_wrap=True)
        for c, d, m in gross:
            bilateral.add_row(f"{escape(names.get(c, ''))} ({c})",
                              f"{escape(names.get(d, ''))} ({d})", format_hours(m), str(m))
        echo(bilateral)
    else:
        echo("No claim between districts has completed yet.")
    for r in rows:
        if r.near:
            echo(f"[yellow]warning: {r.node_id} {escape(r.district)} is near its net debit "
                 f"limit ({r.used_text} used; the warning starts at {NEAR_LIMIT_PERCENT}%): "
                 "raise it with `timebank clearinghouse limit`, or settle.[/]")
    unset = [r for r in rows if r.limit == 0]
    if unset:
        echo("[yellow]net debit limit 0, so every redemption they would owe is refused: "
             + ", ".join(f"{r.node_id} {escape(r.district)}" for r in unset)
             + ". Set one with `timebank clearinghouse limit`.[/]")


@dataclass(frozen=True, slots=True)
class _PositionRow:
    node_id: str
    district: str
    net: int
    limit: int
    percent: int | None
    near: bool

    @classmethod
    def of(cls, node_id: str, district: str, net: int, limit: int) -> _PositionRow:
        percent = used_percent(net, limit)
        return cls(node_id, district, net, limit, percent,
                   percent is None or near_limit(net, limit))

    @property
    def used_text(self) -> str:
        return "no room" if self.percent is None else f"{self.percent}%"

    def json(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "district": self.district,
                "net_minutes": self.net, "net_debit_limit_minutes": self.limit,
                "used_percent": self.percent, "near_limit": self.near}


@app.command("serve")
@guarded
def serve_command(config_file: ConfigFile, dev_clock_file: DevClockFile = None,
                  insecure: Insecure = False) -> None:
    """Serve the clearinghouse over gRPC with mutual TLS until SIGTERM or Ctrl-C.

    Listens on the configuration's `listen` address; every client presents a certificate
    the city CA issued ([tls] ca; revoked ones, in [tls] crl, are refused), and a
    district's node may act only for the district its certificate names. Refuses to
    start without [tls] unless --insecure (or insecure = true), which logs a warning at
    every start. Signs every receipt and delivery with the clearinghouse key, and
    expires overdue claims every second; closes the last month when the city policy
    schedules settlement monthly.
    """
    from clearinghouse.api.server import serve_forever
    from runtime.server import Serving

    clock = dev_clock(dev_clock_file)  # refused unless simulated time is allowed here
    config = insecure_config(load_config(config_file), insecure)

    def ready(serving: Serving) -> None:
        host = config.listen.rpartition(":")[0]
        echo(f"clearinghouse serving on {host}:{serving.port} (Ctrl-C or SIGTERM to stop)")
        if clock is not None:
            echo(f"[yellow]simulated time (--dev-clock): now {clock.now().isoformat()}[/]")

    serve_forever(config, clock=clock, on_ready=ready)
    echo("clearinghouse stopped")


# ------------------------------------------------------------------ the offline root key

ActOut = Annotated[Path, typer.Option(
    "--out", "-o", metavar="FILE",
    help="Where to write the act to sign (a new file): carry it to the offline machine "
         "and run `timebank city sign` on it.")]


def _write_act(out: Path, act: ActFile) -> None:
    """Write the act file (a new file; an existing one is never replaced)."""
    from timebank import actfile

    try:
        with out.open("x", encoding="utf-8") as f:
            f.write(actfile.render(act))
    except FileExistsError:
        fail(f"{out} 已存在 / {out} already exists; refusing to overwrite it")
    except OSError as e:
        fail(f"cannot write {out}: {e.strerror}")
    echo(Panel("\n".join(escape(line) for line in actfile.describe(act.kind, act.body)),
               title=f"待签 to sign by city key {act.key_id}", title_align="left",
               expand=False))
    echo(f"Written to {out}. Next, on the offline machine: [bold]timebank city sign {out} "
         "--key ROOT_KEY_FILE --out SIGNED_FILE[/]; then here: [bold]timebank clearinghouse "
         "import --config CONFIG SIGNED_FILE[/].")


def _prepare(config_file: Path, make: Callable[[ClearinghouseApp], ActFile | None],
             out: Path) -> None:
    from clearinghouse.bootstrap import open_app
    from timebank import actfile

    config = load_config(config_file)
    app_ = open_app(config)
    try:
        act = make(app_)
    finally:
        app_.db.dispose()
    if act is None:
        echo("Nothing to sign: the latest roster lists exactly who is admitted now.")
        return
    try:
        actfile.describe(act.kind, act.body)  # never hand the root key what a reader refuses
    except actfile.ActFileError as e:
        raise InvalidArgument(str(e), "MALFORMED_ACT") from None
    _write_act(out, act)


@prepare_app.command("admit")
@guarded
def prepare_admit_command(
    config_file: ConfigFile,
    node_id: NodeId,
    district: Annotated[str, typer.Option(
        "--district", metavar="NAME", help="The district's name, e.g. 江宁区.")],
    public_key: Annotated[str, typer.Option(
        "--public-key", metavar="HEX",
        help="The node's Ed25519 public key, as `timebank node init` prints it.")],
    out: ActOut,
    serial: Annotated[int | None, typer.Option(
        "--serial", metavar="N", min=1, max=MAX_SERIAL,
        help="The certificate's serial. Default: 1 for a new node, one more than the "
             "current certificate.")] = None,
) -> None:
    """Prepare a district's admission certificate for the offline root key. Once it is
    imported, prepare the roster too (`prepare roster`)."""
    from clearinghouse.bureau import admission_body, prepared
    from clearinghouse.usecases import admission
    from clearinghouse.usecases.admission import ADMISSION

    key = _public_key(public_key)

    def make(app_: ClearinghouseApp) -> ActFile:
        old = app_.query(admission.admission, node_id)
        number = serial if serial is not None else 1 if old is None else old.serial + 1
        return prepared(app_, ADMISSION, admission_body(node_id, district, key, number,
                                                        app_.clock.now()))

    _prepare(config_file, make, out)


@prepare_app.command("revoke")
@guarded
def prepare_revoke_command(
    config_file: ConfigFile,
    node_id: NodeId,
    key_id: Annotated[str, typer.Option(
        "--key-id", metavar="KEY_ID", help="The node key to revoke (16 hex characters).")],
    reason: Annotated[str, typer.Option(
        "--reason", metavar="TEXT", help="Why, for the record (at most 200 characters).")],
    out: ActOut,
) -> None:
    """Prepare the revocation of a node key, for ever, for the offline root key."""
    from clearinghouse.bureau import prepared, revocation_body
    from clearinghouse.usecases.admission import REVOCATION

    if not reason.strip():
        fail("say why the key is revoked: --reason TEXT")
    _prepare(config_file, lambda a: prepared(a, REVOCATION, revocation_body(
        node_id, key_id, reason.strip(), a.clock.now())), out)


@prepare_app.command("roster")
@guarded
def prepare_roster_command(config_file: ConfigFile, out: ActOut) -> None:
    """Prepare the city roster of who is admitted now (after an admission, a key change
    or a revocation is imported): until it is imported, tree heads name the one before."""
    from clearinghouse.bureau import prepare_roster

    _prepare(config_file, prepare_roster, out)


@prepare_app.command("policy")
@guarded
def prepare_policy_command(
    config_file: ConfigFile,
    file: Annotated[Path, typer.Option(
        "--file", "-f", metavar="FILE", exists=True, dir_okay=False,
        help="The policy TOML every district will run.")],
    out: ActOut,
    effective_at: Annotated[str, typer.Option(
        "--effective-at", metavar="ISO8601",
        help="When it takes effect, e.g. 2027-01-01T00:00 (Asia/Shanghai unless an offset "
             "is given): later than the act will be imported.")],
    serial: Annotated[int | None, typer.Option(
        "--serial", metavar="N", min=1, max=MAX_SERIAL,
        help="The policy's serial. Default: one more than the last issued.")] = None,
) -> None:
    """Prepare a city policy for the offline root key."""
    from clearinghouse.bureau import prepared
    from timebank import citypolicy

    text = _read_policy_file(file)
    at = _parse_effective_at(effective_at)

    def make(app_: ClearinghouseApp) -> ActFile:
        number = serial if serial is not None else app_.query(
            lambda tx: tx.repo.last_policy_serial()) + 1
        now = app_.clock.now()
        return prepared(app_, citypolicy.POLICY_KIND,
                        citypolicy.policy_body(number, text, max(at, now), now))

    _prepare(config_file, make, out)


@prepare_app.command("city-key")
@guarded
def prepare_city_key_command(
    config_file: ConfigFile,
    new_key: Annotated[str, typer.Option(
        "--new-public-key", metavar="HEX",
        help="The next city root key's public key, as `timebank city keygen` printed it "
             "on the offline machine.")],
    out: ActOut,
) -> None:
    """Prepare the rotation of the city root key: the current root signs it; every act of
    the current root this clearinghouse holds stays valid, anything else it ever signs
    is refused (ROTATED_OUT_CITY_KEY). Give every node, monitor and auditor nothing
    new: they follow the chain from the root key they were configured with."""
    from clearinghouse.bureau import prepare_city_key

    key = _public_key(new_key)
    _prepare(config_file, lambda a: prepare_city_key(a, key), out)


@prepare_app.command("clearinghouse-key")
@guarded
def prepare_clearinghouse_key_command(
    config_file: ConfigFile,
    out: ActOut,
    margin: Annotated[int, typer.Option(
        "--margin", metavar="LEAVES", min=0, max=1_000_000,
        help="Take effect this many leaves after the rotation's own (for a busy log, so "
             "that the import is not refused as LOG_MOVED). Default 0: at once.")] = 0,
) -> None:
    """Prepare the rotation of the clearinghouse's signing key: a new key is created
    beside the current one (clearinghouse.key.<key id>, mode 0600), and the act, for the
    city root key, names it and the tree size from which it signs heads. Heads signed
    before still verify under the old key."""
    from clearinghouse.bootstrap import sibling_key_file
    from clearinghouse.bureau import prepare_clearinghouse_key
    from runtime import keyfiles

    config = load_config(config_file)
    new = keys.generate()
    public = keys.public_key(new)
    path = sibling_key_file(config.signing_key_file, public)
    try:
        keyfiles.write_seed(path, new)
    except keyfiles.KeyFileError as e:
        fail(str(e))
    echo(f"new clearinghouse key {keys.key_id(public)} written to {path} (mode 0600)")
    _prepare(config_file, lambda a: prepare_clearinghouse_key(a, public, margin), out)


@prepare_app.command("settle-decision")
@guarded
def prepare_settle_decision_command(
    config_file: ConfigFile,
    out: ActOut,
    serial: Annotated[int, typer.Option("--serial", metavar="N", min=0, max=MAX_SERIAL,
                                        help="The statement (0: the latest).")],
    reason: Annotated[str, typer.Option("--reason", metavar="TEXT",
                                        help="Why, in words the districts read.")],
    overrule: Annotated[list[str] | None, typer.Option(
        "--overrule", metavar="NODE_ID", help="Uphold, overruling this district's dispute "
        "(repeat).")] = None,
    exclude: Annotated[list[str] | None, typer.Option(
        "--exclude", metavar="CLAIM_ID", help="Revise without this claim (repeat).")] = None,
) -> None:
    """Prepare the bureau's decision on a disputed settlement statement (结算裁决) for the
    offline root key; `import` it once signed (a revision is then signed with the
    clearinghouse key)."""
    from clearinghouse.bureau import prepared
    from clearinghouse.settlecli import decision_act

    def make(app_: ClearinghouseApp) -> ActFile:
        return prepared(app_, *decision_act(app_, serial, overrule=overrule or [],
                                            exclude=exclude or [], reason=reason))

    _prepare(config_file, make, out)


@prepare_app.command("settle-default")
@guarded
def prepare_settle_default_command(
    config_file: ConfigFile,
    out: ActOut,
    node_id: NodeId,
    serial: Annotated[int, typer.Option("--serial", metavar="N", min=0, max=MAX_SERIAL,
                                        help="The final statement (0: the latest).")],
    reason: Annotated[str, typer.Option("--reason", metavar="TEXT",
                                        help="Why, for the record.")],
    minutes: Annotated[int | None, typer.Option(
        "--minutes", metavar="N", min=1, max=MAX_MINUTES,
        help="The unpaid minutes (default: the whole closing debit).")] = None,
) -> None:
    """Prepare a district's settlement default (结算违约) for the offline root key: the
    treatment is the one the statement's city policy set ahead of time."""
    from clearinghouse.bureau import prepared
    from clearinghouse.settlecli import default_act

    _prepare(config_file, lambda a: prepared(a, *default_act(a, serial, node_id, minutes,
                                                             reason)), out)


@app.command("import")
@guarded
def import_command(
    config_file: ConfigFile,
    signed_file: Annotated[Path, typer.Argument(
        metavar="SIGNED_FILE", help="The act signed by `timebank city sign`.")],
) -> None:
    """Import a city act signed offline (导入已签文件): checked under the city's keys as
    this clearinghouse follows them before anything is stored; a tampered or wrongly
    signed file is refused and changes nothing."""
    from clearinghouse.bootstrap import (
        clearinghouse_keys,
        open_app,
        sibling_key_file,
        signing_key,
    )
    from clearinghouse.bureau import import_act
    from clearinghouse.storage.repo import AdmissionRecord as AdmissionRecordType
    from clearinghouse.usecases import admission, policies, settlement
    from clearinghouse.usecases import citykeys as ch_citykeys
    from clearinghouse.usecases import claims as ch_claims
    from timebank import actfile, citykeys
    from timebank import roster as rosters
    from timebank.envelope import CLEARINGHOUSE, sign

    try:
        with signed_file.open("rb") as f:
            data = f.read(actfile.MAX_FILE_BYTES + 1)
    except OSError as e:
        fail(f"cannot read {signed_file}: {e.strerror}")
    try:
        act = actfile.parse(data)
        act.envelope  # noqa: B018 - refuses an unsigned file
    except actfile.ActFileError as e:
        raise InvalidArgument(str(e), "MALFORMED_ACT_FILE") from None
    config = load_config(config_file)
    app_ = open_app(config)
    try:
        if act.kind == citykeys.CLEARINGHOUSE_KEY:
            new = citykeys.read_clearinghouse_rotation(act.body).new_key
            if new not in clearinghouse_keys(config, app_) and not (
                    sibling_key_file(config.signing_key_file, new).exists()):
                raise FailedPrecondition(
                    f"新密钥文件不在本机 / this machine does not hold the new clearinghouse "
                    f"key {keys.key_id(new)} "
                    f"({sibling_key_file(config.signing_key_file, new)})", "NEW_KEY_MISSING")
        known = {a.node_id for a in app_.query(admission.admissions)}
        if act.kind == st.DECISION_KIND:  # a revision is signed with the clearinghouse key
            key = signing_key(config, app_)
            done = import_act(app_, act, sign=lambda k, b: sign(k, b, CLEARINGHOUSE, key))
        else:
            done = import_act(app_, act)
        limit = None
        if isinstance(done, AdmissionRecordType):
            if done.node_id not in known:  # a new district: the default, as `admit` gives
                app_.execute(ch_claims.set_net_debit_limit, done.node_id,
                             DEFAULT_NET_DEBIT_LIMIT_MINUTES)
            limit = app_.query(ch_claims.net_debit_limit, done.node_id)
    finally:
        app_.db.dispose()
    if isinstance(done, AdmissionRecordType):
        _print_admission(done, "node admitted (imported)", limit)
    elif isinstance(done, rosters.Roster):
        _print_roster(done)
    elif isinstance(done, policies.Issued):
        echo(f"city policy {done.record.serial} imported (log leaf "
             f"{'recorded before' if done.log_index is None else done.log_index})")
    elif isinstance(done, settlement.Decided):
        echo(f"结算裁决已导入 settlement decision imported (log leaf {done.log_index})"
             + (f"; 新版 revision {done.revised.statement.revision} issued (leaf "
                f"{done.revised.log_index})" if done.revised else "")
             + ("; 已定稿 final" if done.final else ""))
    elif isinstance(done, int):
        echo(f"结算违约已导入 settlement default imported (log leaf {done})")
    elif isinstance(done, ch_citykeys.Rotated):
        echo(f"{act.kind} rotation {done.serial} imported: new key {done.key_id} (log leaf "
             f"{'recorded before' if done.log_index is None else done.log_index})")
    else:
        echo("revocation imported")
    for line in actfile.describe(act.kind, act.body):
        echo(escape(line))


issuecli.register(app, policy_app)  # city-secret, policy init
