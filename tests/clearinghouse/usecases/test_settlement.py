"""Settlement at the clearinghouse: closing a period, countersignatures and disputes
through Submit, the bureau's decisions and defaults, and the running positions after
each. Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from clearinghouse.usecases import claims, log, submit, wire
from clearinghouse.usecases import settlement as settle
from clearinghouse.usecases.app import ClearinghouseApp
from clearinghouse.usecases.clock import ManualClock
from runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Refusal,
)
from tests.clearinghouse.conftest import CITY_PUBLIC, refused
from tests.clearinghouse.settling import (
    GL,
    JN,
    KEYS,
    QX,
    ch_sign,
    close,
    complete,
    cosign_latest,
    countersign_env,
    decision_env,
    default_env,
    dispute_env,
    found_city,
    log_size,
    seal,
    send,
    statement_of,
)
from timebank import settlement as st
from timebank.envelope import identity
from timebank.v1 import clearing_pb2 as pb


@pytest.fixture
def city(ch_app: ClearinghouseApp) -> ClearinghouseApp:
    """Three districts; 鼓楼区 served 江宁区's people 3 × 120 minutes, 栖霞区 served
    鼓楼区's 60; the latest head cosigned by a quorum."""
    app = found_city(ch_app)
    complete(app, 1, GL, JN)
    complete(app, 2, GL, JN)
    complete(app, 3, GL, JN)
    complete(app, 4, QX, GL, minutes=60)
    cosign_latest(app)
    return app


def refuse_close(app: ClearinghouseApp, **kwargs: object) -> Refusal:
    """Closing as asked must be refused and change nothing."""
    return refused(app, lambda tx: settle.close(tx, ch_sign, **kwargs))  # type: ignore[arg-type]


def _positions(app: ClearinghouseApp) -> dict[str, int]:
    return dict(app.query(claims.positions).net)


def _settled(app: ClearinghouseApp) -> dict[str, int | None]:
    return app.query(lambda tx: tx.repo.settlements.settled_by(
        [f"019a0000-0000-7000-8000-{n:012x}" for n in range(1, 12)]))


def test_the_completing_leaf_is_recorded_with_the_claim(city: ClearinghouseApp) -> None:
    refs = city.query(lambda tx: tx.repo.settlements.refs(
        [f"019a0000-0000-7000-8000-{n:012x}" for n in (1, 4)]))
    for ref in refs.values():
        entry = pb.LogEntry.FromString(city.query(log.entries, ref.completed_index,
                                                  ref.completed_index + 1)[0])
        assert entry.claim_id == ref.claim_id and entry.state == pb.CLAIM_STATE_COMPLETED


def test_closing_settles_the_period_once_and_resets_positions(
        city: ClearinghouseApp) -> None:
    assert _positions(city) == {GL: 300, JN: -360, QX: 60}
    end = log_size(city)
    closed = close(city, up_to=end, label="first")
    statement = statement_of(closed)
    assert (statement.serial, statement.revision, statement.start, statement.end) == \
        (1, 1, 0, end)
    lines = {x.node_id: x for x in statement.sheet.lines}
    assert {n: x.net_minutes for n, x in lines.items()} == {GL: 300, JN: -360, QX: 60}
    assert statement.sheet.claims == 4 and not closed.final
    assert [(t.payer, t.payee, t.amount) for t in statement.sheet.transfers] == \
        [(JN, GL, 300), (JN, QX, 60)]
    # the statement cites a quorum-cosigned head covering the period
    assert transparency_size(statement.head_note) >= end
    # logged as a settlement leaf signed by the clearinghouse
    leaf = pb.LogEntry.FromString(city.query(log.entries, closed.log_index,
                                             closed.log_index + 1)[0])
    assert leaf.kind == st.STATEMENT_KIND and wire.from_bytes(leaf.envelope) == closed.envelope
    # every claim settled by serial 1; positions count from the new period
    assert set(_settled(city).values()) <= {1, None}
    assert _positions(city) == {GL: 0, JN: 0, QX: 0}
    city.query(settle.check_positions)
    # the next period's claims move positions again, and only those are settled next
    complete(city, 5, JN, QX, minutes=30)
    assert _positions(city) == {GL: 0, JN: 30, QX: -30}
    # the reads
    got = city.query(settle.get, 1)
    assert list(got.statements) == [wire.to_bytes(closed.envelope)] and not got.final
    assert list(got.log_indexes) == [closed.log_index]
    page = city.query(settle.claims_page, 1, 0, JN, "")
    assert [c.claim_id for c in page.claims] == sorted(c.claim_id for c in page.claims)
    assert len(page.claims) == 3 and not page.more
    assert st.line_totals_hold(JN, lines[JN], [
        st.SettledClaim(c.claim_id, c.creditor_node_id, c.debtor_node_id, c.minutes)
        for c in page.claims])
    assert len(city.query(settle.claims_page, 1, 0, "", "").claims) == 4


def transparency_size(note: str) -> int:
    from timebank import transparency
    return transparency.read_head(note).size


def test_a_period_closed_already_is_refused(city: ClearinghouseApp) -> None:
    close(city, up_to=log_size(city), label="first")
    error = refuse_close(city, up_to=log_size(city), label="first")
    assert isinstance(error, AlreadyExists) and error.reason == "ALREADY_CLOSED"
    assert "已结算" in error.message and "closed already" in error.message


def test_no_quorum_head_refuses_to_close(ch_app: ClearinghouseApp) -> None:
    app = found_city(ch_app)
    complete(app, 1, GL, JN)
    cosign_latest(app, (JN,))  # one of three: no quorum
    error = refuse_close(app, up_to=log_size(app))
    assert isinstance(error, FailedPrecondition) and error.reason == "NO_QUORUM_HEAD"


def test_a_period_not_ended_or_beyond_the_log_is_refused(city: ClearinghouseApp) -> None:
    now = city.clock.now().astimezone(UTC)
    this_month = f"{now.year:04d}-{now.month:02d}"
    error = refuse_close(city, period=this_month)
    assert isinstance(error, FailedPrecondition) and error.reason == "PERIOD_NOT_ENDED"
    assert "尚未结束" in error.message
    error = refuse_close(city, up_to=log_size(city) + 5)
    assert isinstance(error, FailedPrecondition) and error.reason == "PERIOD_NOT_ENDED"
    for bad in ({"period": "2026-13"}, {}, {"period": "2026-01", "up_to": 3}):
        error = refuse_close(city, **bad)
        assert isinstance(error, InvalidArgument) and error.reason == "BAD_PERIOD"


def test_a_month_ends_at_its_first_leaf_after_midnight_city_time(
        city: ClearinghouseApp, ch_clock: ManualClock) -> None:
    # the fixture's leaves are stamped 2026-03-02; move into April (city time) and log
    ch_clock.advance(datetime(2026, 3, 31, 16, 0, 5, tzinfo=UTC) - ch_clock.now())
    april_first = log_size(city)
    complete(city, 6, GL, JN)
    cosign_latest(city)
    error = refuse_close(city, period="2026-04")
    assert error.reason == "PERIOD_NOT_ENDED"
    closed = close(city, period="2026-03")
    statement = statement_of(closed)
    assert statement.end == april_first and statement.sheet.claims == 4
    assert _settled(city)[f"019a0000-0000-7000-8000-{6:012x}"] is None
    # an earlier month after a later one, or a closed one, is refused
    for month, reason in (("2026-02", "BEFORE_LAST_CLOSED"), ("2026-03", "ALREADY_CLOSED")):
        assert refuse_close(city, period=month).reason == reason


def test_the_next_period_waits_for_the_last_to_be_final(city: ClearinghouseApp) -> None:
    first = close(city, up_to=log_size(city), label="first")
    complete(city, 5, JN, QX)
    cosign_latest(city)
    error = refuse_close(city, up_to=log_size(city), label="second")
    assert isinstance(error, FailedPrecondition) and error.reason == "PREVIOUS_NOT_FINAL"
    statement = statement_of(first)
    for node in (JN, GL, QX):
        send(city, countersign_env(node, statement, first.envelope))
    assert city.query(settle.get, 1).final
    error = refuse_close(city, up_to=statement.end - 1, label="third")
    assert error.reason == "BEFORE_LAST_CLOSED"
    cosign_latest(city)
    second = statement_of(close(city, up_to=log_size(city), label="second"))
    assert second.serial == 2 and second.start == statement.end
    assert second.previous_sha256 == identity(first.envelope)
    assert second.sheet.claims == 1


def test_countersignatures_make_the_statement_final(city: ClearinghouseApp) -> None:
    closed = close(city, up_to=log_size(city))
    statement = statement_of(closed)
    done = send(city, countersign_env(JN, statement, closed.envelope))
    leaf = pb.LogEntry.FromString(city.query(log.entries, done.log_index,
                                             done.log_index + 1)[0])
    assert leaf.kind == st.COUNTERSIGN_KIND and leaf.node_id == JN
    again = send(city, countersign_env(JN, statement, closed.envelope))
    assert again.replayed and again.receipt == done.receipt
    send(city, countersign_env(GL, statement, closed.envelope))
    assert not city.query(settle.get, 1).final
    send(city, countersign_env(QX, statement, closed.envelope))
    got = city.query(settle.get, 1)
    assert got.final and len(got.countersigns) == 3
    late = dispute_env(JN, statement, closed.envelope, ["019a0000-0000-7000-8000-000000000001"])
    error = refused(city, submit.submit, wire.to_bytes(late), seal)
    assert isinstance(error, FailedPrecondition) and error.reason == "ALREADY_FINAL"


def test_a_countersign_for_another_district_or_statement_is_refused(
        city: ClearinghouseApp) -> None:
    closed = close(city, up_to=log_size(city))
    statement = statement_of(closed)
    # 鼓楼区's key signing as 江宁区, and 江宁区 naming 鼓楼区
    forged = countersign_env(JN, statement, closed.envelope, key=KEYS[GL])
    assert isinstance(refused(city, submit.submit, wire.to_bytes(forged), seal),
                      PermissionDenied)
    other = countersign_env(JN, statement, closed.envelope, named=GL)
    error = refused(city, submit.submit, wire.to_bytes(other), seal)
    assert isinstance(error, PermissionDenied) and error.reason == "NOT_YOUR_SIGNATURE"
    wrong = countersign_env(JN, statement, ch_sign("settlement", b"another"))
    error = refused(city, submit.submit, wire.to_bytes(wrong), seal)
    assert error.reason == "WRONG_STATEMENT"
    missing = countersign_env(JN, st.Statement(
        7, 1, "x", 0, 0, "", statement.closed_at, bytes(32), b"", "carry",
        st.compute([], [])), closed.envelope)
    assert isinstance(refused(city, submit.submit, wire.to_bytes(missing), seal), NotFound)


def test_an_upheld_decision_overrules_the_dispute(city: ClearinghouseApp) -> None:
    closed = close(city, up_to=log_size(city))
    statement = statement_of(closed)
    error = refused(city, settle.decide, decision_env(
        statement, closed.envelope, revise=True,
        excluded=["019a0000-0000-7000-8000-000000000001"]), CITY_PUBLIC, ch_sign)
    assert error.reason == "NO_DISPUTE"
    send(city, dispute_env(JN, statement, closed.envelope,
                           ["019a0000-0000-7000-8000-000000000001"]))
    again = dispute_env(JN, statement, closed.envelope, [], detail="totals differ")
    assert refused(city, submit.submit, wire.to_bytes(again), seal).reason == \
        "ALREADY_DISPUTED"
    send(city, countersign_env(GL, statement, closed.envelope))
    send(city, countersign_env(QX, statement, closed.envelope))
    for bad in (decision_env(statement, closed.envelope, revise=False, overruled=[GL]),
                decision_env(statement, closed.envelope, revise=False, overruled=[JN],
                             reason=" ")):
        assert isinstance(refused(city, settle.decide, bad, CITY_PUBLIC), InvalidArgument)
    forged = decision_env(statement, closed.envelope, revise=False, overruled=[JN],
                          key=KEYS[JN])
    assert isinstance(refused(city, settle.decide, forged, CITY_PUBLIC), PermissionDenied)
    done = city.execute(settle.decide, decision_env(statement, closed.envelope,
                                                    revise=False, overruled=[JN]),
                        CITY_PUBLIC)
    assert done.final and done.revised is None
    got = city.query(settle.get, 1)
    assert got.final and len(got.decisions) == 1 and len(got.disputes) == 1


def test_a_silent_district_can_be_overruled(city: ClearinghouseApp) -> None:
    """A district that never answers (its key revoked, say) does not hold the city's
    settlement for ever: the bureau upholds the statement over it, a logged act."""
    closed = close(city, up_to=log_size(city))
    statement = statement_of(closed)
    send(city, countersign_env(GL, statement, closed.envelope))
    send(city, countersign_env(QX, statement, closed.envelope))
    done = city.execute(settle.decide, decision_env(statement, closed.envelope,
                                                    revise=False, overruled=[JN]),
                        CITY_PUBLIC)
    assert done.final and city.query(settle.get, 1).final


def test_a_revision_leaves_claims_to_the_next_period(city: ClearinghouseApp) -> None:
    closed = close(city, up_to=log_size(city))
    statement = statement_of(closed)
    first = "019a0000-0000-7000-8000-000000000001"
    send(city, dispute_env(JN, statement, closed.envelope, [first]))
    stranger = decision_env(statement, closed.envelope, revise=True,
                            excluded=["019a0000-0000-7000-8000-000000000009"])
    assert refused(city, settle.decide, stranger, CITY_PUBLIC, ch_sign).reason == \
        "BAD_DECISION"
    decided = decision_env(statement, closed.envelope, revise=True, excluded=[first])
    assert refused(city, settle.decide, decided, CITY_PUBLIC).reason == \
        "NO_CLEARINGHOUSE_KEY"
    done = city.execute(settle.decide, decided, CITY_PUBLIC, ch_sign)
    assert done.revised is not None
    revised = statement_of(done.revised)
    assert (revised.serial, revised.revision, revised.end) == (1, 2, statement.end)
    assert revised.sheet.excluded == (first,) and revised.sheet.claims == 3
    assert {x.node_id: x.net_minutes for x in revised.sheet.lines} == \
        {GL: 180, JN: -240, QX: 60}
    # the excluded claim is back in the open period and its position
    assert _settled(city)[first] is None
    assert _positions(city) == {GL: 120, JN: -120, QX: 0}
    # revision 1 is stale now; its claims list still holds the excluded one
    stale = countersign_env(GL, statement, closed.envelope)
    assert refused(city, submit.submit, wire.to_bytes(stale), seal).reason == \
        "STALE_REVISION"
    assert len(city.query(settle.claims_page, 1, 1, "", "").claims) == 4
    assert len(city.query(settle.claims_page, 1, 2, "", "").claims) == 3
    for node in (JN, GL, QX):
        send(city, countersign_env(node, revised, done.revised.envelope))
    got = city.query(settle.get, 1)
    assert got.final and len(got.statements) == 2
    # the next period takes the excluded claim
    cosign_latest(city)
    second = statement_of(close(city, up_to=log_size(city), label="second"))
    assert second.sheet.claims == 1 and _settled(city)[first] == 2


def _final(city: ClearinghouseApp) -> tuple[st.Statement, settle.Closed]:
    closed = close(city, up_to=log_size(city))
    statement = statement_of(closed)
    for node in (JN, GL, QX):
        send(city, countersign_env(node, statement, closed.envelope))
    return statement, closed


def test_a_carried_default_opens_the_next_statement(city: ClearinghouseApp) -> None:
    closed = close(city, up_to=log_size(city))
    statement = statement_of(closed)
    early = default_env(statement, closed.envelope, JN, 360)
    assert refused(city, settle.default, early, CITY_PUBLIC).reason == "NOT_FINAL"
    for node in (JN, GL, QX):
        send(city, countersign_env(node, statement, closed.envelope))
    for bad, reason in ((default_env(statement, closed.envelope, GL, 10), "NOT_A_DEBIT"),
                        (default_env(statement, closed.envelope, JN, 361), "BAD_AMOUNT"),
                        (default_env(statement, closed.envelope, JN, 360, "reserve"),
                         "WRONG_TREATMENT")):
        assert refused(city, settle.default, bad, CITY_PUBLIC).reason == reason
    index = city.execute(settle.default, default_env(statement, closed.envelope, JN, 360),
                         CITY_PUBLIC)
    assert pb.LogEntry.FromString(city.query(log.entries, index, index + 1)[0]).kind == \
        st.DEFAULT_KIND
    assert refused(city, settle.default, default_env(statement, closed.envelope, JN, 100),
                   CITY_PUBLIC).reason == "ALREADY_DEFAULTED"
    complete(city, 5, JN, QX, minutes=30)
    cosign_latest(city)
    second = statement_of(close(city, up_to=log_size(city), label="second"))
    lines = {x.node_id: x for x in second.sheet.lines}
    assert lines[JN].opening_minutes == -360 and lines[JN].closing_minutes == -330
    assert second.sheet.reserve_opening_minutes == 360
    assert len(city.query(settle.get, 1).defaults) == 1
    # too late to carry into a period closed already
    late = default_env(statement, closed.envelope, JN, 360)
    assert refused(city, settle.default, late, CITY_PUBLIC).reason in (
        "ALREADY_DEFAULTED", "NEXT_PERIOD_CLOSED")


def test_a_reserve_default_carries_nothing(ch_app: ClearinghouseApp) -> None:
    from clearinghouse.bureau import issue_policy
    from clearinghouse.usecases import policies
    from tests.clearinghouse.conftest import CITY_KEY

    app = found_city(ch_app)
    now = app.clock.now()
    text = "[settlement]\nrate_fen_per_hour = 100\non_default = \"reserve\"\n"
    app.execute(policies.issue, issue_policy(CITY_KEY, 1, text, now, now), CITY_PUBLIC)
    complete(app, 1, GL, JN, minutes=90)
    cosign_latest(app)
    closed = close(app, up_to=log_size(app))
    statement = statement_of(closed)
    assert statement.on_default == "reserve" and statement.sheet.rate_fen_per_hour == 100
    assert statement.sheet.line(JN).fen == -150  # type: ignore[union-attr]
    for node in (JN, GL, QX):
        send(app, countersign_env(node, statement, closed.envelope))
    bad_fen = default_env(statement, closed.envelope, JN, 90, "reserve", fen=1)
    assert refused(app, settle.default, bad_fen, CITY_PUBLIC).reason == "BAD_AMOUNT"
    app.execute(settle.default, default_env(statement, closed.envelope, JN, 90, "reserve",
                                            fen=150), CITY_PUBLIC)
    cosign_latest(app)
    second = statement_of(close(app, up_to=log_size(app), label="second"))
    assert all(x.opening_minutes == 0 for x in second.sheet.lines)


def test_the_schedule_closes_the_last_month_once(ch_app: ClearinghouseApp,
                                                 ch_clock: ManualClock) -> None:
    from clearinghouse.bureau import issue_policy
    from clearinghouse.usecases import policies
    from tests.clearinghouse.conftest import CITY_KEY

    app = found_city(ch_app)
    now = app.clock.now()
    text = "[settlement]\nschedule = \"monthly\"\nclose_after_days = 3\n"
    app.execute(policies.issue, issue_policy(CITY_KEY, 1, text, now, now), CITY_PUBLIC)
    complete(app, 1, GL, JN)
    assert app.execute(settle.close_due, ch_sign) is None  # March is not over
    ch_clock.advance(datetime(2026, 4, 2, 1, 0, tzinfo=UTC) - ch_clock.now())
    app.execute(lambda tx: None)  # a leaf-less write: a head of the same size
    cosign_latest(app)
    assert app.execute(settle.close_due, ch_sign) is None  # only the 2nd, city time
    ch_clock.advance(timedelta(days=1))
    closed = app.execute(settle.close_due, ch_sign)
    assert closed is not None and closed.statement.period == "2026-03"
    assert app.execute(settle.close_due, ch_sign) is None  # closed once
    assert len(app.query(settle.get, 0, "2026-03").statements) == 1


def test_reads_refuse_what_does_not_exist(city: ClearinghouseApp) -> None:
    with pytest.raises(NotFound):
        city.query(settle.get, 0)
    close(city, up_to=log_size(city))
    with pytest.raises(NotFound):
        city.query(settle.get, 2)
    with pytest.raises(NotFound):
        city.query(settle.get, 0, "2020-01")
    with pytest.raises(NotFound):
        city.query(settle.claims_page, 1, 3, "", "")
    with pytest.raises(InvalidArgument):
        city.query(settle.claims_page, 1, 0, "bad", "")
    with pytest.raises(InvalidArgument):
        city.query(settle.claims_page, 1, 0, "", "not-a-claim")


def test_claims_are_paged_by_id(city: ClearinghouseApp,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    close(city, up_to=log_size(city))
    monkeypatch.setattr(st, "MAX_CLAIMS_PAGE", 3)
    first = city.query(settle.claims_page, 1, 0, "", "")
    assert len(first.claims) == 3 and first.more
    rest = city.query(settle.claims_page, 1, 0, "", first.claims[-1].claim_id)
    assert len(rest.claims) == 1 and not rest.more
    assert rest.claims[0].claim_id > first.claims[-1].claim_id
