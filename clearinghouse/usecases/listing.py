"""The claims as the bureau's console lists them (``ListClaims``): newest first, in one
state or of one district, a page at a time.

Newest first is by claim id, descending: a claim id is a UUIDv7 its proposer chose, whose
leading 48 bits are the proposer's clock in milliseconds, so the order is the order the
claims were made in (as the proposers' clocks said: a district whose clock ran ahead
sorts its claims a little early; ``proposed_at`` is the clearinghouse's own time). The
cursor is the last claim id of a page: the next page is the claims whose id sorts below
it, which stays right while claims are added (they sort above) and costs one short walk
down an index whatever the page (``Repo.claims_newest_first``). A page holds
``DEFAULT_PAGE`` claims unless asked for fewer or more, never more than ``MAX_PAGE``.

Every input is checked before anything is read; a filter that cannot be met is
INVALID_ARGUMENT with a stable reason (BAD_STATE, BAD_NODE_ID, BAD_CURSOR). A listing
names districts and minutes, never a person (no PersonRef leaves).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from itertools import pairwise

from clearinghouse.domain.claims import ClaimKind, ClaimState
from clearinghouse.storage.repo import ListedClaim
from clearinghouse.usecases import wire
from clearinghouse.usecases.app import Tx
from runtime.errors import InvalidArgument
from timebank.ids import is_node_id
from timebank.settlement import is_claim_id
from timebank.v1 import clearing_pb2 as pb

DEFAULT_PAGE = 50
MAX_PAGE = 200
_STATES = {wire.wire_state(s): s for s in ClaimState}
_KINDS = {ClaimKind.REDEMPTION: pb.CLAIM_KIND_REDEMPTION, ClaimKind.MOVE: pb.CLAIM_KIND_MOVE}


@dataclass(frozen=True, slots=True)
class ClaimQuery:
    """What a page asks for, checked: a state (None: every state), a district (None:
    every district), the claim id the page starts below (None: the newest) and how many
    claims it holds (1 to ``MAX_PAGE``)."""

    state: ClaimState | None
    node_id: str | None
    before: str | None
    size: int

    def __post_init__(self) -> None:
        assert self.node_id is None or is_node_id(self.node_id), self.node_id
        assert self.before is None or is_claim_id(self.before), self.before
        assert not isinstance(self.size, bool) and 1 <= self.size <= MAX_PAGE, self.size


def query_of(msg: pb.ClearinghouseServiceListClaimsRequest) -> ClaimQuery:
    """The request, checked (INVALID_ARGUMENT naming what is wrong)."""
    state: ClaimState | None = None
    if msg.state != pb.CLAIM_STATE_UNSPECIFIED:
        state = _STATES.get(msg.state)
        if state is None:
            known = ", ".join(s.value for s in ClaimState)
            raise InvalidArgument(
                f"未知的账目状态 {msg.state} / unknown claim state {msg.state}: ask for one of "
                f"{known}, or none for every state", "BAD_STATE")
    if msg.node_id and not is_node_id(msg.node_id):
        raise InvalidArgument(
            f"区编号是六位数字，不是 {msg.node_id[:16]!r} / a district is named by its six-digit "
            f"node id, not {msg.node_id[:16]!r} (none for every district)", "BAD_NODE_ID")
    if msg.before_claim_id and not is_claim_id(msg.before_claim_id):
        raise InvalidArgument(
            "before_claim_id 不是账目编号 / before_claim_id is not a claim id: give the "
            "next_before_claim_id of the page before, or nothing for the newest claims",
            "BAD_CURSOR")
    size = DEFAULT_PAGE if msg.page_size == 0 else min(msg.page_size, MAX_PAGE)
    return ClaimQuery(state, msg.node_id or None, msg.before_claim_id or None, size)


def _summary(listed: ListedClaim) -> pb.ClaimSummary:
    c = listed.claim
    out = pb.ClaimSummary(
        claim_id=c.claim_id, kind=_KINDS[c.kind], creditor_node_id=c.creditor,
        debtor_node_id=c.debtor, minutes=c.minutes, state=wire.wire_state(c.state),
        reason=wire.wire_reason(c.reason), posted_minutes=c.posted_minutes or 0)
    assert c.updated_at is not None
    out.proposed_at.FromDatetime(c.created_at.astimezone(UTC))
    out.state_at.FromDatetime(c.updated_at.astimezone(UTC))
    out.expires_at.FromDatetime(c.expires_at.astimezone(UTC))
    if listed.completed_index is not None:
        out.completed_index = listed.completed_index
    if listed.settled_serial is not None:
        out.settled_serial = listed.settled_serial
    return out


def page(tx: Tx, query: ClaimQuery) -> pb.ClearinghouseServiceListClaimsResponse:
    """One page of claims, newest first, and the cursor of the next ("" when this one is
    the last): one more claim than the page holds is read to know."""
    found = tx.repo.claims_newest_first(state=query.state, party=query.node_id,
                                        before=query.before, limit=query.size + 1)
    shown = found[:query.size]
    assert all(a.claim.claim_id > b.claim.claim_id for a, b in pairwise(shown))
    assert all(query.state in (None, c.claim.state) and query.node_id in (
        None, c.claim.creditor, c.claim.debtor) for c in shown)
    more = len(found) > query.size
    return pb.ClearinghouseServiceListClaimsResponse(
        claims=[_summary(c) for c in shown],
        next_before_claim_id=shown[-1].claim.claim_id if more else "")


__all__ = ["DEFAULT_PAGE", "MAX_PAGE", "ClaimQuery", "page", "query_of"]
