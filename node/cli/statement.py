"""``timebank node statement`` (a person's signed passbook) and ``timebank node checkpoint``
(queue an anchor of the ledger), both on the node's own database and keys."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from node.cli.common import ConfigFile, PersonId, console, echo, fail, guarded
from node.cli.render import hm
from node.config import NodeConfig, load_config

if TYPE_CHECKING:
    from runtime.tls import ClientTls
    from timebank.transparency import LogKeys

#: How long the statement command waits for the clearinghouse.
RPC_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Fetched:
    proof: Any  # clearing_pb2.GetInclusionProofResponse | None
    rosters: list[bytes]
    warning: str


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


def _rosters(stub: Any) -> list[bytes]:
    """Every city-signed roster: the districts and keys a verifier counts cosignatures
    with (the statement carries those its heads name); read page by page."""
    from node.link.connection import all_admissions

    return list(all_admissions(stub, RPC_SECONDS).rosters)


def _fetch(config: NodeConfig, index: int, ch_keys: LogKeys | None = None) -> Fetched:
    if not config.federated:
        return Fetched(None, [], "this node names no clearinghouse; the statement carries no "
                                 "city roster and will not verify")
    return fetch(config.clearinghouse_address,
                 ch_keys or bytes.fromhex(config.clearinghouse_public_key), index,
                 config.client_tls())


def fetch(address: str, ch_key: bytes | LogKeys, index: int,
          tls: ClientTls | None = None) -> Fetched:
    """From the clearinghouse at ``address`` (mutual TLS as ``tls`` says): log leaf
    ``index`` (the anchor's) proven in the latest quorum-cosigned head, and the city's
    rosters (districts and their keys); what could not be had is said in ``warning``."""
    import grpc

    from runtime.tls import channel as tls_channel
    from timebank import transparency
    from timebank.v1 import clearing_pb2 as pb
    from timebank.v1 import clearing_pb2_grpc

    with tls_channel(address, tls) as channel:
        stub = clearing_pb2_grpc.ClearinghouseServiceStub(channel)
        try:
            proof = stub.GetInclusionProof(pb.GetInclusionProofRequest(index=index,
                                                                       cosigned=True),
                                           timeout=RPC_SECONDS)
        except grpc.RpcError as e:
            # NOT_FOUND: no head is cosigned yet; INVALID_ARGUMENT: the latest cosigned
            # head is older than the anchor's leaf.
            if e.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return Fetched(None, [], f"the clearinghouse at {address} "
                               f"cannot be reached ({e.code().name}); the statement carries "
                               "no city roster and will not verify until it is made "
                               "again")
            proof = None
        if proof is not None:
            try:
                head = transparency.check_head(proof.head.note, ch_key)
                transparency.check_included(proof.logged.entry, index, head,
                                            list(proof.logged.path))
            except transparency.LogError as e:
                fail(f"the clearinghouse's cosigned proof does not hold: {e}")
        try:
            rosters = _rosters(stub)
        except grpc.RpcError as e:
            return Fetched(proof, [], f"the clearinghouse's log could not be read "
                           f"({e.code().name}); the statement carries no city roster")
    warning = "" if proof is not None else (
        "no tree head is cosigned by a quorum of districts yet: the statement cites the "
        "anchor's own head and is not final (verify it with --allow-uncosigned, or make it "
        "again once the districts have cosigned)")
    return Fetched(proof, rosters, warning)


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
    data = json.dumps(signed, ensure_ascii=False, indent=1).encode("utf-8") + b"\n"
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
    if fetched.warning:
        _warn(fetched.warning)
