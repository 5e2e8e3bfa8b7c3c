"""Claims between districts, in two phases, and who may move them.

A claim asks a debtor node for minutes on behalf of a creditor node:

- REDEMPTION: a person whose home is district A is served in district B, so B (creditor)
  claims the minutes from A (debtor);
- MOVE: a person's home moves from A to B, so A (debtor) hands the balance to B (creditor).

PROPOSED → ACCEPTED (the debtor holds the minutes) → COMPLETED (posted on both nodes,
positions move) or VOIDED; PROPOSED → REJECTED with a reason; any open claim → EXPIRED at
its deadline. Every time on a claim is the clearinghouse's clock, so one clock orders
every transition. Pure functions only: each returns a new Claim or raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    InvariantViolation,
    PermissionDenied,
)
from timebank.claimkinds import MAX_MOVE_MINUTES as MAX_MOVE_MINUTES
from timebank.claimkinds import MAX_REDEMPTION_MINUTES as MAX_REDEMPTION_MINUTES
from timebank.claimkinds import ClaimKind as ClaimKind
from timebank.ids import is_node_id

#: The most any claim may carry, whatever its kind.
MAX_CLAIM_MINUTES = MAX_MOVE_MINUTES
#: The shortest and longest a claim may stay open. A redemption is held from the order's
#: acceptance until it is recorded (service, then the 7-day publicity period), so 30 days.
MIN_CLAIM_WINDOW = timedelta(seconds=1)
MAX_CLAIM_WINDOW = timedelta(days=30)
#: The actor id the clearinghouse acts under; never a 6-digit node id.
CLEARINGHOUSE = "clearinghouse"

_UUID7 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
_PERSON_REF = re.compile(r"[0-9a-f]{64}")



class ClaimState(StrEnum):
    PROPOSED = "proposed"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    VOIDED = "voided"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def final(self) -> bool:
        return not TRANSITIONS[self]

    @property
    def open(self) -> bool:
        """Open claims hold (or are about to hold) minutes and count against limits."""
        return not self.final


S = ClaimState
#: Every state a claim may go to next. Final states go nowhere.
TRANSITIONS: dict[ClaimState, frozenset[ClaimState]] = {
    S.PROPOSED: frozenset({S.ACCEPTED, S.REJECTED, S.EXPIRED}),
    S.ACCEPTED: frozenset({S.COMPLETED, S.VOIDED, S.EXPIRED}),
    S.COMPLETED: frozenset(),
    S.VOIDED: frozenset(),
    S.REJECTED: frozenset(),
    S.EXPIRED: frozenset(),
}


class Action(StrEnum):
    PROPOSE = "propose"
    ACCEPT = "accept"
    REJECT = "reject"
    COMPLETE = "complete"
    VOID = "void"
    EXPIRE = "expire"


#: The state each action leads to (PROPOSE creates the claim).
RESULT: dict[Action, ClaimState] = {
    Action.PROPOSE: S.PROPOSED,
    Action.ACCEPT: S.ACCEPTED,
    Action.REJECT: S.REJECTED,
    Action.COMPLETE: S.COMPLETED,
    Action.VOID: S.VOIDED,
    Action.EXPIRE: S.EXPIRED,
}

_PARTICIPLE = {
    Action.PROPOSE: "proposed",
    Action.ACCEPT: "accepted",
    Action.REJECT: "rejected",
    Action.COMPLETE: "completed",
    Action.VOID: "voided",
    Action.EXPIRE: "expired",
}


class RejectReason(StrEnum):
    """Why a claim ended without being posted, in Interledger's F/T classes.

    Final (F): retrying the same request unchanged can never help. Temporary (T): a new
    claim for the same thing may succeed later. A claim id has one outcome for ever, so a
    "retry" is always a new claim; these classes tell the creditor whether to make one.
    """

    #: F. The person's available hours (balance less holds) do not cover the claim; the
    #: person must choose another payment source or a smaller amount.
    INSUFFICIENT_BALANCE = "INSUFFICIENT_BALANCE"
    #: F. The payer and the person served are not linked as relatives on the home node.
    NOT_A_RELATIVE = "NOT_A_RELATIVE"
    #: F. The city's policy forbids this payment (age, group hours, relation kind …).
    POLICY = "POLICY"
    #: F. The debtor keeps no person with this PersonRef.
    UNKNOWN_PERSON = "UNKNOWN_PERSON"
    #: F. The debtor is not the person's home district; look the person up again.
    NOT_HOME_DISTRICT = "NOT_HOME_DISTRICT"
    #: F. The payer has not consented (at their home district) to pay for this person's
    #: services; once they consent there, a new claim may succeed (ADR 0017).
    NO_CONSENT = "NO_CONSENT"
    #: F. The creditor withdrew the claim (the service was cancelled); a void reason.
    CANCELLED = "CANCELLED"
    #: T. The claim reached its deadline while open; a new claim may succeed.
    EXPIRED = "EXPIRED"
    #: T. The debtor would pass its net debit limit; settlement makes room again.
    LIMIT_REACHED = "LIMIT_REACHED"
    #: T. The debtor node is not connected to the clearinghouse.
    DEBTOR_OFFLINE = "DEBTOR_OFFLINE"
    #: T. The debtor or the clearinghouse is over a rate or pending-claims limit.
    BUSY = "BUSY"

    @property
    def final(self) -> bool:
        return self not in _TEMPORARY

    @property
    def temporary(self) -> bool:
        return not self.final

    @property
    def error_class(self) -> str:
        """"F" (final) or "T" (temporary), as Interledger names its classes."""
        return "F" if self.final else "T"


R = RejectReason
_TEMPORARY = frozenset({R.EXPIRED, R.LIMIT_REACHED, R.DEBTOR_OFFLINE, R.BUSY})
#: The reasons a claim may be rejected with (by the debtor or the clearinghouse).
REJECT_REASONS = frozenset(R) - {R.EXPIRED, R.CANCELLED}
#: The reasons the creditor may void an accepted claim with.
VOID_REASONS = frozenset({R.CANCELLED, R.POLICY})


def _aware(label: str, moment: datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidArgument(f"{label} must carry a time zone", "NAIVE_TIME")


def check_node_id(label: str, node_id: str) -> str:
    if not is_node_id(node_id):
        raise InvalidArgument(
            f"the {label} must be a district's 6-digit administrative division code, "
            f"not {node_id[:16]!r}", "MALFORMED_NODE_ID")
    return node_id


def check_claim_id(claim_id: str) -> str:
    """A claim id is a UUIDv7 in canonical lowercase form, as the creditor chose it."""
    if not _UUID7.fullmatch(claim_id):
        raise InvalidArgument(
            "a claim id must be a version-7 UUID in lowercase canonical form "
            f"(xxxxxxxx-xxxx-7xxx-[89ab]xxx-xxxxxxxxxxxx), not {claim_id[:40]!r}",
            "MALFORMED_CLAIM_ID")
    return claim_id


@dataclass(frozen=True, slots=True)
class Claim:
    claim_id: str
    kind: ClaimKind
    creditor: str  # node id of the district that is owed the minutes
    debtor: str  # node id of the district that gives them
    person_ref: str  # the person whose hours move: 64 lowercase hex
    minutes: int  # proposed, and held on acceptance
    created_at: datetime
    expires_at: datetime
    state: ClaimState = ClaimState.PROPOSED
    reason: RejectReason | None = None  # set exactly when rejected, voided or expired
    updated_at: datetime | None = None  # the last transition; None means created_at
    posted_minutes: int | None = None  # set exactly when completed: 1..minutes

    def __post_init__(self) -> None:
        check_claim_id(self.claim_id)
        if not isinstance(self.kind, ClaimKind):
            raise InvalidArgument("a claim is a redemption or a move", "BAD_CLAIM_KIND")
        check_node_id("creditor", self.creditor)
        check_node_id("debtor", self.debtor)
        if self.creditor == self.debtor:
            raise InvalidArgument(
                f"district {self.creditor} cannot claim from itself; a claim is between "
                "two districts", "CLAIM_TO_SELF")
        if not _PERSON_REF.fullmatch(self.person_ref):
            raise InvalidArgument(
                "a PersonRef is 64 lowercase hexadecimal characters (HMAC-SHA256)",
                "MALFORMED_PERSON_REF")
        limit = self.kind.max_minutes
        if (not isinstance(self.minutes, int) or isinstance(self.minutes, bool)
                or not 1 <= self.minutes <= limit):
            raise InvalidArgument(
                f"a {self.kind.value} claim is for 1 to {limit} minutes, "
                f"not {self.minutes!r}", "MINUTES_OUT_OF_RANGE")
        _aware("created_at", self.created_at)
        _aware("expires_at", self.expires_at)
        window = self.expires_at - self.created_at
        if not MIN_CLAIM_WINDOW <= window <= MAX_CLAIM_WINDOW:
            raise InvalidArgument(
                f"a claim must expire between {MIN_CLAIM_WINDOW} and {MAX_CLAIM_WINDOW} "
                f"after it is made; this one expires {window} after", "BAD_DEADLINE")
        if self.updated_at is None:
            object.__setattr__(self, "updated_at", self.created_at)
        else:
            _aware("updated_at", self.updated_at)
        self._check_state()

    def _check_state(self) -> None:
        """A claim's state, reason, posted amount and times always agree."""
        if not isinstance(self.state, ClaimState):
            raise InvariantViolation(f"claim {self.claim_id}: unknown state {self.state!r}")
        assert self.updated_at is not None
        expected: frozenset[RejectReason] | None = {
            S.REJECTED: REJECT_REASONS, S.VOIDED: VOID_REASONS,
            S.EXPIRED: frozenset({R.EXPIRED}),
        }.get(self.state)
        if (self.reason is None) != (expected is None) or (
                expected is not None and self.reason not in expected):
            raise InvariantViolation(
                f"claim {self.claim_id}: {self.state.value} with reason {self.reason}")
        if (self.posted_minutes is None) != (self.state is not S.COMPLETED):
            raise InvariantViolation(
                f"claim {self.claim_id}: {self.state.value} with posted {self.posted_minutes}")
        if self.posted_minutes is not None:
            check_posted(self, self.posted_minutes)
        if self.updated_at < self.created_at:
            raise InvariantViolation(f"claim {self.claim_id}: updated before it was made")
        if self.state is S.PROPOSED and self.updated_at != self.created_at:
            raise InvariantViolation(f"claim {self.claim_id}: proposed but updated")

    @property
    def label(self) -> str:
        return f"{self.kind.value} claim {self.claim_id}"


def check_posted(claim: Claim, posted: int) -> int:
    """What completion may post: up to the held minutes; a move posts the whole balance."""
    if isinstance(posted, bool) or not 1 <= posted <= claim.minutes:
        raise InvalidArgument(
            f"{claim.label} holds {claim.minutes} minutes; it can post 1 to "
            f"{claim.minutes}, not {posted}; void it to post nothing", "MINUTES_OUT_OF_RANGE")
    if claim.kind is ClaimKind.MOVE and posted != claim.minutes:
        raise InvalidArgument(
            f"{claim.label} moves a whole balance of {claim.minutes} minutes; it cannot "
            f"post {posted}", "PARTIAL_MOVE")
    return posted


def same_proposal(a: Claim, b: Claim) -> bool:
    """Whether two claims are the same request (for an idempotent resubmission)."""
    return (a.claim_id, a.kind, a.creditor, a.debtor, a.person_ref, a.minutes) == (
        b.claim_id, b.kind, b.creditor, b.debtor, b.person_ref, b.minutes)


def check_resubmission(recorded: Claim, proposed: Claim) -> Claim:
    """A claim id has one outcome for ever: the same body gets the recorded claim back."""
    assert recorded.claim_id == proposed.claim_id
    if not same_proposal(recorded, proposed):
        raise AlreadyExists(
            f"claim id {recorded.claim_id} was already used for a different claim; "
            "a new claim needs a new id", "CLAIM_ID_REUSED")
    return recorded


# ---------------------------------------------------------------- who may do what

def actor_may(claim: Claim, action: Action, actor: str) -> bool:
    """Who may take each action on a claim.

    A redemption is proposed by the creditor (it served the person); a move by the debtor
    (the old home, the only one that knows the balance and its origins). The debtor accepts
    (it holds the minutes) and rejects; the creditor completes (it posts once its service
    is recorded or the person has arrived) and voids (it withdraws). The clearinghouse may
    also reject a proposal on its own checks (directory, limits, an offline debtor, load),
    and only it expires claims, by its clock.
    """
    if action is Action.PROPOSE:
        return actor == (claim.debtor if claim.kind is ClaimKind.MOVE else claim.creditor)
    if action in (Action.COMPLETE, Action.VOID):
        return actor == claim.creditor
    if action is Action.ACCEPT:
        return actor == claim.debtor
    if action is Action.REJECT:
        return actor in (claim.debtor, CLEARINGHOUSE)
    assert action is Action.EXPIRE
    return actor == CLEARINGHOUSE


def check_actor(claim: Claim, action: Action, actor: str) -> None:
    if not actor_may(claim, action, actor):
        who = "the clearinghouse" if actor == CLEARINGHOUSE else f"district {actor[:16]}"
        raise PermissionDenied(
            f"{who} may not {action.value} {claim.label} "
            f"(creditor {claim.creditor}, debtor {claim.debtor})", "NOT_YOUR_CLAIM")


# ---------------------------------------------------------------- transitions

def allowed_from(action: Action) -> frozenset[ClaimState]:
    """The states from which an action may be taken, read off TRANSITIONS."""
    return frozenset(s for s in ClaimState if RESULT[action] in TRANSITIONS[s])


def require_state(claim: Claim, action: Action) -> None:
    """Refuse an action the claim's state does not allow, saying what would."""
    allowed = allowed_from(action)
    if claim.state not in allowed:
        expected = " or ".join(s.value for s in ClaimState if s in allowed)
        raise FailedPrecondition(
            f"{claim.label} is {claim.state.value}; it can be {_PARTICIPLE[action]} "
            f"only when {expected}", "CLAIM_STATE")


def _transition(claim: Claim, action: Action, now: datetime, *,
                reason: RejectReason | None = None, posted: int | None = None) -> Claim:
    _aware("now", now)
    require_state(claim, action)
    assert claim.updated_at is not None
    if now < claim.updated_at:
        raise InvalidArgument(
            f"{claim.label} last changed at {claim.updated_at.isoformat()}, after "
            f"{now.isoformat()}; the clock went backwards", "CLOCK_WENT_BACKWARDS")
    if action is Action.EXPIRE:
        if now < claim.expires_at:
            raise FailedPrecondition(
                f"{claim.label} is open until {claim.expires_at.isoformat()}; it cannot "
                "expire before then", "CLAIM_NOT_DUE")
    elif now >= claim.expires_at:
        raise FailedPrecondition(
            f"{claim.label} expired at {claim.expires_at.isoformat()}; it can no longer be "
            f"{_PARTICIPLE[action]}, only expired", "CLAIM_EXPIRED")
    after = replace(claim, state=RESULT[action], reason=reason, updated_at=now,
                    posted_minutes=posted)
    assert after.state in TRANSITIONS[claim.state]
    return after


def accept(claim: Claim, now: datetime) -> Claim:
    """The debtor holds the minutes."""
    return _transition(claim, Action.ACCEPT, now)


def reject(claim: Claim, now: datetime, reason: RejectReason) -> Claim:
    if reason not in REJECT_REASONS:
        raise InvalidArgument(f"a claim cannot be rejected with reason {reason}",
                              "BAD_REASON")
    return _transition(claim, Action.REJECT, now, reason=reason)


def complete(claim: Claim, now: datetime, posted: int | None = None) -> Claim:
    """The creditor posts: all the held minutes, or fewer (a service recorded shorter)."""
    posted = claim.minutes if posted is None else posted
    check_posted(claim, posted)
    return _transition(claim, Action.COMPLETE, now, posted=posted)


def void(claim: Claim, now: datetime, reason: RejectReason) -> Claim:
    """The creditor withdraws an accepted claim; the debtor releases the hold."""
    if reason not in VOID_REASONS:
        raise InvalidArgument(f"a claim cannot be voided with reason {reason}", "BAD_REASON")
    return _transition(claim, Action.VOID, now, reason=reason)


def expire(claim: Claim, now: datetime) -> Claim:
    """The deadline passed with the claim open; holds are released on both sides."""
    return _transition(claim, Action.EXPIRE, now, reason=RejectReason.EXPIRED)
