"""A node's side of claims between districts: its claim, how the claim moves, and the
debtor's decision.

The clearinghouse keeps the authoritative claim (ADR 0004). A node keeps its own record
and moves it only on what it learns: its own decision, a receipt for its own message,
or a delivery. One rule makes the two ledgers agree: **a node posts its leg of a claim
only once it knows the clearinghouse completed it** — the creditor from the receipt for
its ``claim.finish``, the debtor from the delivery of that finish (ADR 0006). So the
node's states differ from the clearinghouse's by one, FINISHING (the creditor's
complete or void is on its way), and by role: ``TRANSITIONS`` says, for the creditor and
for the debtor, every state a claim may go to next (ADR 0012).

Pure functions only; ``node.usecases.claims`` applies them. Each change returns a new
``Claim``; a change the table does not allow is a bug (InvariantViolation), because
every change follows a message the clearinghouse has already checked.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from node.domain.consent import Cover, missing_text
from node.domain.ledger import Origin
from node.domain.orders import PaymentSource, PersonFacts, PersonKind, check_payment
from node.domain.policy import Policy, Relation
from runtime.errors import InvalidArgument, InvariantViolation, Refusal
from timebank.claimkinds import MAX_MOVE_MINUTES as MAX_MOVE_MINUTES
from timebank.claimkinds import MAX_REDEMPTION_MINUTES as MAX_REDEMPTION_MINUTES
from timebank.claimkinds import ClaimKind as ClaimKind
from timebank.ids import is_node_id

#: The longest reason code (the clearinghouse's, or its own refusal's) and detail kept.
MAX_REASON_CHARS = 32
MAX_DETAIL_CHARS = 500

_UUID7 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
_PERSON_REF = re.compile(r"[0-9a-f]{64}")



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
        return self in FINAL_STATES

    @property
    def open(self) -> bool:
        """Open claims hold (or are about to hold) minutes and count against limits."""
        return self not in FINAL_STATES


S = ClaimState
#: Every state a node's claim may go to next, by the node's part in it. A state that a
#: role's claims are never in is not listed for that role: a debtor never proposes (it
#: decides a redemption as it records it, and accepts its own move as it proposes it)
#: and never finishes (it posts when the creditor's finish is delivered to it).
TRANSITIONS: dict[Role, dict[ClaimState, frozenset[ClaimState]]] = {
    Role.CREDITOR: {
        # the debtor's decision is delivered, or the clearinghouse refuses the proposal
        S.PROPOSED: frozenset({S.ACCEPTED, S.REJECTED, S.EXPIRED}),
        # its complete or void goes to the clearinghouse
        S.ACCEPTED: frozenset({S.FINISHING, S.EXPIRED}),
        # the receipt for that finish says what the clearinghouse made of it
        S.FINISHING: frozenset({S.COMPLETED, S.VOIDED, S.EXPIRED}),
        S.COMPLETED: frozenset(),
        S.VOIDED: frozenset(),
        S.REJECTED: frozenset(),
        S.EXPIRED: frozenset(),
    },
    Role.DEBTOR: {
        # the creditor's finish is delivered, or (its own move) the proposal is refused
        S.ACCEPTED: frozenset({S.COMPLETED, S.VOIDED, S.REJECTED, S.EXPIRED}),
        S.COMPLETED: frozenset(),
        S.VOIDED: frozenset(),
        S.REJECTED: frozenset(),
        S.EXPIRED: frozenset(),
    },
}
#: The states a claim is first recorded in. The creditor proposes a redemption, and learns
#: of a move from its proposal, accepted (or, relayed as proposed, waiting for a decision);
#: the debtor decides a redemption as it records it and accepts its own move as it starts it.
OPENING: dict[Role, frozenset[ClaimState]] = {
    Role.CREDITOR: frozenset({S.PROPOSED, S.ACCEPTED}),
    Role.DEBTOR: frozenset({S.ACCEPTED, S.REJECTED}),
}
#: States no claim leaves, whatever its role; every other state is open.
FINAL_STATES = frozenset(s for s in ClaimState
                         if not any(table.get(s) for table in TRANSITIONS.values()))
OPEN_STATES = frozenset(ClaimState) - FINAL_STATES
#: The final states that carry a reason: every one but COMPLETED.
_ENDED_WITH_REASON = FINAL_STATES - {S.COMPLETED}


class Reason(StrEnum):
    """The clearinghouse's reason codes (``timebank.v1.ClaimReason`` without prefix)."""

    INSUFFICIENT_BALANCE = "INSUFFICIENT_BALANCE"
    NOT_A_RELATIVE = "NOT_A_RELATIVE"
    POLICY = "POLICY"
    UNKNOWN_PERSON = "UNKNOWN_PERSON"
    NOT_HOME_DISTRICT = "NOT_HOME_DISTRICT"
    NO_CONSENT = "NO_CONSENT"  # the payer has not consented to pay (ADR 0017)
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
                      relation: Relation | None, available: int, minutes: int,
                      consent: Cover | None = None) -> Decision:
    """Where the home district decides a redemption: the same who-may-redeem rules as at
    home (``check_payment``), then the payer's consent (``consent``: which of theirs
    covers it, for a relative's hours; ADR 0017), then the balance. ``payer`` None: not
    enrolled here.

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
    if not payer_is_recipient and (consent is None or not consent.covered):
        return Decision(Reason.NO_CONSENT, missing_text(consent.missing if consent else "none"))
    if available < minutes:
        return Decision(Reason.INSUFFICIENT_BALANCE,
                        f"{available} min available, {minutes} min claimed")
    return ACCEPT


#: Why a payment from another district failed, as the serving district's operator reads
#: it: Chinese first, then English ({d}: the district asked). Keyed by the claim's reason
#: code (the clearinghouse's or the home district's).
_PAYMENT_LOST: dict[str, tuple[str, str]] = {
    "INSUFFICIENT_BALANCE": ("付款人的可用时间不足",
                             "the payer's hours available in district {d} do not cover it"),
    "NOT_A_RELATIVE": ("付款人与受助人的亲属关系未在其户籍区登记",
                       "district {d} has no family link between the payer and the person "
                       "served; link them there first"),
    "POLICY": ("付款不符合城市政策", "district {d} refused it under the city's rules"),
    "UNKNOWN_PERSON": ("城市目录中没有付款人",
                       "no district has registered the payer in the city directory"),
    "NO_CONSENT": ("付款人未同意为该服务付款",
                   "the payer has not consented, in district {d} where their hours are, to "
                   "pay for this service; once they consent there, request it again"),
    "NOT_HOME_DISTRICT": ("付款人的时间已不在该区",
                          "district {d} no longer keeps the payer's hours"),
    "MOVE_IN_PROGRESS": ("付款人正在迁移户籍区，时间在途",
                         "the payer is moving to another district and their hours are in "
                         "transit; request the service again once the move is done"),
    "EXPIRED": ("付款未在期限内完成", "the payment was not settled before its deadline"),
    "LIMIT_REACHED": ("付款人户籍区的结算额度已满",
                      "district {d} has reached its net debit limit with the city"),
    "CANCELLED": ("付款已撤回", "the payment was withdrawn"),
}


def payment_lost_reason(reason: str, district: str, state: str, detail: str = "") -> str:
    """Why an order's payment from ``district`` failed, in words an operator reads:
    Chinese first, then English, then the stable code in brackets."""
    zh, en = _PAYMENT_LOST.get(reason, ("付款被拒绝", "district {d} refused the payment"))
    said = f"{en.format(d=district)}; payment {state}" + (f": {detail}" if detail else "")
    return f"{zh} ({said}) [{reason or state.upper()}]"


#: Why the clearinghouse has not taken a claim's message yet (a temporary refusal, or the
#: call's status), as an operator reads it: Chinese first, then English ({d}: the other
#: district). Keyed by the stable reason the node keeps with the waiting message.
_WAITING: dict[str, tuple[str, str]] = {
    "LIMIT_REACHED": ("付款人户籍区的结算额度已满，清算中心暂不受理",
                      "district {d} has reached its net debit limit with the city; the "
                      "clearinghouse takes the claim once settlement or the bureau "
                      "(`timebank clearinghouse limit`) makes room"),
    "BUSY": ("清算中心繁忙", "the clearinghouse is busy"),
    "DEBTOR_OFFLINE": ("对方区节点暂时离线", "district {d}'s node is offline for now"),
    "UNAVAILABLE": ("无法连接清算中心", "the clearinghouse cannot be reached"),
    "DEADLINE_EXCEEDED": ("清算中心未及时应答", "the clearinghouse did not answer in time"),
}


def waiting_reason(reason: str, district: str) -> str:
    """Why a claim's message waits, in words an operator reads: Chinese first, then
    English, then the stable code in brackets (the clearinghouse's own message is kept
    beside it, as the detail)."""
    zh, en = _WAITING.get(reason, ("清算中心暂未受理", "the clearinghouse has not taken it yet"))
    return f"{zh} ({en.format(d=district)}) [{reason or 'RETRYING'}]"


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


def new_claim_id(now_ms: int, rand: bytes | None = None) -> str:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, version 7, the RFC variant, random
    bits; lowercase canonical, as the clearinghouse requires. Time-ordered, so claim ids
    sort by when they were made. The time is the transaction's (the injected clock's),
    never read here."""
    ms = now_ms
    if not 0 <= ms < 1 << 48:
        raise InvalidArgument("a UUIDv7's time is 48-bit milliseconds")
    r = secrets.token_bytes(10) if rand is None else rand
    if len(r) != 10:
        raise InvalidArgument("a UUIDv7 takes 10 random bytes")
    b = bytearray(ms.to_bytes(6, "big") + r)
    b[6] = 0x70 | (b[6] & 0x0F)
    b[8] = 0x80 | (b[8] & 0x3F)
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# ------------------------------------------------------------------ the claim


def _aware(at: datetime) -> bool:
    return isinstance(at, datetime) and at.utcoffset() is not None


@dataclass(frozen=True, slots=True)
class Claim:
    """This node's record of a claim: its part in it and what it knows of its progress.

    Every claim is checked as it is built, when it is made, changed or loaded: its state
    is one its role's claims can be in, and its amounts, reason and references agree
    with that state. A claim that does not is a bug, here or in the database.
    """

    claim_id: str
    kind: ClaimKind
    role: Role
    counterparty: str  # the other district's node id
    person_ref: str  # whose hours: the payer of a redemption, or the person who moves
    minutes: int  # claimed, and held by the debtor once accepted
    state: ClaimState
    expires_at: datetime
    created_at: datetime
    updated_at: datetime
    recipient_ref: str = ""  # a redemption's person served, when not the payer
    origins: tuple[tuple[Origin, int], ...] = ()  # a move's balance by origin, in order
    #: What the creditor's finish asks to post (0: a void), then what was posted.
    posted_minutes: int = 0
    reason: str = ""  # set exactly when rejected, voided or expired: the reason code
    detail: str = ""
    order_id: int | None = None  # the creditor's order a redemption pays for
    person_id: int | None = None  # the person here whose hours these are, once known
    #: A move: the person is a priority elder (重点老人) at the old home, which the new
    #: home takes on with the balance.
    person_priority: bool = False

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem is not None:
            raise InvariantViolation(f"claim {str(self.claim_id)[:36]!r}: {problem}")

    def _problem(self) -> str | None:
        """What is wrong with this claim, if anything."""
        if not (isinstance(self.claim_id, str) and _UUID7.fullmatch(self.claim_id)):
            return "a claim id is a lowercase UUIDv7"
        if not (isinstance(self.kind, ClaimKind) and isinstance(self.role, Role)
                and isinstance(self.state, ClaimState)):
            return f"unknown kind, role or state {self.kind!r}, {self.role!r}, {self.state!r}"
        if self.state not in TRANSITIONS[self.role]:
            return f"a {self.role.value}'s claim is never {self.state.value}"
        if not (is_node_id(self.counterparty)):
            return f"the counterparty {str(self.counterparty)[:16]!r} is not a node id"
        if not _PERSON_REF.fullmatch(self.person_ref):
            return "a PersonRef is 64 lowercase hexadecimal characters"
        if self.recipient_ref and (self.kind is ClaimKind.MOVE
                                   or not _PERSON_REF.fullmatch(self.recipient_ref)):
            return "a recipient is a redemption's, as a PersonRef"
        if type(self.minutes) is not int or not 1 <= self.minutes <= self.kind.max_minutes:
            return (f"a {self.kind.value} claims 1..{self.kind.max_minutes} min, "
                    f"not {self.minutes!r}")
        if (self.kind is ClaimKind.MOVE) != bool(self.origins) or any(
                not isinstance(o, Origin) or type(m) is not int or m < 1
                for o, m in self.origins) or (
                self.origins and sum(m for _, m in self.origins) != self.minutes):
            return "a move's origins, and only a move's, are positive minutes adding up to it"
        if self.person_priority is not False and (self.person_priority is not True
                                                  or self.kind is not ClaimKind.MOVE):
            return "a move, and only a move, carries the person's priority status"
        if (self.order_id is not None) != (self.kind is ClaimKind.REDEMPTION
                                           and self.role is Role.CREDITOR):
            return "a creditor's redemption, and only it, pays for an order here"
        posted = self._posted_problem()
        if posted is not None:
            return posted
        if bool(self.reason) != (self.state in _ENDED_WITH_REASON) or (
                self.state is S.EXPIRED and self.reason != Reason.EXPIRED):
            return f"{self.state.value} with reason {self.reason[:40]!r}"
        if len(self.reason) > MAX_REASON_CHARS or not self.reason.isascii():
            return f"a reason is a code of at most {MAX_REASON_CHARS} ASCII characters"
        if len(self.detail) > MAX_DETAIL_CHARS:
            return f"a detail is at most {MAX_DETAIL_CHARS} characters"
        if not (_aware(self.expires_at) and _aware(self.created_at)
                and _aware(self.updated_at)):
            return "its times carry a time zone"
        return None

    def _posted_problem(self) -> str | None:
        """Only a creditor's finish and a completion carry minutes to post, and a move
        posts all of them or (a void) none."""
        posted = self.posted_minutes
        if type(posted) is not int or not 0 <= posted <= self.minutes:
            return f"posts {posted!r} of {self.minutes} min"
        if self.state is S.COMPLETED and posted == 0:
            return "completed posting nothing"
        if self.state not in (S.COMPLETED, S.FINISHING) and posted:
            return f"{self.state.value} with {posted} min to post"
        if self.kind is ClaimKind.MOVE and posted not in (0, self.minutes):
            return f"a move posts its whole {self.minutes} min, not {posted}"
        return None

    @property
    def label(self) -> str:
        return f"{self.kind.value} claim {self.claim_id}"


def may_become(claim: Claim, state: ClaimState) -> bool:
    """Whether ``TRANSITIONS`` lets ``claim`` go to ``state`` next."""
    return state in TRANSITIONS[claim.role][claim.state]


def _opened(claim: Claim) -> Claim:
    if claim.state not in OPENING[claim.role] or claim.updated_at != claim.created_at:
        raise InvariantViolation(f"a {claim.role.value} does not record a new claim "
                                 f"{claim.state.value}")
    return claim


def _changed(claim: Claim, state: ClaimState, now: datetime, *, posted: int = 0,
             reason: str = "", detail: str | None = None,
             person_id: int | None = None) -> Claim:
    """The one way a recorded claim changes state: only as ``TRANSITIONS`` allows."""
    if not may_become(claim, state):
        raise InvariantViolation(
            f"{claim.label} is {claim.state.value}; a {claim.role.value}'s claim never "
            f"goes from there to {state.value}")
    after = replace(claim, state=state, updated_at=now, posted_minutes=posted, reason=reason,
                    detail=claim.detail if detail is None else detail,
                    person_id=claim.person_id if person_id is None else person_id)
    assert after.state in TRANSITIONS[claim.role][claim.state]
    return after


# Where a claim is first recorded: one function for each way this node learns of it.

def redemption_proposed(claim_id: str, home: str, payer_ref: str, recipient_ref: str,
                        minutes: int, order_id: int, payer_id: int, now: datetime,
                        expires_at: datetime) -> Claim:
    """The serving district (creditor) asks the payer's home for an order's minutes."""
    return _opened(Claim(claim_id, ClaimKind.REDEMPTION, Role.CREDITOR, home, payer_ref,
                         minutes, S.PROPOSED, expires_at, now, now,
                         recipient_ref=recipient_ref, order_id=order_id, person_id=payer_id))


def redemption_decided(claim_id: str, creditor: str, payer_ref: str, recipient_ref: str,
                       minutes: int, payer_id: int | None, decision: Decision, now: datetime,
                       expires_at: datetime) -> Claim:
    """The payer's home (debtor) records a relayed redemption as it decides it."""
    state = S.ACCEPTED if decision.accept else S.REJECTED
    return _opened(Claim(claim_id, ClaimKind.REDEMPTION, Role.DEBTOR, creditor, payer_ref,
                         minutes, state, expires_at, now, now, recipient_ref=recipient_ref,
                         reason="" if decision.reason is None else decision.reason.value,
                         detail=decision.detail, person_id=payer_id))


def move_started(claim_id: str, new_home: str, person_ref: str,
                 origins: Iterable[tuple[Origin, int]], person_id: int, now: datetime,
                 expires_at: datetime, priority: bool = False) -> Claim:
    """The old home (debtor) sends a whole balance, accepting the move as it proposes it,
    and says whether the person is a priority elder (重点老人) here."""
    carried = tuple(origins)
    return _opened(Claim(claim_id, ClaimKind.MOVE, Role.DEBTOR, new_home, person_ref,
                         sum(m for _, m in carried), S.ACCEPTED, expires_at, now, now,
                         origins=carried, person_id=person_id, person_priority=priority))


def move_relayed(claim_id: str, old_home: str, person_ref: str, minutes: int,
                 origins: Iterable[tuple[Origin, int]], person_id: int | None, accepted: bool,
                 now: datetime, expires_at: datetime, priority: bool = False) -> Claim:
    """The new home (creditor) learns of a move from its relayed proposal; ``priority``:
    the old home's word that the person is a priority elder, taken on at completion."""
    return _opened(Claim(claim_id, ClaimKind.MOVE, Role.CREDITOR, old_home, person_ref,
                         minutes, S.ACCEPTED if accepted else S.PROPOSED, expires_at, now,
                         now, origins=tuple(origins), person_id=person_id,
                         person_priority=priority))


# The changes of a recorded claim, each after what this node decided or learnt.

def accept(claim: Claim, now: datetime) -> Claim:
    """The creditor learns that the debtor holds the minutes."""
    return _changed(claim, S.ACCEPTED, now)


def reject(claim: Claim, now: datetime, reason: str, detail: str) -> Claim:
    """The debtor refused it, or the clearinghouse refused its proposal."""
    return _changed(claim, S.REJECTED, now, reason=reason, detail=detail)


def finish(claim: Claim, now: datetime, posted: int, detail: str | None = None,
           person_id: int | None = None) -> Claim:
    """The creditor sends its complete (``posted`` minutes) or its void (``posted`` 0)."""
    return _changed(claim, S.FINISHING, now, posted=posted, detail=detail,
                    person_id=person_id)


def complete(claim: Claim, now: datetime, posted: int, detail: str | None = None) -> Claim:
    """The clearinghouse completed it: this node has posted its leg."""
    return _changed(claim, S.COMPLETED, now, posted=posted, detail=detail)


def void(claim: Claim, now: datetime, reason: str) -> Claim:
    """The creditor withdrew it (or could not take a move in); nothing is posted."""
    return _changed(claim, S.VOIDED, now, reason=reason)


def expire(claim: Claim, now: datetime) -> Claim:
    """The clearinghouse's deadline passed with the claim open; holds are released."""
    return _changed(claim, S.EXPIRED, now, reason=Reason.EXPIRED.value)


def annotate(claim: Claim, now: datetime, detail: str) -> Claim:
    """Note something about an open claim without moving it (its order was cancelled
    before the debtor answered: the answer settles it)."""
    if claim.state.final:
        raise InvariantViolation(f"{claim.label} is {claim.state.value}; it is not noted on")
    return replace(claim, updated_at=now, detail=detail)


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """A message this node owes the clearinghouse, as its outbox keeps it: written in the
    transaction of the change that needs it, sent by the link until a receipt or a final
    refusal comes back (ADR 0006)."""

    id: int
    kind: str
    claim_id: str | None
    envelope: bytes  # the unsigned body; the link signs it as it sends it
    created_at: datetime
    attempts: int
    next_attempt_at: datetime
    done_at: datetime | None
    outcome: str  # "", "receipt", "refused"
    detail: str
    #: The stable reason of its last temporary refusal (LIMIT_REACHED, BUSY …), or the
    #: status of its last failed call (UNAVAILABLE …); "" until one.
    reason: str = ""
