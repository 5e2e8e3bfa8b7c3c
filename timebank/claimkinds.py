"""The kinds of claim between districts and the most minutes each may carry.

Both sides of the protocol bound a claim by the same numbers, so they are contract: a
node that proposed what the clearinghouse must refuse would wait for ever on a claim
that cannot be made (ADR 0004, ADR 0012).
"""

from __future__ import annotations

from enum import StrEnum

from timebank.minutes import MAX_CAP_MINUTES, MINUTES_PER_DAY

#: A redemption pays for one order: at most one day of service, the node's order limit.
MAX_REDEMPTION_MINUTES = MINUTES_PER_DAY
#: A move hands over a whole balance, which no city's stored-hours cap lets pass the
#: largest cap the policy format permits. The clearinghouse holds no city policy, so both
#: sides take that bound: a city that raises ``cap_hours`` (up to 100,000) can still move
#: every balance.
MAX_MOVE_MINUTES = MAX_CAP_MINUTES


class ClaimKind(StrEnum):
    REDEMPTION = "redemption"  # serving district (creditor) ← home district (debtor)
    MOVE = "move"  # old home (debtor) → new home (creditor)

    @property
    def max_minutes(self) -> int:
        return MAX_MOVE_MINUTES if self is ClaimKind.MOVE else MAX_REDEMPTION_MINUTES
