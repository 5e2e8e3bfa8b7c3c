"""A batch's people read together (``claims.look_up``, ``Repo.look_up_people``): what
each envelope then checks from memory must be what it would have read from the
database, as the batch's earlier envelopes left it, and a refused envelope must leave
nothing of itself in memory. SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib

import pytest

from clearinghouse.domain.claims import ClaimKind, ClaimState
from clearinghouse.storage.repo import Repo
from clearinghouse.usecases import claims, submit, wire
from clearinghouse.usecases.app import ClearinghouseApp, Tx
from runtime.errors import FailedPrecondition, Refusal
from tests.clearinghouse.conftest import registration
from tests.clearinghouse.usecases.test_claims import (
    ALICE,
    GL,
    JN,
    KEYS,
    QX,
    finishing,
    proposal,
    ring,
)
from tests.clearinghouse.usecases.test_submit import city, seal  # noqa: F401 - fixture
from timebank.envelope import Signed

BOB = hashlib.sha256(b"bob").hexdigest()
PEOPLE = (ALICE, BOB)
NODES = (JN, GL, QX)


def _as_read(tx: Tx) -> dict[str, object]:
    """What a proposal would check of each person and district, read by a repository
    that remembers nothing (the same transaction, so the same rows)."""
    return _checked(Repo(tx.repo.conn))


def _as_remembered(tx: Tx) -> dict[str, object]:
    return _checked(tx.repo)


def _submitted(app: ClearinghouseApp, batch: list[Signed],
               ) -> tuple[list[submit.Submitted | Refusal], object, object]:
    """Submit ``batch`` as one SubmitBatch; also what its transaction remembered at the
    end, and what a repository that remembers nothing reads there."""
    def run(tx: Tx) -> tuple[list[submit.Submitted | Refusal], object, object]:
        results = submit.submit_batch(tx, [wire.to_bytes(e) for e in batch], seal)
        return results, _as_remembered(tx), _as_read(tx)

    return app.execute(run)


def _checked(repo: Repo) -> dict[str, object]:
    found: dict[str, object] = {
        f"{ref[:6]} {creditor}->{debtor}": repo.proposal_context(ref, creditor, debtor)
        for ref in PEOPLE for creditor in NODES for debtor in NODES if creditor != debtor}
    for node in NODES:
        found[f"{node} admission"] = repo.admission(node)
        found[f"{node} last delivery"] = repo.last_delivery_seq(node)
    return found


def test_a_batch_checks_each_envelope_against_what_the_ones_before_it_did(
        city: ClearinghouseApp) -> None:  # noqa: F811 - the fixture
    city.execute(claims.set_net_debit_limit, GL, 200)
    batch = [
        registration(BOB, GL, GL, KEYS[GL]),
        proposal(1, city, kind=ClaimKind.MOVE, creditor=GL, debtor=JN, minutes=60,
                 origins=[60]),
        proposal(2, city, creditor=QX, debtor=JN),  # Alice is moving
        finishing(1, posted=60, signer=GL),  # Alice's home becomes 鼓楼区
        proposal(3, city, creditor=QX, debtor=JN),  # no longer her home
        proposal(4, city, creditor=QX, debtor=GL, minutes=100),
        # 鼓楼区 may owe 200, is owed 60 and owes 100 in open claims: 170 more is too
        # much, 160 just enough
        proposal(5, city, creditor=JN, debtor=GL, payer=BOB, minutes=170),
        proposal(6, city, creditor=JN, debtor=GL, payer=BOB, minutes=160),
    ]
    results, remembered, read = _submitted(city, batch)
    outcomes = [r.reason if isinstance(r, Refusal) else
                (r.claim.state if r.claim is not None else "registered") for r in results]
    assert outcomes == ["registered", ClaimState.ACCEPTED, "MOVE_IN_PROGRESS",
                        ClaimState.COMPLETED, "NOT_HOME_DISTRICT", ClaimState.PROPOSED,
                        "LIMIT_REACHED", ClaimState.PROPOSED]
    assert remembered == read
    standing = city.query(lambda tx: {n: tx.repo.standing(n) for n in NODES})
    assert (standing[GL].net_minutes, standing[GL].open_claims,
            standing[GL].open_debit_minutes) == (60, 2, 260)
    assert (standing[JN].net_minutes, standing[JN].open_claims,
            standing[JN].open_debit_minutes) == (-60, 1, 0)


def test_a_refused_envelope_leaves_nothing_of_itself_in_memory(
        city: ClearinghouseApp) -> None:  # noqa: F811 - the fixture
    move = proposal(1, city, kind=ClaimKind.MOVE, creditor=GL, debtor=JN, minutes=60,
                 origins=[60])
    queued = city.execute(claims.propose, proposal(9, city, creditor=QX, debtor=JN,
                                                   minutes=30), ring(city))
    assert queued.state is ClaimState.PROPOSED  # 江宁区 has a delivery waiting

    def run(tx: Tx) -> None:
        claims.look_up(tx, [move, proposal(2, city, payer=BOB, creditor=JN, debtor=GL)])
        before = _as_remembered(tx)
        with pytest.raises(FailedPrecondition), tx.repo.savepoint():
            moved = claims.propose(tx, move, ring(city))
            assert moved.state is ClaimState.ACCEPTED
            finished = claims.finish(tx, finishing(1, posted=60, signer=GL), ring(city))
            assert finished.state is ClaimState.COMPLETED
            assert tx.repo.directory_entry(ALICE).home_node_id == GL  # type: ignore[union-attr]
            raise FailedPrecondition("refused after all", "TEST")
        assert _as_remembered(tx) == before == _as_read(tx)
        assert tx.repo.directory_entry(ALICE).home_node_id == JN  # type: ignore[union-attr]
        with pytest.raises(Refusal), tx.repo.savepoint():  # looked up: must be nobody's
            claims.propose(tx, proposal(2, city, payer=BOB, creditor=JN, debtor=GL),
                           ring(city))

    city.execute(run)


def test_people_are_looked_up_between_envelopes_only(
        city: ClearinghouseApp) -> None:  # noqa: F811 - the fixture
    def run(tx: Tx) -> None:
        with pytest.raises(Exception, match="between envelopes"), tx.repo.savepoint():
            tx.repo.look_up_people([ALICE])

    city.execute(run)


def test_a_move_opened_before_the_batch_is_found_by_it(
        city: ClearinghouseApp) -> None:  # noqa: F811 - the fixture
    opened = city.execute(claims.propose, proposal(
        1, city, kind=ClaimKind.MOVE, creditor=GL, debtor=JN, minutes=60, origins=[60]),
        ring(city))
    assert opened.state is ClaimState.ACCEPTED
    batch = [proposal(2, city, creditor=QX, debtor=JN),  # Alice is moving
             finishing(1, posted=60, signer=GL),
             proposal(3, city, creditor=QX, debtor=GL)]  # and now lives at 鼓楼区
    results, remembered, read = _submitted(city, batch)
    assert [r.reason if isinstance(r, Refusal) else r.claim.state  # type: ignore[union-attr]
            for r in results] == ["MOVE_IN_PROGRESS", ClaimState.COMPLETED,
                                  ClaimState.PROPOSED]
    assert remembered == read


def test_positions_moved_in_a_batch_are_written_once_and_only_for_what_stayed(
        city: ClearinghouseApp) -> None:  # noqa: F811 - the fixture
    kept = proposal(1, city, creditor=QX, debtor=JN, minutes=100)
    undone = proposal(2, city, creditor=GL, debtor=JN, minutes=50)

    def run(tx: Tx) -> None:
        claims.look_up(tx, [kept, undone])
        with tx.repo.deferring():
            with tx.repo.savepoint():
                claims.propose(tx, kept, ring(city))
            with pytest.raises(FailedPrecondition), tx.repo.savepoint():
                claims.propose(tx, undone, ring(city))
                raise FailedPrecondition("refused after it wrote", "TEST")
        assert _as_remembered(tx) == _as_read(tx)

    city.execute(run)
    jn = city.query(lambda tx: tx.repo.standing(JN))
    assert jn is not None and (jn.open_claims, jn.open_debit_minutes) == (1, 100)


def test_standings_forgotten_in_the_middle_of_a_batch_still_count_its_claims(
        city: ClearinghouseApp) -> None:  # noqa: F811 - the fixture
    """A settlement message reaches the settlement rows, and the standings read together
    are forgotten then; the open debit this batch moved and has not written yet must
    still count against the debtor's limit."""
    city.execute(claims.set_net_debit_limit, JN, 200)
    first = proposal(1, city, creditor=QX, debtor=JN, minutes=150)
    second = proposal(2, city, creditor=GL, debtor=JN, minutes=100)  # 250 > 200

    def run(tx: Tx) -> str:
        claims.look_up(tx, [first, second])
        with tx.repo.deferring():
            with tx.repo.savepoint():
                claims.propose(tx, first, ring(city))
            tx.repo.settlements  # noqa: B018 - what a countersignature reaches
            with pytest.raises(Refusal) as refused, tx.repo.savepoint():
                claims.propose(tx, second, ring(city))
        assert _as_remembered(tx) == _as_read(tx)
        return refused.value.reason

    assert city.execute(run) == "LIMIT_REACHED"
    jn = city.query(lambda tx: tx.repo.standing(JN))
    assert jn is not None and (jn.open_claims, jn.open_debit_minutes) == (1, 150)
