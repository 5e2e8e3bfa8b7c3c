"""The city-signed policies this node fetched (``node.usecases.policies`` checks them
before they are stored, and again when they are read back)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, insert, select

from node.storage.tables import POLICIES, record


@dataclass(frozen=True, slots=True)
class StoredPolicy:
    serial: int
    policy_sha256: bytes
    effective_at: datetime
    envelope: bytes  # the city-signed envelope as received
    received_at: datetime


class PolicyRepo:
    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def all(self) -> list[StoredPolicy]:
        """Every stored policy, by serial."""
        rows = self.conn.execute(select(POLICIES).order_by(POLICIES.c.serial))
        return [record(StoredPolicy, row) for row in rows]

    def add(self, policy: StoredPolicy) -> None:
        self.conn.execute(insert(POLICIES).values(
            serial=policy.serial, policy_sha256=policy.policy_sha256,
            effective_at=policy.effective_at, envelope=policy.envelope,
            received_at=policy.received_at))
