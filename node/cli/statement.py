"""``timebank node statement`` (a person's signed passbook) and ``timebank node checkpoint``
(queue an anchor of the ledger), both on the node's own database and keys."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from node.cli.common import ConfigFile, PersonId, console, echo, fail, guarded
from node.cli.render import hm
from node.config import NodeConfig, load_config

if TYPE_CHECKING:
    from node.link.statement import Fetched
    from timebank.transparency import LogKeys


def _warn(message: str) -> None:
    console(stderr=True).print(f"[bold yellow]warning:[/] {escape(message)}", soft_wrap=True)


@guarded
def checkpoint_command(config_file: ConfigFile) -> None:
    """Queue a checkpoint of the ledger as it stands; the serving node sends it to the
    clearinghouse, which anchors it in the city's transparency log. A ledger anchored
    before is anchored again if the node's key has changed since (a key rotation)."""
    from node.bootstrap import open_app, signing_identity
    from node.usecases import checkpoints

    config = load_config(config_file)
    key_id, _ = signing_identity(config)
    app = open_app(config)
    try:
        done = app.execute(checkpoints.request, key_id)
    finally:
        app.db.dispose()
    if done.queued:
        echo(f"checkpoint of {done.entry_count} ledger entries queued, to be signed with key "
             f"{key_id}; the serving node sends it to the clearinghouse")
    else:
        echo(f"the ledger's {done.entry_count} entries were checkpointed before; nothing new "
             "queued")
    if not config.federated:
        _warn("this node names no clearinghouse in its configuration, so nothing will "
              "anchor the checkpoint")


def _fetch(config: NodeConfig, index: int, ch_keys: LogKeys | None = None) -> Fetched:
    """What the statement needs from the clearinghouse (``node.link.statement``), over a
    channel of this command's own; a proof that does not hold stops the command."""
    from node.link.statement import Fetched, ProofRefused, fetch

    if not config.federated:
        return Fetched(None, [], "this node names no clearinghouse; the statement carries no "
                                 "city roster and will not verify")
    try:
        return fetch(config.clearinghouse_address,
                     ch_keys or bytes.fromhex(config.clearinghouse_public_key), index,
                     config.client_tls())
    except ProofRefused as e:
        fail(str(e))


@guarded
def statement_command(
    person_id: PersonId,
    config_file: ConfigFile,
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FILE",
                                      help="Where to write the statement (JSON).")],
) -> None:
    """Write a person's passbook: balance and history as of the latest anchored checkpoint,
    signed by this node, with the proofs that tie it to the city's transparency log.
    `timebank verify-statement FILE` checks it offline."""
    from node.bootstrap import open_app
    from node.usecases import admissions, statement
    from runtime import keyfiles
    from timebank import passbook

    config = load_config(config_file)
    try:
        key = keyfiles.read_seed(config.signing_key_file)
    except keyfiles.KeyFileError as e:
        fail(str(e))
    app = open_app(config)
    try:
        anchor = app.query(statement.latest_anchor)
        ch_keys = None if not config.federated else app.query(
            admissions.chain, bytes.fromhex(config.clearinghouse_public_key)).log_keys()
        fetched = _fetch(config, int(anchor.log_index), ch_keys)
        doc = app.query(statement.build_statement, person_id, anchor, fetched.proof,
                        rosters=fetched.rosters)
    finally:
        app.db.dispose()
    signed = passbook.sign_statement(doc, config.node_id, key)
    data = passbook.file_bytes(signed)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out)
    person, balance = doc["person"], doc["balance"]
    echo(f"statement of {escape(person['name'])} (person {person['id']}) written to "
         f"{escape(str(out))}")
    echo(f"balance {hm(balance['total'])} as of ledger entry {doc['anchor']['entry_count']}, "
         f"{len(doc['entries'])} {'entry' if len(doc['entries']) == 1 else 'entries'} of "
         f"theirs, log leaf {doc['anchor']['log_index']}")
    if fetched.proof is not None:
        echo(f"proven in the tree head of {fetched.proof.head.size} leaves cosigned by "
             f"{len(fetched.proof.head.cosigners)} districts")
    echo(f"code {passbook.paper_code(passbook.digest(doc))} (the paper passbook's, and "
         "what `timebank verify-statement` says)")
    if fetched.warning:
        _warn(fetched.warning)
