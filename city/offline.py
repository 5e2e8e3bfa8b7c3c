"""``timebank city ...``: what the bureau runs on the offline machine that holds the
city root key (ADR 0018). No database, no network: a key file and act files only.

``sign`` shows what an act file prepared on the clearinghouse says (worked out from the
bytes it will sign, not from the file's comments), refuses what it cannot parse or an
act prepared for another root key, and writes the signed file to carry back for
``timebank clearinghouse import``. ``keygen`` makes the next root key for a rotation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.panel import Panel

from runtime import keyfiles
from runtime.console import echo, fail, guarded, print_json
from timebank import actfile, keys

app = typer.Typer(
    help="The offline city root key (城市根密钥，离线): sign acts prepared on the "
         "clearinghouse, make the next root key.", no_args_is_help=True)


def _read_key(path: Path) -> keys.SigningKey:
    try:
        return keyfiles.read_seed(path)
    except keyfiles.KeyFileError as e:
        fail(str(e))


@app.command("sign")
@guarded
def sign_command(
    act_file: Annotated[Path, typer.Argument(
        metavar="ACT_FILE", help="The act `timebank clearinghouse prepare` wrote.")],
    key: Annotated[Path, typer.Option(
        "--key", metavar="ROOT_KEY_FILE",
        help="The city root key's seed file (32 raw bytes, mode 0600).")],
    out: Annotated[Path, typer.Option(
        "--out", "-o", metavar="SIGNED_FILE", help="Where to write the signed act (a new "
        "file).")],
    new_key: Annotated[Path | None, typer.Option(
        "--new-key", metavar="NEW_ROOT_KEY_FILE",
        help="For a rotation of the city root key: the new root key's file, to countersign "
             "the rotation (会签) and show the bureau holds it.")] = None,
) -> None:
    """Sign a prepared city act with the root key (签署): shows what it signs first."""
    try:
        with act_file.open("rb") as f:
            data = f.read(actfile.MAX_FILE_BYTES + 1)
    except OSError as e:
        fail(f"cannot read {act_file}: {e.strerror}")
    try:
        act = actfile.parse(data)
        signed = actfile.sign_act(act, _read_key(key),
                                  None if new_key is None else _read_key(new_key))
        summary = actfile.describe(signed.kind, signed.body)
    except actfile.ActFileError as e:
        fail(str(e))
    echo(Panel("\n".join(escape(line) for line in summary),
               title=f"签署 signing with city key {act.key_id}", title_align="left",
               expand=False))
    try:
        with out.open("x", encoding="utf-8") as f:
            f.write(actfile.render(signed))
    except FileExistsError:
        fail(f"{out} 已存在 / {out} already exists; refusing to overwrite it")
    except OSError as e:
        fail(f"cannot write {out}: {e.strerror}")
    echo(f"signed: {out}. Carry it back and run `timebank clearinghouse import --config "
         f"CONFIG {out.name}`.")


@app.command("keygen")
@guarded
def keygen_command(
    out: Annotated[Path, typer.Option(
        "--out", "-o", metavar="FILE", help="Where to write the new root key's seed (a new "
        "file, mode 0600).")],
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object (file, key id, public key), nothing else.")
    ] = False,
) -> None:
    """Make a new city root key (for a rotation) and print its public key, which
    `timebank clearinghouse prepare city-key --new-public-key` takes."""
    new = keys.generate()
    try:
        keyfiles.write_seed(out, new)
    except keyfiles.KeyFileError as e:
        fail(str(e))
    public = keys.public_key(new)
    if as_json:
        print_json({"file": str(out), "key_id": keys.key_id(public),
                    "public_key": public.hex()})
        return
    echo(f"new city root key {keys.key_id(public)} in {out} (mode 0600)")
    echo(f"public key {public.hex()}")
