"""The command: ``timebank audit``."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.markup import escape

from city.audit.directory import audit_config_files, audit_data_dir
from city.audit.remote import audit_remote
from city.audit.report import AuditError, Report
from runtime.tls import ClientTls


def _print(report: Report) -> None:
    from runtime.console import console

    out = console()
    out.print(f"[bold]Audit of {escape(report.source)}[/]")
    for c in report.checks:
        mark = "[green]✓[/]" if c.ok else "[bold red]✗[/]"
        out.print(f"  {mark}  {escape(c.name)}: {escape(c.detail)}", soft_wrap=True)
        if c.first_bad is not None:
            b = c.first_bad
            out.print(f"       [red]first bad record: {escape(b.file)}, table {escape(b.table)}"
                      f", {escape(b.entry)}[/]", soft_wrap=True)
    if report.ok:
        out.print(f"[bold green]All {len(report.checks)} checks passed.[/]")
    else:
        failed = sum(not c.ok for c in report.checks)
        out.print(f"[bold red]{failed} of {len(report.checks)} checks failed.[/]")


def _hex_key(text: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) != 32:
        raise AuditError("--clearinghouse-key is the clearinghouse's Ed25519 public key: "
                         "64 hex digits")
    return key


def run_audit(data_dir: Path | None, address: str | None, key_hex: str | None, *,
              as_json: bool = False, nodes: Sequence[str] = (),
              tls: ClientTls | None = None, configs: Sequence[Path] = ()) -> int:
    """``timebank audit``: print each check; 0 if all pass, 1 naming the first bad record."""
    from runtime.console import CliError, print_error

    try:
        if (data_dir is not None) + (address is not None) + bool(configs) != 1:
            raise AuditError("give one of --config FILE (repeated: the clearinghouse's and "
                             "every district's), --data-dir DIR (the demo's) or "
                             "--clearinghouse HOST:PORT (a running city)")
        if nodes and address is None:
            raise AuditError("--node compares district heads with a running clearinghouse's "
                             "log: give --clearinghouse HOST:PORT too")
        if configs:
            report = audit_config_files(configs, _hex_key(key_hex) if key_hex else None)
        elif address is not None:
            if key_hex is None:
                raise AuditError("--clearinghouse needs --clearinghouse-key HEX")
            report = audit_remote(address, _hex_key(key_hex), nodes, tls)
        else:
            assert data_dir is not None
            if not data_dir.is_dir():
                raise AuditError(f"{data_dir} is not a directory")
            report = audit_data_dir(data_dir, _hex_key(key_hex) if key_hex else None)
    except AuditError as e:
        raise CliError(str(e)) from None
    _print(report)
    bad = report.first_bad
    if bad is not None:
        print_error(f"first bad record: {bad.file}, table {bad.table}, {bad.entry}: "
                    f"{bad.problem}")
    if as_json:
        sys.stdout.write(json.dumps(report.summary(), ensure_ascii=False) + "\n")
        sys.stdout.flush()
    return 0 if report.ok else 1
