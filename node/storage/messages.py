"""Messages to and from the clearinghouse.

The outbox holds each message to submit, written in the same transaction as the change
that needs it; the clearing link sends it until a receipt (or a final refusal) comes
back. The inbox holds the sequence number of each delivery applied here, written in the
same transaction as its effects, so that a delivery applies once. A delivery refused
(its relayed envelope not signed by a key the city admitted) goes into the inbox too,
so that those after it go on, and into ``refused_deliveries``, which says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, func, insert, select, update

from node.domain.claims import OutboxRecord
from node.storage.tables import INBOX, OUTBOX, REFUSED, record
from runtime.statements import Prepared

#: The longest detail kept on a message (why it was refused, or is being retried).
MAX_DETAIL_CHARS = 500
#: The longest reason code kept for a retried message (the column's width).
MAX_REASON_CHARS = 32


@dataclass(frozen=True, slots=True)
class RefusedDeliveryRecord:
    seq: int
    kind: str  # the relayed envelope's kind
    signer: str  # who it says signed it
    key_id: str  # with which key
    claim_id: str  # the claim it names, if it could be read
    reason: str  # which check failed (timebank.envelope.Reason, or NOT_THE_PARTY)
    detail: str
    refused_at: datetime


class OutboxRepo:
    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def enqueue(self, kind: str, claim_id: str | None, body: bytes, at: datetime) -> int:
        return int(_ENQUEUE(self.conn, {
            "kind": kind, "claim_id": claim_id, "envelope": body, "created_at": at,
            "attempts": 0, "next_attempt_at": at, "outcome": "", "detail": "",
            "reason": ""}).scalar_one())

    def due(self, now: datetime, limit: int) -> list[OutboxRecord]:
        """Unsent messages due now, oldest first, skipping any whose claim has an older
        message still unsent (a claim's messages go in order)."""
        return [record(OutboxRecord, r) for r in _DUE(self.conn, {"now": now, "limit": limit})]

    def get(self, message_id: int) -> OutboxRecord:
        return record(OutboxRecord, _BY_ID(self.conn, {"message_id": message_id}).one())

    def pending(self) -> int:
        return int(_PENDING(self.conn).scalar_one())

    def oldest_pending_at(self) -> datetime | None:
        """When the oldest unsent message was written (None: the outbox is empty)."""
        found = self.conn.execute(select(func.min(OUTBOX.c.created_at))
                                  .where(OUTBOX.c.done_at.is_(None))).scalar_one()
        return found if isinstance(found, datetime) else None

    def done(self, message_id: int, outcome: str, detail: str, at: datetime) -> bool:
        """Mark a message sent (or refused for good); False if it already was."""
        done = _DONE(self.conn, {"message_id": message_id, "b_done_at": at,
                                 "b_outcome": outcome, "b_detail": detail[:MAX_DETAIL_CHARS]})
        return done.rowcount == 1

    def retry(self, message_id: int, next_at: datetime, detail: str, reason: str = "") -> None:
        """Try the message again at ``next_at``; ``reason``: why it was not taken now."""
        _RETRY(self.conn, {"message_id": message_id, "b_next": next_at,
                           "b_detail": detail[:MAX_DETAIL_CHARS],
                           "b_reason": reason[:MAX_REASON_CHARS]})

    def holds(self, kind: str, body: bytes, claim_id: str | None) -> bool:
        """Whether a message of ``kind`` with exactly ``body`` was ever queued (for
        ``claim_id``, if given: its index narrows the search)."""
        query = select(OUTBOX.c.id).where(OUTBOX.c.kind == kind, OUTBOX.c.envelope == body)
        if claim_id:
            query = query.where(OUTBOX.c.claim_id == claim_id)
        return self.conn.execute(query.limit(1)).first() is not None

    def waiting(self, claim_ids: Sequence[str]) -> dict[str, OutboxRecord]:
        """For each of these claims that has an unsent message already tried and not
        taken, the first such message (a claim's messages go in order)."""
        if not claim_ids:
            return {}
        rows = self.conn.execute(
            select(OUTBOX).where(OUTBOX.c.claim_id.in_(list(claim_ids)),
                                 OUTBOX.c.done_at.is_(None))
            .order_by(OUTBOX.c.id))
        out: dict[str, OutboxRecord] = {}
        for r in rows:
            if r.claim_id not in out:
                out[r.claim_id] = record(OutboxRecord, r)
        return {c: m for c, m in out.items() if m.attempts > 0}


class InboxRepo:
    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def last_seq(self) -> int:
        """The sequence number of the last delivery applied (0: none yet)."""
        return int(_LAST(self.conn).scalar_one())

    def add(self, seq: int, kind: str, claim_id: str, at: datetime) -> None:
        _ADD(self.conn, {"seq": seq, "kind": kind, "claim_id": claim_id, "applied_at": at})

    def refuse(self, refused: RefusedDeliveryRecord) -> None:
        """Record a delivery refused (its sequence number goes into the inbox too)."""
        self.add(refused.seq, refused.kind, refused.claim_id, refused.refused_at)
        self.conn.execute(insert(REFUSED).values(
            seq=refused.seq, kind=refused.kind[:32], signer=refused.signer[:16],
            key_id=refused.key_id[:16], claim_id=refused.claim_id[:36],
            reason=refused.reason[:32], detail=refused.detail[:MAX_DETAIL_CHARS],
            refused_at=refused.refused_at))

    def refused_count(self) -> int:
        return int(self.conn.execute(select(func.count()).select_from(REFUSED)).scalar_one())

    def refused(self, limit: int) -> list[RefusedDeliveryRecord]:
        """The latest refused deliveries, newest first."""
        rows = self.conn.execute(select(REFUSED).order_by(REFUSED.c.seq.desc()).limit(limit))
        return [record(RefusedDeliveryRecord, r) for r in rows]


_ENQUEUE = Prepared(insert(OUTBOX).returning(OUTBOX.c.id))
_OLDER = OUTBOX.alias("older")
_DUE = Prepared(
    select(OUTBOX)
    .where(OUTBOX.c.done_at.is_(None), OUTBOX.c.next_attempt_at <= bindparam("now"),
           ~select(_OLDER.c.id).where(_OLDER.c.claim_id == OUTBOX.c.claim_id,
                                      _OLDER.c.id < OUTBOX.c.id,
                                      _OLDER.c.done_at.is_(None)).exists())
    .order_by(OUTBOX.c.id).limit(bindparam("limit")))
_BY_ID = Prepared(select(OUTBOX).where(OUTBOX.c.id == bindparam("message_id")))
_PENDING = Prepared(select(func.count()).select_from(OUTBOX).where(OUTBOX.c.done_at.is_(None)))
_DONE = Prepared(update(OUTBOX)
                 .where(OUTBOX.c.id == bindparam("message_id"), OUTBOX.c.done_at.is_(None))
                 .values(done_at=bindparam("b_done_at"), outcome=bindparam("b_outcome"),
                         detail=bindparam("b_detail"), attempts=OUTBOX.c.attempts + 1))
_RETRY = Prepared(update(OUTBOX).where(OUTBOX.c.id == bindparam("message_id"))
                  .values(next_attempt_at=bindparam("b_next"), detail=bindparam("b_detail"),
                          reason=bindparam("b_reason"), attempts=OUTBOX.c.attempts + 1))
_LAST = Prepared(select(func.coalesce(func.max(INBOX.c.seq), 0)))
_ADD = Prepared(insert(INBOX))
