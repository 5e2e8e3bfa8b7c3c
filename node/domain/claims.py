"""A node's side of claims between districts: states, reasons, and the debtor's decision.

The clearinghouse keeps the authoritative claim (ADR 0004). A node keeps its own row
and moves it only on what it learns: its own decision, a receipt for its own message,
or a delivery. One rule makes the two ledgers agree: **a node posts its leg of a claim
only once it knows the clearinghouse completed it** — the creditor from the receipt for
its ``claim.finish``, the debtor from the delivery of that finish (ADR 0006).
Pure functions only; ``node.usecases.claims`` applies them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from node.domain.ledger import Origin
from node.domain.orders import PaymentSource, PersonFacts, PersonKind, check_payment
from node.domain.policy import Policy, Relation
from runtime.errors import InvalidArgument, Refusal

MAX_REDEMPTION_MINUTES = 1440
MAX_MOVE_MINUTES = 90_000


class ClaimKind(StrEnum):
    REDEMPTION = "redemption"  # serving district (creditor) ← home district (debtor)
    MOVE = "move"  # old home (debtor) → new home (creditor)


class Role(StrEnum):
    CREDITOR = "creditor"
    DEBTOR = "debtor"


class ClaimState(StrEnum):
    PROPOSED = "proposed"
    ACCEPTED = "accepted"  # the debtor holds the minutes
    FINISHING = "finishing"  # creditor: its complete/void is on its way
    COMPLETED = "completed"
    VOIDED = "voided"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def final(self) -> bool:
        return self in (ClaimState.COMPLETED, ClaimState.VOIDED, ClaimState.REJECTED,
                        ClaimState.EXPIRED)

    @property
    def open(self) -> bool:
        return not self.final


class Reason(StrEnum):
    """The clearinghouse's reason codes (``timebank.v1.ClaimReason`` without prefix)."""

    INSUFFICIENT_BALANCE = "INSUFFICIENT_BALANCE"
    NOT_A_RELATIVE = "NOT_A_RELATIVE"
    POLICY = "POLICY"
    UNKNOWN_PERSON = "UNKNOWN_PERSON"
    NOT_HOME_DISTRICT = "NOT_HOME_DISTRICT"
    EXPIRED = "EXPIRED"
    LIMIT_REACHED = "LIMIT_REACHED"
    DEBTOR_OFFLINE = "DEBTOR_OFFLINE"
    BUSY = "BUSY"
    CANCELLED = "CANCELLED"


#: Reasons that say a new claim may succeed later (Interledger's T class).
TEMPORARY = frozenset({Reason.EXPIRED, Reason.LIMIT_REACHED, Reason.DEBTOR_OFFLINE,
                       Reason.BUSY})

#: The node's own refusal reasons that are a city policy, not a missing relation.
_POLICY_REFUSALS = {"NOT_A_RELATIVE": Reason.NOT_A_RELATIVE}


@dataclass(frozen=True, slots=True)
class Decision:
    """The debtor's answer to a redemption: accept, or a reason with a short detail."""

    reason: Reason | None
    detail: str = ""

    @property
    def accept(self) -> bool:
        return self.reason is None


ACCEPT = Decision(None)


def decide_redemption(policy: Policy, payer: PersonFacts | None, payer_is_recipient: bool,
                      recipient_age: int, recipient_priority: bool,
                      relation: Relation | None, available: int, minutes: int) -> Decision:
    """Where the home district decides a redemption: the same who-may-redeem rules as at
    home (``check_payment``), then the balance. ``payer`` None: not enrolled here.

    Details never carry personal data: they go back to another district."""
    if payer is None:
        return Decision(Reason.UNKNOWN_PERSON, "no such person is enrolled here")
    if not 1 <= minutes <= MAX_REDEMPTION_MINUTES:
        return Decision(Reason.POLICY, f"a redemption is 1..{MAX_REDEMPTION_MINUTES} min")
    if payer_is_recipient and payer.kind is PersonKind.GROUP:
        return Decision(Reason.POLICY, "a group cannot receive service")
    # the recipient as the serving district described them (-1: not a person here)
    recipient = PersonFacts(payer.id if payer_is_recipient else -1, PersonKind.INDIVIDUAL,
                            recipient_age, recipient_priority)
    source = PaymentSource.OWN if payer_is_recipient else PaymentSource.RELATIVE
    try:
        check_payment(policy, source, recipient, None if payer_is_recipient else payer,
                      relation)
    except Refusal as e:
        # the rule's code, not its message: the message names people by local ids
        return Decision(_POLICY_REFUSALS.get(e.reason, Reason.POLICY), e.reason)
    if available < minutes:
        return Decision(Reason.INSUFFICIENT_BALANCE,
                        f"{available} min available, {minutes} min claimed")
    return ACCEPT


@dataclass(frozen=True, slots=True)
class Arrival:
    """Where a moved balance goes on arrival: each origin to the person up to the
    stored-hours cap, the rest to the donation pool (as at recording, ADR 0002)."""

    banked: tuple[tuple[Origin, int], ...]
    to_pool: int

    @property
    def total(self) -> int:
        return sum(m for _, m in self.banked) + self.to_pool


def arrival(origins: Iterable[tuple[Origin, int]], balance_total: int, cap: int) -> Arrival:
    """Split a moved balance, origin by origin in the order given, under the cap counted
    on the whole balance the person already has here."""
    room = max(0, cap - balance_total)
    banked, to_pool = [], 0
    for origin, minutes in origins:
        if minutes <= 0:
            raise InvalidArgument("a moved origin carries a positive number of minutes")
        keep = min(minutes, room)
        room -= keep
        to_pool += minutes - keep
        if keep:
            banked.append((origin, keep))
    return Arrival(tuple(banked), to_pool)


def new_claim_id(now_ms: int | None = None, rand: bytes | None = None) -> str:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, version 7, the RFC variant, random
    bits; lowercase canonical, as the clearinghouse requires. Time-ordered, so claim ids
    sort by when they were made."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    if not 0 <= ms < 1 << 48:
        raise InvalidArgument("a UUIDv7's time is 48-bit milliseconds")
    r = os.urandom(10) if rand is None else rand
    if len(r) != 10:
        raise InvalidArgument("a UUIDv7 takes 10 random bytes")
    b = bytearray(ms.to_bytes(6, "big") + r)
    b[6] = 0x70 | (b[6] & 0x0F)
    b[8] = 0x80 | (b[8] & 0x3F)
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
