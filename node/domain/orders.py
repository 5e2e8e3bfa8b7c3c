"""The service loop's rules: order states, who may pay, rounding and the cap.

需求提交 → 志愿接单 → 服务认定 → 积分记录: requested → accepted → checked in →
checked out → verified → public for the publicity period → recorded. Disputed
and cancelled are real states. Once the service is done both sides rate each other
(满意度互评): the recipient's side when it verifies, the volunteer apart from the loop.
Pure functions only; use-cases apply them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from node.domain.ledger import Origin
from node.domain.policy import Policy, Relation
from runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    InvariantViolation,
    PermissionDenied,
)
from timebank.citytime import city_time

MAX_TEXT_CHARS = 500


class OrderState(StrEnum):
    REQUESTED = "requested"
    ACCEPTED = "accepted"
    CHECKED_IN = "checked_in"
    CHECKED_OUT = "checked_out"
    VERIFIED = "verified"
    DISPUTED = "disputed"
    RECORDED = "recorded"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (OrderState.RECORDED, OrderState.CANCELLED)

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


def held_problem(state: OrderState, held_minutes: int, actively_held: int | None) -> str | None:
    """What is wrong with what an order shows held, if anything.

    An order shows held exactly what is reserved for it now: here, its active holds
    (``actively_held``); paid by another district (``actively_held`` None), the claim's
    minutes while the payer's home holds them. A final order holds nothing: its holds
    were posted (recorded) or released (cancelled), so showing minutes held would tell
    an operator the payer still cannot spend them."""
    if type(held_minutes) is not int or held_minutes < 0:
        return f"shows {held_minutes!r} min held"
    if state.final and held_minutes:
        return f"is {state.label} but shows {held_minutes} min held"
    if actively_held is not None and held_minutes != actively_held:
        return f"shows {held_minutes} min held but its active holds are {actively_held} min"
    return None


class Action(StrEnum):
    ACCEPT = "accept"
    CHECK_IN = "check in"
    CHECK_OUT = "check out"
    VERIFY = "verify"
    DISPUTE = "dispute"
    RESOLVE = "resolve"
    CANCEL = "cancel"
    RECORD = "record"


S = OrderState
#: From which states each action may be taken. Anything else is FAILED_PRECONDITION.
ALLOWED_FROM: dict[Action, frozenset[OrderState]] = {
    Action.ACCEPT: frozenset({S.REQUESTED}),
    Action.CHECK_IN: frozenset({S.ACCEPTED}),
    Action.CHECK_OUT: frozenset({S.CHECKED_IN}),
    Action.VERIFY: frozenset({S.CHECKED_OUT}),
    Action.DISPUTE: frozenset({S.VERIFIED}),
    Action.RESOLVE: frozenset({S.DISPUTED}),
    Action.CANCEL: frozenset({S.REQUESTED, S.ACCEPTED, S.CHECKED_IN}),
    Action.RECORD: frozenset({S.VERIFIED}),
}


#: The state in which an action's outcome already shows: taking it again there changes
#: nothing and is no mistake. The node records due orders by itself, so staff who run
#: ``order record`` after it did are told it is recorded, not refused.
DONE_IN: dict[Action, OrderState] = {Action.RECORD: S.RECORDED}


def already_done(action: Action, state: OrderState) -> bool:
    """Whether the order's state already is what ``action`` would make of it."""
    return DONE_IN.get(action) is state


_PARTICIPLE = {
    Action.ACCEPT: "accepted",
    Action.CHECK_IN: "checked in",
    Action.CHECK_OUT: "checked out",
    Action.VERIFY: "verified",
    Action.DISPUTE: "disputed",
    Action.RESOLVE: "resolved",
    Action.CANCEL: "cancelled",
    Action.RECORD: "recorded",
}


def require_state(order_id: int, action: Action, state: OrderState) -> None:
    """Refuse an action the order's state does not allow, saying what would."""
    allowed = ALLOWED_FROM[action]
    if state not in allowed:
        expected = " or ".join(s.label for s in OrderState if s in allowed)
        raise FailedPrecondition(
            f"order {order_id} is {state.label}; it can be {_PARTICIPLE[action]} "
            f"only when {expected}",
            "ORDER_STATE",
        )


def check_check_in(order_id: int, requested_at: datetime, at: datetime) -> None:
    """Refuse a check-in before the order was requested: service for an order nobody
    had asked for yet is a mistyped time (staff entering it afterwards), never a fact."""
    if at < requested_at:
        raise InvalidArgument(
            f"签到时间早于下单时间 (order {order_id} was requested at {city_time(requested_at)}; "
            f"a check-in at {city_time(at)} is before it: check the time given with --at)",
            "CHECK_IN_BEFORE_REQUEST")


def measure_service(order_id: int, checked_in_at: datetime, at: datetime) -> int:
    """The whole minutes between check-in and a check-out at ``at``; refuses a check-out
    that is not after the check-in, or one less than a minute after it (a check-out
    sent at once, by mistake, would store no service)."""
    if at <= checked_in_at:
        raise InvalidArgument(
            f"签退时间不晚于签到时间 (order {order_id}: check-out at {city_time(at)} must come "
            f"after check-in at {city_time(checked_in_at)})", "CHECK_OUT_BEFORE_CHECK_IN")
    measured = int((at - checked_in_at).total_seconds() // 60)
    if measured < 1:
        raise InvalidArgument(
            f"服务不足一分钟 (order {order_id}: the service lasted less than a minute, from "
            f"{city_time(checked_in_at)} to {city_time(at)}; check out when the service ends, "
            "or give the times it began and ended with --at)", "MINUTES_OUT_OF_RANGE")
    assert measured >= 1
    return measured


class PaymentSource(StrEnum):
    OWN = "own"
    RELATIVE = "relative"
    DONATION_POOL = "donation_pool"
    CITY_GRANT = "city_grant"


class PersonKind(StrEnum):
    INDIVIDUAL = "individual"
    GROUP = "group"


@dataclass(frozen=True, slots=True)
class PersonFacts:
    """What the payment rules need to know of a person: nothing that identifies them."""

    id: int
    kind: PersonKind
    age: int
    priority: bool


def check_payment(
    policy: Policy,
    source: PaymentSource,
    recipient: PersonFacts,
    payer: PersonFacts | None,
    relation: Relation | None,
    payer_remote: bool = False,
) -> None:
    """Refuse a payment plan the city's rules do not allow.

    ``relation`` is how the recipient stands to the payer (the payer's PARENT …).
    ``payer_remote``: the relative's hours are kept in another district, which knows
    the family links and applies the relative rules when it decides the claim.
    """
    if recipient.kind is not PersonKind.INDIVIDUAL:
        raise InvalidArgument("a group volunteer cannot be the recipient of a service",
                              "RECIPIENT_IS_GROUP")
    if (payer is not None) != (source is PaymentSource.RELATIVE):
        raise InvalidArgument("a payer is named exactly when the relative's hours pay",
                              "PAYER_MISMATCH")
    if source is PaymentSource.OWN:
        if not recipient.priority and recipient.age < policy.own_min_age:
            raise PermissionDenied(
                f"own hours can be spent from age {policy.own_min_age} (city policy); "
                f"this person is {recipient.age}", "TOO_YOUNG_TO_REDEEM")
    elif source is PaymentSource.RELATIVE:
        assert payer is not None
        if payer.id == recipient.id:
            raise InvalidArgument("to spend one's own hours, use payment source 'own'",
                                  "PAYER_IS_RECIPIENT")
        if payer_remote:
            return
        if payer.kind is PersonKind.GROUP:
            if policy.group_hours_donate_only:
                raise PermissionDenied(
                    "group volunteers' hours can only be donated (city policy)",
                    "GROUP_HOURS_DONATE_ONLY")
            return  # a group may sponsor any recipient when the city allows it
        if relation is None or not relation.is_family:
            raise PermissionDenied(
                f"person {recipient.id} is not a registered relative of person {payer.id}; "
                "link them as family first", "NOT_A_RELATIVE")
        if relation not in policy.relative_kinds:
            raise PermissionDenied(
                f"the city's policy does not let hours be spent on a {relation.value}",
                "RELATION_NOT_ALLOWED")
        if recipient.age < policy.relative_min_age:
            raise PermissionDenied(
                f"a relative served with your hours must be at least {policy.relative_min_age}; "
                f"person {recipient.id} is {recipient.age}", "RELATIVE_TOO_YOUNG")
    elif source is PaymentSource.CITY_GRANT:
        if not recipient.priority:
            raise PermissionDenied("the city grant serves priority elders only",
                                   "NOT_A_PRIORITY_ELDER")
    elif (source is PaymentSource.DONATION_POOL and not recipient.priority
          and recipient.age < policy.own_min_age):
            raise PermissionDenied(
                f"donated hours serve priority elders and elders from {policy.own_min_age}",
                "TOO_YOUNG_TO_REDEEM")


def spendable_origins(source: PaymentSource, payer_kind: PersonKind) -> tuple[Origin, ...]:
    """Which of a person's origins a payment may draw on, in the order drawn.

    Granted minutes are the recipient's own and go first; a relative spends only
    what they earned themselves; group minutes only when the city allows.
    """
    if payer_kind is PersonKind.GROUP:
        return (Origin.GROUP,)
    if source is PaymentSource.OWN:
        return (Origin.GRANTED, Origin.INDIVIDUAL)
    if source is PaymentSource.RELATIVE:
        return (Origin.INDIVIDUAL,)
    return ()


def round_to_unit(minutes: int, unit: int) -> int:
    """Round service time once, to the nearest multiple of the unit, halves up."""
    if minutes < 0 or unit <= 0:
        raise InvalidArgument("service time and rounding unit must be positive")
    return (minutes + unit // 2) // unit * unit if unit > 1 else minutes


@dataclass(frozen=True, slots=True)
class DepositSplit:
    """Where a recorded service's minutes go."""

    banked: int  # to the volunteer
    to_pool: int  # over the stored-hours cap: to the donation pool, never dropped
    unbanked: int  # over the daily earning cap: recorded as service, not stored

    @property
    def total(self) -> int:
        return self.banked + self.to_pool + self.unbanked


def split_deposit(
    recorded: int, balance_total: int, cap: int, daily_cap: int, banked_today: int
) -> DepositSplit:
    """Apply the daily cap, then the stored-hours cap counted on the whole balance."""
    if recorded < 0 or balance_total < 0 or banked_today < 0:
        raise InvalidArgument("amounts are never negative")
    bankable = recorded if daily_cap == 0 else min(recorded, max(0, daily_cap - banked_today))
    room = max(0, cap - balance_total)
    banked = min(bankable, room)
    split = DepositSplit(banked=banked, to_pool=bankable - banked, unbanked=recorded - bankable)
    assert split.total == recorded
    return split


def check_text(label: str, text: str, limit: int = MAX_TEXT_CHARS) -> str:
    text = text.strip()
    if len(text) > limit:
        raise InvalidArgument(f"{label} is too long: at most {limit} characters")
    if any(ord(c) < 32 and c not in "\n\t" for c in text):
        raise InvalidArgument(f"{label} contains control characters")
    return text


# ------------------------------------------------------------------ mutual rating (满意度互评)

#: Stars of a rating: 1 to 5 (0 is stored for "not rated yet", never given).
MIN_STARS, MAX_STARS = 1, 5

#: The states in which the service was done, so the volunteer may rate the person served:
#: checked out (measured), verified, disputed while public, recorded. Not before the
#: service ended, and not once it was cancelled (never done, or voided after a dispute).
RATABLE = frozenset({S.CHECKED_OUT, S.VERIFIED, S.DISPUTED, S.RECORDED})


@dataclass(frozen=True, slots=True)
class Rating:
    """One side's rating of the other after a service: 1..5 stars and a comment, clean
    (``check_rating`` makes one from what a person sent)."""

    stars: int
    comment: str = ""

    def __post_init__(self) -> None:
        if type(self.stars) is not int or not MIN_STARS <= self.stars <= MAX_STARS:
            raise InvariantViolation(f"a rating has {MIN_STARS}..{MAX_STARS} stars, "
                                     f"not {self.stars!r}")
        if len(self.comment) > MAX_TEXT_CHARS or self.comment != self.comment.strip():
            raise InvariantViolation("a rating's comment is bounded and stripped")


def check_stars(stars: int) -> int:
    """Refuse a rating outside 1..5 stars (both sides rate on the same scale)."""
    if not MIN_STARS <= stars <= MAX_STARS:
        raise InvalidArgument(f"评分须为 {MIN_STARS} 到 {MAX_STARS} 星 (a rating is "
                              f"{MIN_STARS} to {MAX_STARS} stars, not {stars})", "BAD_RATING")
    return stars


def check_rating(stars: int, comment: str) -> Rating:
    """The rating a person sent, its comment bounded like every text (``check_text``)."""
    return Rating(check_stars(stars), check_text("comment", comment))


def stored_rating(stars: int, comment: str) -> Rating | None:
    """The rating an order holds (None: 0 stars, not rated yet)."""
    return Rating(stars, comment) if stars else None


def volunteer_rating_due(order_id: int, state: OrderState, given: Rating | None,
                         rating: Rating) -> bool:
    """Whether the volunteer's ``rating`` of the person served is to be stored now.

    One rating per order from the volunteer, given once the service was done
    (``RATABLE``). The very rating stored already is a retry: False, nothing changes
    (whatever became of the order since). A different one is refused ALREADY_RATED: a
    rating is a statement made once, not a value edited afterwards. Before the service
    was done, or once it was cancelled, ORDER_STATE."""
    if given is not None:
        if given == rating:
            return False
        raise FailedPrecondition(
            f"志愿者已评价过此订单 (order {order_id} was already rated {given.stars} by its "
            f"volunteer; a rating is given once and not changed afterwards)", "ALREADY_RATED")
    if state not in RATABLE:
        expected = " or ".join(s.label for s in OrderState if s in RATABLE)
        raise FailedPrecondition(
            f"服务完成后才能评价 (order {order_id} is {state.label}; the volunteer can rate "
            f"the person served only when it is {expected})", "ORDER_STATE")
    return True
