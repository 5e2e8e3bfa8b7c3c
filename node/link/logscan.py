"""Reading the city's log for what this node told it (issue 17): its checkpoints and its
side of every claim, from a given leaf on, to compare with its database
(``node.usecases.recovery``).

Used at start (a node restored from an old backup refuses to serve), by ``timebank node
check --config`` and by ``timebank node recover``. The clearinghouse's latest head is
checked under its key first; leaves are read in pages of at most 1,000 (``GetEntries``).
A leaf that names this node as signer but whose signature, under the key this node
runs with, does not verify is ignored: nobody but this node can put words in its mouth.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC

import grpc
from google.protobuf.message import DecodeError

from node.config import NodeConfig
from node.usecases import admissions, recovery, tree_heads
from node.usecases.app import NodeApp
from runtime import keyfiles
from runtime.errors import ConfigError
from runtime.server import channel_options
from runtime.tls import channel
from timebank import anchors, keys, transparency
from timebank.envelope import EnvelopeError, decode, verify
from timebank.v1 import clearing_pb2 as pb
from timebank.v1 import clearing_pb2_grpc

#: Leaves asked for in one GetEntries call (the clearinghouse's own bound).
PAGE = 1000
#: The most leaves one scan reads (a backup years old in a busy city; beyond this, ask
#: the bureau for an export of the log).
MAX_SCAN_LEAVES = 20_000_000
#: How long one call may take.
CALL_TIMEOUT_SECONDS = 10.0


class LogUnreachable(Exception):
    """The clearinghouse did not answer: nothing could be compared."""


@dataclass(frozen=True, slots=True)
class Scan:
    checkpoints: list[recovery.LoggedCheckpoint]
    messages: list[recovery.LoggedMessage]
    scanned: tuple[int, int]
    #: Claims of this node's another district signed a step of (delivered to it)
    others: list[str]


def _claim_kind(entry: pb.LogEntry) -> str:
    if not entry.claim_id:
        return ""
    return "move" if entry.claim_kind == pb.CLAIM_KIND_MOVE else "redemption"


def _state(entry: pb.LogEntry) -> str:
    if not entry.claim_id:
        return ""
    return pb.ClaimState.Name(entry.state).removeprefix("CLAIM_STATE_").lower()


def read(stub: clearing_pb2_grpc.ClearinghouseServiceStub, log_keys: transparency.LogKeys,
         node_id: str, public_key: bytes, start: int, *,
         timeout: float = CALL_TIMEOUT_SECONDS) -> Scan:
    """Every leaf from ``start`` to the clearinghouse's latest head that this node
    signed. Raises ``LogUnreachable`` if the clearinghouse does not answer and
    ``transparency.LogError`` if its head is not signed by its key."""
    try:
        head = stub.GetTreeHead(pb.GetTreeHeadRequest(), timeout=timeout).head
    except grpc.RpcError as e:
        raise LogUnreachable(f"{e.code().name}: {e.details()}") from None
    size = transparency.check_head(head.note, log_keys).size
    if size - start > MAX_SCAN_LEAVES:
        raise ConfigError(f"日志过长 / {size - start} leaves to read, more than "
                          f"{MAX_SCAN_LEAVES}: ask the bureau for an export of the log")
    our_key_id = keys.key_id(public_key)
    found = Scan([], [], (start, size), [])
    at = start
    while at < size:
        try:
            page = stub.GetEntries(pb.GetEntriesRequest(start=at, end=min(size, at + PAGE)),
                                   timeout=timeout).entries
        except grpc.RpcError as e:
            raise LogUnreachable(f"{e.code().name}: {e.details()}") from None
        if not page:
            raise LogUnreachable(f"the clearinghouse gave no leaf at {at} of {size}")
        for offset, data in enumerate(page):
            _take(found, at + offset, data, node_id, our_key_id, public_key)
        at += len(page)
    return found


def _take(found: Scan, index: int, data: bytes, node_id: str, our_key_id: str,
          public_key: bytes) -> None:
    try:
        entry = pb.LogEntry.FromString(data)
        if not entry.envelope:
            return
        signed = decode(entry.envelope)
    except (DecodeError, EnvelopeError, ValueError):
        return
    if signed.signer != node_id:
        if entry.claim_id and node_id in (entry.creditor_node_id, entry.debtor_node_id):
            found.others.append(entry.claim_id)
        return
    verified = False
    if signed.key_id == our_key_id:
        try:
            verify(signed, public_key)
        except EnvelopeError:
            return  # not this node's words, whatever the leaf says
        verified = True
    at = entry.at.ToDatetime(tzinfo=UTC)
    if signed.kind == anchors.CHECKPOINT_KIND:
        try:
            body = pb.NodeCheckpoint.FromString(signed.body)
        except DecodeError:
            return
        found.checkpoints.append(recovery.LoggedCheckpoint(
            index, at, body.entry_count, body.chain_head, verified))
        return
    counterparty = (entry.debtor_node_id if entry.creditor_node_id == node_id
                    else entry.creditor_node_id)
    found.messages.append(recovery.LoggedMessage(
        index, at, signed.kind, signed.body, entry.claim_id, _claim_kind(entry),
        _state(entry), entry.minutes, counterparty))


def compare_with_log(app: NodeApp, config: NodeConfig, *, start: int | None = None,
                     timeout: float = CALL_TIMEOUT_SECONDS) -> recovery.Divergence:
    """Read the log from where this database stops knowing it (or ``start``) and compare.
    Raises ``LogUnreachable`` if the clearinghouse cannot be asked."""
    try:
        public = keys.public_key(keyfiles.read_seed(config.signing_key_file))
    except keyfiles.KeyFileError as e:
        raise ConfigError(str(e)) from None
    key = bytes.fromhex(config.clearinghouse_public_key)
    log_keys = app.query(admissions.chain, key).log_keys()
    if start is None:
        verified = app.query(tree_heads.verified, log_keys)
        start = app.query(recovery.scan_start, None if verified is None else verified.size)
    with channel(config.clearinghouse_address, config.client_tls(),
                 options=channel_options()) as chan:
        scan = read(clearing_pb2_grpc.ClearinghouseServiceStub(chan), log_keys,
                    config.node_id, public, start, timeout=timeout)
    return app.query(recovery.compare, scan.checkpoints, scan.messages, scan.scanned,
                     scan.others)
