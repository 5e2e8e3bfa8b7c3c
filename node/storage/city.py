"""The city's acts (admission certificates, revocations, rosters, policies) as this node
verified them: each envelope verbatim, once, by its SHA-256. Only ever inserted, so that
what the node once learned from the city (a revocation, above all) stays learned
whatever a clearinghouse serves later."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, insert, select

from node.storage.tables import CITY_ENVELOPES
from runtime.statements import Prepared


@dataclass(frozen=True, slots=True)
class CityEnvelopeRecord:
    digest: bytes  # SHA-256 of the envelope
    kind: str  # admission, revocation, roster, policy
    node_id: str  # the district it concerns; "" for a roster or a policy
    envelope: bytes  # the serialised, city-signed envelope, verbatim


class CityEnvelopeRepo:
    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def all(self) -> list[CityEnvelopeRecord]:
        """Every act stored, in a stable order."""
        return [CityEnvelopeRecord(bytes(r.digest), r.kind, r.node_id, bytes(r.envelope))
                for r in _ALL(self.conn)]

    def envelopes(self) -> tuple[bytes, ...]:
        """Every act stored, only its envelope, in the order of ``all`` (read before every
        move and redemption)."""
        return tuple(bytes(r.envelope) for r in _ENVELOPES(self.conn))

    def digests(self) -> set[bytes]:
        return {bytes(d) for d in self.conn.execute(select(CITY_ENVELOPES.c.digest)).scalars()}

    def count(self) -> int:
        return int(self.conn.execute(select(func.count()).select_from(CITY_ENVELOPES))
                   .scalar_one())

    def add(self, record: CityEnvelopeRecord, at: datetime) -> None:
        """Store an act not stored yet (the caller looked: ``digests``)."""
        self.conn.execute(insert(CITY_ENVELOPES).values(
            digest=record.digest, kind=record.kind, node_id=record.node_id,
            envelope=record.envelope, recorded_at=at))


_ORDER = (CITY_ENVELOPES.c.kind, CITY_ENVELOPES.c.node_id, CITY_ENVELOPES.c.digest)
_ALL = Prepared(select(CITY_ENVELOPES.c.digest, CITY_ENVELOPES.c.kind, CITY_ENVELOPES.c.node_id,
                       CITY_ENVELOPES.c.envelope).order_by(*_ORDER))
_ENVELOPES = Prepared(select(CITY_ENVELOPES.c.envelope).order_by(*_ORDER))
