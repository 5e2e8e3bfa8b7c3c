"""The city's roster: which districts exist, and the key each signs with, as the city
signed it (ADR 0014). Pure: no I/O, no clock.

Finality is a quorum of districts, so the set of districts must come from someone the
districts trust more than the clearinghouse whose heads they judge. The bureau's city
root key signs a ``Roster`` (kind ``roster``) after every admission, key rotation or
revocation, with the next *epoch*; the clearinghouse logs it and names it in every tree
head it signs (``timebank-roster EPOCH DIGEST``, the digest being SHA-256 of the signed
body). Witnesses refuse a head naming a roster they cannot verify under the city key, or
an epoch older than one they have seen; a verifier counts cosignatures only from the
roster's members, under the keys it lists, and never the subject district's own.

A roster lists each member's key at that epoch, so a head signed before a rotation is
still judged with the keys it was signed under: history verifies after the keys change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.message import DecodeError

from timebank import checkpoint as notes
from timebank import transparency
from timebank.citykeys import CityKeys, KeyChainError, root_key_for
from timebank.envelope import CITY, EnvelopeError, Signed, verify
from timebank.ids import is_node_id
from timebank.keys import PUBLIC_KEY_LEN
from timebank.v1 import clearing_pb2 as pb

__all__ = [
    "KIND",
    "MAX_MEMBERS",
    "Member",
    "Roster",
    "RosterError",
    "body",
    "by_digest",
    "check_head",
    "cosigned_by",
    "members_of",
    "read",
    "read_bytes",
    "verified",
]

KIND = "roster"
#: Most districts a roster may list (a city has tens; this bounds every loop over one).
MAX_MEMBERS = 1000
#: Most rosters one reader keeps: a roster a month for a century.
MAX_ROSTERS = 1200
_MAX_DISTRICT_LEN = 64
_MAX_EPOCH = transparency.MAX_LOG_NUMBER


class RosterError(ValueError):
    """A roster or a head's roster line is malformed, or not the city's."""


@dataclass(frozen=True, slots=True)
class Member:
    """One admitted district at an epoch: its node id, name, key and certificate serial."""

    node_id: str
    district: str
    public_key: bytes
    serial: int


@dataclass(frozen=True, slots=True)
class Roster:
    """A city-signed roster, verified. ``digest`` is what tree heads name; ``envelope``
    the serialised signed envelope, for carrying it to a reader who checks it again."""

    epoch: int
    members: tuple[Member, ...]
    issued_at: int
    digest: bytes
    envelope: bytes

    def member(self, node_id: str) -> Member | None:
        return next((m for m in self.members if m.node_id == node_id), None)

    @property
    def quorum(self) -> int:
        """How many districts make a head final: more than half of the roster."""
        return transparency.quorum(len(self.members))

    def line(self) -> str:
        """The extension line a tree head judged by this roster carries."""
        return transparency.roster_line(self.epoch, self.digest)

    def witnesses(self) -> dict[str, bytes]:
        """Witness key name -> public key, as ``checkpoint.cosigners`` takes them."""
        return {transparency.witness_name(m.node_id): m.public_key for m in self.members}

    def counted(self, cosigners: Iterable[str], subject: str | None = None) -> list[str]:
        """The node ids among ``cosigners`` that count toward finality: members of this
        roster, other than ``subject`` (the district whose own passbook or statement is
        judged: a district cannot vouch for itself)."""
        ids = {m.node_id for m in self.members}
        return sorted({c for c in cosigners if c in ids and c != subject})

    def is_final(self, cosigners: Iterable[str], subject: str | None = None) -> bool:
        return len(self.counted(cosigners, subject)) >= self.quorum


def body(epoch: int, members: Iterable[Member], issued_at: datetime) -> bytes:
    """The bytes the city signs: a ``Roster`` with members in node-id order."""
    if issued_at.tzinfo is None:
        raise ValueError("refusing a naive datetime: times are signed as UTC")
    msg = pb.Roster(epoch=epoch)
    for m in sorted(members, key=lambda m: m.node_id):
        msg.members.add(node_id=m.node_id, district=m.district, public_key=m.public_key,
                        serial=m.serial)
    msg.issued_at.FromDatetime(issued_at.astimezone(UTC))
    data = msg.SerializeToString(deterministic=True)
    members_of(msg)  # never sign what a reader would refuse
    return data


def read(envelope: Signed, city_key: bytes | CityKeys) -> Roster:
    """The roster in a city-signed envelope, every field checked."""
    if envelope.kind != KIND or envelope.signer != CITY:
        raise RosterError(f"a roster is a {KIND!r} envelope signed by the city root key")
    try:
        data = verify(envelope, root_key_for(city_key, envelope))
    except EnvelopeError as e:
        raise RosterError(f"the roster is not signed by the city root key: {e}") from None
    except KeyChainError as e:
        raise RosterError(e.message) from None
    msg = pb.Roster()
    try:
        msg.ParseFromString(data)
    except DecodeError:
        raise RosterError("the roster's body is not a Roster") from None
    if not 1 <= msg.epoch <= _MAX_EPOCH:
        raise RosterError(f"roster epoch {msg.epoch} is outside 1 .. 2**63 - 1")
    members = members_of(msg)
    wire = pb.Envelope(kind=envelope.kind, body=envelope.body, signer=envelope.signer,
                       key_id=envelope.key_id, signature=envelope.signature)
    return Roster(epoch=msg.epoch, members=members, issued_at=msg.issued_at.seconds,
                  digest=hashlib.sha256(data).digest(),
                  envelope=wire.SerializeToString(deterministic=True))


def read_bytes(data: bytes, city_key: bytes | CityKeys) -> Roster:
    """``read`` of a serialised envelope (as Admissions and passbooks carry rosters)."""
    wire = pb.Envelope()
    try:
        wire.ParseFromString(data)
        signed = Signed(wire.kind, wire.body, wire.signer, wire.key_id, wire.signature)
    except (DecodeError, EnvelopeError) as e:
        raise RosterError(f"a roster is not a well-formed envelope: {e}") from None
    return read(signed, city_key)


def by_digest(rosters: Mapping[bytes, Roster], line: tuple[int, bytes] | None) -> Roster:
    """The roster a head's line names, from rosters verified before."""
    if line is None:
        raise RosterError("the tree head names no city-signed roster")
    found = rosters.get(line[1])
    if found is None or found.epoch != line[0]:
        raise RosterError(f"the tree head names roster epoch {line[0]}, which no "
                          "city-signed roster at hand matches")
    return found


def members_of(msg: pb.Roster) -> tuple[Member, ...]:
    """A roster's members, every field and their order checked."""
    if len(msg.members) > MAX_MEMBERS:
        raise RosterError(f"a roster lists at most {MAX_MEMBERS} districts")
    out: list[Member] = []
    keys: set[bytes] = set()
    for m in msg.members:
        if not is_node_id(m.node_id):
            raise RosterError(f"roster member {m.node_id!r} is not a six-digit node id")
        if out and m.node_id <= out[-1].node_id:
            raise RosterError("roster members are not in strictly increasing node-id order")
        district = m.district
        if not district or len(district) > _MAX_DISTRICT_LEN or district.strip() != district:
            raise RosterError(f"roster member {m.node_id} has a malformed district name")
        if len(m.public_key) != PUBLIC_KEY_LEN or bytes(m.public_key) in keys:
            raise RosterError(f"roster member {m.node_id} has a malformed or shared key")
        if not 1 <= m.serial <= _MAX_EPOCH:
            raise RosterError(f"roster member {m.node_id} has certificate serial 0")
        keys.add(bytes(m.public_key))
        out.append(Member(m.node_id, district, bytes(m.public_key), m.serial))
    return tuple(out)


def check_head(head: transparency.Head, known: Mapping[bytes, Roster],
               last_epoch: int = 0) -> Roster:
    """What a witness checks of the roster a head names before it cosigns: a roster it
    verified under the city key (``known``, by digest), no older than the newest it
    cosigned a head under (``last_epoch``), and the head's district count is that
    roster's. Raises ``transparency.LogError``: a head failing this is never cosigned."""
    if head.roster is None:
        raise transparency.LogError(f"the tree head of {head.size} leaves names no "
                                    "city-signed roster")
    epoch, digest = head.roster
    found = known.get(digest)
    if found is None or found.epoch != epoch:
        raise transparency.LogError(f"the tree head of {head.size} leaves names roster "
                                    f"epoch {epoch}, which the city did not sign")
    if epoch < last_epoch:
        raise transparency.LogError(f"the tree head of {head.size} leaves names roster "
                                    f"epoch {epoch}, older than epoch {last_epoch} seen "
                                    "before: the clearinghouse rolled the city back")
    if head.districts != len(found.members):
        raise transparency.LogError(f"the tree head of {head.size} leaves says the city "
                                    f"had {head.districts} districts; roster epoch {epoch} "
                                    f"lists {len(found.members)}")
    return found


def verified(envelopes: Iterable[bytes], city_key: bytes | CityKeys,
             ) -> dict[bytes, Roster]:
    """Rosters by digest, from serialised envelopes (as ``GetAdmissions`` serves them):
    each must be city-signed, or the whole answer is refused."""
    out: dict[bytes, Roster] = {}
    for i, data in enumerate(envelopes):
        if i >= MAX_ROSTERS:
            raise RosterError(f"more than {MAX_ROSTERS} rosters: refusing to keep them all")
        found = read_bytes(data, city_key)
        out[found.digest] = found
    return out


def cosigned_by(head: transparency.Head, known: Mapping[bytes, Roster],
                subject: str | None = None, *, now: int | None = None,
                ) -> tuple[Roster, list[str]]:
    """The roster ``head`` names (from ``known``) and the members, other than
    ``subject``, whose cosignature on it verifies under the key that roster lists: what
    finality is counted from. Raises ``RosterError`` when the head names no known roster
    or misstates its size, ``checkpoint.CheckpointError`` when a member's line fails (or,
    given ``now``, is dated beyond the allowed clock skew after it)."""
    found = by_digest(known, head.roster)
    if head.districts is not None and head.districts != len(found.members):
        raise RosterError(f"the tree head says the city had {head.districts} districts; "
                          f"the roster it names lists {len(found.members)}")
    names = {transparency.witness_name(m.node_id): m.node_id for m in found.members}
    valid = notes.cosigners(head.note, found.witnesses(), now=now)
    return found, found.counted((names[n] for n in valid), subject)
