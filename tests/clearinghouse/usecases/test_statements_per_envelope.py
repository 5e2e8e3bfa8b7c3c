"""How many SQL statements a batch costs the clearinghouse's writer, per envelope, on
each engine: a batch of proposals and a batch of the completions that follow, each one
SubmitBatch in a write transaction of its own (all of it counted), by the engine's own
hook (the driver path's statements too, ADR 0011). Deterministic, unlike a city's
links, which batch as their timing falls (tests/federation/test_statements_per_claim.py).

What scales with the envelopes is their own writes (a proposal: the claim; a
completion: the claim and a move's new home), sent without waiting on PostgreSQL;
everything read is read once a batch, and the districts' positions are written once a
batch (ADR 0021).
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import event

from clearinghouse.domain.claims import ClaimKind, ClaimState
from clearinghouse.usecases import directory, submit, wire
from clearinghouse.usecases.app import ClearinghouseApp, Tx
from runtime.errors import Refusal
from tests.clearinghouse.conftest import registration
from tests.clearinghouse.usecases.test_claims import GL, JN, KEYS, finishing, proposal, ring
from tests.clearinghouse.usecases.test_submit import city, seal  # noqa: F401 - fixture

PEOPLE = 20
#: The most statements a batch may cost beyond its envelopes' own (the write lock and
#: stamp; the batch's reads of receipts, claims, districts and people; its executemany
#: of leaves, hashes, deliveries and receipts; this app signs no head), and the most
#: each envelope may add. Measured: 33 and 53 statements on SQLite, 32 and 52 on
#: PostgreSQL, for the 20 proposals and the 20 completions (52 and 72 while each claim
#: still moved its parties' positions with a statement of its own).
PER_BATCH = 14
PER_PROPOSAL = 1
PER_COMPLETION = 2


def _counted(app: ClearinghouseApp, batch: list[bytes]) -> tuple[int, list[object]]:
    counted = [0]

    def count(*_: Any) -> None:
        counted[0] += 1

    def run(tx: Tx) -> list[submit.Submitted | Refusal]:
        return submit.submit_batch(tx, batch, seal)

    event.listen(app.db.writer, "before_cursor_execute", count)
    try:  # as SubmitBatch runs it: a group of one, without savepoints (ADR 0021)
        results = app.execute_together(run, lambda _tx, done: done)
    finally:
        event.remove(app.db.writer, "before_cursor_execute", count)
    return counted[0], [r.reason if isinstance(r, Refusal) else r.claim.state  # type: ignore[union-attr]
                        for r in results]


def test_a_batch_costs_its_envelopes_own_writes_and_a_few_statements_more(
        city: ClearinghouseApp) -> None:  # noqa: F811 - the fixture
    refs = [hashlib.sha256(f"mover {i}".encode()).hexdigest() for i in range(PEOPLE)]
    for ref in refs:
        city.execute(directory.register, registration(ref, JN, JN, KEYS[JN]), ring(city))
    moves = [wire.to_bytes(proposal(i, city, kind=ClaimKind.MOVE, creditor=GL, debtor=JN,
                                    payer=ref, minutes=60, origins=[60]))
             for i, ref in enumerate(refs)]
    statements, outcomes = _counted(city, moves)
    assert outcomes == [ClaimState.ACCEPTED] * PEOPLE
    assert statements <= PER_BATCH + PER_PROPOSAL * PEOPLE, statements
    completions = [wire.to_bytes(finishing(i, posted=60, signer=GL)) for i in range(PEOPLE)]
    statements, outcomes = _counted(city, completions)
    assert outcomes == [ClaimState.COMPLETED] * PEOPLE
    assert statements <= PER_BATCH + PER_COMPLETION * PEOPLE, statements
