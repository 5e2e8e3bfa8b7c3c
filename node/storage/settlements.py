"""Settlement statements as this node keeps them, and which of its claims each settled
(issue 16, ADR 0019).

A statement row is inserted once per serial and revision when the node has verified it,
and moves forward only: checked → countersigned or disputed → final → posted. Every
change names the state it expects (``advance``), so two writers can never both move one
statement. ``posted_serial`` is unique: a serial is posted once whatever crashes or
retries. A claim's ``settled_serial`` is set once, from 0, by the posting transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, case, func, insert, select, update

from node.domain.claims import ClaimState, Role
from node.domain.settlement import SettlementState
from node.storage.tables import CLAIMS, SETTLEMENTS, record
from runtime.errors import InvariantViolation
from runtime.statements import Prepared
from timebank.settlement import LedgerClaim

CHECKED, COUNTERSIGNED, DISPUTED, FINAL, POSTED = (s.value for s in SettlementState)
#: Claim ids per statement when settling or reading many (bound parameters per query).
CHUNK = 500


@dataclass(frozen=True, slots=True)
class SettlementRecord:
    serial: int
    revision: int
    period: str
    statement_sha256: bytes
    envelope: bytes  # the clearinghouse-signed statement envelope, as fetched
    state: str
    net_minutes: int  # this district's line: + owed to it, - it owes
    answer_kind: str  # settlement.countersign or settlement.dispute ("" before deciding)
    answer: bytes | None  # the body this node signed and queued
    outbox_id: int | None
    differences: int
    detail: str
    evidence: bytes | None  # the Settlement that made it final here
    ledger_seq: int | None
    posted_serial: int | None
    seen_at: datetime
    decided_at: datetime | None
    final_at: datetime | None
    posted_at: datetime | None


class SettlementRepo:
    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # ------------------------------------------------------------ statements

    def add(self, serial: int, revision: int, period: str, statement_sha256: bytes,
            envelope: bytes, net_minutes: int, at: datetime) -> None:
        self.conn.execute(insert(SETTLEMENTS).values(
            serial=serial, revision=revision, period=period,
            statement_sha256=statement_sha256, envelope=envelope, state=CHECKED,
            net_minutes=net_minutes, answer_kind="", differences=0, detail="", seen_at=at))

    def get(self, serial: int, revision: int) -> SettlementRecord | None:
        row = _GET(self.conn, {"serial": serial, "revision": revision}).first()
        return None if row is None else record(SettlementRecord, row)

    def latest_of(self, serial: int) -> SettlementRecord | None:
        """The highest revision of ``serial`` seen here."""
        row = self.conn.execute(select(SETTLEMENTS).where(SETTLEMENTS.c.serial == serial)
                                .order_by(SETTLEMENTS.c.revision.desc()).limit(1)).first()
        return None if row is None else record(SettlementRecord, row)

    def posted(self, serial: int) -> SettlementRecord | None:
        """The revision of ``serial`` posted here, if any."""
        row = self.conn.execute(select(SETTLEMENTS)
                                .where(SETTLEMENTS.c.posted_serial == serial)).first()
        return None if row is None else record(SettlementRecord, row)

    def answered_by(self, outbox_id: int) -> SettlementRecord | None:
        """The statement whose answer is outbox message ``outbox_id``."""
        row = self.conn.execute(select(SETTLEMENTS)
                                .where(SETTLEMENTS.c.outbox_id == outbox_id)).first()
        return None if row is None else record(SettlementRecord, row)

    def last_posted_serial(self) -> int:
        found = self.conn.execute(select(func.max(SETTLEMENTS.c.posted_serial))).scalar()
        return int(found or 0)

    def latest(self) -> SettlementRecord | None:
        row = self.conn.execute(select(SETTLEMENTS).order_by(
            SETTLEMENTS.c.serial.desc(), SETTLEMENTS.c.revision.desc()).limit(1)).first()
        return None if row is None else record(SettlementRecord, row)

    def advance(self, before: SettlementRecord, state: str, **values: Any) -> None:
        """Move a statement from the state it was read in to ``state`` (never back),
        writing ``values`` with it."""
        if SettlementState(state).order < SettlementState(before.state).order:
            raise InvariantViolation(f"statement {before.serial}.{before.revision} cannot go "
                                     f"from {before.state} back to {state}")
        done = self.conn.execute(
            update(SETTLEMENTS).where(SETTLEMENTS.c.serial == before.serial,
                                      SETTLEMENTS.c.revision == before.revision,
                                      SETTLEMENTS.c.state == before.state)
            .values(state=state, **values))
        if done.rowcount != 1:
            raise InvariantViolation(f"statement {before.serial}.{before.revision} changed "
                                     "under a writer")

    # ------------------------------------------------------------ claims

    def ledger_claims(self, node_id: str, claim_ids: Sequence[str]) -> dict[str, LedgerClaim]:
        """This node's (``node_id``'s) claims among ``claim_ids``, as settlement reads
        them."""
        out: dict[str, LedgerClaim] = {}
        ids = list(dict.fromkeys(claim_ids))
        for start in range(0, len(ids), CHUNK):
            for r in _BY_IDS(self.conn, {"ids": ids[start:start + CHUNK]}):
                out[r.claim_id] = _ledger_claim(node_id, r)
        return out

    def unsettled(self, node_id: str, limit: int) -> list[LedgerClaim]:
        """Completed claims no statement has settled here, oldest completion first, at
        most ``limit``."""
        rows = self.conn.execute(
            select(*_COLUMNS).where(CLAIMS.c.state == ClaimState.COMPLETED.value,
                                    CLAIMS.c.settled_serial == 0)
            .order_by(CLAIMS.c.updated_at, CLAIMS.c.claim_id).limit(limit))
        return [_ledger_claim(node_id, r) for r in rows]

    def unsettled_net(self) -> int:
        """What the completed claims no statement has settled are owed to this district
        (+) or owe (-): the creditor was paid ``posted`` (clearing −posted), the debtor
        paid it (clearing +posted)."""
        found = self.conn.execute(select(func.coalesce(func.sum(case(
            (CLAIMS.c.role == Role.CREDITOR.value, CLAIMS.c.posted_minutes),
            else_=-CLAIMS.c.posted_minutes)), 0)).where(
                CLAIMS.c.state == ClaimState.COMPLETED.value,
                CLAIMS.c.settled_serial == 0)).scalar_one()
        return int(found)

    def settle(self, claim_ids: Iterable[str], serial: int) -> int:
        """Mark completed claims not yet settled as settled by ``serial``; how many were."""
        ids = list(dict.fromkeys(claim_ids))
        done = 0
        for start in range(0, len(ids), CHUNK):
            result = self.conn.execute(update(CLAIMS).where(
                CLAIMS.c.claim_id.in_(ids[start:start + CHUNK]),
                CLAIMS.c.state == ClaimState.COMPLETED.value, CLAIMS.c.settled_serial == 0)
                .values(settled_serial=serial))
            done += result.rowcount
        return done

    def settled_by(self, serial: int) -> int:
        return int(self.conn.execute(select(func.count()).select_from(CLAIMS)
                                     .where(CLAIMS.c.settled_serial == serial)).scalar_one())


_COLUMNS = (CLAIMS.c.claim_id, CLAIMS.c.role, CLAIMS.c.counterparty, CLAIMS.c.state,
            CLAIMS.c.posted_minutes, CLAIMS.c.settled_serial)


def _ledger_claim(node_id: str, r: Any) -> LedgerClaim:
    """The parties as settlement names them: the creditor served (or took the person
    in), the debtor's people paid; this node is one of the two."""
    creditor, debtor = ((r.counterparty, node_id) if r.role == Role.DEBTOR.value
                        else (node_id, r.counterparty))
    return LedgerClaim(r.claim_id, creditor, debtor, int(r.posted_minutes),
                       r.state == ClaimState.COMPLETED.value, int(r.settled_serial))


_GET = Prepared(select(SETTLEMENTS).where(SETTLEMENTS.c.serial == bindparam("serial"),
                                          SETTLEMENTS.c.revision == bindparam("revision")))
_BY_IDS = Prepared(select(*_COLUMNS).where(
    CLAIMS.c.claim_id.in_(bindparam("ids", expanding=True))))
