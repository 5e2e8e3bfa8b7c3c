"""Consent before someone else's hours are spent (ADR 0017).

Hours are their holder's. When an order is paid with a relative's hours, the payer's
home district spends them only under the payer's consent, which is one of two things:

- a **standing** consent: the payer lets a named person (the recipient of the services
  it pays for, named city-wide by their PersonRef, so it works in every district) have
  services paid from the payer's hours, optionally bounded per order, in total and in
  time, until it expires or the payer revokes it;
- a **one-time** confirmation: one redemption of at most ``max_minutes`` for that
  person (or for one named order on this node), used up by the first redemption it pays.

``cover`` decides, for one redemption (payer, recipient, minutes, time), which consent
pays for it, or why none does. The consent's id goes with the hold into the record
(``consent_uses``, the ledger entry's memo), so who agreed is provable later. Pure
functions only; ``node.usecases.consent`` applies them.

What a consent changes is the future: revoked or expired, it refuses new redemptions;
minutes already held under it stay held and are spent as the service is recorded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from runtime.errors import FailedPrecondition, InvalidArgument, InvariantViolation
from timebank.claimkinds import MAX_REDEMPTION_MINUTES
from timebank.minutes import MAX_MINUTES

#: Consents a payer may have in force at once (standing and one-time together).
MAX_ACTIVE_CONSENTS = 20
#: A standing consent lasts at most this long; granted without an end, it lasts this long
#: (the payer renews it by granting again: nobody's hours are open to others forever).
MAX_STANDING = timedelta(days=366)
#: A one-time confirmation not used by then lapses.
MAX_ONCE = timedelta(days=30)
#: How long an actor label kept with a consent may be ("staff:3 for person:5").
MAX_ACTOR_CHARS = 64

_PERSON_REF = re.compile(r"[0-9a-f]{64}")


class ConsentKind(StrEnum):
    STANDING = "standing"
    ONCE = "once"


class ConsentState(StrEnum):
    ACTIVE = "active"
    USED = "used"  # a one-time confirmation that paid its redemption
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class Consent:
    """A payer's consent, as recorded on the payer's home node. ``payer_id``: the payer,
    a person of this node; ``grantee_ref``: whose services it pays for (PersonRef);
    ``max_minutes``: per redemption (0: up to what one redemption may be); ``total_minutes``:
    in all (0: no total bound); ``order_id``: a one-time confirmation for one order here."""

    id: int
    payer_id: int
    grantee_ref: str
    kind: ConsentKind
    state: ConsentState
    max_minutes: int
    total_minutes: int
    used_minutes: int
    granted_at: datetime
    expires_at: datetime
    granted_by: str
    order_id: int | None = None
    revoked_at: datetime | None = None
    revoked_by: str = ""

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem is not None:
            raise InvariantViolation(f"consent {self.id}: {problem}")

    @property
    def per_order(self) -> int:
        """The most one redemption under this consent may take."""
        return self.max_minutes or MAX_REDEMPTION_MINUTES

    def in_force(self, at: datetime) -> bool:
        return self.state is ConsentState.ACTIVE and self.granted_at <= at < self.expires_at


def _problem(c: Consent) -> str | None:
    if not _PERSON_REF.fullmatch(c.grantee_ref):
        return "a grantee is a PersonRef: 64 lowercase hexadecimal characters"
    if not (0 <= c.max_minutes <= MAX_REDEMPTION_MINUTES):
        return f"per-order minutes {c.max_minutes} out of 0..{MAX_REDEMPTION_MINUTES}"
    if c.kind is ConsentKind.ONCE and (not c.max_minutes or c.total_minutes):
        return "a one-time confirmation names its minutes and has no total"
    if c.order_id is not None and c.kind is not ConsentKind.ONCE:
        return "only a one-time confirmation is for one order"
    if not (0 <= c.total_minutes <= MAX_MINUTES and 0 <= c.used_minutes <= MAX_MINUTES):
        return "minutes out of range"
    if c.total_minutes and c.used_minutes > c.total_minutes:
        return f"used {c.used_minutes} of a total of {c.total_minutes} min"
    if (c.state is ConsentState.USED) != (c.kind is ConsentKind.ONCE and c.used_minutes > 0):
        return f"{c.state.value} after using {c.used_minutes} min"
    if (c.state is ConsentState.REVOKED) != (c.revoked_at is not None):
        return "revoked exactly when it has a revocation time"
    if c.expires_at <= c.granted_at:
        return "expires before it is granted"
    if not c.granted_by or len(c.granted_by) > MAX_ACTOR_CHARS:
        return "who granted it is recorded"
    return None


# ------------------------------------------------------------------ granting


@dataclass(frozen=True, slots=True)
class Terms:
    """What a payer grants, checked (``terms``) before it is recorded."""

    kind: ConsentKind
    max_minutes: int
    total_minutes: int
    expires_at: datetime
    order_id: int | None


def terms(kind: ConsentKind, max_minutes: int, total_minutes: int, until: datetime | None,
          order_id: int | None, now: datetime, active: int) -> Terms:
    """The bounds of a new consent, or INVALID_ARGUMENT / FAILED_PRECONDITION saying
    which bound is wrong. ``active``: the payer's consents in force now."""
    if not 0 <= max_minutes <= MAX_REDEMPTION_MINUTES:
        raise InvalidArgument(f"每单上限须在 0 至 {MAX_REDEMPTION_MINUTES} 分钟之间 (a consent's "
                              f"limit per order is 0..{MAX_REDEMPTION_MINUTES} min, 0 for "
                              "none)", "MINUTES_OUT_OF_RANGE")
    if not 0 <= total_minutes <= MAX_MINUTES:
        raise InvalidArgument("总额上限超出范围 (a consent's total is 0 or a positive number "
                              "of minutes)", "MINUTES_OUT_OF_RANGE")
    longest = MAX_ONCE if kind is ConsentKind.ONCE else MAX_STANDING
    if kind is ConsentKind.ONCE:
        if not max_minutes:
            raise InvalidArgument("一次性确认须写明分钟数 (a one-time confirmation names the "
                                  "minutes it pays: --max-minutes)", "MINUTES_OUT_OF_RANGE")
        if total_minutes:
            raise InvalidArgument("一次性确认没有总额 (a one-time confirmation pays one "
                                  "redemption; it has no total)", "MINUTES_OUT_OF_RANGE")
    elif order_id is not None:
        raise InvalidArgument("只有一次性确认可以指定订单 (only a one-time confirmation is "
                              "for one order: add --once)", "ORDER_NEEDS_ONCE")
    if until is not None:
        if until.tzinfo is None:
            raise InvalidArgument("the end of a consent needs a timezone")
        if until <= now:
            raise InvalidArgument("同意的截止时间已过 (a consent's end is in the future)",
                                  "CONSENT_ENDS_IN_PAST")
        if until > now + longest:
            raise InvalidArgument(f"同意最长 {longest.days} 天 (a {kind.value} consent lasts at "
                                  f"most {longest.days} days)", "CONSENT_TOO_LONG")
    if active >= MAX_ACTIVE_CONSENTS:
        raise FailedPrecondition(f"付款人已有 {active} 项有效同意，已达上限 (the payer has "
                                 f"{active} consents in force, the most one may have; revoke "
                                 "one first)", "TOO_MANY_CONSENTS")
    return Terms(kind, max_minutes, total_minutes, until or now + longest, order_id)


def revoked(consent: Consent, at: datetime, by: str) -> Consent:
    """The consent revoked: no new redemption uses it (holds made stay)."""
    if consent.state is not ConsentState.ACTIVE:
        raise FailedPrecondition(f"同意 {consent.id} 已{_ZH_STATE[consent.state]}，无需撤销 "
                                 f"(consent {consent.id} is {consent.state.value} already)",
                                 "CONSENT_NOT_ACTIVE")
    return replace(consent, state=ConsentState.REVOKED, revoked_at=at, revoked_by=by)


_ZH_STATE = {ConsentState.ACTIVE: "有效", ConsentState.USED: "用过",
             ConsentState.REVOKED: "撤销"}


def used(consent: Consent, minutes: int) -> Consent:
    """The consent after paying ``minutes`` of one redemption (``cover`` chose it)."""
    if consent.state is not ConsentState.ACTIVE or not 1 <= minutes <= consent.per_order:
        raise InvariantViolation(f"consent {consent.id} cannot pay {minutes} min")
    after = consent.used_minutes + minutes
    state = ConsentState.USED if consent.kind is ConsentKind.ONCE else ConsentState.ACTIVE
    return replace(consent, used_minutes=after, state=state)


# ------------------------------------------------------------------ the decision


@dataclass(frozen=True, slots=True)
class Cover:
    """Which consent pays for a redemption (``consent``), or why none does (``missing``:
    a key of ``MISSING``; its words name nobody: they go to other districts and logs)."""

    consent: Consent | None
    missing: str = ""

    @property
    def covered(self) -> bool:
        return self.consent is not None


#: Why a consent that names the right person does not pay, most telling first.
MISSING = {
    "none": ("付款人未同意为该服务付款", "the payer has not consented to pay for this service"),
    "revoked": ("付款人已撤销同意", "the payer revoked their consent"),
    "expired": ("付款人的同意已过期", "the payer's consent has expired"),
    "used": ("付款人的一次性确认已用过", "the payer's one-time confirmation was used already"),
    "per_order": ("超出付款人同意的每单上限",
                  "it exceeds the minutes per order the payer consented to"),
    "total": ("超出付款人同意的总额", "it exceeds the total the payer consented to"),
    "other_order": ("付款人的一次性确认是为另一订单", "the payer's one-time confirmation is "
                    "for another order"),
}


def missing_text(key: str) -> str:
    """Why no consent pays, Chinese first, then English."""
    zh, en = MISSING[key]
    return f"{zh} ({en})"


def _why_not(c: Consent, minutes: int, at: datetime, order_id: int | None) -> str | None:
    """Why ``c`` (for the right payer and person) does not pay this redemption, if not."""
    if c.state is ConsentState.REVOKED:
        return "revoked"
    if c.state is ConsentState.USED:
        return "used"
    if not c.granted_at <= at < c.expires_at:
        return "expired"
    if c.order_id is not None and c.order_id != order_id:
        return "other_order"
    if minutes > c.per_order:
        return "per_order"
    if c.total_minutes and c.used_minutes + minutes > c.total_minutes:
        return "total"
    return None


_RANK = ("none", "revoked", "expired", "used", "other_order", "total", "per_order")


def cover(consents: Iterable[Consent], payer_id: int, grantee_ref: str, minutes: int,
          at: datetime, order_id: int | None = None) -> Cover:
    """Which of ``consents`` pays for ``minutes`` of ``payer_id``'s hours for the person
    ``grantee_ref`` at ``at`` (``order_id``: the order on this node, if any).

    First a one-time confirmation for exactly this order, then a standing consent (the
    earliest granted), then a one-time confirmation for this person (the earliest), so
    a standing consent never uses up a confirmation given for something else. None:
    the most telling reason why not (a bound exceeded says more than "none")."""
    if minutes < 1:
        raise InvariantViolation(f"a redemption of {minutes} min")
    fitting: list[tuple[int, int, Consent]] = []
    why = "none"
    for c in consents:
        if c.payer_id != payer_id or c.grantee_ref != grantee_ref:
            continue
        problem = _why_not(c, minutes, at, order_id)
        if problem is None:
            rank = (0 if c.order_id is not None else 1 if c.kind is ConsentKind.STANDING
                    else 2)
            fitting.append((rank, c.id, c))
        elif _RANK.index(problem) > _RANK.index(why):
            why = problem
    if fitting:
        return Cover(min(fitting, key=lambda f: (f[0], f[1]))[2])
    return Cover(None, why)
