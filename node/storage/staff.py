"""Where the node works: its service points (服务站) and the staff at them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, insert, select

from node.storage.tables import POINTS, STAFF, record


@dataclass(frozen=True, slots=True)
class ServicePointRecord:
    id: int
    code: str
    name: str
    street: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StaffRecord:
    id: int
    name: str
    service_point_id: int
    created_at: datetime


class StaffRepo:
    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add_service_point(self, code: str, name: str, street: str, at: datetime) -> int:
        return int(self.conn.execute(
            insert(POINTS).values(code=code, name=name, street=street, created_at=at)
            .returning(POINTS.c.id)).scalar_one())

    def service_point(self, point_id: int) -> ServicePointRecord | None:
        row = self.conn.execute(select(POINTS).where(POINTS.c.id == point_id)).one_or_none()
        return None if row is None else record(ServicePointRecord, row)

    def service_point_by_code(self, code: str) -> ServicePointRecord | None:
        row = self.conn.execute(select(POINTS).where(POINTS.c.code == code)).one_or_none()
        return None if row is None else record(ServicePointRecord, row)

    def service_points(self, after_id: int, limit: int) -> list[ServicePointRecord]:
        """The service points after ``after_id``, in id order, at most ``limit``."""
        rows = self.conn.execute(select(POINTS).where(POINTS.c.id > after_id)
                                 .order_by(POINTS.c.id).limit(limit))
        return [record(ServicePointRecord, r) for r in rows]

    def add(self, name: str, service_point_id: int, at: datetime) -> int:
        return int(self.conn.execute(
            insert(STAFF).values(name=name, service_point_id=service_point_id, created_at=at)
            .returning(STAFF.c.id)).scalar_one())

    def get(self, staff_id: int) -> StaffRecord | None:
        row = self.conn.execute(select(STAFF).where(STAFF.c.id == staff_id)).one_or_none()
        return None if row is None else record(StaffRecord, row)
