"""What the bureau issues before a city runs: ``timebank clearinghouse city-secret`` (the
one secret every district holds) and ``timebank clearinghouse policy init`` (the
published city policy, commented, to edit and then ``policy issue``).

Neither opens the clearinghouse's database: the secret never goes near it, and a
policy file is only a draft until the city root key signs it. Both write a new file and
never replace one; ``--json`` prints one object and nothing else on stdout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.panel import Panel

from runtime.console import echo, fail, guarded, label_grid, print_json
from timebank.policy import DEFAULT_POLICY_TOML, PolicyError, load_policy, policy_sha256

AsJson = Annotated[bool, typer.Option(
    "--json", help="Print one JSON object (path, fingerprint or digest) on stdout, nothing "
    "else.")]

#: What `policy init` writes above the published policy: how to use the file.
_POLICY_HEADER = """\
# 城市时间银行政策（草案）/ The city's time-bank policy (a draft)
#
# Written by `timebank clearinghouse policy init`: the published default policy, with
# every setting explained. Edit it, then have the city root key sign it and put it in
# force for every district:
#
#   timebank clearinghouse policy issue -c clearinghouse.toml --file policy.toml \\
#       [--effective-at 2027-01-01T00:00]        # Asia/Shanghai unless an offset is given
#
# Every node fetches the signed policy and runs it from its effective time; until then
# each node runs its own local policy file. Changing this file changes nothing until it
# is issued again (with a higher serial).
#
"""

#: Below it: the settlement settings, commented out, with their defaults.
_SETTLEMENT_FOOTER = """
# 结算 / Settlement between districts (ADR 0019). Uncomment to change the defaults:
# [settlement]
# rate_fen_per_hour = 0        # the city fund's rate, in fen per hour of service
#                              # (0: statements carry minutes only, no money)
# on_default = "carry"         # a district that does not pay: "carry" its debit into the
#                              # next period, or the city "reserve" pays it
# schedule = "manual"          # "monthly": close each calendar month by itself
# close_after_days = 3         # monthly: the day of the next month closing may start
"""


def default_policy_text() -> str:
    """The draft `policy init` writes: the published policy between its explanations.
    It loads as exactly the published default (comments change no setting)."""
    return _POLICY_HEADER + DEFAULT_POLICY_TOML + _SETTLEMENT_FOOTER


def _write_new(path: Path, data: bytes, what: str) -> None:
    """Write ``data`` to a new file; an existing one is never replaced."""
    try:
        with path.open("xb") as f:
            f.write(data)
    except FileExistsError:
        fail(f"{path} 已存在 / {path} already exists; refusing to overwrite it")
    except OSError as e:
        fail(f"cannot write the {what} {path}: {e.strerror}")


@guarded
def city_secret_command(
    out: Annotated[Path, typer.Option(
        "--out", "-o", metavar="FILE",
        help="Where to write the new city secret (a new file: an existing one is never "
             "overwritten).")],
    as_json: AsJson = False,
) -> None:
    """Generate the city secret (城市密钥), the key of every PersonRef, once per city.

    Format: 32 random bytes from the operating system, written raw (no hex, no newline)
    to a new file of mode 0600. Every district node gets a copy of exactly these bytes
    (`timebank node init --city-secret FILE`); a node refuses a secret shorter than 32
    bytes or longer than 1024, unreadable, or readable or writable by other users. The
    printed fingerprint (not the secret) lets each district check its copy. The secret
    never goes to the clearinghouse's database or log: whoever holds it and an ID number
    can compute that person's PersonRef.
    """
    from runtime import keyfiles

    secret = keyfiles.new_city_secret()
    try:
        keyfiles.write_city_secret(out, secret)
    except keyfiles.KeyFileError as e:
        fail(str(e))
    fingerprint = keyfiles.secret_fingerprint(secret)
    if as_json:
        print_json({"city_secret_file": str(out), "mode": "0600",
                    "bytes": keyfiles.CITY_SECRET_BYTES, "fingerprint": fingerprint})
        return
    grid = label_grid()
    grid.add_row("city secret", f"{out}  (mode 0600)")
    grid.add_row("format", f"{keyfiles.CITY_SECRET_BYTES} random bytes, raw")
    grid.add_row("fingerprint", fingerprint)
    echo(Panel(grid, title="城市密钥已生成 city secret generated", title_align="left",
               expand=False))
    echo("[yellow]请通过安全渠道交给每个区节点，不要放在清算中心服务器上。[/] Give each district "
         "node a copy by a safe channel (`timebank node init --city-secret FILE`); keep it "
         "off the clearinghouse's server, and compare fingerprints, never the secret.")


@guarded
def policy_init_command(
    out: Annotated[Path, typer.Option(
        "--out", "-o", metavar="FILE",
        help="Where to write the draft policy, e.g. policy.toml (a new file: an existing "
             "one is never overwritten).")],
    as_json: AsJson = False,
) -> None:
    """Write the published default city policy, every setting explained, to edit and then
    sign with `timebank clearinghouse policy issue --file FILE` (起草城市政策)."""
    text = default_policy_text()
    try:
        load_policy(text)  # what is written is a policy every node accepts
    except PolicyError as e:  # pragma: no cover - the published text is tested
        fail(f"the default policy does not load: {e}")
    _write_new(out, text.encode("utf-8"), "policy")
    digest = policy_sha256(text).hex()
    if as_json:
        print_json({"policy_file": str(out), "sha256": digest})
        return
    echo(f"城市政策草案已写入 / the default city policy is written to {out} (sha256 {digest})")
    echo(f"Edit it, then: [bold]timebank clearinghouse policy issue -c clearinghouse.toml "
         f"--file {out}[/] (signed by the city root key; every district runs it from its "
         "effective time).")


def register(app: typer.Typer, policy_app: typer.Typer) -> None:
    """Add ``city-secret`` to ``timebank clearinghouse`` and ``init`` to its ``policy``."""
    app.command("city-secret")(city_secret_command)
    policy_app.command("init")(policy_init_command)


__all__ = ["city_secret_command", "default_policy_text", "policy_init_command", "register"]
