"""This node's claims with other districts, stored as ``node.domain.claims.Claim``.

Every claim read is rebuilt through ``Claim``, so a row that breaks the claim's
invariants is refused on load. A claim changes from the state its caller read:
``update`` writes the columns that differ between the claim read and the claim after,
on the condition that the row is still in the state read.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, update

from node.domain.claims import OPEN_STATES, Claim, ClaimKind, ClaimState, Role
from node.domain.ledger import Origin
from node.storage.tables import CLAIMS, changed
from runtime.errors import InvariantViolation
from runtime.statements import Prepared


def _row(claim: Claim) -> dict[str, Any]:
    return {
        "claim_id": claim.claim_id, "kind": claim.kind.value, "role": claim.role.value,
        "counterparty": claim.counterparty, "person_ref": claim.person_ref,
        "recipient_ref": claim.recipient_ref, "minutes": claim.minutes,
        "posted_minutes": claim.posted_minutes,
        "origins": json.dumps([[o.value, m] for o, m in claim.origins]) if claim.origins else "",
        "state": claim.state.value, "reason": claim.reason, "detail": claim.detail,
        "order_id": claim.order_id, "person_id": claim.person_id,
        "person_priority": claim.person_priority, "expires_at": claim.expires_at,
        "created_at": claim.created_at, "updated_at": claim.updated_at,
    }


def _claim(row: Any) -> Claim:
    try:
        origins = tuple((Origin(o), int(m)) for o, m in json.loads(row.origins or "[]"))
        kind, role, state = ClaimKind(row.kind), Role(row.role), ClaimState(row.state)
    except (ValueError, TypeError) as e:
        raise InvariantViolation(f"claim {row.claim_id} is stored malformed: {e}") from None
    return Claim(row.claim_id, kind, role, row.counterparty, row.person_ref, int(row.minutes),
                 state, row.expires_at, row.created_at, row.updated_at,
                 recipient_ref=row.recipient_ref, origins=origins,
                 posted_minutes=int(row.posted_minutes), reason=row.reason, detail=row.detail,
                 order_id=row.order_id, person_id=row.person_id,
                 person_priority=bool(row.person_priority))


class ClaimRepo:
    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, claim: Claim) -> None:
        _INSERT(self.conn, _row(claim))

    def get(self, claim_id: str) -> Claim | None:
        row = _BY_ID(self.conn, {"claim_id": claim_id}).first()
        return None if row is None else _claim(row)

    def update(self, before: Claim, after: Claim) -> None:
        """Write ``after`` over ``before`` (as read in this transaction)."""
        if before.claim_id != after.claim_id:
            raise InvariantViolation(f"claim {before.claim_id} cannot become {after.claim_id}")
        columns = changed(before, after)  # a Claim's fields are named as its columns
        if not columns:
            return
        row = _row(after)
        done = _update(frozenset(columns))(self.conn, {
            "w_claim_id": before.claim_id, "w_state": before.state.value,
            **{f"b_{c}": row[c] for c in columns}})
        if done.rowcount != 1:
            raise InvariantViolation(f"claim {before.claim_id} changed under a writer")

    def list(self, state: ClaimState | None, after: str, limit: int) -> list[Claim]:
        """Claims after the id ``after`` in id order (so in time order), in one state or any."""
        q = select(CLAIMS).where(CLAIMS.c.claim_id > after)
        if state is not None:
            q = q.where(CLAIMS.c.state == state.value)
        return [_claim(r) for r in self.conn.execute(q.order_by(CLAIMS.c.claim_id).limit(limit))]

    def open_count_of(self, person_ref: str) -> int:
        """Open claims on a person's hours."""
        return int(_OPEN_OF(self.conn, {"ref": person_ref}).scalar_one())

    def count_by_state(self) -> dict[str, int]:
        """How many claims are in each state (one row per state: the index answers)."""
        rows = self.conn.execute(select(CLAIMS.c.state, func.count())
                                 .group_by(CLAIMS.c.state))
        return {str(state): int(count) for state, count in rows}

    def open_count(self) -> int:
        """Claims not yet final (proposed, accepted, finishing)."""
        return int(_OPEN(self.conn).scalar_one())


_INSERT = Prepared(insert(CLAIMS))
_BY_ID = Prepared(select(CLAIMS).where(CLAIMS.c.claim_id == bindparam("claim_id")))
_OPEN_VALUES = sorted(s.value for s in OPEN_STATES)
_OPEN = Prepared(select(func.count()).select_from(CLAIMS)
                 .where(CLAIMS.c.state.in_(_OPEN_VALUES)))
_OPEN_OF = Prepared(select(func.count()).select_from(CLAIMS)
                    .where(CLAIMS.c.person_ref == bindparam("ref"),
                           CLAIMS.c.state.in_(_OPEN_VALUES)))


@functools.cache
def _update(columns: frozenset[str]) -> Prepared:
    """The update of a claim's ``columns`` from an expected state, prepared once per set."""
    return Prepared(update(CLAIMS).where(CLAIMS.c.claim_id == bindparam("w_claim_id"),
                                         CLAIMS.c.state == bindparam("w_state"))
                    .values({c: bindparam(f"b_{c}") for c in sorted(columns)}))
