"""Account codes: how a district's ledger names its accounts, in its database, in every
hashed ledger entry (ADR 0002) and in every passbook.

The spelling is contract because others read it: a passbook's reader sums a person's
postings by the origin their account codes name, and the auditor reads the codes in a
district's database to recompute its hash chain. A code is one of

    person/<PersonRef>/<origin>   minutes the district owes a person (or a group)
    issuance/<origin>             the source of minutes minted for verified service
    consumption                   the sink of minutes spent on service
    donation_pool                 donated minutes (their origin: donated)
    city_grant                    the city fund (its origin: granted)
    clearing                      the district's position toward the clearinghouse
    settlement                    what the district's closed periods settled (ADR 0019)

where a PersonRef is the city-wide pseudonym of a person, 64 lowercase hex characters,
and an origin says where minutes came from (they keep it wherever they go). Parsing
and formatting are inverse: ``parse_account(a.code) == a`` for every account.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "MAX_CODE_CHARS",
    "Account",
    "AccountCodeError",
    "AccountKind",
    "Origin",
    "is_person_ref",
    "parse_account",
    "person_prefix",
]

MAX_CODE_CHARS = 100
"""The longest code (a district stores codes in a column of this width)."""

_PERSON_REF = re.compile(r"[0-9a-f]{64}")


class Origin(StrEnum):
    """Where stored minutes came from."""

    INDIVIDUAL = "individual"
    GROUP = "group"
    DONATED = "donated"
    GRANTED = "granted"


class AccountKind(StrEnum):
    PERSON = "person"
    ISSUANCE = "issuance"
    CONSUMPTION = "consumption"
    DONATION_POOL = "donation_pool"
    CITY_GRANT = "city_grant"
    CLEARING = "clearing"
    SETTLEMENT = "settlement"


# The kinds whose code names no origin, and the origin each has all the same.
_IMPLIED_ORIGIN: dict[AccountKind, Origin | None] = {
    AccountKind.CONSUMPTION: None,
    AccountKind.DONATION_POOL: Origin.DONATED,
    AccountKind.CITY_GRANT: Origin.GRANTED,
    AccountKind.CLEARING: None,
    AccountKind.SETTLEMENT: None,
}


class AccountCodeError(ValueError):
    """Not an account code, or not the parts of one; the message says which."""


def is_person_ref(text: object) -> bool:
    """Whether ``text`` is a PersonRef: 64 lowercase hex characters."""
    return isinstance(text, str) and _PERSON_REF.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class Account:
    """A ledger account as its code names it: a kind, the origin of the minutes it holds
    (fixed by the kind, except for person and issuance accounts) and, for a person's
    account only, their PersonRef."""

    kind: AccountKind
    origin: Origin | None = None
    person_ref: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, AccountKind):
            raise AccountCodeError(f"no such kind of account: {self.kind!r}")
        if self.origin is not None and not isinstance(self.origin, Origin):
            raise AccountCodeError(f"no such origin: {self.origin!r}")
        if self.kind is AccountKind.PERSON:
            if not is_person_ref(self.person_ref):
                raise AccountCodeError("a person's account names their PersonRef (64 "
                                       f"lowercase hex characters), not {self.person_ref!r}")
        elif self.person_ref is not None:
            raise AccountCodeError(f"only a person's account names a person, not {self.kind}")
        if self.kind in (AccountKind.PERSON, AccountKind.ISSUANCE):
            if self.origin is None:
                raise AccountCodeError(f"{self.kind} accounts carry an origin")
        elif self.origin is not _IMPLIED_ORIGIN[self.kind]:
            raise AccountCodeError(f"the {self.kind} account's origin is "
                                   f"{_IMPLIED_ORIGIN[self.kind]}, not {self.origin}")

    @property
    def code(self) -> str:
        if self.kind is AccountKind.PERSON:
            return f"{person_prefix(str(self.person_ref))}{self.origin}"
        if self.kind is AccountKind.ISSUANCE:
            return f"issuance/{self.origin}"
        return str(self.kind)

    @staticmethod
    def of_person(person_ref: str, origin: Origin) -> Account:
        return Account(AccountKind.PERSON, origin, person_ref)


def person_prefix(person_ref: str) -> str:
    """What the codes of a person's accounts start with; the origin follows it."""
    return f"person/{person_ref}/"


def parse_account(code: object) -> Account:
    """The account a code names; AccountCodeError if it is not an account code."""
    if not isinstance(code, str) or not 0 < len(code) <= MAX_CODE_CHARS:
        raise AccountCodeError(f"not an account code: {code!r}")
    kind_text, *rest = code.split("/")
    try:
        kind = AccountKind(kind_text)
        if kind is AccountKind.PERSON and len(rest) == 2:
            return Account(kind, Origin(rest[1]), rest[0])
        if kind is AccountKind.ISSUANCE and len(rest) == 1:
            return Account(kind, Origin(rest[0]))
        if kind not in (AccountKind.PERSON, AccountKind.ISSUANCE) and not rest:
            return Account(kind, _IMPLIED_ORIGIN[kind])
    except ValueError as e:  # a kind, an origin or a PersonRef that is not one
        raise AccountCodeError(f"not an account code: {code!r} ({e})") from None
    raise AccountCodeError(f"not an account code: {code!r}")
