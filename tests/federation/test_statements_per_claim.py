"""How many SQL statements the clearinghouse's writer runs for a move, on each engine.

On PostgreSQL every statement is a round trip the one writer waits for (ADR 0021), so
the count per claim is what bounds it. Twenty moves go through the real clearinghouse
server and each node's real link at once; every statement run inside the
clearinghouse's write transactions while they complete is counted
(``before_cursor_execute`` sees the driver path's statements too, ADR 0011) and must
stay within a budget: 33 a move on either engine before the batch path was made
set-based (issue 17), about 15 after, 12 on PostgreSQL and 14 on SQLite once a batch's
claims were read together and queued batches committed together, and 10 on either once
a group ran without a savepoint per envelope; about 7 once a batch read its people
and districts together and the head's inputs were kept between transactions.

The count depends on how the links happen to batch the moves (on a loaded machine,
smaller batches, more transactions: 15 a move was seen where 10 was usual), so the
budget here is a coarse guard through the real server and links; the tight,
deterministic budget per envelope is tests/clearinghouse/usecases/
test_statements_per_envelope.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, event

from node.domain.claims import ClaimState
from node.domain.orders import PersonKind
from node.usecases import claims, people
from tests.federation.conftest import City, make_city
from tests.helpers import earn, enrol, id_card

MOVES = 20
#: Statements a move costs the clearinghouse (its proposal and its completion, each a
#: Submit in a batch; their share of each batch's BEGIN, lock, head, proofs and COMMIT;
#: the reads of the Subscribe streams and acknowledgements while they complete).
BUDGET_PER_MOVE = 16


@pytest.fixture(params=["sqlite", "postgres"])
def city(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[City]:
    url = (f"sqlite:///{tmp_path / 'ch.sqlite3'}" if request.param == "sqlite"
           else request.getfixturevalue("ch_pg_url"))
    yield from make_city(tmp_path, url)


def test_a_move_costs_the_clearinghouse_few_statements(city: City) -> None:
    jn = city["320115"]
    movers = []
    for i in range(MOVES):
        number = id_card(1950 + i)
        person = jn.app.execute(people.enrol_person, PersonKind.INDIVIDUAL, f"刘洋{i}",
                                number, "13800000000", False, 0, "").id
        elder = enrol(jn.app, f"孙奶奶{i}", 1936, priority=True).id
        earn(jn.app, city.clock, person, 30, elder)
        city["320113"].app.execute(people.enrol_person, PersonKind.INDIVIDUAL, f"刘洋{i}",
                                   number, "13800000000", False, 0, "320115")
        movers.append(person)
    city.settle()
    counted = {"statements": 0}
    writing = threading.local()
    write = city.ch.db.write

    @contextmanager
    def counted_write() -> Iterator[Connection]:
        with write() as conn:
            writing.on = True
            try:
                yield conn
            finally:
                writing.on = False

    def count(*_: Any) -> None:
        if getattr(writing, "on", False):
            counted["statements"] += 1

    engine = city.ch.db.writer
    city.ch.db.write = counted_write  # type: ignore[method-assign]
    event.listen(engine, "before_cursor_execute", count)
    try:
        started = [jn.app.execute(claims.start_move, p, "320113") for p in movers]
        city.settle()
    finally:
        event.remove(engine, "before_cursor_execute", count)
        city.ch.db.write = write  # type: ignore[method-assign]
    for claim in started:
        assert jn.app.query(claims.get_claim, claim.claim_id).state is ClaimState.COMPLETED
    per_move = counted["statements"] / MOVES
    print(f"\n{city.ch.db.writer.dialect.name}: {per_move:.1f} statements a move")
    assert per_move <= BUDGET_PER_MOVE
