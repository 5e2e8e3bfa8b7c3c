"""Consents (ADR 0017), stored as ``node.domain.consent.Consent``, and their uses.

Every consent read is rebuilt through ``Consent``, so a row that breaks its invariants
is refused on load. A consent changes from what its caller read: ``update`` writes the
columns that differ, on the condition that the row still holds what was read (its
state and minutes used), so a one-time confirmation is used exactly once even if two
writers read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from node.domain.consent import Consent, ConsentKind, ConsentState
from node.storage.tables import CONSENT_USES, CONSENTS
from runtime.errors import InvariantViolation, NotFound

#: Bounds of what one decision reads: active consents for one person (far more than a
#: payer can have: ``MAX_ACTIVE_CONSENTS`` and one per open order), and ended ones.
MAX_ACTIVE_READ = 1000
MAX_ENDED_READ = 20


@dataclass(frozen=True, slots=True)
class ConsentUseRecord:
    consent_id: int
    order_id: int | None
    claim_id: str | None
    minutes: int
    at: datetime


def _row(c: Consent) -> dict[str, Any]:
    return {"payer_id": c.payer_id, "grantee_ref": c.grantee_ref, "kind": c.kind.value,
            "state": c.state.value, "max_minutes": c.max_minutes,
            "total_minutes": c.total_minutes, "used_minutes": c.used_minutes,
            "order_id": c.order_id, "granted_at": c.granted_at, "expires_at": c.expires_at,
            "granted_by": c.granted_by, "revoked_at": c.revoked_at, "revoked_by": c.revoked_by}


def _consent(row: Any) -> Consent:
    try:
        kind, state = ConsentKind(row.kind), ConsentState(row.state)
    except ValueError as e:
        raise InvariantViolation(f"consent {row.id} is stored malformed: {e}") from None
    return Consent(int(row.id), int(row.payer_id), row.grantee_ref, kind, state,
                   int(row.max_minutes), int(row.total_minutes), int(row.used_minutes),
                   row.granted_at, row.expires_at, row.granted_by, row.order_id,
                   row.revoked_at, row.revoked_by)


class ConsentRepo:
    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, c: Consent) -> int:
        """Record a new consent (its ``id`` is ignored); return its id."""
        if c.id != 0 or c.used_minutes or c.state is not ConsentState.ACTIVE:
            raise InvariantViolation("a new consent is active and unused")
        return int(self.conn.execute(
            insert(CONSENTS).values(_row(c)).returning(CONSENTS.c.id)).scalar_one())

    def get(self, consent_id: int) -> Consent:
        row = self.conn.execute(select(CONSENTS).where(CONSENTS.c.id == consent_id)).first()
        if row is None:
            raise NotFound(f"本区没有同意 {consent_id} (this node has no consent {consent_id})",
                           "UNKNOWN_CONSENT")
        return _consent(row)

    def of_payer(self, payer_id: int, *, in_force_at: datetime | None = None,
                 after_id: int = 0, limit: int = 1000) -> list[Consent]:
        """A payer's consents, oldest first; ``in_force_at``: only those active and not
        expired then."""
        q = select(CONSENTS).where(CONSENTS.c.payer_id == payer_id, CONSENTS.c.id > after_id)
        if in_force_at is not None:
            q = q.where(CONSENTS.c.state == ConsentState.ACTIVE.value,
                        CONSENTS.c.expires_at > in_force_at)
        return [_consent(r) for r in self.conn.execute(q.order_by(CONSENTS.c.id).limit(limit))]

    def for_grantee(self, payer_id: int, grantee_ref: str) -> list[Consent]:
        """What ``cover`` decides on: every consent of ``payer_id`` for ``grantee_ref`` that
        is active, newest first (a few in force: those not bound to an order are capped,
        those bound to one lapse within weeks), and the latest of the others, which say
        why none pays."""
        mine = (CONSENTS.c.payer_id == payer_id, CONSENTS.c.grantee_ref == grantee_ref)
        active = CONSENTS.c.state == ConsentState.ACTIVE.value
        rows = list(self.conn.execute(select(CONSENTS).where(*mine, active)
                                      .order_by(CONSENTS.c.id.desc()).limit(MAX_ACTIVE_READ)))
        rows += self.conn.execute(select(CONSENTS).where(*mine, ~active)
                                  .order_by(CONSENTS.c.id.desc()).limit(MAX_ENDED_READ))
        return [_consent(r) for r in rows]

    def active_count(self, payer_id: int, at: datetime) -> int:
        """The payer's consents in force at ``at`` that are not for one order."""
        return int(self.conn.execute(
            select(func.count()).select_from(CONSENTS).where(
                CONSENTS.c.payer_id == payer_id, CONSENTS.c.order_id.is_(None),
                CONSENTS.c.state == ConsentState.ACTIVE.value,
                CONSENTS.c.expires_at > at)).scalar_one())

    def update(self, before: Consent, after: Consent) -> None:
        """Store ``after``, a change of ``before`` as read in this transaction."""
        if (before.id, before.payer_id, before.grantee_ref, before.kind) != (
                after.id, after.payer_id, after.grantee_ref, after.kind):
            raise InvariantViolation(f"consent {before.id}'s parties cannot change")
        done = self.conn.execute(
            update(CONSENTS).where(CONSENTS.c.id == before.id,
                                   CONSENTS.c.state == before.state.value,
                                   CONSENTS.c.used_minutes == before.used_minutes)
            .values(state=after.state.value, used_minutes=after.used_minutes,
                    revoked_at=after.revoked_at, revoked_by=after.revoked_by))
        if done.rowcount != 1:
            raise InvariantViolation(f"consent {before.id} changed since it was read")

    def add_use(self, use: ConsentUseRecord) -> None:
        """Record that ``use.consent_id`` paid for an order or a claim (once each)."""
        if self.use_of(use.order_id, use.claim_id) is not None:
            raise InvariantViolation("an order or claim is paid under one consent, once")
        self.conn.execute(insert(CONSENT_USES).values(
            consent_id=use.consent_id, order_id=use.order_id, claim_id=use.claim_id,
            minutes=use.minutes, at=use.at))

    def use_of(self, order_id: int | None = None,
               claim_id: str | None = None) -> ConsentUseRecord | None:
        """The consent that paid for an order here, or for a claim on this node."""
        if (order_id is None) == (claim_id is None):
            raise InvariantViolation("a consent pays for an order or a claim")
        where = (CONSENT_USES.c.order_id == order_id if order_id is not None
                 else CONSENT_USES.c.claim_id == claim_id)
        row = self.conn.execute(select(CONSENT_USES).where(where)).first()
        return None if row is None else ConsentUseRecord(
            row.consent_id, row.order_id, row.claim_id, int(row.minutes), row.at)

    def uses_of_orders(self, order_ids: Sequence[int]) -> dict[int, int]:
        """The consent each of these orders was paid under (orders with none left out)."""
        if not order_ids:
            return {}
        rows = self.conn.execute(select(CONSENT_USES.c.order_id, CONSENT_USES.c.consent_id)
                                 .where(CONSENT_USES.c.order_id.in_(list(order_ids))))
        return {int(r.order_id): int(r.consent_id) for r in rows}
