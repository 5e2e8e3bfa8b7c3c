"""`timebank verify-statement`: check a passbook (电子存折) offline, with only the city's
two public keys, and say who it is of, their balance and whether it is genuine and final.
The checks themselves are the contract's (``timebank.passbook``); this is the command
that reads the file and the keys and prints the outcome.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from runtime.clock import SystemClock
from runtime.console import CliError, DevClockFile, dev_clock, guarded
from timebank.passbook import StatementError, guard, load, paper_code, verify_statement


def city_keys(data_dir: Path) -> tuple[bytes, bytes]:
    """The city root and clearinghouse public keys of a city laid out under ``data_dir``
    (``timebank demo --data-dir``), or of a clearinghouse's own data directory."""
    from clearinghouse.bootstrap import key_info
    from clearinghouse.config import CONFIG_NAME, ConfigError, load_config

    config_file = data_dir / CONFIG_NAME
    if not config_file.exists():
        config_file = data_dir / "clearinghouse" / CONFIG_NAME
    try:
        config = load_config(config_file)
        return (key_info(config.city_key_file).public_key,
                key_info(config.signing_key_file).public_key)
    except ConfigError as e:
        raise CliError(str(e)) from None


def _hex_key(text: str, what: str) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise typer.BadParameter(f"{what} is an Ed25519 public key: 64 hex characters")
    return key


@guarded
def verify_command(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The statement (JSON).")],
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", metavar="DIR",
        help="Take the city's public keys from the city laid out here (`timebank demo "
             "--data-dir`) or from the clearinghouse's data directory.")] = None,
    city_key: Annotated[str, typer.Option(
        "--city-key", metavar="HEX", help="The city root public key.")] = "",
    clearinghouse_key: Annotated[str, typer.Option(
        "--clearinghouse-key", metavar="HEX", help="The clearinghouse's public key.")] = "",
    allow_uncosigned: Annotated[bool, typer.Option(
        "--allow-uncosigned",
        help="Accept a tree head not yet cosigned by a quorum of districts (not final).")
    ] = False,
    dev_clock_file: DevClockFile = None,
) -> None:
    """Check a passbook offline, with only the city's public keys; print the person,
    district, balance, the code a paper passbook prints (核对码: the digest the node
    signed) and `genuine`, or exactly why it is not (exit 1).
    Cosignatures dated more than five minutes after this computer's clock are refused."""
    from runtime.console import echo, fail, print_error
    from timebank.minutes import format_hours_and_minutes as hm

    clock = dev_clock(dev_clock_file) or SystemClock()

    if data_dir is not None:
        if city_key or clearinghouse_key:
            fail("give the keys either by --data-dir or by --city-key and "
                 "--clearinghouse-key, not both")
        root, ch = city_keys(data_dir)
    elif city_key and clearinghouse_key:
        root = _hex_key(city_key, "--city-key")
        ch = _hex_key(clearinghouse_key, "--clearinghouse-key")
    else:
        fail("name the city's public keys: --data-dir DIR, or --city-key HEX and "
             "--clearinghouse-key HEX")
    try:
        data = file.read_bytes()
    except OSError as e:
        fail(f"cannot read {file}: {e.strerror or e}")
    try:
        now = int(clock.now().timestamp())
        found = guard(lambda: verify_statement(load(data), root, ch, now=now,
                                               allow_uncosigned=allow_uncosigned))
    except StatementError as e:
        print_error(f"not genuine: {e}" if "not final" not in str(e) else str(e))
        raise typer.Exit(1) from None
    origins = ", ".join(f"{k} {hm(v)}" for k, v in found.by_origin.items()) or "nothing"
    echo(f"person    {escape(found.name)} (PersonRef {found.person_ref[:8]}…)")
    echo(f"district  {escape(found.district)} ({found.node_id})")
    echo(f"balance   {hm(found.total)}: {escape(origins)}")
    theirs = f"{found.entries} {'entry' if found.entries == 1 else 'entries'} of theirs"
    echo(f"as of     ledger entry {found.entry_count} ({theirs}), "
         f"log leaf {found.log_index} in the tree head of {found.head_size} leaves")
    echo(f"cosigned  by {len(found.cosigners)} of the city's {found.districts} districts "
         f"other than {escape(found.district)} ({', '.join(found.cosigners) or 'none'}); "
         f"quorum {found.quorum} (from the city-signed roster)")
    # the same code, in the same groups, as the paper passbook prints (核对码)
    echo(f"code      {paper_code(found.statement_digest)}")
    if found.final:
        echo("[bold green]genuine[/]")
    else:
        echo("[bold yellow]genuine but not final[/]: the tree head is not cosigned by a "
             "quorum of districts yet")
