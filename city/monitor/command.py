"""The commands: ``timebank monitor check`` (one round, or ``--follow``) and ``timebank
monitor check-evidence FILE``."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.markup import escape

from city import observer
from city.monitor.state import DEFAULT_MAX_EVIDENCE, Directory, StateError
from city.monitor.watch import (
    DEFAULT_FINALITY_SECONDS,
    MAX_NODES,
    Finding,
    MonitorError,
    Round,
    Target,
    check_once,
)
from runtime.config import is_target
from runtime.console import CliError, console, guarded, print_error
from timebank import forks

app = typer.Typer(
    name="monitor",
    help="Watch a city from outside, with only its public keys and addresses: follow the "
         "clearinghouse's log, compare every district's tree heads with it, keep evidence "
         "of any fork (a split view), and alarm on heads that do not become final.",
    no_args_is_help=True,
    add_completion=False,
)


def _key(text: str, what: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) != 32:
        raise typer.BadParameter(f"{what} is an Ed25519 public key: 64 hex characters")
    return key


def _address(text: str, what: str) -> str:
    if not is_target(text):
        raise typer.BadParameter(f"{what} is HOST:PORT (or ipv4:HOST:PORT,HOST:PORT, "
                                 f"dns:///NAME:PORT), not {text!r}")
    return text


def _print(found: Round) -> None:
    out = console()
    for f in found.findings:
        mark = "[bold red]✗[/]" if f.alarm else "[yellow]![/]"
        out.print(f"  {mark}  {escape(f.kind)}: {escape(f.detail)}", soft_wrap=True)
        if f.evidence:
            out.print(f"       evidence: {escape(f.evidence)}", soft_wrap=True)
    verdict = ("[bold green]all well[/]" if found.ok else
               f"[bold red]{sum(f.alarm for f in found.findings)} alarm(s)[/]")
    out.print(f"log of {found.log_size} leaves, final to {found.final_size}; "
              f"{found.districts} district(s) answered, {found.heads_checked} head(s) "
              f"compared: {verdict}")


def _summary(found: Round) -> dict[str, Any]:
    return {"ok": found.ok, "log_size": found.log_size, "final_size": found.final_size,
            "districts": found.districts, "heads_checked": found.heads_checked,
            "findings": [{"kind": f.kind, "detail": f.detail, "alarm": f.alarm,
                          "evidence": f.evidence} for f in found.findings]}


def _alert(f: Finding) -> None:
    """One line on stderr per new finding of a following monitor, for whoever watches."""
    where = f" (evidence: {f.evidence})" if f.evidence else ""
    level = "ALARM" if f.alarm else "warning"
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {level} {f.kind}: {f.detail}{where}",
          file=sys.stderr, flush=True)


@app.command("check")
@guarded
def check_command(
    clearinghouse: Annotated[str, typer.Option(
        "--clearinghouse", metavar="HOST:PORT", help="The clearinghouse to follow.")],
    clearinghouse_key: Annotated[str, typer.Option(
        "--clearinghouse-key", metavar="HEX",
        help="The clearinghouse's public key: every head must verify under it.")],
    city_key: Annotated[str, typer.Option(
        "--city-key", metavar="HEX",
        help="The city root public key: the districts' admissions in the log must verify "
             "under it (their keys count the quorum).")],
    data_dir: Annotated[Path, typer.Option(
        "--data-dir", metavar="DIR",
        help="The monitor's own directory: its state between runs, evidence/ (fork "
             "evidence files) and status.json (what the latest round found, rewritten "
             "after every round; the bureau's console shows it: `timebank console serve "
             "--monitor-status DIR/status.json`).")],
    nodes: Annotated[list[str] | None, typer.Option(
        "--node", metavar="HOST:PORT",
        help="A district node whose heads to compare (repeat for every district).")] = None,
    finality_seconds: Annotated[int, typer.Option(
        "--finality-seconds", min=1, max=7 * 24 * 3600,
        help="How long a head may wait for a quorum of districts after this monitor first "
             "saw it.")] = DEFAULT_FINALITY_SECONDS,
    max_evidence: Annotated[int, typer.Option(
        "--max-evidence", min=1, max=100_000,
        help="The most evidence files kept in DIR/evidence.")] = DEFAULT_MAX_EVIDENCE,
    follow: Annotated[bool, typer.Option(
        "--follow", help="Keep watching, a round every --interval seconds, and alert on "
                         "stderr once per new finding; stop with SIGTERM or Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(
        "--interval", min=0.2, max=3600.0, help="Seconds between rounds with --follow.")
    ] = 30.0,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Also print a machine-readable summary as the last line of stdout.")
    ] = False,
    ca: observer.Ca = None,
    cert: observer.Cert = None,
    key: observer.Key = None,
    insecure: observer.Insecure = False,
) -> None:
    """Check the city once: exit 0 if all is well, 1 on any alarm.

    An alarm is a fork (a district holds a head that is not of the clearinghouse's log,
    or the log does not extend what this monitor saw before), a head not final in time,
    anchors or a district's view going backwards, or a log that does not hold together.
    Run by someone who is not the bureau: it needs only the city's two public keys and
    the addresses. Fork evidence goes to DIR/evidence, one file per fork, which anyone
    can check with `timebank monitor check-evidence`. Every round, made or not, rewrites
    DIR/status.json with what it found.
    """
    if len(nodes or ()) > MAX_NODES:
        raise typer.BadParameter(f"at most {MAX_NODES} --node addresses")
    target = Target(_address(clearinghouse, "--clearinghouse"),
                    _key(clearinghouse_key, "--clearinghouse-key"),
                    _key(city_key, "--city-key"),
                    tuple(dict.fromkeys(_address(n, "--node") for n in nodes or ())),
                    finality_seconds, observer.observer_tls(ca, cert, key, insecure))
    directory = Directory(data_dir, max_evidence=max_evidence)
    if not follow:
        try:
            found = check_once(target, directory)
        except (MonitorError, StateError) as e:
            raise CliError(str(e)) from None
        _print(found)
        if as_json:
            sys.stdout.write(json.dumps(_summary(found), ensure_ascii=False) + "\n")
            sys.stdout.flush()
        if not found.ok:
            raise typer.Exit(1)
        return
    _follow(target, directory, interval)


def _follow(target: Target, directory: Directory, interval: float) -> None:
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    alerted: set[str] = set()
    print(f"following {target.clearinghouse} and {len(target.nodes)} district node(s), "
          f"a round every {interval:g} s", file=sys.stderr, flush=True)
    try:
        while not stop.is_set():
            try:
                found = check_once(target, directory)
            except (MonitorError, StateError) as e:
                print_error(str(e))
            else:
                for f in found.findings:
                    if f.key not in alerted:
                        alerted.add(f.key)
                        _alert(f)
                current = {f.key for f in found.findings}
                alerted &= current  # a finding that went away alerts again if it returns
            stop.wait(interval)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@app.command("check-evidence")
@guarded
def check_evidence_command(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="An evidence file (JSON).")],
    clearinghouse_key: Annotated[str, typer.Option(
        "--clearinghouse-key", metavar="HEX",
        help="The clearinghouse's public key: the only thing the check trusts.")],
    conclusive: Annotated[bool, typer.Option(
        "--conclusive", help="Accept only conclusive evidence (exit 1 for refutable).")
    ] = False,
) -> None:
    """Check fork evidence with the clearinghouse's public key alone.

    Exit 0 if the file shows two heads the clearinghouse signed that cannot both be
    true (with --conclusive: only if it proves it), 1 if it shows nothing of the kind.
    """
    key = _key(clearinghouse_key, "--clearinghouse-key")
    try:
        raw = file.read_bytes()[: forks.MAX_EVIDENCE_BYTES + 1]
    except OSError as e:
        raise CliError(f"cannot read {file}: {e.strerror}") from None
    try:
        evidence = forks.check(forks.load(raw), key)
    except forks.EvidenceError as e:
        raise CliError(f"{file} is not evidence of a fork: {e}") from None
    out = console()
    small, large = evidence.heads
    out.print(f"[bold]{escape(str(file))}[/]: {evidence.kind.value} evidence, "
              f"[bold]{evidence.strength.value}[/]", soft_wrap=True)
    out.print(f"  {escape(evidence.summary())}", soft_wrap=True)
    for head, seen in zip(evidence.heads, evidence.seen, strict=True):
        out.print(f"  head of {head.size} leaves, root {head.root.hex()[:16]}…"
                  + (f" (seen: {escape(seen)})" if seen else ""), soft_wrap=True)
    if not evidence.conclusive:
        out.print("  [yellow]refutable: void if anyone shows a consistency proof from "
                  f"{small.size} to {large.size} leaves that verifies[/]", soft_wrap=True)
    if conclusive and not evidence.conclusive:
        raise typer.Exit(1)


__all__ = ["app"]
