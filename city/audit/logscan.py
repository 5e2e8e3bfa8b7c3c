"""The clearinghouse's log, streamed once: one pass over its leaves tells every other check
(roots at each signed size, claims and their transitions, admissions, revocations)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, cast

from google.protobuf.message import DecodeError

from city.audit.report import BadRecord
from clearinghouse.domain.claims import TRANSITIONS
from clearinghouse.domain.claims import ClaimState as ChState
from timebank import merkle
from timebank.keys import key_id
from timebank.v1 import clearing_pb2 as pb

PAGE = 1000  # rows per query, entries per GetEntries call


class _Roots:
    """RFC 9162 roots of a log read leaf by leaf: O(log n) memory."""

    def __init__(self) -> None:
        self.stack: list[tuple[int, bytes]] = []
        self.size = 0

    def add(self, data: bytes) -> None:
        h, level = merkle.leaf_hash(data), 0
        while self.stack and self.stack[-1][0] == level:
            h = merkle.node_hash(self.stack.pop()[1], h)
            level += 1
        self.stack.append((level, h))
        self.size += 1

    def root(self) -> bytes:
        if not self.stack:
            return merkle.EMPTY_ROOT
        acc = self.stack[-1][1]
        for _, left in reversed(self.stack[:-1]):
            acc = merkle.node_hash(left, acc)
        return acc


def claim_state(value: int) -> str:
    return pb.ClaimState.Name(cast(Any, value)).removeprefix("CLAIM_STATE_").lower()


@dataclass
class LogScan:
    """What one pass over the log's entries tells every other check."""

    where: str  # the file (or address) for bad records
    sizes: set[int] = field(default_factory=set)  # sizes whose root to keep
    roots: dict[int, bytes] = field(default_factory=dict)
    latest: dict[str, tuple[int, pb.LogEntry]] = field(default_factory=dict)
    completed: dict[str, tuple[int, pb.LogEntry]] = field(default_factory=dict)
    admissions: dict[bytes, int] = field(default_factory=dict)  # sha256(envelope) -> idx
    node_keys: dict[str, bytes] = field(default_factory=dict)  # from admission leaves
    kinds: dict[str, int] = field(default_factory=dict)
    districts: dict[int, int] = field(default_factory=dict)  # size -> admitted, unrevoked
    bad: BadRecord | None = None
    _roots: _Roots = field(default_factory=_Roots)
    _current: dict[str, str] = field(default_factory=dict)  # node -> current key id
    _revoked: set[str] = field(default_factory=set)  # nodes whose current key is revoked

    def add(self, idx: int, data: bytes) -> None:
        if idx != self._roots.size and self.bad is None:
            self.bad = BadRecord(self.where, "log_leaves", f"idx {self._roots.size}",
                                 "leaf missing (gap in idx)")
        self._roots.add(data)
        if self._roots.size in self.sizes:
            self.roots[self._roots.size] = self._roots.root()
        try:
            entry = pb.LogEntry.FromString(data)
        except DecodeError:
            self._fail(idx, "the leaf is not a timebank.v1.LogEntry")
            return
        self.kinds[entry.kind] = self.kinds.get(entry.kind, 0) + 1
        if entry.kind == "admission":
            self.admissions[hashlib.sha256(entry.envelope).digest()] = idx
            self._admitted_key(entry)
        elif entry.kind == "revocation":
            self._revocation(entry)
        if entry.claim_id:
            self._claim(idx, entry)
        if self._roots.size in self.sizes:
            self.districts[self._roots.size] = len(set(self._current) - self._revoked)

    def _fail(self, idx: int, problem: str) -> None:
        if self.bad is None:
            self.bad = BadRecord(self.where, "log_leaves", f"idx {idx}", problem)

    def _admitted_key(self, entry: pb.LogEntry) -> None:
        try:
            envelope = pb.Envelope.FromString(entry.envelope)
            cert = pb.AdmissionCertificate.FromString(envelope.body)
        except DecodeError:
            return
        self.node_keys[cert.node_id] = bytes(cert.public_key)
        self._current[cert.node_id] = key_id(bytes(cert.public_key))
        self._revoked.discard(cert.node_id)

    def _revocation(self, entry: pb.LogEntry) -> None:
        try:
            act = pb.Revocation.FromString(pb.Envelope.FromString(entry.envelope).body)
        except DecodeError:
            return
        if self._current.get(act.node_id) == act.key_id:
            self._revoked.add(act.node_id)

    def _claim(self, idx: int, entry: pb.LogEntry) -> None:
        state = claim_state(entry.state)
        before = self.latest.get(entry.claim_id)
        if state not in ChState.__members__.values():
            self._fail(idx, f"claim {entry.claim_id}: no such state {entry.state}")
        elif before is not None:
            old = ChState(claim_state(before[1].state))
            if ChState(state) != old and ChState(state) not in TRANSITIONS[old]:
                self._fail(idx, f"claim {entry.claim_id} goes from {old} to {state} "
                                f"(leaf {before[0]} to leaf {idx})")
            if (before[1].creditor_node_id, before[1].debtor_node_id) != (
                    entry.creditor_node_id, entry.debtor_node_id):
                self._fail(idx, f"claim {entry.claim_id} changes its parties")
        if state == ChState.COMPLETED and entry.claim_id not in self.completed:
            self.completed[entry.claim_id] = (idx, entry)
        self.latest[entry.claim_id] = (idx, entry)

    @property
    def size(self) -> int:
        return self._roots.size

    def root(self) -> bytes:
        return self._roots.root()

    def positions(self) -> dict[str, int]:
        net: dict[str, int] = {}
        for _, entry in self.completed.values():
            net[entry.creditor_node_id] = net.get(entry.creditor_node_id, 0) + entry.minutes
            net[entry.debtor_node_id] = net.get(entry.debtor_node_id, 0) - entry.minutes
        return net

    def final_states(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, entry in self.latest.values():
            counts[claim_state(entry.state)] = counts.get(claim_state(entry.state), 0) + 1
        return counts

