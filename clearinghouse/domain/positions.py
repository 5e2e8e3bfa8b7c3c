"""Positions between districts and the net debit limit.

A completed claim moves its posted minutes from the debtor to the creditor: the creditor's
net position rises, the debtor's falls, so positions always sum to zero. The gross
bilateral matrix keeps who is owed by whom; settlement reads both. A district may be a
net consumer of other districts' service only down to the net debit limit the bureau
sets for it. Integers (minutes) only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from clearinghouse.domain.claims import (
    MAX_CLAIM_MINUTES,
    Claim,
    ClaimState,
    check_node_id,
)
from runtime.errors import InvalidArgument, InvariantViolation, ResourceExhausted
from timebank.minutes import MAX_MINUTES, format_hours

#: The highest net debit limit the bureau may set: any real limit is far below.
MAX_NET_DEBIT_LIMIT = MAX_MINUTES
#: The net debit limit a newly admitted district starts with, unless the bureau says
#: otherwise (`timebank clearinghouse admit --net-debit-limit`): 1,000 hours, room for
#: a district's elders to redeem some weeks of service elsewhere before settlement. The
#: city policy names no limit, so the bureau's operators see and change this one
#: (`timebank clearinghouse limit`); 0 would refuse every redemption (LIMIT_REACHED).
DEFAULT_NET_DEBIT_LIMIT_MINUTES = 60_000
#: The default share of its limit at which a district's operator is warned.
NEAR_LIMIT_PERCENT = 80


@dataclass(frozen=True, slots=True)
class Flow:
    """Minutes a completed claim moved: the debtor owes the creditor."""

    creditor: str
    debtor: str
    minutes: int

    def __post_init__(self) -> None:
        check_node_id("creditor", self.creditor)
        check_node_id("debtor", self.debtor)
        if self.creditor == self.debtor:
            raise InvalidArgument("a flow is between two districts", "CLAIM_TO_SELF")
        if isinstance(self.minutes, bool) or not 1 <= self.minutes <= MAX_CLAIM_MINUTES:
            raise InvalidArgument(f"a flow is 1 to {MAX_CLAIM_MINUTES} minutes",
                                  "MINUTES_OUT_OF_RANGE")


def flows_of(claims: Iterable[Claim]) -> list[Flow]:
    """The flows of the completed claims among these; nothing else moves a position."""
    flows = []
    for claim in claims:
        if claim.state is ClaimState.COMPLETED:
            assert claim.posted_minutes is not None
            flows.append(Flow(claim.creditor, claim.debtor, claim.posted_minutes))
    return flows


@dataclass(frozen=True, slots=True)
class Positions:
    """Each district's net position and the gross bilateral totals."""

    net: Mapping[str, int]  # node id → minutes; + owed to it, − it owes
    gross: Mapping[tuple[str, str], int]  # (creditor, debtor) → minutes

    def of(self, node_id: str) -> int:
        return self.net.get(node_id, 0)


def positions(flows: Iterable[Flow]) -> Positions:
    net: Counter[str] = Counter()
    gross: Counter[tuple[str, str]] = Counter()
    for flow in flows:
        net[flow.creditor] += flow.minutes
        net[flow.debtor] -= flow.minutes
        gross[(flow.creditor, flow.debtor)] += flow.minutes
    if sum(net.values()) != 0:
        raise InvariantViolation(f"net positions sum to {sum(net.values())}, not zero")
    for node_id, position in net.items():
        owed = sum(m for (c, _), m in gross.items() if c == node_id)
        owes = sum(m for (_, d), m in gross.items() if d == node_id)
        if position != owed - owes:
            raise InvariantViolation(f"district {node_id}: net {position} is not gross "
                                     f"{owed} owed less {owes} owing")
    return Positions(net=dict(net), gross=dict(gross))


def open_debits(claims: Iterable[Claim], node_id: str) -> int:
    """Minutes the district may yet owe: its open claims as debtor, at their full amount.

    A limit counts these as if they had completed, so open claims together can never
    carry a district past its limit.
    """
    return sum(c.minutes for c in claims if c.debtor == node_id and c.state.open)


def _check_limit_value(net_debit_limit: int) -> None:
    if isinstance(net_debit_limit, bool) or not 0 <= net_debit_limit <= MAX_NET_DEBIT_LIMIT:
        raise InvalidArgument(
            f"a net debit limit is 0 to {MAX_NET_DEBIT_LIMIT} minutes, not {net_debit_limit}",
            "BAD_LIMIT")


def check_limit(position_after: int, net_debit_limit: int, node_id: str = "") -> None:
    """Refuse what would take a district below −limit (LIMIT_REACHED: temporary).

    ``position_after`` is the district's net position less its open debits, less the
    claim being checked. Settlement, or the bureau raising the limit, makes room again.
    """
    _check_limit_value(net_debit_limit)
    if position_after < -net_debit_limit:
        who = f"district {node_id}" if node_id else "the district"
        raise ResourceExhausted(
            f"{who} would owe {format_hours(-position_after)} net, over its net debit limit "
            f"of {format_hours(net_debit_limit)}; wait for settlement or ask the bureau to "
            "raise the limit", "LIMIT_REACHED")


def near_limit(position: int, net_debit_limit: int, percent: int = NEAR_LIMIT_PERCENT) -> bool:
    """Whether a district owing ``-position`` has used ``percent``% of its limit or more.

    The threshold is a whole percentage (integers only). A district that owes nothing is
    never near its limit.
    """
    _check_limit_value(net_debit_limit)
    if isinstance(percent, bool) or not 1 <= percent <= 100:
        raise InvalidArgument(f"the warning threshold is 1 to 100 percent, not {percent}",
                              "BAD_LIMIT")
    return position < 0 and -position * 100 >= net_debit_limit * percent
