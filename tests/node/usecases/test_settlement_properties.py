"""For random histories of completed claims and random period cuts, a district that
countersigns and posts every statement in turn keeps its books whole (SQLite and
PostgreSQL): after each posting the clearing account is exactly minus the net of the
claims not yet settled, the settlement account holds minus the nets posted, every claim
is settled by exactly the statement of its period, and the chain checks."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.domain.clock import ManualClock
from node.domain.ledger import SETTLEMENT
from node.usecases import settlement
from node.usecases.app import NodeApp, Tx
from tests.conftest import make_node_app
from tests.helpers import assert_ledger_ok
from tests.node import settlement_support as kit
from tests.node.settlement_support import GL, JN, QX

#: A claim: (the other district, minutes, this node is the creditor, the period it
#: completed in).
claim = st.tuples(st.sampled_from([GL, QX]), st.integers(1, 600), st.booleans(),
                  st.integers(0, 2))


def _balance(app: NodeApp, code: str) -> int:
    def read(tx: Tx) -> int:
        found = tx.repo.ledger.account(code)
        return 0 if found is None else found.balance
    return app.query(read)


@settings(max_examples=8, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=st.lists(claim, max_size=12), foreign=st.integers(0, 3))
def test_posting_period_after_period_keeps_the_books_whole(
        db_factory: Callable[[], tuple[str, Callable[[], None]]],
        history: list[tuple[str, int, bool, int]], foreign: int) -> None:
    url, release = db_factory()
    gen = make_node_app(url, ManualClock())
    app = next(gen)
    try:
        periods: list[list[kit.settlement.SettledClaim]] = [[], [], []]
        for other, minutes, creditor, period in history:
            periods[period].append(kit.completed(app, other, minutes, creditor=creditor))
        previous = b""
        posted_total = 0
        for serial, claims in enumerate(periods, start=1):
            others = [kit.between(GL, QX, 10 + i) for i in range(foreign)]
            envelope = kit.statement(claims + others, serial=serial, start=100 * serial - 100,
                                     end=100 * serial, previous=previous)
            verified = settlement.verify_statement(envelope, kit.LOG_KEYS, kit.rosters)
            app.execute(settlement.record_seen, verified)
            listed = kit.mine(claims)
            record = app.execute(settlement.decide, serial, 1, listed)
            assert record.state == "countersigned", record.detail
            final = settlement.finality(verified, kit.answer(
                envelope, [kit.countersign(n, envelope, serial=serial)
                           for n in kit.DISTRICTS]), kit.city(), kit.city_keys())
            assert final.final
            app.execute(settlement.mark_final, serial, 1, b"")
            posted = app.execute(settlement.post, serial, 1, listed)
            net = sum(c.minutes if c.creditor == JN else -c.minutes for c in claims)
            assert posted.net_minutes == net and posted.claims_settled == len(claims)
            posted_total += net
            carried = app.query(lambda tx: tx.repo.settlements.unsettled_net())
            assert _balance(app, "clearing") == -carried
            assert _balance(app, SETTLEMENT.code) == -posted_total
            assert app.query(lambda tx, s=serial: tx.repo.settlements.settled_by(s)) == \
                len(claims)
            previous = verified.identity
        assert app.query(lambda tx: tx.repo.settlements.unsettled_net()) == 0
        assert _balance(app, "clearing") == 0
        assert_ledger_ok(app)
    finally:
        next(gen, None)
        release()
