"""The district ledger's data and rules: accounts, postings, entries, the hash chain.

Small immutable types and pure functions (beancount's shape). Every entry's
postings sum to zero; entries are only ever appended; a mistake is corrected by
a reversing entry. Each entry is hash-chained to the one before it, so a
rewritten history no longer matches a head anyone has kept.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from runtime.errors import InvariantViolation
from timebank import accounts, chain

# The contract defines the account kinds and origins (every reader of a chain spells
# them the same); the ledger's own rules use them under these names.
from timebank.accounts import AccountKind as AccountKind
from timebank.accounts import Origin as Origin
from timebank.minutes import MAX_MINUTES

HASH_BYTES = 32
MAX_POSTINGS = 16
MAX_MEMO_CHARS = 500


class EntryKind(StrEnum):
    SERVICE = "service"  # a recorded service: minted for the volunteer, paid by the other side
    DONATION = "donation"
    GRANT = "grant"
    REVERSAL = "reversal"
    CLAIM = "claim"  # a completed claim between districts: this node's leg, via clearing
    #: A final settlement statement posted (issue 16): the period's net of this
    #: district's line moves between ``clearing`` and ``settlement``.
    SETTLEMENT = "settlement"


#: Holder accounts never go below zero; sources and clearing may.
NEVER_NEGATIVE_KINDS = frozenset({AccountKind.PERSON, AccountKind.DONATION_POOL,
                                  AccountKind.CONSUMPTION})


@dataclass(frozen=True, slots=True)
class Account(accounts.Account):
    """A ledger account: the contract's account (``timebank.accounts``), whose code is
    part of the hash chain every reader recomputes, with the node's own rule of which
    accounts may never go below zero. A malformed account here is a bug."""

    def __post_init__(self) -> None:
        try:
            accounts.Account.__post_init__(self)
        except accounts.AccountCodeError as e:
            raise InvariantViolation(str(e)) from None

    @property
    def never_negative(self) -> bool:
        """Holder accounts never go below zero; sources and clearing may."""
        return self.kind in NEVER_NEGATIVE_KINDS

    @staticmethod
    def of_person(person_ref: str, origin: Origin) -> Account:
        return Account(AccountKind.PERSON, origin, person_ref)


DONATION_POOL = Account(AccountKind.DONATION_POOL, Origin.DONATED)
CONSUMPTION = Account(AccountKind.CONSUMPTION)
CITY_GRANT = Account(AccountKind.CITY_GRANT, Origin.GRANTED)
CLEARING = Account(AccountKind.CLEARING)
SETTLEMENT = Account(AccountKind.SETTLEMENT)


def issuance(origin: Origin) -> Account:
    return Account(AccountKind.ISSUANCE, origin)


@functools.lru_cache(maxsize=4096)
def account_from_code(code: str) -> Account:
    """Parse an account code back into an Account (the inverse of ``Account.code``), by
    the contract's one reading of codes (``timebank.accounts.parse_account``). Accounts
    are immutable and a node reads the same few codes over and over, so the last few
    thousand parsed are kept rather than checked twice again on every read."""
    try:
        parsed = accounts.parse_account(code)
    except accounts.AccountCodeError as e:
        raise InvariantViolation(f"not an account code: {code!r} ({e})") from None
    return Account(parsed.kind, parsed.origin, parsed.person_ref)


class HoldState(StrEnum):
    """A hold reserves minutes on an account until it is posted or released, once."""

    ACTIVE = "active"
    POSTED = "posted"
    RELEASED = "released"


@dataclass(frozen=True, slots=True)
class Posting:
    account: Account
    minutes: int  # signed: positive adds to the account


@dataclass(frozen=True, slots=True)
class Entry:
    """One ledger transaction: postings that sum to zero, appended once."""

    kind: EntryKind
    postings: tuple[Posting, ...]
    at: datetime
    memo: str = ""
    order_id: int = 0
    reverses_seq: int = 0

    def __post_init__(self) -> None:
        check_entry(self)


def check_entry(entry: Entry) -> None:
    """Assert the shape every entry must have (bugs, not user errors)."""
    postings = entry.postings
    if not 2 <= len(postings) <= MAX_POSTINGS:
        raise InvariantViolation(f"an entry has 2..{MAX_POSTINGS} postings, not {len(postings)}")
    if sum(p.minutes for p in postings) != 0:
        raise InvariantViolation(f"entry postings do not sum to zero: {postings}")
    if any(p.minutes == 0 or abs(p.minutes) > MAX_MINUTES for p in postings):
        raise InvariantViolation(f"posting minutes out of range: {postings}")
    if len({p.account.code for p in postings}) != len(postings):
        raise InvariantViolation("an entry posts to each account at most once")
    if entry.at.tzinfo is None:
        raise InvariantViolation("entry times are timezone-aware")
    if len(entry.memo) > MAX_MEMO_CHARS:
        raise InvariantViolation("memo too long")


def merge_postings(parts: Iterable[tuple[Account, int]]) -> tuple[Posting, ...]:
    """Combine amounts per account, drop zeros, keep first-seen order."""
    totals: dict[Account, int] = {}
    for account, minutes in parts:
        totals[account] = totals.get(account, 0) + minutes
    return tuple(Posting(a, m) for a, m in totals.items() if m != 0)


def reversal_of(original: Entry, original_seq: int, at: datetime, memo: str) -> Entry:
    """The entry that undoes ``original``: every posting negated."""
    if original.kind is EntryKind.REVERSAL:
        raise InvariantViolation("a reversal is not itself reversed; post a new entry")
    return Entry(
        kind=EntryKind.REVERSAL,
        postings=tuple(Posting(p.account, -p.minutes) for p in original.postings),
        at=at,
        memo=memo,
        order_id=original.order_id,
        reverses_seq=original_seq,
    )


def format_time(at: datetime) -> str:
    """The one textual form of a time inside hashed data (``timebank.chain``)."""
    return chain.format_time(at)


def canonical_bytes(seq: int, entry: Entry) -> bytes:
    """The bytes that are hashed, as the contract defines them for every reader of the
    chain (passbook verifiers, auditors): ``timebank.chain.entry_bytes``."""
    return chain.entry_bytes(
        seq=seq, kind=str(entry.kind), at=chain.format_time(entry.at), memo=entry.memo,
        order_id=entry.order_id, reverses_seq=entry.reverses_seq,
        postings=[(p.account.code, p.minutes) for p in entry.postings])


def genesis_hash(node_id: str) -> bytes:
    """The 'previous hash' of a node's first entry: binds the chain to the node."""
    return chain.genesis_hash(node_id)


def chain_hash(prev_hash: bytes, seq: int, entry: Entry) -> bytes:
    if len(prev_hash) != HASH_BYTES:
        raise InvariantViolation("previous hash must be 32 bytes")
    return chain.link_hash(prev_hash, canonical_bytes(seq, entry))


def apply(balances: Mapping[str, int], entry: Entry) -> dict[str, int]:
    """Balances after the entry (pure; used by audits and property tests)."""
    out = dict(balances)
    for p in entry.postings:
        out[p.account.code] = out.get(p.account.code, 0) + p.minutes
    return out


def draw(buckets: Iterable[tuple[Account, int]], amount: int) -> list[tuple[Account, int]]:
    """Take ``amount`` from buckets in the given order; each gives at most what it has.

    Returns [(account, minutes taken)], or raises InvariantViolation if short:
    callers check availability first and refuse with a user-facing error.
    """
    if amount < 0:
        raise InvariantViolation("cannot draw a negative amount")
    taken: list[tuple[Account, int]] = []
    left = amount
    for account, available in buckets:
        if left == 0:
            break
        part = min(left, max(0, available))
        if part:
            taken.append((account, part))
            left -= part
    if left:
        raise InvariantViolation(f"draw short by {left} minutes")
    return taken


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """An entry as the chain holds it: its place (``seq``) and the hashes that link it
    to the entry before."""

    seq: int
    entry: Entry
    prev_hash: bytes
    hash: bytes
