"""Backing up, restoring and recovering a node's database: ``timebank node backup``,
``restore`` and ``recover`` (``runtime.backup``; docs/operations.md)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.panel import Panel

from node.cli.common import AsJson, ConfigFile, echo, fail, guarded, print_json
from node.config import NodeConfig, load_config
from runtime.console import label_grid

if TYPE_CHECKING:
    from node.usecases.recovery import Divergence, LoggedMessage

Out = Annotated[Path, typer.Option(
    "--out", "-o", metavar="FILE",
    help="The backup file to write (a new file; SQLite: a database file, PostgreSQL: a "
         "pg_dump custom-format archive).")]
From = Annotated[Path, typer.Option(
    "--from", metavar="FILE", help="The backup file `timebank node backup` wrote.")]
Replace = Annotated[bool, typer.Option(
    "--replace", help="Replace everything in a database that is not empty.")]


@guarded
def backup_command(config_file: ConfigFile, out: Out) -> None:
    """Back up the node's database into a new file (备份), while the node runs."""
    from runtime import backupcli

    backupcli.backup(load_config(config_file).effective_database_url, out)


@guarded
def restore_command(config_file: ConfigFile, source: From, replace: Replace = False) -> None:
    """Restore the node's database from a backup (恢复备份). Stop the node first.

    At its next start the node resends what its outbox holds, reads again every delivery
    after the last one the backup applied, and compares its ledger with the anchors the
    city's log holds: a backup older than the last anchor is refused with what is missing
    (see `timebank node recover`)."""
    from node.storage import migrate
    from runtime import backupcli

    backupcli.restore(
        load_config(config_file).effective_database_url, source, replace=replace,
        revision_at=migrate.revision_at, head=migrate.head_revision(),
        migrate_command=f"timebank node migrate --config {config_file}",
        serve_command=f"timebank node serve --config {config_file}")


def register(app: typer.Typer) -> None:
    """Add ``backup`` and ``restore`` to ``timebank node``."""
    app.command("backup")(backup_command)
    app.command("restore")(restore_command)
    app.command("recover")(recover_command)


# ------------------------------------------------------------------ against the log


def render_divergence(found: Divergence) -> Panel:
    """The report of ``node.usecases.recovery.compare`` for an operator."""
    from node.usecases.app import city_time
    from node.usecases.recovery import MAX_LISTED

    grid = label_grid()
    if found.ok:
        grid.add_row("结果 result", "[bold green]数据库与城市日志一致 / the database holds "
                     "everything this node told the city's log[/]")
    else:
        grid.add_row("结果 result", "[bold red]数据库比城市日志旧 / the database is older "
                     "than what this node told the city's log[/]")
    grid.add_row("账本 ledger", f"{found.ledger_count} entries held")
    grid.add_row("日志 log", f"leaves {found.scanned[0]}–{found.scanned[1]} read")
    missing = found.missing_entries
    if missing is not None:
        grid.add_row("缺少条目 missing", f"entries {missing[0]}–{missing[1]}")
    for c in found.beyond[:MAX_LISTED]:
        grid.add_row("锚点 anchor", f"{c.entry_count} entries, log leaf {c.index}, "
                     f"{city_time(c.at)}")
    for c in found.rewritten[:MAX_LISTED]:
        grid.add_row("[red]不符 differs[/]", f"anchor of {c.entry_count} entries (log leaf "
                     f"{c.index}): the ledger's chain head there is another")
    for m in found.unknown[:MAX_LISTED]:
        claim = (f"claim {m.claim_id} ({m.claim_kind}, {m.minutes} min, with "
                 f"{m.counterparty}, {m.state})" if m.claim_id else "")
        held = " [red]not held[/]" if m.claim_id in found.claims_missing else ""
        grid.add_row("消息 message", escape(f"{m.kind} at log leaf {m.index}, "
                                          f"{city_time(m.at)}: {claim}") + held)
    if found.incoming:
        grid.add_row("将重新送达 incoming", f"{len(found.incoming)} claim(s) other districts "
                     "started, not in the database: delivered again when the node serves")
    return Panel(grid, title=f"city log check · {found.node_id}", expand=False)


def divergence(config: NodeConfig, start: int | None = None) -> Divergence:
    """Open the node's database and compare it with the city's log (the node may be
    running or stopped)."""
    from node.bootstrap import open_app
    from node.link import logscan

    if not config.federated:
        fail("this node has no [clearinghouse] in its configuration: no city log to compare")
    app = open_app(config)
    try:
        return logscan.compare_with_log(app, config, start=start)
    except logscan.LogUnreachable as e:
        fail(f"无法连接清算中心 / the clearinghouse at {config.clearinghouse_address} did not "
             f"answer ({e}); start it, or try again")
    finally:
        app.db.dispose()


#: What a log leaf can never give back.
CANNOT = ("日志只保存账本的哈希，不保存条目本身："
          "缺少的本地条目（工单、存入、发放、转出）只能从更新的备份恢复。"
          " / The log holds only hashes of the ledger, not its entries: missing local "
          "entries (orders, donations, grants, reversals) come back only from a newer "
          "backup.")


@guarded
def recover_command(
    config_file: ConfigFile,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", metavar="FILE",
        help="Write what the log holds of the missing messages (each signed envelope, its "
             "leaf and the claim state the log records) as JSON to this new file.")] = None,
    from_leaf: Annotated[int | None, typer.Option(
        "--from-leaf", min=0, metavar="N",
        help="Read the log from leaf N (default: where the database stops knowing it).")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """What the city's log gives back to a node restored from an old backup (从城市日志找回).

    The node stays stopped. Claims another district started are delivered again by the
    clearinghouse when the node serves; the anchors and this node's own messages the log
    holds are listed, and written with their signatures to --out; what only a newer
    backup can give back is said plainly. Exit code 1 while anything is missing."""
    config = load_config(config_file)
    found = divergence(config, from_leaf)
    if out is not None:
        if out.exists():
            fail(f"{out} exists already; give a new file")
        doc = {**found.json(), "messages_missing": [
            {**_message(m), "envelope_body_b64": base64.b64encode(m.body).decode()}
            for m in found.unknown]}
        out.write_text(json.dumps(doc, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    if as_json:
        print_json({**found.json(), "cannot_recover": [] if found.ok else [CANNOT]})
    else:
        echo(render_divergence(found))
        if found.ok:
            echo("没有缺失 / nothing is missing: `timebank node serve` resends the outbox and "
                 "reads again every delivery after the last one this database applied.")
        else:
            echo("可以找回 / what comes back: claims other districts started are delivered "
                 "again when the node serves; the messages listed above are in the log, "
                 "signed by this node" + (f" (written to {out})" if out else "") + ".")
            echo(f"[bold]不能找回 / what does not:[/] {CANNOT}")
            echo("恢复更新的备份 / restore a newer backup (`timebank node restore --replace`), "
                 "then run this again; if there is none, the bureau and the district "
                 "reconcile the listed claims by hand (docs/operations.md).")
    if not found.ok:
        raise typer.Exit(1)


def _message(m: LoggedMessage) -> dict[str, object]:
    return {"log_index": m.index, "at": m.at.isoformat(), "kind": m.kind,
            "claim_id": m.claim_id, "claim_kind": m.claim_kind, "state": m.state,
            "minutes": m.minutes, "counterparty": m.counterparty}
