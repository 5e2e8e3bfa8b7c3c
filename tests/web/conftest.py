"""A district node, served for real on 127.0.0.1, holding orders in every stage of
publicity, for the console's tests.

The node is a SQLite one (the console never reaches a database: what it shows comes
through the node's API, whichever engine the node runs on). ``town`` is built once per
module: the console's tests only read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from node.domain.clock import ManualClock
from node.usecases import orders, people
from node.usecases.app import NodeApp
from node.usecases.views import Actor
from tests.conftest import make_node_app
from tests.helpers import enrol, request, serve, walk
from tests.node.api.support import serving
from tests.sqlite import migrated_sqlite
from web.nodes import Node

#: A service point whose name would run script if a page did not escape it.
HOSTILE_POINT = "<script>alert('点')</script>东山<b>站</b>"


@dataclass(frozen=True)
class Town:
    address: str
    on_display: int  # verified: in its publicity period
    disputed: int  # disputed during publicity
    before: int  # checked out, not yet verified
    recorded: int  # publicity over, recorded
    #: every enrolled person's full name, ID number and phone: none may be on a public page
    secrets: tuple[str, ...]


@pytest.fixture(scope="module")
def town(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Town]:
    clock = ManualClock()
    url = migrated_sqlite(tmp_path_factory.mktemp("web") / "node.db")
    for app in make_node_app(url, clock):
        with serving(app, clock) as api:
            yield _build(app, clock, f"127.0.0.1:{api.port}")


def _build(app: NodeApp, clock: ManualClock, address: str) -> Town:
    point = app.execute(people.register_service_point, "SP-WEB", HOSTILE_POINT, "东山街道")
    elder = enrol(app, "张桂兰", 1940, priority=True, point=point.id)
    elder2 = enrol(app, "欧阳娜娜", 1938, priority=True, point=point.id)
    volunteer = enrol(app, "李秀英", 1962)
    volunteer2 = enrol(app, "Alice Smith", 1985)
    recorded = serve(app, clock, elder.id, volunteer.id, 60).record.id
    before = request(app, elder2.id, 30).record.id
    walk(app, clock, before, volunteer2.id, 30, to="checked_out")
    on_display = serve(app, clock, elder.id, volunteer2.id, 90, record=False).record.id
    disputed = serve(app, clock, elder2.id, volunteer.id, 60, record=False).record.id
    app.execute(orders.dispute_order, disputed, Actor(person_id=elder2.id),
                "时长不对 the time is wrong")
    records = [app.query(lambda tx, i=p.id: tx.repo.people.get(i))
               for p in (elder, elder2, volunteer, volunteer2)]
    secrets = tuple(s for r in records for s in (r.name, r.id_number, r.phone) if s)
    return Town(address, on_display, disputed, before, recorded, secrets)


@pytest.fixture
def node(town: Town) -> Iterator[Node]:
    made = Node(town.address, None)
    yield made
    made.close()
