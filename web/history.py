"""A person's history as pages list it (their own page, the desk's page of them, a
passbook): each ledger entry's time, what it was and the change it made to their
balance. One copy of the entry and of the words for what it was."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from timebank.v1 import node_pb2 as pb
from web.app import Pages
from web.sessions import Session

#: Ledger entry kinds (``node.domain.ledger.EntryKind``) a page names; a service says
#: whether it was given or received by the sign of the change.
KINDS = frozenset({"donation", "grant", "reversal", "claim"})
#: The latest entries a page lists.
HISTORY_SIZE = 30


@dataclass(frozen=True, slots=True)
class Entry:
    """One of a person's ledger entries, as a page lists it."""

    seq: int
    at: datetime
    kind_key: str  # the catalogue's key for what it was
    delta: int  # the change to this person's balance, in minutes


def kind_key(kind: str, delta: int) -> str:
    """The catalogue's key for what a ledger entry of ``kind`` was."""
    if kind == "service":
        return "kind_service_earned" if delta >= 0 else "kind_service_paid"
    return f"kind_{kind}" if kind in KINDS else "kind_other"


#: Every key ``kind_key`` may choose (the catalogue test checks them).
KIND_KEYS = frozenset({*(f"kind_{k}" for k in KINDS), "kind_service_earned",
                       "kind_service_paid", "kind_other"})


def entry_of(entry: pb.HistoryEntry) -> Entry:
    return Entry(entry.transaction.seq, entry.transaction.at.ToDatetime(tzinfo=UTC),
                 kind_key(entry.transaction.kind, entry.delta_minutes), entry.delta_minutes)


async def latest(pages: Pages, person_id: int, session: Session) -> list[Entry]:
    """The person's ``HISTORY_SIZE`` latest entries, newest first: one call, read newest
    first by the node, however long the history."""
    found = await pages.ask("GetHistory", pb.GetHistoryRequest(
        person_id=person_id, limit=HISTORY_SIZE, newest_first=True), session)
    return [entry_of(e) for e in found.entries]
