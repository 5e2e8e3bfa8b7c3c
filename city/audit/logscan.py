"""The clearinghouse's log, streamed once: one pass over its leaves tells every other check
(roots at each signed size, claims and their transitions, admissions, revocations, and
each district's checkpoints, their signatures checked under the key the district held
when each was logged)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, cast

from google.protobuf.message import DecodeError

from city.audit.frontier import Frontier
from city.audit.report import BadRecord
from clearinghouse.domain.claims import TRANSITIONS
from clearinghouse.domain.claims import ClaimState as ChState
from timebank import anchors, settlement
from timebank.citykeys import KEY_KINDS, CityKeys, KeyChainError
from timebank.envelope import CITY, EnvelopeError, Signed, verify
from timebank.keys import key_id
from timebank.merkle import HASH_SIZE
from timebank.v1 import clearing_pb2 as pb

PAGE = 1000  # rows per query, entries per GetEntries call
MAX_ENTRY_COUNT = 2**62
"""The most entries a checkpoint may anchor (as the clearinghouse bounds it)."""


def parse_signed(data: bytes) -> Signed:
    """A serialised ``timebank.v1.Envelope`` as the contract's ``Signed``, every field's
    shape checked (DecodeError, EnvelopeError), its signature not."""
    message = pb.Envelope.FromString(data)
    return Signed(message.kind, message.body, message.signer, message.key_id,
                  message.signature)


@dataclass(frozen=True, slots=True)
class LoggedCheckpoint:
    """A district's checkpoint of its ledger as a log leaf records it, its signature
    checked under the key the district held at that leaf. The leaf and envelope are kept
    as digests: a district's anchor row names them by their bytes."""

    index: int  # the leaf
    node_id: str
    entry_count: int
    chain_head: bytes
    ledger_root: bytes
    leaf_sha256: bytes
    envelope_sha256: bytes


def claim_state(value: int) -> str:
    return pb.ClaimState.Name(cast(Any, value)).removeprefix("CLAIM_STATE_").lower()


@dataclass
class LogScan:
    """What one pass over the log's entries tells every other check."""

    where: str  # the file (or address) for bad records
    sizes: set[int] = field(default_factory=set)  # sizes whose root to keep
    city_key: bytes | None = None  # if known, admissions and revocations must verify
    clearinghouse_key: bytes | None = None  # the log's first key, for its rotations
    #: The chain of the city's keys as the rotations logged so far extend it (ADR 0018).
    chain: CityKeys | None = None
    _key_acts: list[Signed] = field(default_factory=list)
    roots: dict[int, bytes] = field(default_factory=dict)
    latest: dict[str, tuple[int, pb.LogEntry]] = field(default_factory=dict)
    completed: dict[str, tuple[int, pb.LogEntry]] = field(default_factory=dict)
    # each settlement statement's nets, as its latest revision states them (a closed
    # period's nets leave the running positions: they count from the open period)
    settled: dict[int, dict[str, int]] = field(default_factory=dict)
    admissions: dict[bytes, int] = field(default_factory=dict)  # sha256(envelope) -> idx
    node_keys: dict[str, bytes] = field(default_factory=dict)  # from admission leaves
    kinds: dict[str, int] = field(default_factory=dict)
    districts: dict[int, int] = field(default_factory=dict)  # size -> admitted, unrevoked
    #: size -> (epoch, digest, districts) of the latest city-signed roster at that size
    rosters: dict[int, tuple[int, bytes, int] | None] = field(default_factory=dict)
    _roster: tuple[int, bytes, int] | None = None
    checkpoints: dict[str, list[LoggedCheckpoint]] = field(default_factory=dict)  # by node
    bad: BadRecord | None = None
    _roots: Frontier = field(default_factory=Frontier)
    _current: dict[str, str] = field(default_factory=dict)  # node -> current key id
    _revoked: set[str] = field(default_factory=set)  # nodes whose current key is revoked

    def add(self, idx: int, data: bytes) -> None:
        if idx != self._roots.size and self.bad is None:
            self.bad = BadRecord(self.where, "log_leaves", f"idx {self._roots.size}",
                                 "leaf missing (gap in idx)")
        self._roots.append(data)
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
            self._admitted_key(idx, entry)
        elif entry.kind == "revocation":
            self._revocation(idx, entry)
        elif entry.kind == "roster":
            self._city_roster(idx, entry)
        elif entry.kind in KEY_KINDS:
            self._rotation(idx, entry)
        elif entry.kind == anchors.LEAF_KIND:
            self._checkpoint(idx, entry, data)
        elif entry.kind == settlement.STATEMENT_KIND:
            self._statement(idx, entry)
        if entry.claim_id:
            self._claim(idx, entry)
        if self._roots.size in self.sizes:
            self.districts[self._roots.size] = len(set(self._current) - self._revoked)
            self.rosters[self._roots.size] = self._roster

    def _statement(self, idx: int, entry: pb.LogEntry) -> None:
        """A settlement statement (revision): its lines' nets, replacing an earlier
        revision's."""
        try:
            found = settlement.parse_statement(parse_signed(entry.envelope).body)
        except (DecodeError, EnvelopeError, settlement.SettlementError) as e:
            self._fail(idx, f"the settlement leaf is not a statement: {e}")
            return
        self.settled[found.serial] = {x.node_id: x.net_minutes for x in found.sheet.lines}

    def _fail(self, idx: int, problem: str) -> None:
        if self.bad is None:
            self.bad = BadRecord(self.where, "log_leaves", f"idx {idx}", problem)

    def _chain(self) -> CityKeys | None:
        if self.city_key is None:
            return None
        if self.chain is None:
            self.chain = CityKeys(self.city_key, (), self.clearinghouse_key)
        return self.chain

    def _rotation(self, idx: int, entry: pb.LogEntry) -> None:
        """A rotation of the city's keys: it must extend the chain from the city key."""
        try:
            signed = parse_signed(entry.envelope)
        except (DecodeError, EnvelopeError) as e:
            self._fail(idx, f"the {entry.kind} leaf is not an envelope: {e}")
            return
        before = self._chain()
        if before is None:
            return
        acts = [*self._key_acts, signed]
        try:
            after = CityKeys(before.root, acts, self.clearinghouse_key)
        except KeyChainError as e:
            self._fail(idx, f"the {entry.kind} leaf breaks the chain of the city's keys: {e}")
            return
        grown = (after.root_rotations > before.root_rotations or
                 len(after.clearinghouse_rotations) > len(before.clearinghouse_rotations))
        if not grown:
            self._fail(idx, f"the {entry.kind} leaf is not a rotation the city's keys "
                            "chain to")
            return
        self._key_acts, self.chain = acts, after

    def _city_act(self, idx: int, entry: pb.LogEntry, kind: str) -> bytes | None:
        """The body of the city-signed envelope an admission or revocation leaf records,
        checked under the city root key when the audit has it; None (and the leaf bad)
        if it does not parse or verify."""
        try:
            signed = parse_signed(entry.envelope)
            if signed.kind != kind or signed.signer != CITY:
                raise ValueError(f"a {signed.kind!r} envelope signed by {signed.signer!r}")
            chain = self._chain()
            return signed.body if chain is None else verify(signed, chain.key_for(signed))
        except (DecodeError, EnvelopeError, ValueError) as e:
            self._fail(idx, f"the {kind} leaf does not record a {kind} signed by the city "
                            f"root key: {e}")
            return None

    def _city_roster(self, idx: int, entry: pb.LogEntry) -> None:
        """A roster leaf: the next epoch, city-signed; heads after it must name it."""
        body = self._city_act(idx, entry, "roster")
        if body is None:
            return
        try:
            found = pb.Roster.FromString(body)
        except DecodeError:
            self._fail(idx, "the roster leaf's body is not a Roster")
            return
        expected = 1 if self._roster is None else self._roster[0] + 1
        if found.epoch != expected:
            self._fail(idx, f"the roster leaf is epoch {found.epoch}, not the next ({expected})")
            return
        self._roster = (found.epoch, hashlib.sha256(body).digest(), len(found.members))

    def _admitted_key(self, idx: int, entry: pb.LogEntry) -> None:
        body = self._city_act(idx, entry, "admission")
        if body is None:
            return
        try:
            cert = pb.AdmissionCertificate.FromString(body)
            kid = key_id(bytes(cert.public_key))
        except (DecodeError, ValueError):
            self._fail(idx, "the admission leaf's certificate names no Ed25519 key")
            return
        self.node_keys[cert.node_id] = bytes(cert.public_key)
        self._current[cert.node_id] = kid
        self._revoked.discard(cert.node_id)

    def _revocation(self, idx: int, entry: pb.LogEntry) -> None:
        body = self._city_act(idx, entry, "revocation")
        if body is None:
            return
        try:
            act = pb.Revocation.FromString(body)
        except DecodeError:
            self._fail(idx, "the revocation leaf's body is not a timebank.v1.Revocation")
            return
        if self._current.get(act.node_id) == act.key_id:
            self._revoked.add(act.node_id)

    def _checkpoint(self, idx: int, entry: pb.LogEntry, data: bytes) -> None:
        """A district's checkpoint, as the clearinghouse must have checked it before
        logging it: the node's own, signed by the key its admissions before this leaf
        gave it (a district that rotated its key signed its earlier checkpoints with the
        earlier key), never fewer entries than its last, nor as many with another head."""
        node_id = entry.node_id
        try:
            signed = parse_signed(entry.envelope)
            if signed.kind != anchors.CHECKPOINT_KIND or signed.signer != node_id:
                raise ValueError(f"it records a {signed.kind!r} envelope signed by "
                                 f"{signed.signer!r}, not {node_id}'s checkpoint")
            key = self.node_keys.get(node_id)
            if key is None or node_id in self._revoked:
                raise ValueError(f"{node_id} held no admitted, unrevoked key at this leaf")
            try:
                body = verify(signed, key)
            except EnvelopeError as e:
                raise ValueError(f"not signed by the key {node_id} held at this leaf "
                                 f"({key_id(key)}): {e}") from None
            cp = pb.NodeCheckpoint.FromString(body)
        except (DecodeError, EnvelopeError, ValueError) as e:
            self._fail(idx, f"checkpoint of {node_id or '(no node)'}: {e}")
            return
        if (cp.node_id != node_id or len(cp.chain_head) != HASH_SIZE
                or len(cp.ledger_root) != HASH_SIZE or cp.entry_count > MAX_ENTRY_COUNT):
            self._fail(idx, f"the checkpoint of {node_id} is not of its ledger, or is "
                            "malformed")
            return
        found = self.checkpoints.setdefault(node_id, [])
        if found and (cp.entry_count < found[-1].entry_count or (
                cp.entry_count == found[-1].entry_count
                and cp.chain_head != found[-1].chain_head)):
            self._fail(idx, f"{node_id} anchored {found[-1].entry_count} entries at leaf "
                            f"{found[-1].index}; this checkpoint of {cp.entry_count} "
                            "rewrites that history (the clearinghouse should have "
                            "refused it)")
            return
        found.append(LoggedCheckpoint(idx, node_id, cp.entry_count, bytes(cp.chain_head),
                                      bytes(cp.ledger_root), hashlib.sha256(data).digest(),
                                      hashlib.sha256(entry.envelope).digest()))

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
        for nets in self.settled.values():
            for node_id, minutes in nets.items():
                net[node_id] = net.get(node_id, 0) - minutes
        return net

    def final_states(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, entry in self.latest.values():
            counts[claim_state(entry.state)] = counts.get(claim_state(entry.state), 0) + 1
        return counts

