"""Login accounts and their credentials (ADR 0016). Secrets are stored hashed only: the
repository never sees a password, a code or a token, only their hashes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, insert, select, update

from node.storage.tables import CREDENTIALS, LOGINS, record


@dataclass(frozen=True, slots=True)
class AccountRecord:
    id: int
    login: str
    role: str
    staff_id: int | None
    person_id: int | None
    scopes: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    failed_attempts: int
    locked_until: datetime | None


@dataclass(frozen=True, slots=True)
class CredentialRecord:
    id: int
    account_id: int
    kind: str
    secret_hash: str
    token_digest: bytes | None
    created_at: datetime
    expires_at: datetime | None
    used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewAccount:
    login: str
    role: str
    staff_id: int | None
    person_id: int | None
    scopes: str
    created_at: datetime
    expires_at: datetime | None


class LoginRepo:
    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, new: NewAccount) -> int:
        return int(self.conn.execute(
            insert(LOGINS).values(login=new.login, role=new.role, staff_id=new.staff_id,
                                  person_id=new.person_id, scopes=new.scopes,
                                  created_at=new.created_at, expires_at=new.expires_at,
                                  failed_attempts=0)
            .returning(LOGINS.c.id)).scalar_one())

    def get(self, account_id: int) -> AccountRecord | None:
        row = self.conn.execute(select(LOGINS).where(LOGINS.c.id == account_id)).one_or_none()
        return None if row is None else record(AccountRecord, row)

    def by_login(self, login: str) -> AccountRecord | None:
        row = self.conn.execute(select(LOGINS).where(LOGINS.c.login == login)).one_or_none()
        return None if row is None else record(AccountRecord, row)

    def all(self, limit: int) -> list[AccountRecord]:
        rows = self.conn.execute(select(LOGINS).order_by(LOGINS.c.id).limit(limit))
        return [record(AccountRecord, r) for r in rows]

    def set_failures(self, account_id: int, failed: int, locked_until: datetime | None) -> None:
        self.conn.execute(update(LOGINS).where(LOGINS.c.id == account_id)
                          .values(failed_attempts=failed, locked_until=locked_until))

    def revoke(self, account_id: int, at: datetime) -> None:
        self.conn.execute(update(LOGINS).where(LOGINS.c.id == account_id)
                          .values(revoked_at=at))
        self.revoke_credentials(account_id, at)

    def add_credential(self, account_id: int, kind: str, at: datetime,
                       expires_at: datetime | None, *, secret_hash: str = "",
                       token_digest: bytes | None = None) -> int:
        return int(self.conn.execute(
            insert(CREDENTIALS).values(account_id=account_id, kind=kind,
                                       secret_hash=secret_hash, token_digest=token_digest,
                                       created_at=at, expires_at=expires_at)
            .returning(CREDENTIALS.c.id)).scalar_one())

    def credentials(self, account_id: int, kind: str) -> list[CredentialRecord]:
        """The account's live (unrevoked, unused) credentials of one kind, newest first."""
        rows = self.conn.execute(
            select(CREDENTIALS).where(CREDENTIALS.c.account_id == account_id,
                                      CREDENTIALS.c.kind == kind,
                                      CREDENTIALS.c.revoked_at.is_(None),
                                      CREDENTIALS.c.used_at.is_(None))
            .order_by(CREDENTIALS.c.id.desc()))
        return [record(CredentialRecord, r) for r in rows]

    def by_token(self, digest: bytes) -> CredentialRecord | None:
        row = self.conn.execute(select(CREDENTIALS).where(
            CREDENTIALS.c.token_digest == digest)).one_or_none()
        return None if row is None else record(CredentialRecord, row)

    def mark_used(self, credential_id: int, at: datetime) -> None:
        self.conn.execute(update(CREDENTIALS).where(CREDENTIALS.c.id == credential_id)
                          .values(used_at=at))

    def revoke_credential(self, credential_id: int, at: datetime) -> None:
        self.conn.execute(update(CREDENTIALS).where(CREDENTIALS.c.id == credential_id,
                                                    CREDENTIALS.c.revoked_at.is_(None))
                          .values(revoked_at=at))

    def revoke_credentials(self, account_id: int, at: datetime,
                           kinds: tuple[str, ...] = ()) -> None:
        """Revoke the account's live credentials (of ``kinds``; none named: all)."""
        where = [CREDENTIALS.c.account_id == account_id, CREDENTIALS.c.revoked_at.is_(None)]
        if kinds:
            where.append(CREDENTIALS.c.kind.in_(kinds))
        self.conn.execute(update(CREDENTIALS).where(*where).values(revoked_at=at))
