"""Accounts, credentials and sessions of the node's API (ADR 0016).

People log in with a password or a one-time code and get a session token; programs
hold a bearer token issued from the node's own CLI. Every secret is stored hashed: a
password or a code with argon2id (``HASHER``; about 20 ms on a small server), a token as
SHA-256 of its 32 random bytes (a token is random, so a fast hash is enough, and the
node looks it up by that digest on every call). Everything expires: sessions after
``session_hours``, codes after ``code_minutes`` (and once used), program tokens after at
most ``MAX_TOKEN_DAYS``; an account may expire too (the node's ``[auth]`` settings,
``LoginRules``, give the hours and minutes).

Guessing is slow: ``max_failures`` failed logins in a row lock the account for
``lock_minutes`` (and the right password is refused meanwhile, saying until when); an
unknown login costs the same hash as a known one, so which logins exist cannot be told
by timing. A failed login returns a ``LoginOutcome`` rather than raising, so that the
failure it counts is committed; the API answers it UNAUTHENTICATED.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from node.domain.access import (
    DEFAULT_TOKEN_DAYS,
    MAX_PROGRAM_NAME_CHARS,
    MAX_TOKEN_DAYS,
    Principal,
    Role,
    Scope,
)
from node.storage.logins import AccountRecord, NewAccount
from node.usecases.app import Tx, city_time
from node.usecases.people import require_staff
from runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    InvariantViolation,
    NotFound,
    Unauthenticated,
)

#: argon2id at the OWASP minimum (19 MiB, 2 passes, 1 lane): ~20 ms per hash measured
#: on the development machine; memory-hard, so guessing on a GPU gains little.
HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
TOKEN_BYTES = 32
CODE_DIGITS = 6
MAX_ACCOUNT_DAYS = 3660
MIN_PASSWORD_CHARS = 10
MAX_PASSWORD_CHARS = 128
MAX_LOGIN_CHARS = 64
MAX_ACCOUNTS_LISTED = 1000

PASSWORD, CODE, SESSION, TOKEN = "password", "code", "session", "token"
_LOG_IN_AGAIN = "请重新登录 (log in again: `timebank node login`)"


@dataclass(frozen=True, slots=True)
class AccountView:
    id: int
    login: str
    role: str
    staff_id: int
    person_id: int
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    locked_until: datetime | None


@dataclass(frozen=True, slots=True)
class LoginOutcome:
    """A session (``token``, shown once) or why there is none (``refusal``)."""

    token: str = ""
    expires_at: datetime | None = None
    principal: Principal | None = None
    refusal: str = ""

    def __post_init__(self) -> None:
        if bool(self.token) == bool(self.refusal):
            raise InvariantViolation("a login gives a session or a refusal")


def digest(token: str) -> bytes:
    """What the node stores of a token, and looks it up by."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def _new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


@cache
def _dummy_hash() -> str:
    """A hash to verify against when the login is unknown (the same cost as a real one)."""
    return HASHER.hash(secrets.token_hex(16))


def _verify(stored: str, secret: str) -> bool:
    try:
        return HASHER.verify(stored, secret)
    except (VerificationError, InvalidHashError):
        return False


def _login_name(raw: str) -> str:
    login = raw.strip()
    if not (1 <= len(login) <= MAX_LOGIN_CHARS and login.isprintable()
            and not any(c.isspace() for c in login)):
        raise InvalidArgument(f"登录名无效 (a login is 1..{MAX_LOGIN_CHARS} printable "
                              "characters without spaces)", "BAD_LOGIN")
    return login


def check_password(password: str) -> None:
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise InvalidArgument(f"密码长度须为 {MIN_PASSWORD_CHARS}..{MAX_PASSWORD_CHARS} "
                              f"个字符 (a password is {MIN_PASSWORD_CHARS} to "
                              f"{MAX_PASSWORD_CHARS} characters)", "WEAK_PASSWORD")


def _days(days: int, limit: int, what: str) -> timedelta:
    if not 1 <= days <= limit:
        raise InvalidArgument(f"有效期须为 1..{limit} 天 ({what} lasts 1 to {limit} days)",
                              "BAD_LIFETIME")
    return timedelta(days=days)


def _scopes(raw: str) -> frozenset[Scope]:
    return frozenset(Scope(s) for s in raw.split(",") if s)


def principal_of(tx: Tx, account: AccountRecord) -> Principal:
    """The principal an account acts as (staff: with their service point, now)."""
    role = Role(account.role)
    point = 0
    if role is Role.STAFF:
        staff = tx.repo.staff.get(account.staff_id or 0)
        if staff is None:
            raise InvariantViolation(f"account {account.id} names no staff record")
        point = staff.service_point_id
    return Principal(role, account.id, staff_id=account.staff_id or 0, service_point_id=point,
                     person_id=account.person_id or 0,
                     program=account.login if role is Role.PROGRAM else "",
                     scopes=_scopes(account.scopes))


def view(a: AccountRecord) -> AccountView:
    return AccountView(a.id, a.login, a.role, a.staff_id or 0, a.person_id or 0,
                       tuple(sorted(_scopes(a.scopes))), a.created_at, a.expires_at,
                       a.revoked_at, a.locked_until)


# ------------------------------------------------------------------ the operator's CLI


def add_account(tx: Tx, login: str, role: Role, *, staff_id: int = 0, person_id: int = 0,
                expires_days: int = 0) -> AccountView:
    """An account for a person: operator, auditor, staff (bound to a staff record) or
    member (bound to a person). It has no credential yet: ``set_password`` or
    ``issue_code``. Programs get theirs from ``issue_token``."""
    login = _login_name(login)
    if role is Role.PROGRAM:
        raise InvalidArgument("programs get a token: `timebank node token issue`")
    if (role is Role.STAFF) != bool(staff_id):
        raise InvalidArgument("a staff account names its staff record (--staff ID), and "
                              "only a staff account does", "BAD_BINDING")
    if (role is Role.MEMBER) != bool(person_id):
        raise InvalidArgument("a member account names its person (--person ID), and only "
                              "a member account does", "BAD_BINDING")
    if staff_id:
        require_staff(tx, staff_id)
    if person_id:
        tx.repo.people.get(person_id)
    expires = tx.now + _days(expires_days, MAX_ACCOUNT_DAYS, "an account") if expires_days \
        else None
    if tx.repo.logins.by_login(login) is not None:
        raise AlreadyExists("登录名已被使用 (that login is taken; choose another)", "LOGIN_TAKEN")
    account_id = tx.repo.logins.add(NewAccount(login, role.value, staff_id or None,
                                               person_id or None, "", tx.now, expires))
    return view(_account(tx, account_id))


def _account(tx: Tx, account_id: int) -> AccountRecord:
    found = tx.repo.logins.get(account_id)
    if found is None:
        raise InvariantViolation(f"account {account_id} vanished")
    return found


def _by_login(tx: Tx, login: str) -> AccountRecord:
    found = tx.repo.logins.by_login(_login_name(login))
    if found is None:
        raise NotFound("没有此登录名 (there is no account with that login on this node)",
                       "UNKNOWN_ACCOUNT")
    return found


def set_password(tx: Tx, login: str, password: str) -> AccountView:
    """Give the account a (new) password; the old one and every session end."""
    check_password(password)
    account = _by_login(tx, login)
    if account.role == Role.PROGRAM.value:
        raise InvalidArgument("programs log in with a token, not a password")
    tx.repo.logins.revoke_credentials(account.id, tx.now, (PASSWORD, SESSION))
    tx.repo.logins.add_credential(account.id, PASSWORD, tx.now, None,
                                  secret_hash=HASHER.hash(password))
    tx.repo.logins.set_failures(account.id, 0, None)
    return view(_account(tx, account.id))


def issue_code(tx: Tx, login: str) -> str:
    """A new one-time code for the account (the previous ones end): ``CODE_DIGITS``
    digits, valid for ``code_minutes`` minutes and one login. Returned once, stored
    hashed."""
    account = _by_login(tx, login)
    if account.role == Role.PROGRAM.value:
        raise InvalidArgument("programs log in with a token, not a code")
    code = f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"
    tx.repo.logins.revoke_credentials(account.id, tx.now, (CODE,))
    tx.repo.logins.add_credential(account.id, CODE, tx.now,
                                  tx.now + timedelta(minutes=tx.node.logins.code_minutes),
                                  secret_hash=HASHER.hash(code))
    return code


def revoke_account(tx: Tx, login: str) -> AccountView:
    """End the account and every credential and session of it; kept, for the record."""
    account = _by_login(tx, login)
    if account.revoked_at is None:
        tx.repo.logins.revoke(account.id, tx.now)
    return view(_account(tx, account.id))


def list_accounts(tx: Tx) -> list[AccountView]:
    return [view(a) for a in tx.repo.logins.all(MAX_ACCOUNTS_LISTED)]


def _program_name(raw: str) -> str:
    name = raw.strip()
    if not (1 <= len(name) <= MAX_PROGRAM_NAME_CHARS and name.isascii()
            and name.replace("-", "").isalnum() and name == name.lower()):
        raise InvalidArgument(f"程序名无效 (a program name is 1..{MAX_PROGRAM_NAME_CHARS} "
                              "lower-case letters, digits or '-')", "BAD_PROGRAM_NAME")
    return name


def issue_token(tx: Tx, program: str, scopes: tuple[str, ...],
                expires_days: int = DEFAULT_TOKEN_DAYS) -> tuple[AccountView, str]:
    """A bearer token for a program with these scopes, valid ``expires_days`` (at most
    ``MAX_TOKEN_DAYS``); the program's account is made on its first token, and a new
    token leaves the program's other tokens valid until they expire or are revoked."""
    name = _program_name(program)
    try:
        wanted = frozenset(Scope(s.strip()) for s in scopes)
    except ValueError:
        raise InvalidArgument("权限范围无效 (the scopes are: "
                              f"{', '.join(s.value for s in Scope)})", "BAD_SCOPE") from None
    if not wanted:
        raise InvalidArgument("name at least one scope: " + ", ".join(s.value for s in Scope),
                              "BAD_SCOPE")
    lifetime = _days(expires_days, MAX_TOKEN_DAYS, "a program token")
    account = tx.repo.logins.by_login(name)
    if account is None:
        account = _account(tx, tx.repo.logins.add(NewAccount(
            name, Role.PROGRAM.value, None, None, ",".join(sorted(wanted)), tx.now, None)))
    elif account.role != Role.PROGRAM.value or account.revoked_at is not None:
        raise AlreadyExists("登录名已被使用 (that login is taken by another account)",
                            "LOGIN_TAKEN")
    elif _scopes(account.scopes) != wanted:
        raise FailedPrecondition(
            f"程序 {name} 的权限范围为 {account.scopes} (program {name} has the scopes "
            f"{account.scopes}; revoke it and issue again to change them)", "SCOPES_DIFFER")
    token = _new_token()
    tx.repo.logins.add_credential(account.id, TOKEN, tx.now, tx.now + lifetime,
                                  token_digest=digest(token))
    return view(account), token


def revoke_tokens(tx: Tx, program: str) -> AccountView:
    """End the program: every token of it, and its account (kept for the record; a
    program issued again takes a new name)."""
    account = _by_login(tx, _program_name(program))
    if account.role != Role.PROGRAM.value:
        raise InvalidArgument("此登录名不是程序 (that login is not a program's)")
    return revoke_account(tx, account.login)


# ------------------------------------------------------------------ sessions


def _refuse(tx: Tx, account: AccountRecord | None, said: str) -> LoginOutcome:
    """Count a failed login; the ``max_failures``-th in a row locks the account."""
    if account is not None:
        rules = tx.node.logins
        failed = account.failed_attempts + 1
        locked = (tx.now + timedelta(minutes=rules.lock_minutes)
                  if failed >= rules.max_failures else None)
        tx.repo.logins.set_failures(account.id, 0 if locked else failed, locked)
    return LoginOutcome(refusal=said)


_WRONG = "登录名或密码错误 (the login or the password or code is wrong)"


def login(tx: Tx, login_name: str, secret: str, *, with_code: bool = False) -> LoginOutcome:
    """Log in with a password (or a one-time code): a session token for
    ``session_hours``, or a refusal that says no more than needed. A locked account is
    refused whatever the secret, saying until when."""
    login_name = _login_name(login_name)
    if not 1 <= len(secret) <= MAX_PASSWORD_CHARS:
        raise InvalidArgument("give a password or a one-time code", "MISSING_SECRET")
    account = tx.repo.logins.by_login(login_name)
    kind = CODE if with_code else PASSWORD
    live = [] if account is None else [
        c for c in tx.repo.logins.credentials(account.id, kind)
        if c.expires_at is None or c.expires_at > tx.now]
    if not live:
        _verify(_dummy_hash(), secret)  # the same cost whether or not the login exists
        return _refuse(tx, account, _WRONG)
    assert account is not None
    if account.locked_until is not None and account.locked_until > tx.now:
        _verify(_dummy_hash(), secret)
        return LoginOutcome(refusal=(
            f"账户已锁定至 {city_time(account.locked_until)} (too many failed logins: this "
            f"account is locked until {city_time(account.locked_until)})"))
    matched = next((c for c in live if _verify(c.secret_hash, secret)), None)
    if matched is None:
        return _refuse(tx, account, _WRONG)
    if account.revoked_at is not None or (account.expires_at is not None
                                          and account.expires_at <= tx.now):
        return LoginOutcome(refusal="账户已停用或过期 (this account is revoked or expired; "
                                    "ask the district's operator)")
    if with_code:
        tx.repo.logins.mark_used(matched.id, tx.now)
    tx.repo.logins.set_failures(account.id, 0, None)
    token = _new_token()
    expires = tx.now + timedelta(hours=tx.node.logins.session_hours)
    if account.expires_at is not None:
        expires = min(expires, account.expires_at)
    tx.repo.logins.add_credential(account.id, SESSION, tx.now, expires,
                                  token_digest=digest(token))
    return LoginOutcome(token=token, expires_at=expires, principal=principal_of(tx, account))


def resolve(tx: Tx, token: str) -> Principal:
    """The principal a session or program token stands for; UNAUTHENTICATED if it is
    unknown, expired or revoked (or its account is)."""
    if not token or len(token) > 256:
        raise Unauthenticated(f"未登录 (no credential: {_LOG_IN_AGAIN})", "NOT_LOGGED_IN")
    found = tx.repo.logins.by_token(digest(token))
    if found is None or not hmac.compare_digest(found.token_digest or b"", digest(token)):
        raise Unauthenticated(f"凭证无效 (this token is not one this node issued: "
                              f"{_LOG_IN_AGAIN})", "BAD_TOKEN")
    account = _account(tx, found.account_id)
    if found.revoked_at is not None or account.revoked_at is not None:
        raise Unauthenticated(f"凭证已撤销 (this token was revoked or its session ended: "
                              f"{_LOG_IN_AGAIN})", "TOKEN_REVOKED")
    ends = [t for t in (found.expires_at, account.expires_at) if t is not None]
    if any(t <= tx.now for t in ends):
        raise Unauthenticated(f"凭证已过期 (this token expired at {city_time(min(ends))}: "
                              f"{_LOG_IN_AGAIN})", "TOKEN_EXPIRED")
    return principal_of(tx, account)


def logout(tx: Tx, token: str) -> None:
    """End the session (a program token ends only by ``revoke_tokens``)."""
    found = tx.repo.logins.by_token(digest(token))
    if found is not None and found.kind == SESSION:
        tx.repo.logins.revoke_credential(found.id, tx.now)


def session_expiry(tx: Tx, token: str) -> datetime | None:
    found = tx.repo.logins.by_token(digest(token))
    return None if found is None else found.expires_at


def local_session(tx: Tx, login_name: str, role: Role, days: int, *, staff_id: int = 0,
                  person_id: int = 0) -> str:
    """A session for the account ``login_name`` (made with ``role`` if there is none),
    lasting ``days`` (at most ``MAX_TOKEN_DAYS``), without a password: for whoever holds
    the node's database (local access is the root of trust: the operator's own CLI and
    a city the launcher lays out). The token is returned once and stored hashed."""
    lifetime = _days(days, MAX_TOKEN_DAYS, "a local session")
    account = tx.repo.logins.by_login(_login_name(login_name))
    if account is None:
        add_account(tx, login_name, role, staff_id=staff_id, person_id=person_id)
        account = _by_login(tx, login_name)
    if (account.role != role.value or account.revoked_at is not None
            or (account.staff_id or 0, account.person_id or 0) != (staff_id, person_id)):
        raise FailedPrecondition(f"该账户不可用 (that account is not a live {role.value} "
                                 "account bound as asked)", "BAD_BINDING")
    token = _new_token()
    tx.repo.logins.add_credential(account.id, SESSION, tx.now, tx.now + lifetime,
                                  token_digest=digest(token))
    return token
