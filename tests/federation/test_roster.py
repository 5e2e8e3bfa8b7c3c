"""Witnesses and the city-signed roster, with a real clearinghouse and three districts: a
district cosigns a head only if the roster of districts it names is one the city signed,
with the count that roster gives; a clearinghouse that lowers the count, names a roster
of its own or names none gets no cosignature, so its head can never become final."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from clearinghouse.bureau import issue_roster
from clearinghouse.usecases import log
from tests.federation.conftest import CH_KEY, City
from tests.federation.support import GL, JN, QX, enrol_at
from tests.helpers import id_card
from timebank import checkpoint as notes
from timebank import roster, transparency
from timebank.keys import SigningKey, public_key

ORIGIN = transparency.clearinghouse_origin(public_key(CH_KEY))


def _resign(city: City, change: Callable[[tuple[str, ...]], tuple[str, ...]]) -> int:
    """The clearinghouse re-signs its latest head with changed extension lines (as a
    dishonest one would, before anyone cosigned it); returns its size."""
    def edit(tx: log.Tx) -> int:
        found = log.log_of(tx).latest_tree_head()
        assert found is not None
        size, _, note = found
        head = notes.Checkpoint.parse(notes.SignedNote.parse(note).text)
        forged = notes.Checkpoint(head.origin, head.size, head.root, change(head.extensions))
        tx.repo.conn.execute(text("DELETE FROM cosignatures WHERE size = :s"), {"s": size})
        tx.repo.conn.execute(text("UPDATE tree_heads SET note = :n WHERE size = :s"),
                             {"n": notes.sign_note(forged.body(), ORIGIN, CH_KEY), "s": size})
        return size
    return city.ch.execute(edit)


def _fewer(lines: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(transparency.districts_line(1) if line.startswith(
        transparency.DISTRICTS_PREFIX) else line for line in lines)


def _none(lines: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(line for line in lines if not line.startswith(transparency.ROSTER_PREFIX))


def _own(lines: tuple[str, ...]) -> tuple[str, ...]:
    """A one-district roster signed by the clearinghouse's key, not the city's."""
    fake = issue_roster(SigningKey(bytes(CH_KEY)), 1,
                        [roster.Member(JN, "江宁区", bytes(32), 1)],
                        datetime(2026, 1, 1, tzinfo=UTC))
    digest = hashlib.sha256(fake.body).digest()
    return tuple(transparency.roster_line(1, digest) if line.startswith(
        transparency.ROSTER_PREFIX) else transparency.districts_line(1)
        if line.startswith(transparency.DISTRICTS_PREFIX) else line for line in lines)


def _cosigned(city: City, size: int) -> list[str]:
    return city.ch.query(lambda tx: [w for w, _, _ in log.log_of(tx).cosignatures(size)])


def test_an_honest_head_is_cosigned_by_every_district(city: City) -> None:
    enrol_at(city, JN, "刘洋", id_card(1958))
    city.settle()
    sizes = {n: city[n].link.witness_once() for n in (JN, GL, QX)}
    assert all(sizes.values())
    assert sorted(_cosigned(city, sizes[JN])) == sorted([JN, GL, QX])


@pytest.mark.parametrize("change", [_fewer, _none, _own], ids=["fewer", "none", "own"])
def test_a_head_whose_roster_is_not_the_citys_is_never_cosigned(
        city: City, change: Callable[[tuple[str, ...]], tuple[str, ...]]) -> None:
    enrol_at(city, JN, "刘洋", id_card(1958))
    city.settle()
    size = _resign(city, change)
    for n in (JN, GL, QX):
        assert city[n].link.witness_once() == 0
    assert _cosigned(city, size) == []
    with pytest.raises(Exception, match="no tree head has been cosigned by a quorum"):
        city.ch.query(log.head, 0, cosigned=True)
