"""A city on mutual TLS in one process: each node's real clearing link presents its own
certificate of a real city CA to a real clearinghouse server on 127.0.0.1.

A node whose link presents another district's certificate gets nothing through: its
messages are refused for the certificate (CERTIFICATE_NOT_FOR_DISTRICT), wait in its
outbox as when the clearinghouse is away, and nothing of them reaches the clearinghouse.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from city.pki.store import Authority
from clearinghouse.usecases import directory
from node.usecases.app import NodeApp
from runtime.errors import NotFound
from tests.federation.conftest import City, make_city
from tests.federation.support import enrol_at
from tests.helpers import id_card

JN, GL = "320115", "320106"


def _ref(app: NodeApp, person_id: int) -> str:
    with app.db.read() as conn:
        return str(conn.execute(text("SELECT person_ref FROM people WHERE id = :i"),
                                {"i": person_id}).scalar_one())


def _home(city: City, ref: str) -> str:
    """Where the clearinghouse's directory says a person is kept ("" if nowhere yet)."""
    try:
        return city.ch.query(directory.lookup, ref)
    except NotFound:
        return ""


def _outbox(app: NodeApp) -> list[tuple[object, ...]]:
    with app.db.read() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT kind, done_at, reason, attempts FROM outbox ORDER BY id"))]


@pytest.fixture
def tls_city(tmp_path: Path, city_ca: Authority) -> Iterator[City]:
    yield from make_city(tmp_path, f"sqlite:///{tmp_path / 'ch.sqlite3'}", ca=city_ca)


@pytest.fixture
def swapped(tmp_path: Path, city_ca: Authority) -> Iterator[City]:
    """江宁区's link presents 鼓楼区's certificate (a copied certificate, a mistake)."""
    yield from make_city(tmp_path, f"sqlite:///{tmp_path / 'ch.sqlite3'}", ca=city_ca,
                         presents={JN: GL})


def test_the_city_works_on_mutual_tls(tls_city: City) -> None:
    person = enrol_at(tls_city, JN, "李秀英", id_card(1963, JN))
    tls_city.settle()
    ref = _ref(tls_city[JN].app, person)
    assert tls_city.ch.query(directory.lookup, ref) == JN
    assert {n.node_id for n in tls_city.positions().nodes} == {JN, GL, "320113"}


def test_a_link_with_another_districts_certificate_gets_nothing_through(
        swapped: City) -> None:
    ours = enrol_at(swapped, JN, "李秀英", id_card(1963, JN))
    theirs = enrol_at(swapped, GL, "王建国", id_card(1948, GL))
    swapped.wait_for(lambda: any(row[2] == "CERTIFICATE_NOT_FOR_DISTRICT"
                                 for row in _outbox(swapped[JN].app)))
    swapped.wait_for(lambda: _home(swapped, _ref(swapped[GL].app, theirs)) == GL)
    waiting = [row for row in _outbox(swapped[JN].app) if row[0] == "directory.register"]
    assert waiting and all(row[1] is None for row in waiting)  # not refused: it waits
    assert _home(swapped, _ref(swapped[JN].app, ours)) == ""
