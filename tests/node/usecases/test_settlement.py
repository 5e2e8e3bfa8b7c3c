"""A district's side of settlement on its own database (SQLite and PostgreSQL), against
statements signed with real keys: it countersigns what its ledger bears out, disputes
exactly the claims that differ, refuses what does not verify without changing anything,
and posts a final statement once, returning the clearing account to what is carried
forward."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from node.domain.ledger import SETTLEMENT, EntryKind
from node.domain.settlement import SettlementState
from node.usecases import settlement
from node.usecases.app import NodeApp, Tx
from runtime.errors import FailedPrecondition
from tests.helpers import assert_ledger_ok, snapshot, staff
from tests.node import settlement_support as kit
from tests.node.settlement_support import GL, JN, QX
from timebank import settlement as contract
from timebank.v1 import clearing_pb2 as pb


def _seen(app: NodeApp, envelope: bytes) -> settlement.Verified:
    verified = settlement.verify_statement(envelope, kit.LOG_KEYS, kit.rosters)
    app.execute(settlement.record_seen, verified)
    return verified


def _outbox(app: NodeApp) -> list[tuple[str, bytes]]:
    def read(tx: Tx) -> list[tuple[str, bytes]]:
        return [(m.kind, m.envelope) for m in tx.repo.outbox.due(tx.now, 100)]
    return app.query(read)


def _period(app: NodeApp) -> tuple[list[contract.SettledClaim], contract.SettledClaim]:
    """A period's claims: 江宁 served 鼓楼's people twice and its own people spent 45 min
    in 栖霞; 鼓楼 and 栖霞 settled one between them. Then one more claim completed here
    after the period's end (carried forward)."""
    claims = [kit.completed(app, GL, 60, creditor=True),
              kit.completed(app, GL, 30, creditor=True),
              kit.completed(app, QX, 45, creditor=False),
              kit.between(GL, QX, 20)]
    later = kit.completed(app, QX, 15, creditor=False)
    return claims, later


def test_a_district_countersigns_a_line_its_ledger_bears_out(node_app: NodeApp) -> None:
    claims, _ = _period(node_app)
    envelope = kit.statement(claims)
    verified = _seen(node_app, envelope)
    line = verified.statement.sheet.line(JN)
    assert line is not None and line.net_minutes == 60 + 30 - 45
    found = node_app.query(settlement.unsettled_candidates, [c.claim_id for c in kit.mine(claims)])
    assert len(found.claim_ids) == 1 and not found.more  # the later claim, to be proven

    record = node_app.execute(settlement.decide, 1, 1, kit.mine(claims))

    assert record.state == SettlementState.COUNTERSIGNED and record.differences == 0
    [(kind, body)] = _outbox(node_app)
    assert kind == contract.COUNTERSIGN_KIND and body == record.answer
    answer = pb.SettlementCountersign.FromString(body)
    assert (answer.node_id, answer.serial, answer.revision) == (JN, 1, 1)
    assert answer.statement_sha256 == kit.statement_id(envelope) == verified.identity
    again = node_app.execute(settlement.decide, 1, 1, kit.mine(claims))
    assert again == record and len(_outbox(node_app)) == 1  # answered once


def test_a_dispute_names_exactly_the_claims_that_differ(node_app: NodeApp) -> None:
    agreed = kit.completed(node_app, GL, 60, creditor=True)
    shorter = kit.completed(node_app, GL, 30, creditor=True, posted=25)  # the ledger: 25
    settled = kit.completed(node_app, QX, 40, creditor=False)
    omitted = kit.completed(node_app, QX, 10, creditor=False)
    stranger = kit.between(GL, JN, 15)  # listed, never seen here

    def settled_before(tx: Tx) -> None:
        tx.repo.settlements.settle([settled.claim_id], 7)
    node_app.execute(settled_before)
    listed = kit.mine([agreed, shorter, settled, stranger])
    _seen(node_app, kit.statement(listed))

    record = node_app.execute(settlement.decide, 1, 1, listed, [omitted.claim_id])

    assert record.state == SettlementState.DISPUTED and record.differences == 4
    [(kind, body)] = _outbox(node_app)
    assert kind == contract.DISPUTE_KIND
    dispute = pb.SettlementDispute.FromString(body)
    got = {(c.claim_id, c.reason, c.statement_minutes, c.ledger_minutes) for c in dispute.claims}
    assert got == {(shorter.claim_id, "MINUTES_DIFFER", 30, 25),
                   (settled.claim_id, "SETTLED_BEFORE", 40, 40),
                   (stranger.claim_id, "MISSING_HERE", 15, 0),
                   (omitted.claim_id, "OMITTED", 0, 10)}
    assert [c.claim_id for c in dispute.claims] == sorted(c.claim_id for c in dispute.claims)
    assert (dispute.node_id, dispute.serial, dispute.revision) == (JN, 1, 1)


def test_a_list_that_is_not_the_line_is_disputed_with_the_totals(node_app: NodeApp) -> None:
    claims, _ = _period(node_app)
    _seen(node_app, kit.statement(claims))
    short_list = kit.mine(claims)[:-1]  # the clearinghouse lists one claim fewer

    record = node_app.execute(settlement.decide, 1, 1, short_list)

    assert record.state == SettlementState.DISPUTED
    dispute = pb.SettlementDispute.FromString(record.answer or b"")
    assert "line's totals" in dispute.detail and not dispute.claims


def test_a_claim_not_yet_completed_here_waits_then_is_disputed(node_app: NodeApp) -> None:
    claims, _ = _period(node_app)
    lagging = kit.between(GL, JN, 50)  # the log completed it; its delivery is on its way

    def proposed(tx: Tx) -> None:
        from node.domain.claims import Claim, ClaimKind, ClaimState, Role
        from node.domain.ledger import Origin
        tx.repo.claims.add(Claim(lagging.claim_id, ClaimKind.MOVE, Role.DEBTOR, GL, kit.PERSON,
                                 50, ClaimState.ACCEPTED, tx.now, tx.now, tx.now,
                                 origins=((Origin.INDIVIDUAL, 50),)))
    node_app.execute(proposed)
    listed = kit.mine([*claims, lagging])
    _seen(node_app, kit.statement([*claims, lagging]))
    waiting = node_app.execute(settlement.decide, 1, 1, listed, wait_for_lag=True)
    assert waiting.state == SettlementState.CHECKED and not _outbox(node_app)
    record = node_app.execute(settlement.decide, 1, 1, listed)
    dispute = pb.SettlementDispute.FromString(record.answer or b"")
    assert [(c.claim_id, c.reason) for c in dispute.claims] == [
        (lagging.claim_id, "NOT_COMPLETED_HERE")]


def test_unproven_claims_hold_the_countersignature(node_app: NodeApp) -> None:
    claims, _ = _period(node_app)
    _seen(node_app, kit.statement(claims))
    record = node_app.execute(settlement.decide, 1, 1, kit.mine(claims), (), 1)
    assert record.state == SettlementState.CHECKED and "not countersigned yet" in record.detail
    assert not _outbox(node_app)


@pytest.mark.parametrize("forgery", ["statement key", "head key", "no quorum", "own quorum",
                                     "another roster", "figures"])
def test_a_statement_that_does_not_verify_is_refused_and_changes_nothing(
        node_app: NodeApp, forgery: str) -> None:
    claims, _ = _period(node_app)
    note = {"head key": kit.head(100, key=kit.OTHER_KEY),
            "no quorum": kit.head(100, [GL]),
            "own quorum": kit.head(100, [JN]),
            }.get(forgery)
    envelope = kit.statement(claims, note=note,
                             key=kit.OTHER_KEY if forgery == "statement key" else kit.CH_KEY)
    if forgery == "figures":  # re-signed by the clearinghouse, one line's net changed
        from timebank.envelope import CLEARINGHOUSE, decode, encode, sign
        msg = pb.SettlementStatement.FromString(decode(envelope).body)
        msg.lines[0].net_minutes += 1
        envelope = encode(sign(contract.STATEMENT_KIND, msg.SerializeToString(deterministic=True),
                               CLEARINGHOUSE, kit.CH_KEY))
    before = snapshot(node_app)
    roster_of = (lambda named: {}) if forgery == "another roster" else kit.rosters
    with pytest.raises(FailedPrecondition) as refused:
        settlement.verify_statement(envelope, kit.LOG_KEYS, roster_of)
    assert refused.value.reason == {
        "statement key": "STATEMENT_NOT_SIGNED", "head key": "HEAD_NOT_SIGNED",
        "no quorum": "HEAD_NOT_FINAL", "own quorum": "HEAD_NOT_FINAL",
        "another roster": "HEAD_NOT_FINAL", "figures": "BAD_STATEMENT"}[forgery]
    assert "/" in str(refused.value)  # Chinese first, English beside it
    assert snapshot(node_app) == before


def _final(node_app: NodeApp, envelope: bytes, acts: Sequence[bytes],
           decisions: Sequence[bytes] = ()) -> settlement.Finality:
    verified = settlement.verify_statement(envelope, kit.LOG_KEYS, kit.rosters)
    return settlement.finality(verified, kit.answer(envelope, acts, decisions), kit.city(),
                               kit.city_keys())


def test_a_forged_countersignature_does_not_make_a_statement_final(node_app: NodeApp) -> None:
    claims, _ = _period(node_app)
    envelope = kit.statement(claims)
    _seen(node_app, envelope)
    node_app.execute(settlement.decide, 1, 1, kit.mine(claims))
    forged = kit.countersign(QX, envelope, key=kit.OTHER_KEY)  # not 栖霞's key
    for_another = kit.countersign(GL, kit.statement(claims, end=99))  # another statement
    by_decree = kit.decision(envelope, [QX], key=kit.OTHER_KEY)  # not the city's
    found = _final(node_app, envelope,
                   [kit.countersign(JN, envelope), kit.countersign(GL, envelope), forged,
                    for_another], [by_decree])
    assert not found.final and found.countersigned == (GL, JN)
    assert len(found.refused) == 2  # the forged countersignature and the forged decision
    before = snapshot(node_app)
    with pytest.raises(FailedPrecondition) as refused:
        node_app.execute(settlement.post, 1, 1, kit.mine(claims))
    assert refused.value.reason == "NOT_FINAL"
    assert snapshot(node_app) == before


def test_posting_a_final_statement_carries_forward_only_later_claims(
        node_app: NodeApp) -> None:
    claims, later = _period(node_app)
    assert kit.clearing(node_app) == -60 - 30 + 45 + 15
    envelope = kit.statement(claims)
    _seen(node_app, envelope)
    node_app.execute(settlement.decide, 1, 1, kit.mine(claims))
    found = _final(node_app, envelope, [kit.countersign(n, envelope) for n in (GL, QX, JN)])
    assert found.final
    node_app.execute(settlement.mark_final, 1, 1, b"evidence")

    posted = node_app.execute(settlement.post, 1, 1, kit.mine(claims))

    assert (posted.net_minutes, posted.claims_settled, posted.already) == (45, 3, False)
    assert posted.clearing_after == kit.clearing(node_app) == 15  # the later claim, owed
    assert node_app.query(lambda tx: tx.repo.settlements.unsettled_net()) == -later.minutes
    entry = node_app.query(lambda tx: tx.repo.ledger.entry(posted.ledger_seq or 0))
    assert entry is not None and entry.entry.kind is EntryKind.SETTLEMENT
    assert {(p.account.code, p.minutes) for p in entry.entry.postings} == {
        ("clearing", 45), (SETTLEMENT.code, -45)}
    assert_ledger_ok(node_app)  # the hash chain and every balance, with the new kind
    from node.usecases import ledger as ledger_uc
    with pytest.raises(FailedPrecondition) as undo:
        node_app.execute(ledger_uc.reverse, posted.ledger_seq or 0, staff(node_app), "录错了")
    assert undo.value.reason == "SETTLEMENT_ENTRY"
    assert node_app.query(settlement.next_serial) == 2
    shown = node_app.query(settlement.show, 0)
    assert shown.record.state == SettlementState.POSTED and shown.clearing == 15

    before = snapshot(node_app)
    again = node_app.execute(settlement.post, 1, 1, kit.mine(claims))
    assert again.already and again.ledger_seq == posted.ledger_seq
    assert snapshot(node_app) == before

    # the next period settles the later claim, and must follow the first statement
    second = kit.statement([later], serial=2, start=100, end=200,
                           previous=kit.statement_id(envelope))
    _seen(node_app, second)
    assert node_app.execute(settlement.decide, 2, 1, [later]).state == \
        SettlementState.COUNTERSIGNED
    broken = kit.statement([later], serial=2, revision=2, start=100, end=200,
                           previous=b"\x00" * 32)
    with pytest.raises(FailedPrecondition) as refused:
        _seen(node_app, broken)
    assert refused.value.reason == "CHAIN_BROKEN"
    gap = kit.statement([later], serial=2, revision=3, start=150, end=200,
                        previous=kit.statement_id(envelope))
    with pytest.raises(FailedPrecondition) as refused:
        _seen(node_app, gap)
    assert refused.value.reason == "PERIOD_GAP"


def test_a_statement_upheld_over_a_dispute_is_posted_as_decided(node_app: NodeApp) -> None:
    claims, _ = _period(node_app)
    listed = kit.mine(claims)
    envelope = kit.statement(claims)
    _seen(node_app, envelope)
    node_app.execute(settlement.decide, 1, 1, listed, [kit.completed(node_app, GL, 5,
                                                                      creditor=False).claim_id])
    found = _final(node_app, envelope, [kit.countersign(n, envelope) for n in (GL, QX)],
                   [kit.decision(envelope, [JN])])
    assert found.final and found.overruled == (JN,)
    node_app.execute(settlement.mark_final, 1, 1, b"evidence")
    posted = node_app.execute(settlement.post, 1, 1, listed)
    assert posted.net_minutes == 45 and posted.claims_settled == 3
    shown = node_app.query(settlement.show, 1)
    assert "city decided" in shown.record.detail
    assert_ledger_ok(node_app)


def test_a_second_statement_under_one_serial_and_revision_is_refused(
        node_app: NodeApp) -> None:
    claims, _ = _period(node_app)
    _seen(node_app, kit.statement(claims))
    with pytest.raises(FailedPrecondition) as refused:
        _seen(node_app, kit.statement(claims[:2]))
    assert refused.value.reason == "EQUIVOCATION"


def test_an_answer_the_clearinghouse_refuses_is_shown_on_the_statement(
        node_app: NodeApp) -> None:
    from node.usecases import claims as claims_uc

    claims, _ = _period(node_app)
    _seen(node_app, kit.statement(claims))
    record = node_app.execute(settlement.decide, 1, 1, kit.mine(claims))
    assert record.outbox_id is not None
    node_app.execute(claims_uc.apply_refusal, record.outbox_id, "FAILED_PRECONDITION",
                     "STALE_REVISION", "第 2 版已发布 / revision 2 was issued")
    shown = node_app.query(settlement.show, 1)
    assert shown.record.state == SettlementState.COUNTERSIGNED
    assert "拒收" in shown.record.detail and "STALE_REVISION" in shown.record.detail
    assert not _outbox(node_app)  # refused for good: not sent again


def test_a_statement_final_over_a_silent_district_is_posted_as_decided(
        node_app: NodeApp) -> None:
    """This node never answered (it was away) and its record of one claim differs; the
    city overruled it: the statement is posted as decided, not refused for ever."""
    agreed = kit.completed(node_app, GL, 60, creditor=True)
    differs = kit.completed(node_app, QX, 40, creditor=False, posted=30)
    listed = kit.mine([agreed, differs])
    _seen(node_app, kit.statement(listed))
    node_app.execute(settlement.mark_final, 1, 1, b"")
    with pytest.raises(AssertionError):  # InvariantViolation: not overruled, yet differs
        node_app.execute(settlement.post, 1, 1, listed)
    posted = node_app.execute(settlement.post, 1, 1, listed, overruled=True)
    assert posted.net_minutes == 20 and posted.claims_settled == 2
    assert "city decided" in node_app.query(settlement.show, 1).record.detail
    assert_ledger_ok(node_app)
