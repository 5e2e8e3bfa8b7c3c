"""A running clearinghouse over gRPC: what it serves to anyone (the signed head, every
entry, cosignatures, claims and positions), and, given the district nodes' addresses,
every tree head each district holds (``GetLogHeads``) compared with that log: a head
that is not of it is a split view, and the check names the district and the fork."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from city.audit.logscan import PAGE, LogScan
from city.audit.report import AuditError, Bad, BadRecord, Report, plural, run
from node.link.logcheck import locate
from runtime.tls import ClientTls
from runtime.tls import channel as tls_channel
from timebank import checkpoint as notes
from timebank import forks, transparency
from timebank.v1 import clearing_pb2 as pb
from timebank.v1 import clearing_pb2_grpc, node_pb2, node_pb2_grpc

RPC_TIMEOUT = 15.0


def _rpc(address: str, method: Callable[..., Any], request: Any) -> Any:
    try:
        return method(request, timeout=RPC_TIMEOUT)
    except grpc.RpcError as e:
        code = e.code().name if hasattr(e, "code") else "UNKNOWN"
        details = e.details() if hasattr(e, "details") else str(e)
        raise AuditError(f"the clearinghouse at {address} did not answer: {code}: "
                         f"{details}") from None


#: The most district nodes one audit asks.
MAX_NODES = 64


@dataclass(frozen=True, slots=True)
class DistrictHead:
    """One head a district holds, and where it stands against the log."""

    node: str  # the node's address
    node_id: str
    which: str  # verified, cosigned, final
    size: int
    evidence: forks.Evidence | None
    problem: str = ""  # not a head of this clearinghouse, or the node did not answer


def audit_remote(address: str, clearinghouse_key: bytes,
                 nodes: Sequence[str] = (), tls: ClientTls | None = None) -> Report:
    """Audit a running clearinghouse from what it serves to any certificate of the city
    (an observer's: ``tls``; None: plaintext), and the heads each district node at
    ``nodes`` holds against its log."""
    if len(nodes) > MAX_NODES:
        raise AuditError(f"an audit asks at most {MAX_NODES} district nodes")
    with tls_channel(address, tls) as channel:
        stub = clearing_pb2_grpc.ClearinghouseServiceStub(channel)
        head_msg = _rpc(address, stub.GetTreeHead, pb.GetTreeHeadRequest()).head
        try:
            head = transparency.check_head(head_msg.note, clearinghouse_key)
        except transparency.LogError as e:
            raise AuditError(f"the latest tree head from {address} does not verify under "
                             f"the key given (wrong --clearinghouse-key?): {e}") from None
        scan = LogScan(address, sizes={head.size})
        start = 0
        while start < head.size:  # a page may stop early (by bytes): ask on from there
            end = min(head.size, start + PAGE)
            page = _rpc(address, stub.GetEntries, pb.GetEntriesRequest(start=start, end=end))
            for offset, data in enumerate(page.entries):
                scan.add(start + offset, bytes(data))
            if not 0 < len(page.entries) <= end - start:
                scan.bad = scan.bad or BadRecord(address, "GetEntries", f"{start}..{end}",
                                                 f"{len(page.entries)} entries, not 1 to "
                                                 f"{end - start}")
                break
            start += len(page.entries)
        positions = _rpc(address, stub.GetPositions, pb.GetPositionsRequest())
        cosigned = _cosigned_head(stub, address)
        consistency = None
        if cosigned is not None and 0 < cosigned.size < head.size:
            consistency = _rpc(address, stub.GetConsistencyProof, pb.GetConsistencyProofRequest(
                old_size=cosigned.size, new_size=head.size))
        districts = [h for node in dict.fromkeys(nodes)
                     for h in _district_heads(stub, address, clearinghouse_key, node, tls)]
    checks = [
        run("tree head", lambda: f"size {head.size}, signed by the clearinghouse"),
        run("log entries", lambda: _remote_log(scan, head, address)),
        run("cosigners", lambda: _remote_cosigners(scan, head, cosigned, consistency,
                                                    clearinghouse_key, address)),
        run("claims", lambda: _remote_claims(scan)),
        run("positions", lambda: _remote_positions(scan, positions, address)),
    ]
    if nodes:
        checks.append(run("district heads", lambda: _remote_districts(districts, address)))
    return Report(address, tuple(checks))


def _district_heads(stub: clearing_pb2_grpc.ClearinghouseServiceStub, address: str,
                    key: bytes, node: str, tls: ClientTls | None) -> list[DistrictHead]:
    """Every head the node at ``node`` holds, located in the clearinghouse's log."""
    with tls_channel(node, tls) as channel:
        try:
            heads: node_pb2.GetLogHeadsResponse = node_pb2_grpc.NodeServiceStub(
                channel).GetLogHeads(node_pb2.GetLogHeadsRequest(), timeout=RPC_TIMEOUT)
        except grpc.RpcError as e:
            code = e.code().name if isinstance(e, grpc.Call) else "UNKNOWN"
            return [DistrictHead(node, "", "", 0, None, f"the node did not answer: {code}")]
    node_id = heads.node_id[:16]
    if heads.clearinghouse_key and heads.clearinghouse_key != key.hex():
        return [DistrictHead(node, node_id, "", 0, None,
                             f"it trusts another clearinghouse key "
                             f"({heads.clearinghouse_key[:16]}…)")]
    found = []
    for which, note in (("verified", heads.verified), ("cosigned", heads.cosigned),
                        ("final", heads.final)):
        if not note:
            continue
        try:
            located = locate(stub, key, note, seen=f"district {node_id} at {node} ({which})",
                             log_seen=f"the clearinghouse at {address} (latest)",
                             timeout=RPC_TIMEOUT)
        except transparency.LogError as e:
            found.append(DistrictHead(node, node_id, which, 0, None,
                                      f"its {which} head is not the clearinghouse's: {e}"))
            continue
        except grpc.RpcError as e:
            code = e.code().name if isinstance(e, grpc.Call) else "UNKNOWN"
            raise AuditError(f"the clearinghouse at {address} did not answer: {code}") from None
        found.append(DistrictHead(node, node_id, which, located.head.size, located.evidence))
    return found


def _remote_districts(found: list[DistrictHead], address: str) -> str:
    for h in found:
        if h.problem:
            raise Bad(BadRecord(h.node, "GetLogHeads", f"district {h.node_id or '?'}",
                                h.problem))
        if h.evidence is not None:
            raise Bad(BadRecord(
                h.node, "GetLogHeads", f"district {h.node_id} {h.which} head of {h.size} leaves",
                f"fork: {h.evidence.summary()} (evidence {h.evidence.id}; `timebank monitor "
                f"check --node {h.node}` keeps it as a file)"))
    districts = len({h.node for h in found})
    return (f"{plural(len(found), 'head')} held by {plural(districts, 'district')} are of "
            f"the log at {address}")


def _cosigned_head(stub: clearing_pb2_grpc.ClearinghouseServiceStub,
                   address: str) -> pb.TreeHead | None:
    try:
        found: pb.TreeHead = stub.GetTreeHead(pb.GetTreeHeadRequest(cosigned=True),
                                              timeout=RPC_TIMEOUT).head
        return found
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise AuditError(f"the clearinghouse at {address} did not answer: "
                         f"{e.code().name}: {e.details()}") from None


def _remote_log(scan: LogScan, head: transparency.Head, address: str) -> str:
    if scan.bad is not None:
        raise Bad(scan.bad)
    if scan.root() != head.root:
        raise Bad(BadRecord(address, "GetEntries", f"size {head.size}",
                             "the entries served do not hash to the signed root"))
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(scan.kinds.items()))
    return f"{plural(scan.size, 'entry')} fetched and rebuilt to the signed root ({kinds})"


def _remote_cosigners(scan: LogScan, head: transparency.Head, cosigned: pb.TreeHead | None,
                      consistency: pb.GetConsistencyProofResponse | None, key: bytes,
                      address: str) -> str:
    witnesses = {transparency.witness_name(n): k for n, k in scan.node_keys.items()}
    latest = _valid_cosigners(head.note, witnesses, address, head.size)
    if cosigned is None:
        return f"latest head cosigned by {latest or 'nobody'}; no head cosigned by a quorum"
    try:
        old = transparency.check_head(cosigned.note, key)
        transparency.check_extends(old, head, list(consistency.path) if consistency else [])
    except transparency.LogError as e:
        raise Bad(BadRecord(address, "GetConsistencyProof", f"size {cosigned.size}",
                             str(e))) from None
    valid = _valid_cosigners(cosigned.note, witnesses, address, cosigned.size)
    claimed = sorted(cosigned.cosigners)
    if [transparency.witness_name(n) for n in claimed] != valid:
        raise Bad(BadRecord(address, "GetTreeHead", f"size {cosigned.size}",
                             f"claims cosigners {claimed}; valid cosignatures: {valid}"))
    return (f"head of size {cosigned.size} cosigned by {', '.join(claimed)}, and the latest "
            f"head extends it")


def _valid_cosigners(note: str, witnesses: dict[str, bytes], address: str,
                     size: int) -> list[str]:
    """The witnesses that cosigned ``note``. A line claiming an admitted district's key
    that does not verify is a finding: the head served was tampered with. (Times are not
    judged against this machine's clock: the audit reads history, and the clearinghouse
    judged each cosignature's time against its own clock as it took it.)"""
    try:
        return sorted(notes.cosigners(note, witnesses))
    except notes.CheckpointError as e:
        raise Bad(BadRecord(address, "GetTreeHead", f"size {size}", str(e))) from None


def _remote_claims(scan: LogScan) -> str:
    if scan.bad is not None:
        raise Bad(scan.bad)
    states = ", ".join(f"{s} {n}" for s, n in sorted(scan.final_states().items()))
    return f"{plural(len(scan.latest), 'claim')}, every step an allowed transition ({states})"


def _remote_positions(scan: LogScan, positions: pb.GetPositionsResponse, address: str) -> str:
    served = {p.node_id: p.net_minutes for p in positions.nodes}
    expected = scan.positions()
    for node_id in sorted(set(served) | set(expected)):
        if served.get(node_id, 0) != expected.get(node_id, 0):
            raise Bad(BadRecord(address, "GetPositions", f"node {node_id}",
                                 f"net {served.get(node_id, 0):+d} min served; the log's "
                                 f"completed claims give {expected.get(node_id, 0):+d}"))
    if sum(served.values()):
        raise Bad(BadRecord(address, "GetPositions", "all nodes",
                             f"positions sum to {sum(served.values())}, not 0"))
    return f"{plural(len(served), 'position')} equal the log's completed claims; sum 0"

