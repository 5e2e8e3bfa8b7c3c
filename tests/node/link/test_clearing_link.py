"""The link as a whole: it starts its five workers once, and stopping it ends every one
of them and the subscriber's reader; the checkpointer anchors the ledger on its own
schedule."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from tests.federation.conftest import City
from tests.federation.support import JN, enrol_at
from tests.helpers import earn, enrol, id_card
from tests.node.link.support import eventually, replace_link

WORKERS = ("timebank-sender", "timebank-subscriber", "timebank-witness",
           "timebank-checkpointer", "timebank-rehomer", "timebank-subscribe-reader")


def running() -> Counter[str]:
    return Counter(t.name for t in threading.enumerate() if t.name in WORKERS)


def test_stopping_the_link_ends_every_worker_and_the_reader(city: City) -> None:
    city.settle()
    link = city[JN].link
    assert eventually(lambda: running()["timebank-subscribe-reader"] == len(city.nodes), 5)
    before = running()
    assert before == Counter({name: len(city.nodes) for name in WORKERS})
    link.stop()
    assert running() == Counter({name: len(city.nodes) - 1 for name in WORKERS})
    with pytest.raises(RuntimeError, match="starts once"):
        link.start()


def test_the_checkpointer_anchors_the_ledger_on_its_schedule(city: City) -> None:
    app = city[JN].app
    replace_link(city, JN, checkpoint_seconds=0.05)

    def anchored() -> int:
        found = app.query(lambda tx: tx.repo.anchors.latest())
        return -1 if found is None else int(found.entry_count)

    def entries() -> int:
        return int(app.query(lambda tx: tx.repo.ledger.head())[0])

    assert eventually(lambda: anchored() == entries(), 10)
    volunteer = enrol_at(city, JN, "王芳", id_card(1965))
    elder = enrol(app, "赵大爷", 1938, priority=True).id
    earn(app, city.clock, volunteer, 60, elder)  # the ledger grows ...
    assert entries() > 0
    assert eventually(lambda: anchored() == entries(), 10)  # ... and is anchored again
