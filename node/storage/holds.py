"""Holds: minutes reserved on an account for an accepted order here, or for a claim
another district made on this one, until they are posted or released (once).

A hold moves the account's cached ``held`` with it, and never lets an account's
``balance - held`` go below the floor its caller names (InvariantViolation otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, update

from node.domain.claims import FINAL_STATES as FINAL_CLAIM_STATES
from node.domain.ledger import HoldState
from node.domain.orders import OrderState
from node.storage.tables import ACCOUNTS, CLAIMS, HOLDS, ORDERS
from runtime.errors import InvariantViolation
from runtime.statements import Prepared


@dataclass(frozen=True, slots=True)
class HoldRecord:
    id: int
    order_id: int | None
    account_id: int
    minutes: int
    state: HoldState


def _hold(row: Any) -> HoldRecord:
    return HoldRecord(int(row.id), row.order_id, int(row.account_id), int(row.minutes),
                      HoldState(row.state))


class HoldRepo:
    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def hold_for_order(self, order_id: int, account_id: int, minutes: int, floor: int,
                       at: datetime) -> None:
        """Reserve minutes for an order; ``floor`` is how low balance - held may go (0 for
        holders, below 0 for the city fund's budget)."""
        self._place(account_id, minutes, floor, at, order_id=order_id)

    def hold_for_claim(self, claim_id: str, account_id: int, minutes: int,
                       at: datetime) -> None:
        """Reserve a person's minutes for a claim another district made on them."""
        self._place(account_id, minutes, 0, at, claim_id=claim_id)

    def _place(self, account_id: int, minutes: int, floor: int, at: datetime, *,
               order_id: int | None = None, claim_id: str | None = None) -> None:
        if minutes <= 0:
            raise InvariantViolation("a hold is for a positive number of minutes")
        after = _ADD_TO_HELD(self.conn, {"aid": account_id, "minutes": minutes}).one()
        if after.balance - after.held < floor:
            raise InvariantViolation(f"hold on account {account_id} exceeds what is available")
        _INSERT(self.conn, {"order_id": order_id, "claim_id": claim_id,
                            "account_id": account_id, "minutes": minutes,
                            "state": HoldState.ACTIVE.value, "created_at": at})

    def of_claim(self, claim_id: str) -> list[HoldRecord]:
        """A claim's active holds, oldest first."""
        return [_hold(r) for r in _OF_CLAIM(self.conn, {"claim_id": claim_id})]

    def of_order(self, order_id: int) -> list[HoldRecord]:
        """An order's active holds, oldest first."""
        return [_hold(r) for r in _OF_ORDER(self.conn, {"order_id": order_id})]

    def of_orders(self, order_ids: Sequence[int]) -> dict[int, list[HoldRecord]]:
        out: dict[int, list[HoldRecord]] = {i: [] for i in order_ids}
        for r in self.conn.execute(
            select(*_COLUMNS)
            .where(HOLDS.c.order_id.in_(list(order_ids)), HOLDS.c.state == HoldState.ACTIVE.value)
            .order_by(HOLDS.c.id)
        ):
            out[r.order_id].append(_hold(r))
        return out

    def resolve_order(self, order_id: int, state: HoldState, at: datetime,
                      ) -> list[HoldRecord]:
        """Post or release every active hold of an order; give back their minutes."""
        holds = self.of_order(order_id)
        self.close(holds, state, at)
        return holds

    def close(self, holds: Sequence[HoldRecord], state: HoldState, at: datetime) -> None:
        """Post or release holds (all active), giving their minutes back to ``held``."""
        if state is HoldState.ACTIVE:
            raise InvariantViolation("a hold is closed as posted or released")
        if not holds:
            return
        if any(h.state is not HoldState.ACTIVE for h in holds):
            raise InvariantViolation("only active holds can be closed")
        _SUB_FROM_HELD.many(self.conn, [{"aid": h.account_id, "minutes": h.minutes}
                                        for h in holds])
        _CLOSE.many(self.conn, [{"hid": h.id, "new_state": state.value, "at": at}
                                for h in holds])

    # ------------------------------------------------------------ for the audit

    def active_sums(self) -> dict[int, int]:
        """Minutes actively held per account id (what ``held`` must equal)."""
        return {int(r.account_id): int(r.total) for r in self.conn.execute(
            select(HOLDS.c.account_id, func.sum(HOLDS.c.minutes).label("total"))
            .where(HOLDS.c.state == HoldState.ACTIVE.value).group_by(HOLDS.c.account_id))}

    def of_final_orders(self) -> int:
        """Active holds whose order is already final: must always be zero."""
        return int(self.conn.execute(
            select(func.count()).select_from(HOLDS.join(ORDERS, HOLDS.c.order_id == ORDERS.c.id))
            .where(HOLDS.c.state == HoldState.ACTIVE.value,
                   ORDERS.c.state.in_(sorted(s.value for s in OrderState if s.final)))
        ).scalar_one())

    def shown_by_orders(self) -> list[tuple[int, str, int, bool, int]]:
        """(order id, state, minutes it shows held, paid by a claim, minutes its active holds
        here add up to) of every order that shows minutes held or has an active hold."""
        active = (select(HOLDS.c.order_id, func.sum(HOLDS.c.minutes).label("total"))
                  .where(HOLDS.c.state == HoldState.ACTIVE.value,
                         HOLDS.c.order_id.is_not(None))
                  .group_by(HOLDS.c.order_id).subquery())
        rows = self.conn.execute(
            select(ORDERS.c.id, ORDERS.c.state, ORDERS.c.held_minutes, ORDERS.c.claim_id,
                   func.coalesce(active.c.total, 0).label("total"))
            .select_from(ORDERS.outerjoin(active, active.c.order_id == ORDERS.c.id))
            .where((ORDERS.c.held_minutes != 0) | active.c.total.is_not(None))
            .order_by(ORDERS.c.id))
        return [(int(r.id), r.state, int(r.held_minutes), r.claim_id is not None,
                 int(r.total)) for r in rows]

    def of_final_claims(self) -> int:
        """Active holds whose claim is already final: must always be zero."""
        return int(self.conn.execute(
            select(func.count()).select_from(
                HOLDS.join(CLAIMS, HOLDS.c.claim_id == CLAIMS.c.claim_id))
            .where(HOLDS.c.state == HoldState.ACTIVE.value,
                   CLAIMS.c.state.in_(sorted(s.value for s in FINAL_CLAIM_STATES)))
        ).scalar_one())


_COLUMNS = (HOLDS.c.id, HOLDS.c.order_id, HOLDS.c.account_id, HOLDS.c.minutes, HOLDS.c.state)
_INSERT = Prepared(insert(HOLDS))
_OF_CLAIM = Prepared(select(*_COLUMNS)
                     .where(HOLDS.c.claim_id == bindparam("claim_id"),
                            HOLDS.c.state == HoldState.ACTIVE.value)
                     .order_by(HOLDS.c.id))
_OF_ORDER = Prepared(select(*_COLUMNS)
                     .where(HOLDS.c.order_id == bindparam("order_id"),
                            HOLDS.c.state == HoldState.ACTIVE.value)
                     .order_by(HOLDS.c.id))
_ADD_TO_HELD = Prepared(update(ACCOUNTS).where(ACCOUNTS.c.id == bindparam("aid"))
                        .values(held=ACCOUNTS.c.held + bindparam("minutes"))
                        .returning(ACCOUNTS.c.balance, ACCOUNTS.c.held))
_SUB_FROM_HELD = Prepared(update(ACCOUNTS).where(ACCOUNTS.c.id == bindparam("aid"))
                          .values(held=ACCOUNTS.c.held - bindparam("minutes")))
_CLOSE = Prepared(update(HOLDS).where(HOLDS.c.id == bindparam("hid"),
                                      HOLDS.c.state == HoldState.ACTIVE.value)
                  .values(state=bindparam("new_state"), resolved_at=bindparam("at")))
