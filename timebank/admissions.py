"""The city's admissions as the city signed them: which keys sign for which district.

The city root key signs four kinds of act (ADR 0003, 0005): an ``admission`` certificate
binding a district's node id and name to an Ed25519 key (a higher serial replaces a
lower one: key rotation), a ``revocation`` of one key, for ever, a ``roster`` (the
districts admitted as of one epoch) and a ``policy`` (the city policy every node runs).
The clearinghouse keeps them and serves them (``GetAdmissions``), but what it serves
counts only if the city signed it. Whoever holds the city's public key checks each act
with :func:`verify_act` and builds a :class:`CityAdmissions` from those that pass. A
message a district signed is then checked against that view, not against the
clearinghouse's word, so a clearinghouse cannot present a message no district signed.

Which keys sign for a district: every key a city-signed certificate names for it, less
every key a city-signed revocation names. A key replaced by a rotation still verifies
what it signed, because a message signed before the rotation may still be on its way
(the clearinghouse itself takes nothing new signed with it). A key the city revoked
verifies nothing, signed before the revocation or after: a revocation says the key may
be in other hands, and no signature says when it was made. Whether a district is
*admitted* now is narrower: its current certificate (the highest serial) names a key
that is not revoked.

Rosters and policies are checked (kind, signer, signature, body) and kept verbatim; what
they mean is for their readers.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from timebank.citykeys import (
    CITY_KEY,
    KEY_KINDS,
    CityKeys,
    KeyChainError,
    read_clearinghouse_rotation,
    read_root_rotation,
    root_key_for,
)
from timebank.envelope import (
    CITY,
    MAX_BODY_BYTES,
    EnvelopeError,
    KeyRing,
    Reason,
    Signed,
    verify,
)
from timebank.ids import is_node_id
from timebank.keys import PUBLIC_KEY_LEN, key_id
from timebank.v1 import clearing_pb2 as pb

__all__ = [
    "ADMISSION",
    "KINDS",
    "MAX_ACTS",
    "MAX_DISTRICT_LEN",
    "POLICY",
    "REVOCATION",
    "ROSTER",
    "AdmissionsError",
    "Certificate",
    "CityAct",
    "CityAdmissions",
    "certificate_of",
    "chain_of",
    "parse_signed",
    "revocation_of",
    "verify_act",
]

ADMISSION = "admission"
REVOCATION = "revocation"
ROSTER = "roster"
POLICY = "policy"
#: The kinds of envelope the city root key signs (the rotations of the city's keys too:
#: ``timebank.citykeys``).
#: The bureau's settlement acts (``timebank.settlement``: a decision on a disputed
#: statement, a district's default) are city acts too.
SETTLEMENT_DECISION = "settlement.decision"
SETTLEMENT_DEFAULT = "settlement.default"
KINDS = frozenset({ADMISSION, REVOCATION, ROSTER, POLICY, *KEY_KINDS, SETTLEMENT_DECISION,
                   SETTLEMENT_DEFAULT})
#: The most acts one view holds: far more than a city of districts, each rotated and
#: revoked now and then, ever signs; a bound on what a clearinghouse can make a reader keep.
MAX_ACTS = 10_000
MAX_DISTRICT_LEN = 64
MAX_SERIAL = 2**63 - 1
#: A serialised envelope: its body and at most this much besides.
_MAX_ENVELOPE_BYTES = MAX_BODY_BYTES + 1024
_KEY_ID = re.compile(r"[0-9a-f]{16}")


class AdmissionsError(ValueError):
    """An envelope offered as a city act is not one: the message says why."""


@dataclass(frozen=True, slots=True)
class CityAct:
    """One city-signed envelope, checked by :func:`verify_act`: its kind, the district it
    concerns (empty for a roster or a policy), its bytes verbatim and their SHA-256."""

    kind: str
    node_id: str
    envelope: bytes
    digest: bytes


@dataclass(frozen=True, slots=True)
class Certificate:
    """What a city-signed admission certificate says."""

    node_id: str
    district: str
    public_key: bytes
    key_id: str
    serial: int


def parse_signed(envelope: bytes) -> Signed:
    """A serialised ``timebank.v1.Envelope`` as a :class:`Signed` (its shape checked,
    not its signature); :class:`EnvelopeError` MALFORMED if it is not one."""
    if not isinstance(envelope, bytes) or len(envelope) > _MAX_ENVELOPE_BYTES:
        raise EnvelopeError(Reason.MALFORMED, "not a serialised envelope of at most "
                                              f"{_MAX_ENVELOPE_BYTES} bytes")
    try:
        wire = pb.Envelope.FromString(envelope)
    except DecodeError:
        raise EnvelopeError(Reason.MALFORMED, "not a serialised Envelope") from None
    return Signed(wire.kind, wire.body, wire.signer, wire.key_id, wire.signature)


def certificate_of(body: bytes) -> Certificate:
    """What an admission certificate's body says, every field checked."""
    cert = pb.AdmissionCertificate.FromString(body)
    if not is_node_id(cert.node_id):
        raise AdmissionsError("the certificate's node id is not six digits")
    if (not cert.district or len(cert.district) > MAX_DISTRICT_LEN
            or cert.district != cert.district.strip()):
        raise AdmissionsError(f"the certificate's district is not 1 to {MAX_DISTRICT_LEN} "
                              "characters without surrounding spaces")
    if len(cert.public_key) != PUBLIC_KEY_LEN:
        raise AdmissionsError(f"the certificate's key is not {PUBLIC_KEY_LEN} bytes")
    if not 1 <= cert.serial <= MAX_SERIAL:
        raise AdmissionsError("the certificate's serial is not 1 to 2^63 - 1")
    public = bytes(cert.public_key)
    return Certificate(cert.node_id, cert.district, public, key_id(public), cert.serial)


def revocation_of(body: bytes) -> tuple[str, str]:
    """The node id and key id a revocation's body names, checked."""
    act = pb.Revocation.FromString(body)
    if not is_node_id(act.node_id):
        raise AdmissionsError("the revocation's node id is not six digits")
    if not _KEY_ID.fullmatch(act.key_id):
        raise AdmissionsError("the revocation's key id is not 16 lowercase hex characters")
    return act.node_id, act.key_id


def verify_act(envelope: bytes, city_key: bytes | CityKeys) -> CityAct:
    """The serialised envelope ``envelope`` as a city act, once it is checked to be one:
    a well-formed envelope of one of ``KINDS``, signed by ``city`` over exactly these
    bytes with ``city_key`` (or, given the chain of the city's keys, with the root key
    the chain allows for this act: a rotated-out key signs nothing new), whose body is
    that kind's message with well-formed fields. Raises :class:`AdmissionsError` saying
    which check failed."""
    try:
        signed = parse_signed(envelope)
        if signed.kind not in KINDS:
            raise AdmissionsError(f"a {signed.kind!r} envelope is not an act of the city")
        if signed.signer != CITY:
            raise AdmissionsError(f"a {signed.kind!r} envelope signed by {signed.signer!r}, "
                                  "not by the city")
        body = verify(signed, root_key_for(city_key, signed))
    except EnvelopeError as e:
        raise AdmissionsError(f"not a city-signed envelope: {e}") from None
    except KeyChainError as e:
        raise AdmissionsError(e.message) from None
    node_id = ""
    try:
        if signed.kind == ADMISSION:
            node_id = certificate_of(body).node_id
        elif signed.kind == REVOCATION:
            node_id = revocation_of(body)[0]
        elif signed.kind == ROSTER:
            pb.Roster.FromString(body)
        elif signed.kind == POLICY:
            pb.CityPolicy.FromString(body)
        elif signed.kind == CITY_KEY:
            read_root_rotation(body)  # its shape: whether it is chained, CityKeys judges
        elif signed.kind == SETTLEMENT_DECISION:
            pb.SettlementDecision.FromString(body)
        elif signed.kind == SETTLEMENT_DEFAULT:
            pb.SettlementDefault.FromString(body)
        else:
            read_clearinghouse_rotation(body)
    except KeyChainError as e:
        raise AdmissionsError(e.message) from None
    except DecodeError:
        raise AdmissionsError(f"the body of a city-signed {signed.kind!r} does not "
                              "parse") from None
    return CityAct(signed.kind, node_id, envelope, hashlib.sha256(envelope).digest())


def chain_of(city_key: bytes, envelopes: Iterable[bytes],
             clearinghouse: bytes | None = None) -> CityKeys:
    """The chain of the city's keys from ``city_key`` (and the clearinghouse key, for a
    reader of the log) through the rotations among ``envelopes`` (serialised envelopes of
    any kind; the others are skipped)."""
    rotations: list[Signed] = []
    for envelope in envelopes:
        try:
            signed = parse_signed(envelope)
        except EnvelopeError:
            continue
        if signed.kind in KEY_KINDS:
            rotations.append(signed)
    return CityKeys(city_key, rotations, clearinghouse)


class CityAdmissions:
    """What a set of city acts says about districts and their keys. Immutable: a reader
    with more acts builds a new view (``with_acts``).

    ``acts`` must come from :func:`verify_act` under the city key the reader trusts; the
    view holds each once (by digest), at most ``MAX_ACTS``.
    """

    __slots__ = ("_acts", "_certificates", "_revoked", "_ring")

    def __init__(self, acts: Iterable[CityAct] = ()) -> None:
        unique: dict[bytes, CityAct] = {}
        for act in acts:
            if not isinstance(act, CityAct) or act.kind not in KINDS:
                raise AdmissionsError("a view is built from city acts (verify_act)")
            unique.setdefault(act.digest, act)
            if len(unique) > MAX_ACTS:
                raise AdmissionsError(f"more than {MAX_ACTS} city acts")
        self._acts = tuple(unique.values())
        certificates: dict[str, list[Certificate]] = {}
        revoked: set[tuple[str, str]] = set()
        for act in self._acts:
            signed = parse_signed(act.envelope)
            if act.kind == ADMISSION:
                cert = certificate_of(signed.body)
                certificates.setdefault(cert.node_id, []).append(cert)
            elif act.kind == REVOCATION:
                revoked.add(revocation_of(signed.body))
        for found in certificates.values():
            found.sort(key=lambda c: (c.serial, c.key_id))
        self._certificates = certificates
        self._revoked = frozenset(revoked)
        ring = KeyRing()
        for node_id, kid in sorted(self._revoked):
            ring.revoke(node_id, kid)
        for node_id in sorted(certificates):
            for cert in certificates[node_id]:
                if (node_id, cert.key_id) in self._revoked:
                    continue
                try:
                    ring.add(node_id, cert.public_key)
                except ValueError:
                    # the same key certified for two districts: the first (by node id)
                    # keeps it, the other's envelopes under it fail as UNKNOWN_KEY
                    continue
        self._ring = ring

    @property
    def acts(self) -> tuple[CityAct, ...]:
        return self._acts

    @property
    def digests(self) -> frozenset[bytes]:
        return frozenset(a.digest for a in self._acts)

    def __len__(self) -> int:
        return len(self._acts)

    def __iter__(self) -> Iterator[CityAct]:
        return iter(self._acts)

    def with_acts(self, acts: Iterable[CityAct]) -> CityAdmissions:
        """A view of these acts and the new ones."""
        return CityAdmissions((*self._acts, *acts))

    def envelopes(self, kind: str) -> list[bytes]:
        """Every act of ``kind``, verbatim (a roster, say, for whoever reads rosters)."""
        if kind not in KINDS:
            raise ValueError(f"{kind!r} is not a kind of city act")
        return [a.envelope for a in self._acts if a.kind == kind]

    def certificates(self, node_id: str) -> list[Certificate]:
        """Every certificate of the district, by serial."""
        return list(self._certificates.get(node_id, ()))

    def is_revoked(self, node_id: str, key: str) -> bool:
        return (node_id, key) in self._revoked

    def knows_key(self, node_id: str, key: str) -> bool:
        """Whether a city act names this key of the district (certified or revoked): if
        not, a reader may have missed an act, and may ask for the city's acts again."""
        return (node_id, key) in self._revoked or any(
            c.key_id == key for c in self._certificates.get(node_id, ()))

    def admitted(self, node_id: str) -> Certificate | None:
        """The district's current certificate, if it has one whose key is not revoked:
        whether the city admits the district now."""
        found = self._certificates.get(node_id)
        if not found or (node_id, found[-1].key_id) in self._revoked:
            return None
        return found[-1]

    def verify(self, envelope: Signed) -> bytes:
        """The body of ``envelope`` if its signer is a district and it is signed by a key
        the city certified for that district and never revoked; otherwise
        :class:`EnvelopeError` naming the check that failed (MALFORMED: not a district's
        envelope; REVOKED_KEY; UNKNOWN_SIGNER: no certificate for the signer; UNKNOWN_KEY:
        none for this key; BAD_SIGNATURE)."""
        if not isinstance(envelope, Signed):
            raise EnvelopeError(Reason.MALFORMED, "not a Signed envelope")
        if not is_node_id(envelope.signer):
            raise EnvelopeError(Reason.MALFORMED,
                                f"{envelope.signer!r} is not a district: only a district's "
                                "envelope is checked against the city's certificates")
        return self._ring.verify(envelope)
