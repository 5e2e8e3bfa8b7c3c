"""Commands on the node's own files and database: ``init``, ``migrate``, ``serve``,
``check`` (given the node's configuration file)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.panel import Panel

from node.cli.backup import divergence, render_divergence
from node.cli.client import DEFAULT_NODE_ADDRESS, connect
from node.cli.common import AsJson, CliError, ConfigFile, echo, fail, guarded, print_json
from node.cli.render import log_summary, render_log, render_report, report_from_view, to_json
from node.config import NodeConfig, load_config
from node.domain.policy import PolicyError
from runtime.console import (
    DevClockFile,
    Insecure,
    TlsCa,
    TlsCert,
    TlsKey,
    dev_clock,
    insecure_config,
    label_grid,
    masked_url,
    tls_settings,
)
from runtime.errors import ConfigError
from timebank.v1 import node_pb2

if TYPE_CHECKING:
    from node.usecases.recovery import Divergence


def _load(config_file: Path) -> NodeConfig:
    return load_config(config_file)


@guarded
def init_command(
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", metavar="DIR",
        help="Create the node here: node.toml, policy.toml, city-secret and the SQLite "
             "database (unless --database-url).")] = None,
    node_id: Annotated[str, typer.Option(
        "--node-id", metavar="CODE",
        help="The district's 6-digit administrative division code, e.g. 320115.")] = "",
    district: Annotated[str, typer.Option(
        "--district", metavar="NAME", help="The district's name, e.g. 江宁区.")] = "",
    database_url: Annotated[str, typer.Option(
        "--database-url", metavar="URL",
        help="PostgreSQL instead of SQLite, e.g. postgresql+psycopg://timebank@/tb_320115.")
    ] = "",
    listen: Annotated[str, typer.Option(
        "--listen", metavar="HOST:PORT", help="Where `node serve` listens.")
    ] = "127.0.0.1:7443",
    policy: Annotated[Path | None, typer.Option(
        "--policy", metavar="FILE",
        help="The city policy published by the bureau (default: Nanjing's published "
             "values).")] = None,
    config_file: Annotated[Path | None, typer.Option(
        "--config", "-c", metavar="FILE",
        help="Instead of --data-dir: initialise the node an existing configuration "
             "describes (e.g. /etc/timebank/node.toml).")] = None,
    city_secret: Annotated[Path | None, typer.Option(
        "--city-secret", metavar="FILE",
        help="The city secret issued by the bureau (every node must hold the same one). "
             "Default: a random secret, for a district running alone.")] = None,
    clearinghouse: Annotated[str, typer.Option(
        "--clearinghouse", metavar="ADDRESS",
        help="The city clearinghouse's address, HOST:PORT, or every replica's as one "
             "target: ipv4:HOST:PORT,HOST:PORT or dns:///NAME:PORT; empty runs the "
             "district alone.")] = "",
    clearinghouse_key: Annotated[str, typer.Option(
        "--clearinghouse-key", metavar="HEX",
        help="The clearinghouse's public key, as `timebank clearinghouse init` prints it.")
    ] = "",
    peers: Annotated[list[str] | None, typer.Option(
        "--peer", metavar="HOST:PORT",
        help="Another district's node whose tree heads this node compares with the "
             "clearinghouse's log (repeat for each; [peers] nodes in node.toml).")] = None,
    city_key: Annotated[str, typer.Option(
        "--city-key", metavar="HEX",
        help="The city root's public key, as `timebank clearinghouse init` prints it: what "
             "the city signs is checked with it (required with --clearinghouse).")] = "",
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    insecure: Annotated[bool, typer.Option(
        "--insecure", help="Write insecure = true: serve and call plaintext, without TLS.")
    ] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object (node id, key id, public key, fingerprint, "
        "paths) on stdout, nothing else.")] = False,
) -> None:
    """Create a node once: its data directory, configuration, policy, secret and database.

    Everything given is checked before anything is written, and a failed init leaves no
    file behind. With --config, --policy and --city-secret put those files where the
    configuration names them (if they are not there yet).
    """
    from node.bootstrap import (
        check_files,
        ensure_signing_key,
        init_data_dir,
        migrate_and_initialise,
        read_policy,
    )
    from node.config import CONFIG_NAME
    from runtime import keyfiles
    from runtime.initfiles import all_or_nothing, sqlite_files

    policy_text = None
    if policy is not None:
        try:
            policy_text = policy.read_text(encoding="utf-8")
        except OSError as e:
            fail(f"cannot read the policy {policy}: {(e.strerror or str(e)).lower()}")
        except UnicodeDecodeError:
            fail(f"{policy}: a policy file is UTF-8 text")
        try:
            from node.domain.policy import load_policy

            load_policy(policy_text)
        except PolicyError as e:
            fail(f"{policy}: {e}")
    secret = None
    if city_secret is not None:
        try:
            secret = keyfiles.read_city_secret(city_secret)
        except keyfiles.KeyFileError as e:
            fail(str(e))
    if config_file is not None:
        if (data_dir is not None or node_id or district or database_url or clearinghouse
                or clearinghouse_key or peers or city_key or tls_ca or tls_cert or tls_key
                or insecure):
            fail("with --config, the configuration says everything: drop --data-dir, "
                 "--node-id, --district, --database-url, the addresses and the keys "
                 "(--policy and --city-secret may fill in those files)")
        config = _load(config_file)
        created: set[str] = set()
        with all_or_nothing((config.data_dir, config.policy_file, config.city_secret_file,
                             config.signing_key_file,
                             *sqlite_files(config.effective_database_url))):
            if policy_text is not None and not config.policy_file.exists():
                config.policy_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                config.policy_file.write_text(policy_text, encoding="utf-8")
                created.add("policy")
            if secret is not None and not config.city_secret_file.exists():
                config.city_secret_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                try:
                    keyfiles.write_city_secret(config.city_secret_file, secret)
                except keyfiles.KeyFileError as e:
                    fail(str(e))
                created.add("secret")
            check_files(config)  # before the key and the database: all or nothing
            config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            if ensure_signing_key(config):
                created.add("key")
            migrate_and_initialise(config)
        _print_initialised(config, config_file, created, as_json)
        return
    if data_dir is None:
        fail("say where the node lives: --data-dir DIR (with --node-id and --district), "
             "or --config FILE")
    if not node_id or not district:
        fail("a new node needs --node-id (the 6-digit division code, e.g. 320115) and "
             "--district (e.g. 江宁区)")
    names = {CONFIG_NAME: "config", "policy.toml": "policy", "city-secret": "secret",
             "node.key": "key"}
    created = {label for name, label in names.items() if not (data_dir / name).exists()}
    try:
        config_path = init_data_dir(data_dir, node_id, district, database_url=database_url,
                                    listen=listen, policy_text=policy_text, city_secret=secret,
                                    clearinghouse_address=clearinghouse,
                                    clearinghouse_public_key=clearinghouse_key.lower(),
                                    peer_nodes=tuple(peers or ()),
                                    city_public_key=city_key.lower(),
                                    tls=tls_settings(tls_ca, tls_cert, tls_key, None, insecure))
    except ValueError as e:
        if isinstance(e, ConfigError):  # a bad policy too
            raise
        fail(str(e))
    config = _load(config_path)
    read_policy(config.policy_file)
    _print_initialised(config, config_path, created, as_json)


def _print_initialised(config: NodeConfig, config_path: Path, created: set[str],
                       as_json: bool = False) -> None:
    from node.bootstrap import read_policy, read_secret, signing_identity
    from node.storage import migrate
    from runtime.keyfiles import secret_fingerprint

    policy = read_policy(config.policy_file)
    key_id, public_hex = signing_identity(config)
    fingerprint = secret_fingerprint(read_secret(config.city_secret_file))
    if as_json:
        print_json({
            "node_id": config.node_id, "district": config.district,
            "key_id": key_id, "public_key": public_hex,
            "data_dir": str(config.data_dir), "config": str(config_path),
            "policy_file": str(config.policy_file), "policy_sha256": policy.digest,
            "city_secret_file": str(config.city_secret_file),
            "city_secret_fingerprint": fingerprint,
            "signing_key_file": str(config.signing_key_file),
            "database": masked_url(config.effective_database_url),
            "schema": migrate.revision_at(config.effective_database_url),
            "listen": config.listen, "created": sorted(created)})
        return

    def state(label: str) -> str:
        return "[green]created[/]" if label in created else "[dim]kept (already there)[/]"

    grid = label_grid()
    grid.add_row("node", f"{config.node_id} {escape(config.district)}")
    grid.add_row("data directory", str(config.data_dir))
    grid.add_row("configuration", f"{config_path}  {state('config')}")
    grid.add_row("policy", f"{config.policy_file}  {state('policy')}" + (
        " (until the city's signed policy is in force)" if config.city_public_key else ""))
    grid.add_row("policy sha256", policy.digest)
    grid.add_row("city secret", f"{config.city_secret_file}  {state('secret')} (mode 0600)")
    grid.add_row("  fingerprint", fingerprint + " (the same in every district of the city)")
    grid.add_row("signing key", f"{config.signing_key_file}  {state('key')} (mode 0600)")
    grid.add_row("key id", key_id)
    grid.add_row("public key", public_hex)
    grid.add_row("database", masked_url(config.effective_database_url))
    grid.add_row("schema", str(migrate.revision_at(config.effective_database_url)))
    grid.add_row("listen", config.listen)
    echo(Panel(grid, title="node initialised", title_align="left", expand=False))
    if "secret" in created and not config.federated:
        echo("[yellow]The city secret above was generated at random for this node alone.[/] "
             "In a real city, replace it with the secret issued by the civil-affairs bureau "
             "before enrolling anyone: every node must hold the same secret, or the same person "
             "gets different PersonRefs in different districts.")
    echo("The bureau admits this node to the city by its public key above (key id "
         f"{key_id}); the key file itself never leaves this machine.")
    echo(f"Next: [bold]timebank node serve --config {config_path}[/]")


@guarded
def migrate_command(config_file: ConfigFile) -> None:
    """Bring the database schema up to this version (run after every upgrade)."""
    from node.bootstrap import migrate_and_initialise
    from node.storage import migrate

    config = _load(config_file)
    url = config.effective_database_url
    before = migrate.revision_at(url)
    migrate_and_initialise(config)
    after = migrate.revision_at(url)
    echo(f"database  {masked_url(url)}")
    echo(f"schema    {before or 'empty'} → {after} "
         f"({'already current' if before == after else 'migrated'}; "
         f"this software needs {migrate.head_revision()})")


@guarded
def serve_command(config_file: ConfigFile, dev_clock_file: DevClockFile = None,
                  insecure: Insecure = False) -> None:
    """Serve the node's gRPC API over TLS until SIGTERM or Ctrl-C.

    With a [clearinghouse] address in the configuration it also keeps the node's link to
    the city clearinghouse (mutual TLS with the node's certificate): it sends what the
    node owes it and applies what it delivers. Refuses to start without [tls] cert and
    key unless --insecure (or insecure = true), which logs a warning at every start.
    """
    clock = dev_clock(dev_clock_file)  # refused unless simulated time is allowed here
    config = insecure_config(_load(config_file), insecure)
    try:
        from node.api.server import serve_forever
    except ImportError as e:
        fail(f"the gRPC server cannot be loaded: {e}")
    try:
        serve_forever(config, clock=clock)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@guarded
def check_command(
    config_file: Annotated[Path | None, typer.Option(
        "--config", "-c", metavar="FILE",
        help="Check directly on the database this configuration names (the node may be "
             "running or stopped).")] = None,
    node: Annotated[str, typer.Option(
        "--node", envvar="TIMEBANK_NODE_ADDRESS", metavar="HOST:PORT",
        help="Without --config: ask the running node at this address.")
    ] = DEFAULT_NODE_ADDRESS,
    evidence_dir: Annotated[Path | None, typer.Option(
        "--evidence-dir", metavar="DIR",
        help="Write each fork evidence document the node holds here, as a file anyone "
             "can check with `timebank monitor check-evidence`.")] = None,
    as_json: AsJson = False,
) -> None:
    """Verify every ledger invariant (sums, hash chain, balances, holds, cap), and report
    what the node found wrong with the city's log (a fork, a head not final in time).
    With --config, also compare the database with what this node told the city's log
    (anchors and claims a restored backup lacks; `timebank node recover`).

    Exit code 1 if any check fails, the log has an alarm or the database lacks anything
    the log holds.
    """
    heads: node_pb2.GetLogHeadsResponse | None = None
    behind: Divergence | None = None
    unchecked = ""
    if config_file is not None:
        from node.api.convert import log_heads_pb
        from node.bootstrap import open_app
        from node.usecases import admissions, log_watch
        from node.usecases.ledger import check_ledger

        config = _load(config_file)
        node_app = open_app(config)
        try:
            report = report_from_view(node_app.query(check_ledger))
            if config.federated:
                key = bytes.fromhex(config.clearinghouse_public_key)
                chain = node_app.query(admissions.chain, key).log_keys()  # ADR 0018
                heads = log_heads_pb(node_app.query(log_watch.status, chain),
                                     node_pb2.GetLogHeadsResponse(node_id=config.node_id), key)
        finally:
            node_app.db.dispose()
        if config.federated:  # what the city's log holds and the database does not
            try:
                behind = divergence(config)
            except CliError as e:
                unchecked = str(e)
        title = f"ledger check · {config.node_id} {escape(config.district)}"
        extra: dict[str, Any] = {"node_id": config.node_id, "district": config.district}
    else:
        with connect(node) as client:
            report = client.call(client.stub.CheckLedger, node_pb2.CheckLedgerRequest())
            found = client.call(client.stub.GetLogHeads, node_pb2.GetLogHeadsRequest())
            heads = found if found.clearinghouse_key else None
        title, extra = f"ledger check · node at {node}", {}
    if heads is not None and evidence_dir is not None:
        _write_evidence(heads, evidence_dir)
    if as_json:
        out = {**extra, **to_json(report)}
        if heads is not None:
            out["log"] = log_summary(heads)
        if behind is not None:
            out["city_log"] = behind.json()
        if unchecked:
            out["city_log_unchecked"] = unchecked
        print_json(out)
    else:
        echo(render_report(report, title))
        if heads is not None:
            echo(render_log(heads))
        if behind is not None:
            echo(render_divergence(behind))
        if unchecked:
            echo(f"[yellow]未与城市日志比对 / not compared with the city's log: "
                 f"{escape(unchecked)}[/]")
    if (not report.ok or (heads is not None and heads.alarms)
            or (behind is not None and not behind.ok)):
        raise typer.Exit(1)


def _write_evidence(heads: node_pb2.GetLogHeadsResponse, directory: Path) -> None:
    import json

    directory.mkdir(parents=True, exist_ok=True)
    for text in heads.evidence:
        doc = json.loads(text)
        name = f"fork-{heads.node_id}-{_evidence_name(text)}.json"
        (directory / name).write_text(json.dumps(doc, ensure_ascii=False, indent=2) + "\n",
                                      encoding="utf-8")


def _evidence_name(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
