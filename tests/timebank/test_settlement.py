"""timebank.settlement: the figures of a closed period, their invariants for random claim
histories, the statement's one encoding, a district's check and the log replay."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timebank import settlement as s
from timebank.policy import OnDefault, PolicyError, Schedule, load_policy
from timebank.v1 import clearing_pb2 as pb

NODES = ("320102", "320104", "320105", "320106", "320111", "320113")
CLOSED_AT = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)


def _claim_id(n: int) -> str:
    return str(uuid.UUID(int=n + 1))


@st.composite
def histories(draw: st.DrawFn, max_claims: int = 60) -> list[s.SettledClaim]:
    nodes = draw(st.lists(st.sampled_from(NODES), min_size=2, max_size=6, unique=True))
    count = draw(st.integers(0, max_claims))
    out = []
    for n in range(count):
        creditor, debtor = draw(st.permutations(nodes))[:2]
        out.append(s.SettledClaim(_claim_id(n), creditor, debtor,
                                  draw(st.integers(1, 100_000)),
                                  draw(st.sampled_from(["redemption", "move"])), n))
    return out


def _apply(transfers: tuple[s.Transfer, ...]) -> Counter[str]:
    moved: Counter[str] = Counter()
    for t in transfers:
        moved[t.payer] += t.amount
        moved[t.payee] -= t.amount
    return moved


@given(histories(), st.integers(0, 20_000),
       st.dictionaries(st.sampled_from(NODES), st.integers(-10_000, 0), max_size=3))
def test_nets_sum_to_zero_and_netting_keeps_every_net(
        claims: list[s.SettledClaim], rate: int, openings: dict[str, int]) -> None:
    sheet = s.compute(claims, NODES, openings=openings, rate_fen_per_hour=rate)
    assert sum(x.net_minutes for x in sheet.lines) == 0
    for x in sheet.lines:
        served = sum(c.minutes for c in claims if c.creditor == x.node_id)
        spent = sum(c.minutes for c in claims if c.debtor == x.node_id)
        assert (x.owed_minutes, x.owing_minutes, x.net_minutes) == (served, spent,
                                                                   served - spent)
    # every party ends at zero after the transfers: netting changed nobody's position
    moved = _apply(sheet.transfers)
    closing = {x.node_id: x.closing_minutes for x in sheet.lines}
    closing[s.RESERVE] = sheet.reserve_opening_minutes
    assert all(moved[k] == -v for k, v in closing.items())
    parties = sum(1 for v in closing.values() if v)
    assert len(sheet.transfers) <= max(parties - 1, 0)
    if not openings:  # netting never needs more transfers than there were obligations
        assert sheet.netting.transfers <= sheet.netting.bilateral <= sheet.netting.gross
    if rate:
        fen = {x.node_id: x.fen for x in sheet.lines}
        assert sum(fen.values()) + s.fen_of(sheet.reserve_opening_minutes, rate) \
            + sheet.residue_fen == 0
        assert 2 * abs(sheet.residue_fen) <= len(NODES) + 1
        paid = _apply(sheet.payments)
        assert all(paid[k] == -v for k, v in fen.items())
    else:
        assert not sheet.payments and sheet.residue_fen == 0


@given(histories())
def test_a_statement_has_one_encoding_and_reads_back(claims: list[s.SettledClaim]) -> None:
    statement = _statement(s.compute(claims, NODES, rate_fen_per_hour=100))
    body = s.statement_body(statement)
    assert s.parse_statement(body) == statement
    assert s.statement_body(s.parse_statement(body)) == body


def _statement(sheet: s.Sheet, serial: int = 1, end: int = 100, revision: int = 1
               ) -> s.Statement:
    return s.Statement(serial, revision, f"p{serial}", 0, end, "head", CLOSED_AT,
                       b"" if serial == 1 else b"\x01" * 32, b"", "carry", sheet)


def test_a_tampered_statement_is_refused_naming_what_does_not_hold() -> None:
    claims = [s.SettledClaim(_claim_id(i), NODES[i % 2], NODES[1 - i % 2], 30 + i)
              for i in range(5)]
    statement = _statement(s.compute(claims, NODES[:3], rate_fen_per_hour=100))
    msg = pb.SettlementStatement.FromString(s.statement_body(statement))
    msg.lines[0].net_minutes += 1
    with pytest.raises(s.SettlementError) as e:
        s.parse_statement(msg.SerializeToString(deterministic=True))
    assert e.value.reason == "INCONSISTENT"
    msg = pb.SettlementStatement.FromString(s.statement_body(statement))
    msg.lines[2].fen += 1
    with pytest.raises(s.SettlementError, match="money"):
        s.parse_statement(msg.SerializeToString(deterministic=True))
    with pytest.raises(s.SettlementError) as e:
        s.parse_statement(b"\xff\xff")
    assert e.value.reason == "MALFORMED"


def test_twelve_districts_net_to_at_most_eleven_transfers() -> None:
    districts = [f"3201{n:02d}" for n in range(1, 13)]
    claims = [s.SettledClaim(_claim_id(i), c, d, 60 + i % 7)
              for i, (c, d) in enumerate((c, d) for c in districts for d in districts
                                         if c != d)]
    sheet = s.compute(claims * 1, districts)
    assert sheet.netting.gross == 132 == sheet.netting.possible
    assert len(sheet.transfers) <= 11


def test_two_groups_that_trade_apart_net_pair_by_pair() -> None:
    # 320102 owes 320104 2 h and 320111 3 h; 320105 owes 320106 4 h. Greedy largest-first
    # matching would need four transfers; the three pairs settle it in three.
    a, b, c, d, e = "320102", "320104", "320105", "320106", "320111"
    claims = [s.SettledClaim(_claim_id(1), b, a, 120), s.SettledClaim(_claim_id(2), e, a, 180),
              s.SettledClaim(_claim_id(3), d, c, 240)]
    sheet = s.compute(claims, [a, b, c, d, e])
    assert len(s.net_transfers({x.node_id: x.net_minutes for x in sheet.lines})) == 4
    assert sorted((t.payer, t.payee, t.amount) for t in sheet.transfers) == [
        (a, b, 120), (a, e, 180), (c, d, 240)]


def test_money_rounds_half_away_from_zero_and_states_the_residue() -> None:
    assert s.fen_of(1, 100) == 2  # 1.67 fen
    assert s.fen_of(-1, 100) == -2
    assert s.fen_of(3, 10) == 1  # 0.5 fen rounds up
    fen, residue = s.money({"a": 1, "b": 1, "c": -2}, 100)
    assert fen == {"a": 2, "b": 2, "c": -3} and residue == -1
    with pytest.raises(s.SettlementError):
        s.fen_of(10, -1)


def test_compute_refuses_what_cannot_be_settled() -> None:
    a = s.SettledClaim(_claim_id(1), NODES[0], NODES[1], 60)
    with pytest.raises(s.SettlementError, match="twice"):
        s.compute([a, a], NODES)
    with pytest.raises(s.SettlementError) as e:
        s.compute([a], NODES[:1])
    assert e.value.reason == "UNKNOWN_DISTRICT"
    with pytest.raises(s.SettlementError) as e:
        s.compute([a], NODES, excluded=[a.claim_id])
    assert e.value.reason == "EXCLUDED_CLAIM"
    with pytest.raises(s.SettlementError) as e:
        s.compute([], [f"{n:06d}" for n in range(s.MAX_DISTRICTS + 1)])
    assert e.value.reason == "TOO_MANY_DISTRICTS"
    with pytest.raises(s.SettlementError):
        s.SettledClaim("not-a-claim", NODES[0], NODES[1], 60)
    with pytest.raises(s.SettlementError):
        s.SettledClaim(_claim_id(2), NODES[0], NODES[0], 60)


def test_a_month_is_drawn_in_city_time() -> None:
    november = s.month_period("2026-11")
    assert november.starts == datetime(2026, 10, 31, 16, 0, tzinfo=UTC)
    assert november.ends == datetime(2026, 11, 30, 16, 0, tzinfo=UTC)
    assert s.month_period("2026-12").ends == datetime(2026, 12, 31, 16, 0, tzinfo=UTC)
    assert s.previous_month(datetime(2026, 12, 3, tzinfo=UTC)).label == "2026-11"
    assert s.previous_month(datetime(2026, 11, 30, 17, tzinfo=UTC)).label == "2026-11"
    for bad in ("2026-13", "26-11", "2026/11", "", "1999-12"):
        with pytest.raises(s.SettlementError, match="2026-11"):
            s.month_period(bad)
    with pytest.raises(s.SettlementError):
        s.Period("has space")


def test_a_district_finds_each_claim_its_ledger_does_not_bear_out() -> None:
    me, other = NODES[0], NODES[1]
    listed = [s.SettledClaim(_claim_id(i), me, other, 60) for i in range(5)]
    sheet = s.compute(listed, [me, other])
    line = sheet.line(me)
    assert line is not None and s.line_totals_hold(me, line, listed)
    assert not s.line_totals_hold(me, line, listed[:4])
    ledger = {c.claim_id: s.LedgerClaim(c.claim_id, me, other, 60, True) for c in listed}
    assert s.check_line(me, line, listed, ledger) == ()
    ledger[listed[0].claim_id] = replace(ledger[listed[0].claim_id], minutes=45)
    del ledger[listed[1].claim_id]
    ledger[listed[2].claim_id] = replace(ledger[listed[2].claim_id], completed=False)
    ledger[listed[3].claim_id] = replace(ledger[listed[3].claim_id], settled_serial=1)
    ledger[listed[4].claim_id] = replace(ledger[listed[4].claim_id], creditor=other,
                                         debtor=me)
    ledger["late"] = s.LedgerClaim("late", me, other, 30, True)
    found = {d.claim_id: d.reason for d in
             s.check_line(me, line, listed, ledger, omitted=["late"])}
    assert found == {listed[0].claim_id: s.MINUTES_DIFFER,
                     listed[1].claim_id: s.MISSING_HERE,
                     listed[2].claim_id: s.NOT_COMPLETED_HERE,
                     listed[3].claim_id: s.SETTLED_BEFORE,
                     listed[4].claim_id: s.PARTIES_DIFFER, "late": s.OMITTED}
    assert set(found.values()) == s.DISPUTE_REASONS


def test_final_needs_every_district_countersigned_or_overruled() -> None:
    assert not s.is_final(NODES[:3], NODES[:2], ())
    assert s.is_final(NODES[:3], NODES[:2], NODES[2:3])


# the log replay -------------------------------------------------------------------------


def _completion(c: s.SettledClaim) -> pb.LogEntry:
    return pb.LogEntry(kind="claim", claim_id=c.claim_id, state=pb.CLAIM_STATE_COMPLETED,
                       minutes=c.minutes, creditor_node_id=c.creditor,
                       debtor_node_id=c.debtor,
                       claim_kind=(pb.CLAIM_KIND_MOVE if c.kind == "move"
                                   else pb.CLAIM_KIND_REDEMPTION))


def _statement_leaf(statement: s.Statement) -> pb.LogEntry:
    envelope = pb.Envelope(kind=s.STATEMENT_KIND, body=s.statement_body(statement),
                           signer="clearinghouse")
    return pb.LogEntry(kind=s.STATEMENT_KIND, envelope=envelope.SerializeToString())


def _default_leaf(serial: int, node_id: str, minutes: int) -> pb.LogEntry:
    act = pb.SettlementDefault(serial=serial, node_id=node_id, unpaid_minutes=minutes,
                               treatment="carry")
    envelope = pb.Envelope(kind=s.DEFAULT_KIND, body=act.SerializeToString(), signer="city")
    return pb.LogEntry(kind=s.DEFAULT_KIND, envelope=envelope.SerializeToString())


@st.composite
def logs(draw: st.DrawFn) -> tuple[list[pb.LogEntry], list[int]]:
    """A log of completions, other leaves and statements closed honestly at random ends
    (with, now and then, a carry default on the last one); and the statement leaves."""
    claims = draw(histories(max_claims=40))
    leaves: list[pb.LogEntry] = []
    statements: list[int] = []
    pending = list(claims)
    settled: set[str] = set()
    carried: dict[str, int] = {}
    serial = 0
    while pending or not statements:
        take = draw(st.integers(0, len(pending)))
        for c in pending[:take]:
            leaves.append(_completion(c))
            leaves.append(pb.LogEntry(kind="checkpoint", node_id=c.creditor))
        del pending[:take]
        serial += 1
        end = len(leaves)
        done = [replace(c, completed_index=i) for i, leaf in enumerate(leaves)
                if leaf.kind == "claim" for c in claims
                if c.claim_id == leaf.claim_id and c.claim_id not in settled]
        sheet = s.compute(done, NODES, openings=carried, rate_fen_per_hour=100)
        settled |= {c.claim_id for c in done}
        statements.append(len(leaves))
        leaves.append(_statement_leaf(_statement(sheet, serial, end)))
        carried = {}
        debtor = next((x for x in sheet.lines if x.closing_minutes < 0), None)
        if debtor is not None and draw(st.booleans()):
            leaves.append(_default_leaf(serial, debtor.node_id, -debtor.closing_minutes))
            carried = {debtor.node_id: debtor.closing_minutes}
    return leaves, statements


@given(logs())
def test_every_statement_is_recomputed_from_the_log_alone(
        log: tuple[list[pb.LogEntry], list[int]]) -> None:
    leaves, statements = log
    replay = s.LogReplay()
    for i, leaf in enumerate(leaves):
        replay.feed(i, leaf)
    assert replay.mismatches == [] and replay.checked == len(statements)


@given(logs(), st.data())
def test_a_statement_the_log_does_not_support_is_caught(
        log: tuple[list[pb.LogEntry], list[int]], data: st.DataObject) -> None:
    leaves, statements = log
    at = data.draw(st.sampled_from(statements))
    honest = s.parse_statement(pb.Envelope.FromString(leaves[at].envelope).body)
    before = s.LogReplay()
    for i, leaf in enumerate(leaves[:at]):
        before.feed(i, leaf)
    settled = [c for c in before.completed.values()
               if c.completed_index < honest.end and c.claim_id not in before.settled_by]
    if not settled:
        return  # an empty period: nothing to leave out
    # the clearinghouse signs a statement that quietly leaves one claim out
    dropped = data.draw(st.sampled_from(settled))
    forged = replace(honest, sheet=s.compute(
        [c for c in settled if c != dropped], [x.node_id for x in honest.sheet.lines],
        openings={x.node_id: x.opening_minutes for x in honest.sheet.lines
                  if x.opening_minutes}, rate_fen_per_hour=100))
    leaves = [*leaves[:at], _statement_leaf(forged), *leaves[at + 1:]]
    replay = s.LogReplay()
    for i, leaf in enumerate(leaves):
        replay.feed(i, leaf)
    assert [m.serial for m in replay.mismatches][:1] == [honest.serial]
    assert f"district {dropped.creditor}" in replay.mismatches[0].message or \
        f"district {dropped.debtor}" in replay.mismatches[0].message


def test_the_settlement_policy_table() -> None:
    rules = load_policy('[settlement]\nrate_fen_per_hour = 100\non_default = "reserve"\n'
                        'schedule = "monthly"\nclose_after_days = 5\n').settlement
    assert (rules.rate_fen_per_hour, rules.on_default, rules.schedule,
            rules.close_after_days) == (100, OnDefault.RESERVE, Schedule.MONTHLY, 5)
    assert load_policy("").settlement.on_default is OnDefault.CARRY
    for bad, says in (('[settlement]\nrate_fen_per_hour = -1\n', "rate_fen_per_hour"),
                      ('[settlement]\non_default = "forgive"\n', "carry"),
                      ('[settlement]\nschedule = "weekly"\n', "monthly"),
                      ('[settlement]\nclose_after_days = 40\n', "close_after_days"),
                      ('[settlement]\nrate = 1\n', "unknown"),
                      ('settlement = 3\n', "table")):
        with pytest.raises(PolicyError, match=says):
            load_policy(bad)
