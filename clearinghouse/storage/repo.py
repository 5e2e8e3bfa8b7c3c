"""The repository: every SQL statement the clearinghouse runs, inside one caller's
transaction. Use-cases check the rules and refuse politely; this module only reads
and writes rows (and raises InvariantViolation when a write finds what must not be).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, delete, insert, select, update

from clearinghouse.domain.errors import InvariantViolation
from clearinghouse.storage import schema as s

ADMISSIONS = cast(Table, s.Admission.__table__)
RETIRED = cast(Table, s.RetiredKey.__table__)
DIRECTORY = cast(Table, s.DirectoryEntry.__table__)
POSITIONS = cast(Table, s.Position.__table__)
ACKS = cast(Table, s.Ack.__table__)
META = cast(Table, s.Meta.__table__)


@dataclass(frozen=True, slots=True)
class AdmissionRecord:
    """An admitted node and its current key (revoked when ``revoked_at`` is set)."""

    node_id: str
    district: str
    public_key: bytes
    key_id: str
    serial: int
    certificate: bytes  # the city-signed envelope as received
    admitted_at: datetime
    revoked_at: datetime | None = None
    revocation: bytes | None = None  # the bureau's revocation envelope as received

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True, slots=True)
class RetiredKeyRecord:
    key_id: str
    node_id: str
    public_key: bytes
    serial: int
    certificate: bytes
    admitted_at: datetime
    revoked_at: datetime
    revocation: bytes | None


@dataclass(frozen=True, slots=True)
class DirectoryRecord:
    person_ref: str
    home_node_id: str
    registered_at: datetime
    registration: bytes  # the home node's signed envelope as received


def _admission(row: Any) -> AdmissionRecord:
    return AdmissionRecord(row.node_id, row.district, row.public_key, row.key_id, row.serial,
                           row.certificate, row.admitted_at, row.revoked_at, row.revocation)


class Repo:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # meta ---------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        value = self.conn.execute(select(META.c.value).where(META.c.key == key)).scalar()
        return cast(str | None, value)

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(delete(META).where(META.c.key == key))
        self.conn.execute(insert(META).values(key=key, value=value))

    # admissions and keys ------------------------------------------------------------

    def admission(self, node_id: str) -> AdmissionRecord | None:
        row = self.conn.execute(
            select(ADMISSIONS).where(ADMISSIONS.c.node_id == node_id)).first()
        return None if row is None else _admission(row)

    def admissions(self) -> list[AdmissionRecord]:
        rows = self.conn.execute(select(ADMISSIONS).order_by(ADMISSIONS.c.node_id))
        return [_admission(row) for row in rows]

    def retired_keys(self, node_id: str | None = None) -> list[RetiredKeyRecord]:
        query = select(RETIRED).order_by(RETIRED.c.node_id, RETIRED.c.serial)
        if node_id is not None:
            query = query.where(RETIRED.c.node_id == node_id)
        return [RetiredKeyRecord(r.key_id, r.node_id, r.public_key, r.serial, r.certificate,
                                 r.admitted_at, r.revoked_at, r.revocation)
                for r in self.conn.execute(query)]

    def key_holder(self, public_key: bytes) -> str | None:
        """The node that holds or held this public key, current or retired."""
        for table in (ADMISSIONS, RETIRED):
            found = self.conn.execute(
                select(table.c.node_id).where(table.c.public_key == public_key)).scalar()
            if found is not None:
                return cast(str, found)
        return None

    def insert_admission(self, record: AdmissionRecord, net_debit_limit_minutes: int) -> None:
        """A newly admitted node: its admission, a zero position and an empty queue."""
        self.conn.execute(insert(ADMISSIONS).values(
            node_id=record.node_id, district=record.district, public_key=record.public_key,
            key_id=record.key_id, serial=record.serial, certificate=record.certificate,
            admitted_at=record.admitted_at, revoked_at=None, revocation=None))
        self.conn.execute(insert(POSITIONS).values(
            node_id=record.node_id, net_minutes=0,
            net_debit_limit_minutes=net_debit_limit_minutes))
        self.conn.execute(insert(ACKS).values(node_id=record.node_id, acked_seq=0))

    def replace_admission(self, old: AdmissionRecord, new: AdmissionRecord,
                          now: datetime) -> None:
        """A higher-serial certificate for an admitted node. A changed key retires the
        old one (revoked now, unless already revoked by the bureau)."""
        if old.node_id != new.node_id or new.serial <= old.serial:
            raise InvariantViolation("a certificate replaces only a lower serial of its node")
        if old.key_id != new.key_id:
            self.conn.execute(insert(RETIRED).values(
                key_id=old.key_id, node_id=old.node_id, public_key=old.public_key,
                serial=old.serial, certificate=old.certificate, admitted_at=old.admitted_at,
                revoked_at=old.revoked_at or now, revocation=old.revocation))
        elif old.revoked:
            raise InvariantViolation("a revoked key is never admitted again")
        done = self.conn.execute(update(ADMISSIONS).where(
            ADMISSIONS.c.node_id == old.node_id, ADMISSIONS.c.serial == old.serial,
        ).values(district=new.district, public_key=new.public_key, key_id=new.key_id,
                 serial=new.serial, certificate=new.certificate, admitted_at=new.admitted_at,
                 revoked_at=None, revocation=None))
        if done.rowcount != 1:
            raise InvariantViolation(f"admission of {old.node_id} changed underneath")

    def revoke_current_key(self, node_id: str, key_id: str, revocation: bytes,
                           now: datetime) -> None:
        done = self.conn.execute(update(ADMISSIONS).where(
            ADMISSIONS.c.node_id == node_id, ADMISSIONS.c.key_id == key_id,
            ADMISSIONS.c.revoked_at.is_(None),
        ).values(revoked_at=now, revocation=revocation))
        if done.rowcount != 1:
            raise InvariantViolation(f"key {key_id} of {node_id} is not its current key")

    def record_retired_revocation(self, key_id: str, revocation: bytes) -> None:
        done = self.conn.execute(update(RETIRED).where(
            RETIRED.c.key_id == key_id, RETIRED.c.revocation.is_(None),
        ).values(revocation=revocation))
        if done.rowcount != 1:
            raise InvariantViolation(f"retired key {key_id} already has a revocation")

    # directory ------------------------------------------------------------------------

    def directory_entry(self, person_ref: str) -> DirectoryRecord | None:
        row = self.conn.execute(
            select(DIRECTORY).where(DIRECTORY.c.person_ref == person_ref)).first()
        if row is None:
            return None
        return DirectoryRecord(row.person_ref, row.home_node_id, row.registered_at,
                               row.registration)

    def insert_directory_entry(self, record: DirectoryRecord) -> None:
        self.conn.execute(insert(DIRECTORY).values(
            person_ref=record.person_ref, home_node_id=record.home_node_id,
            registered_at=record.registered_at, registration=record.registration))

    # positions ------------------------------------------------------------------------

    def position(self, node_id: str) -> tuple[int, int] | None:
        """(net minutes, net debit limit minutes) of an admitted node."""
        row = self.conn.execute(select(POSITIONS.c.net_minutes,
                                       POSITIONS.c.net_debit_limit_minutes)
                                .where(POSITIONS.c.node_id == node_id)).first()
        return None if row is None else (int(row[0]), int(row[1]))
