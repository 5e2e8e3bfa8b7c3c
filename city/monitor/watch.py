"""One round of the monitor: follow the clearinghouse's log, check every district's
heads against it, and say what is wrong.

A round, with only public keys (the city's and the clearinghouse's) and addresses:

1. **The log.** The clearinghouse's latest head must extend the last one this monitor
   verified (``TrustedLog``, by a consistency proof); the new leaves are read and must
   hash, with the ones read before, to the signed root. Admissions in them (city-signed,
   checked under the city key) give the districts' keys; node checkpoints must never
   anchor fewer ledger entries than the same district anchored before (such an alarm
   stands: every later round reports it again, as a monitor reading the log afresh
   would).
2. **Finality.** The clearinghouse's latest quorum head counts only if enough districts'
   cosignatures verify under those keys; a head of the log not covered by a final head
   within ``finality_seconds`` (measured from when this monitor first saw it) is an
   alarm.
3. **Districts.** Each district node's heads (``GetLogHeads``) must be of the log
   (``node.link.logcheck.locate``, the same question the nodes ask); a district's
   verified head may never shrink; fork evidence a district holds is checked and kept.

Every fork found is written to the evidence directory as a file anyone can re-check
(``timebank monitor check-evidence``). Calls time out; a district that does not answer
is a warning (its heads are not compared this round), not an alarm.

After every round, made or not, ``status.json`` in the directory says what it found
(``timebank.monitorstatus``), for the bureau's console to show in words; a round that
could not be made (the clearinghouse did not answer) says so there as a warning.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import grpc
from google.protobuf.message import DecodeError

from city.monitor.state import MAX_PENDING, MAX_REWRITES, Directory, State, StateError
from node.link.connection import all_admissions
from node.link.logcheck import locate
from runtime.tls import ClientTls
from runtime.tls import channel as tls_channel
from timebank import anchors, forks, monitorstatus, transparency
from timebank import checkpoint as notes
from timebank import roster as rosters
from timebank.admissions import chain_of
from timebank.citykeys import CityKeys, KeyChainError
from timebank.envelope import CITY, EnvelopeError, Signed, verify
from timebank.keys import key_id
from timebank.trusted_log import TrustedLog
from timebank.v1 import clearing_pb2 as pb
from timebank.v1 import clearing_pb2_grpc, node_pb2, node_pb2_grpc

CALL_TIMEOUT_SECONDS = 10.0
NODE_TIMEOUT_SECONDS = 5.0
PAGE = 1000  # entries per GetEntries call
MAX_NODES = 64
DEFAULT_FINALITY_SECONDS = 300

FORK = monitorstatus.FORK
FINALITY = monitorstatus.FINALITY
ANCHORS = monitorstatus.ANCHORS
ROLLBACK = "rollback"
LOG = "log"
UNREACHABLE = "unreachable"
NO_ROUND = "no-round"  # the round could not be made (a warning in the status file)


@dataclass(frozen=True, slots=True)
class Finding:
    """Something a round found. ``alarm``: wrong (the exit code says so); otherwise a
    warning. ``key`` names it, so that a following monitor alerts once per finding."""

    kind: str
    detail: str
    alarm: bool = True
    evidence: str = ""  # the evidence file, for a fork
    key: str = ""


@dataclass(slots=True)
class Round:
    findings: list[Finding] = field(default_factory=list)
    log_size: int = 0
    final_size: int = 0
    districts: int = 0
    heads_checked: int = 0

    @property
    def ok(self) -> bool:
        return not any(f.alarm for f in self.findings)


@dataclass(frozen=True, slots=True)
class Target:
    """What a monitor watches and trusts."""

    clearinghouse: str
    clearinghouse_key: bytes
    city_key: bytes
    nodes: tuple[str, ...]
    finality_seconds: int = DEFAULT_FINALITY_SECONDS
    #: How the monitor connects: the city CA and its observer certificate (None:
    #: plaintext, a city serving --insecure).
    tls: ClientTls | None = None
    #: The chain of the city's keys from the two configured keys, as the city's signed
    #: rotations extend it (ADR 0018); read again every round (``with_chain``).
    chain: CityKeys | None = None

    @property
    def root_keys(self) -> CityKeys:
        return self.chain if self.chain is not None else CityKeys(self.city_key)

    @property
    def log_keys(self) -> transparency.LogKeys:
        return (self.chain.log_keys() if self.chain is not None
                else transparency.LogKeys(self.clearinghouse_key))

    def with_chain(self, key_acts: list[bytes]) -> Target:
        """This target, trusting the rotations among ``key_acts`` the configured city
        key chains to (never a key on the clearinghouse's word)."""
        return replace(self, chain=chain_of(self.city_key, key_acts, self.clearinghouse_key))

    def __post_init__(self) -> None:
        if len(self.nodes) > MAX_NODES:
            raise ValueError(f"a monitor watches at most {MAX_NODES} district nodes")


class MonitorError(Exception):
    """The round could not be made: the clearinghouse does not answer."""


def check_once(target: Target, directory: Directory, *, now: int | None = None) -> Round:
    """One round: read the state, check everything, keep evidence, save the state, and
    say in the status file what it found (or why the round could not be made)."""
    at = int(time.time()) if now is None else now
    try:
        found = _round(target, directory, at)
    except (MonitorError, StateError) as e:
        failed = Round([Finding(NO_ROUND, f"the round could not be made: {e}", alarm=False)])
        with contextlib.suppress(StateError):  # the round's own error says more
            directory.report(status_of(failed, at, directory))
        raise
    directory.report(status_of(found, at, directory))
    return found


def status_of(found: Round, at: int, directory: Directory) -> monitorstatus.MonitorStatus:
    """What a round found, as the status file says it: an evidence file by its name in
    the directory (one not kept is said in the detail)."""
    findings = []
    for f in found.findings:
        evidence, detail = "", f.detail
        if f.evidence and Path(f.evidence).parent == directory.evidence_dir:
            evidence = Path(f.evidence).name
        elif f.evidence:
            detail = f"{detail} (evidence {f.evidence})"
        findings.append(monitorstatus.Finding.of(f.kind, f.alarm, detail, evidence))
    return monitorstatus.bounded(datetime.fromtimestamp(at, UTC), findings,
                                 log_size=found.log_size, final_size=found.final_size,
                                 districts=found.districts, heads_checked=found.heads_checked)


def _round(target: Target, directory: Directory, at: int) -> Round:
    state = directory.load(target.clearinghouse_key)
    found = Round()
    with tls_channel(target.clearinghouse, target.tls) as channel:
        stub = clearing_pb2_grpc.ClearinghouseServiceStub(channel)
        try:
            try:
                target = target.with_chain(list(all_admissions(stub).key_acts))
            except KeyChainError as e:
                found.findings.append(Finding(LOG, f"the city's key rotations conflict: {e}",
                                              key="log:keys"))
            latest = _follow(stub, target, state, directory, found, at)
            seen = {f.key for f in found.findings}
            found.findings.extend(Finding(ANCHORS, detail, key=key)
                                  for key, detail in state.rewrites.items() if key not in seen)
            if latest is not None:
                _finality(stub, target, state, latest, found, at)
            for address in target.nodes:
                _district(stub, target, state, directory, address, found, at)
        except grpc.RpcError as e:
            code = e.code().name if isinstance(e, grpc.Call) else "UNKNOWN"
            details = e.details() if isinstance(e, grpc.Call) else str(e)
            raise MonitorError(f"the clearinghouse at {target.clearinghouse} did not answer: "
                               f"{code}: {details}") from None
    found.final_size = state.final_size
    directory.save(state)
    return found


def _fork(found: Round, directory: Directory, evidence: forks.Evidence, at: int,
          what: str) -> None:
    path, _ = directory.keep(evidence, at)
    where = str(path) if path is not None else (
        f"not kept: {directory.evidence_dir} already holds {directory.max_evidence} files")
    found.findings.append(Finding(FORK, f"{what}: {evidence.summary()}", evidence=where,
                                  key=f"fork:{evidence.id}"))


# ------------------------------------------------------------------ the log

def _follow(stub: clearing_pb2_grpc.ClearinghouseServiceStub, target: Target, state: State,
            directory: Directory, found: Round, at: int) -> transparency.Head | None:
    """Verify the latest head extends the last one, read and check the new leaves."""
    key = target.log_keys
    answer = stub.GetTreeHead(pb.GetTreeHeadRequest(), timeout=CALL_TIMEOUT_SECONDS).head
    try:
        held = TrustedLog(key, state.head)
    except transparency.LogError as e:
        found.findings.append(Finding(LOG, f"the head this monitor kept does not verify: {e}",
                                      key="log:state"))
        return None
    path: list[bytes] = []
    if 0 < held.size < answer.size:
        path = list(stub.GetConsistencyProof(pb.GetConsistencyProofRequest(
            old_size=held.size, new_size=answer.size), timeout=CALL_TIMEOUT_SECONDS).path)
    try:
        view = held.accept(answer.note, path)
    except transparency.LogError as e:
        evidence = None
        if held.head is not None:
            try:
                evidence = forks.compare(key, held.head.note, answer.note,
                                         path if held.size < answer.size else None,
                                         seen=("this monitor's last verified head",
                                               f"the clearinghouse at {target.clearinghouse} "
                                               "(latest)"))
            except transparency.LogError:
                evidence = None
        if evidence is not None:
            _fork(found, directory, evidence, at, "the clearinghouse's log does not extend "
                  "the head this monitor verified before")
        else:
            found.findings.append(Finding(LOG, f"the clearinghouse's latest head: {e}",
                                          key=f"log:{answer.size}"))
        return None
    head = view.head
    assert head is not None
    found.log_size = head.size
    if not _read_leaves(stub, target, state, head, found):
        return None
    state.head = head.note
    return head


def _read_leaves(stub: clearing_pb2_grpc.ClearinghouseServiceStub, target: Target,
                 state: State, head: transparency.Head, found: Round) -> bool:
    """Read leaves up to the head's size; whether they hash to its root. The state is
    changed only if they do."""
    frontier = type(state.frontier)(list(state.frontier.stack), state.frontier.size)
    anchored, keys = dict(state.anchors), {k: list(v) for k, v in state.keys.items()}
    for start in range(frontier.size, head.size, PAGE):
        end = min(head.size, start + PAGE)
        page = stub.GetEntries(pb.GetEntriesRequest(start=start, end=end),
                               timeout=CALL_TIMEOUT_SECONDS)
        if len(page.entries) != end - start:
            found.findings.append(Finding(LOG, f"the clearinghouse served {len(page.entries)} "
                                          f"entries for {start}..{end}", key=f"log:{start}"))
            return False
        for offset, data in enumerate(page.entries):
            frontier.add(bytes(data))
            _entry(start + offset, bytes(data), target, anchored, keys, found)
    if frontier.root() != head.root:
        found.findings.append(Finding(LOG, f"the log's {head.size} entries do not hash to the "
                                      "root the clearinghouse signed", key=f"log:{head.size}"))
        return False
    state.frontier, state.anchors, state.keys = frontier, anchored, keys
    for f in found.findings:
        if f.kind == ANCHORS and len(state.rewrites) < MAX_REWRITES:
            state.rewrites.setdefault(f.key, f.detail)
    return True


def _entry(index: int, data: bytes, target: Target, anchored: dict[str, int],
           keys: dict[str, list[str]], found: Round) -> None:
    try:
        _read_entry(index, data, target, anchored, keys, found)
    except DecodeError:
        found.findings.append(Finding(LOG, f"log leaf {index} holds a message that does not "
                                      "parse", key=f"log:leaf:{index}"))


def _read_entry(index: int, data: bytes, target: Target, anchored: dict[str, int],
                keys: dict[str, list[str]], found: Round) -> None:
    try:
        entry = pb.LogEntry.FromString(data)
        envelope = pb.Envelope.FromString(entry.envelope) if entry.envelope else None
    except DecodeError:
        found.findings.append(Finding(LOG, f"log leaf {index} is not a LogEntry",
                                      key=f"log:leaf:{index}"))
        return
    if envelope is None:
        return
    if entry.kind in ("admission", "revocation"):
        body = _city_signed(envelope, target.root_keys)
        if body is None:
            found.findings.append(Finding(LOG, f"log leaf {index} ({entry.kind}) is not "
                                          "signed by the city key (wrong --city-key?)",
                                          key=f"log:leaf:{index}"))
            return
        if entry.kind == "admission":
            cert = pb.AdmissionCertificate.FromString(body)
            keys.setdefault(cert.node_id, []).append(bytes(cert.public_key).hex())
        else:
            act = pb.Revocation.FromString(body)
            keys[act.node_id] = [k for k in keys.get(act.node_id, [])
                                 if key_id(bytes.fromhex(k)) != act.key_id]
    elif entry.kind == anchors.LEAF_KIND:
        checkpoint = pb.NodeCheckpoint.FromString(envelope.body)
        before = anchored.get(checkpoint.node_id)
        if before is not None and checkpoint.entry_count < before:
            found.findings.append(Finding(
                ANCHORS, f"district {checkpoint.node_id} anchored {checkpoint.entry_count} "
                f"ledger entries at log leaf {index}, after {before} before: its anchors go "
                "backwards", key=f"anchors:{checkpoint.node_id}:{index}"))
        anchored[checkpoint.node_id] = max(before or 0, checkpoint.entry_count)


def _city_signed(envelope: pb.Envelope, city_key: CityKeys) -> bytes | None:
    signed = Signed(envelope.kind, envelope.body, envelope.signer, envelope.key_id,
                    envelope.signature)
    try:
        body = verify(signed, city_key.key_for(signed))
    except (EnvelopeError, KeyChainError):
        return None
    return body if envelope.signer == CITY else None


# ------------------------------------------------------------------ finality

def _finality(stub: clearing_pb2_grpc.ClearinghouseServiceStub, target: Target,
              state: State, latest: transparency.Head, found: Round, at: int) -> None:
    final = _final_size(stub, target, state)
    state.final_size = max(state.final_size, final)
    pending = [p for p in state.pending if p[0] > state.final_size]
    if latest.size > state.final_size and (not pending or latest.size > pending[-1][0]):
        pending.append((latest.size, at))
        if len(pending) > MAX_PENDING:
            del pending[1]  # the oldest is the one that counts
    state.pending = pending
    if pending and at - pending[0][1] > target.finality_seconds:
        size, since = pending[0]
        found.findings.append(Finding(
            FINALITY, f"the head of {size} leaves, first seen {at - since} s ago, is not "
            f"covered by a head cosigned by a quorum of districts (the latest final head has "
            f"{state.final_size} leaves; the bound is {target.finality_seconds} s)",
            key=f"finality:{size}"))


def _final_size(stub: clearing_pb2_grpc.ClearinghouseServiceStub, target: Target,
                state: State) -> int:
    """The size of the clearinghouse's latest quorum head, if this monitor counts enough
    valid cosignatures on it from the members of the city-signed roster it names, under
    the keys that roster lists; 0 otherwise."""
    try:
        answer = stub.GetTreeHead(pb.GetTreeHeadRequest(cosigned=True),
                                  timeout=CALL_TIMEOUT_SECONDS).head
    except grpc.RpcError as e:
        if isinstance(e, grpc.Call) and e.code() == grpc.StatusCode.NOT_FOUND:
            return 0
        raise
    try:
        head = transparency.check_head(answer.note, target.log_keys)
    except transparency.LogError:
        return 0
    if head.size > state.frontier.size:
        return 0
    try:
        admitted = all_admissions(stub)
        known = rosters.verified(admitted.rosters, target.root_keys)
        found, counted = rosters.cosigned_by(head, known)
    except (rosters.RosterError, notes.CheckpointError):
        return 0  # a head not final under a city-signed roster is not final
    if len(counted) < found.quorum:
        return 0
    located = locate(stub, target.log_keys, head.note,
                     timeout=CALL_TIMEOUT_SECONDS)
    return head.size if located.evidence is None else 0


# ------------------------------------------------------------------ districts

def _district(stub: clearing_pb2_grpc.ClearinghouseServiceStub, target: Target,
              state: State, directory: Directory, address: str, found: Round,
              at: int) -> None:
    with tls_channel(address, target.tls) as channel:
        try:
            heads: node_pb2.GetLogHeadsResponse = node_pb2_grpc.NodeServiceStub(
                channel).GetLogHeads(node_pb2.GetLogHeadsRequest(), timeout=NODE_TIMEOUT_SECONDS)
        except grpc.RpcError as e:
            code = e.code().name if isinstance(e, grpc.Call) else "UNKNOWN"
            found.findings.append(Finding(UNREACHABLE, f"the district node at {address} did "
                                          f"not answer ({code}); its heads were not compared",
                                          alarm=False, key=f"unreachable:{address}"))
            return
    found.districts += 1
    who = f"district {heads.node_id[:16]} at {address}"
    if heads.clearinghouse_key and heads.clearinghouse_key != target.clearinghouse_key.hex():
        found.findings.append(Finding(LOG, f"{who} trusts another clearinghouse key "
                                      f"({heads.clearinghouse_key[:16]}…)",
                                      key=f"key:{address}"))
        return
    before = state.districts.get(address, {})
    seen: set[str] = set()
    for which, note in (("verified", heads.verified), ("cosigned", heads.cosigned),
                        ("final", heads.final)):
        if not note or note in seen:
            continue
        seen.add(note)
        try:
            located = locate(stub, target.log_keys, note, seen=f"{who} ({which})",
                             log_seen=f"the clearinghouse at {target.clearinghouse} (latest)",
                             timeout=CALL_TIMEOUT_SECONDS)
        except transparency.LogError as e:
            found.findings.append(Finding(LOG, f"{who} holds a {which} head not signed by the "
                                          f"clearinghouse: {e}", key=f"bad:{address}:{which}"))
            continue
        found.heads_checked += 1
        if located.evidence is not None:
            _fork(found, directory, located.evidence, at,
                  f"{who} holds a {which} head of {located.head.size} leaves that is not of "
                  "the clearinghouse's log")
        if which == "verified":
            last = int(before.get("verified", 0))
            if located.head.size < last:
                found.findings.append(Finding(
                    ROLLBACK, f"{who} holds a verified head of {located.head.size} leaves, "
                    f"after one of {last} before: its view of the log went backwards",
                    key=f"rollback:{address}:{located.head.size}"))
            state.districts[address] = {"node_id": heads.node_id[:16],
                                        "verified": max(last, located.head.size)}
    for text in heads.evidence[:16]:
        try:
            evidence = forks.check(forks.load(text), target.log_keys)
        except forks.EvidenceError:
            continue
        _fork(found, directory, evidence, at, f"{who} reports a fork it found")
    for alarm in heads.alarms:
        if alarm.kind == "finality":
            found.findings.append(Finding(FINALITY, f"{who}: {alarm.detail[:300]}",
                                          key=f"district-finality:{address}"))


__all__ = ["ANCHORS", "DEFAULT_FINALITY_SECONDS", "FINALITY", "FORK", "LOG", "MAX_NODES",
           "NO_ROUND", "ROLLBACK", "UNREACHABLE", "Finding", "MonitorError", "Round", "Target",
           "check_once", "status_of"]
