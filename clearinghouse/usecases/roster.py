"""The city's roster at the clearinghouse (ADR 0014): the city-signed list of districts
that every tree head names and every quorum is counted over.

The bureau signs a roster after each admission, rotation or revocation; the
clearinghouse takes it only if it is the next epoch and lists exactly the districts and
keys the city-signed certificates it holds admit, logs it verbatim, and from then on
names it in every head it signs. It cannot name a roster of its own making: witnesses
check the roster line against rosters they verify under the city key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from clearinghouse.usecases import admission, citykeys, log
from clearinghouse.usecases.app import Tx
from runtime.errors import FailedPrecondition, InvalidArgument
from timebank import roster as rosters
from timebank.envelope import Signed
from timebank.v1 import clearing_pb2


@dataclass(frozen=True, slots=True)
class Named:
    """The roster heads name now: its epoch, digest and member node ids."""

    epoch: int
    digest: bytes
    members: tuple[str, ...]

    @property
    def quorum(self) -> int:
        return len(self.members) // 2 + 1


def expected_members(tx: Tx) -> list[rosters.Member]:
    """The districts the city's certificates admit now, each with its current key."""
    return [rosters.Member(a.node_id, a.district, a.public_key, a.serial)
            for a in tx.repo.admissions() if not a.revoked]


def next_epoch(tx: Tx) -> int:
    latest = tx.repo.latest_roster()
    return 1 if latest is None else latest[0] + 1


def is_current(tx: Tx) -> bool:
    """Whether the latest roster lists exactly the districts admitted now."""
    return _latest_members(tx) == expected_members(tx)


def publish(tx: Tx, envelope: Signed, city_public_key: bytes) -> rosters.Roster:
    """Take a city-signed roster: the next epoch, listing exactly who is admitted.

    PERMISSION_DENIED: not signed by the city. INVALID_ARGUMENT: malformed.
    FAILED_PRECONDITION: not the next epoch (STALE_EPOCH), or its members are not the
    admitted districts and keys (ROSTER_MISMATCH). The same roster again changes nothing.
    """
    admission.verify_city(tx, envelope, rosters.KIND, city_public_key)
    try:
        found = rosters.read(envelope, citykeys.keys_for(tx, city_public_key))
    except rosters.RosterError as e:
        raise InvalidArgument(f"the roster is malformed: {e}", "MALFORMED_ROSTER") from None
    latest = tx.repo.latest_roster()
    if latest is not None and latest[1] == found.digest:
        return found
    epoch = 1 if latest is None else latest[0] + 1
    if found.epoch != epoch:
        raise FailedPrecondition(f"the next roster is epoch {epoch}, not {found.epoch}",
                                 "STALE_EPOCH")
    expected = expected_members(tx)
    if list(found.members) != expected:
        listed = ", ".join(m.node_id for m in found.members) or "nobody"
        admitted = ", ".join(m.node_id for m in expected) or "nobody"
        raise FailedPrecondition(
            f"the roster lists {listed}, but the city's certificates admit {admitted} "
            "(with their current keys)", "ROSTER_MISMATCH")
    tx.repo.insert_roster(found.epoch, found.digest, found.envelope, tx.now)
    log.record_city_act(tx, log.ROSTER, envelope, "")
    return found


def named(tx: Tx) -> Named | None:
    """The latest roster, as heads name it (read back as stored: it was verified)."""
    latest = tx.repo.latest_roster()
    if latest is None:
        return None
    return Named(latest[0], latest[1], tuple(m.node_id for m in _body(latest[2]).members))


def of_epoch(tx: Tx, epoch: int) -> Named | None:
    envelope = tx.repo.roster(epoch)
    if envelope is None:
        return None
    wire = clearing_pb2.Envelope.FromString(envelope)
    return Named(epoch, hashlib.sha256(wire.body).digest(),
                 tuple(m.node_id for m in clearing_pb2.Roster.FromString(wire.body).members))


def _latest_members(tx: Tx) -> list[rosters.Member]:
    latest = tx.repo.latest_roster()
    if latest is None:
        return []
    return [rosters.Member(m.node_id, m.district, bytes(m.public_key), m.serial)
            for m in _body(latest[2]).members]


def _body(envelope: bytes) -> clearing_pb2.Roster:
    wire = clearing_pb2.Envelope.FromString(envelope)
    return clearing_pb2.Roster.FromString(wire.body)
