"""A person's history, oldest first or newest first (paging back with before_seq), on
SQLite and PostgreSQL: the same entries and deltas either way."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from node.domain.clock import ManualClock
from node.domain.orders import PaymentSource
from node.storage.repo import Repo
from node.usecases import ledger
from node.usecases.app import NodeApp
from runtime.errors import InvalidArgument
from tests.helpers import earn, enrol, serve, snapshot, staff

INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class District:
    app: NodeApp
    her: int  # a priority elder who earns, is granted, spends, donates and is corrected
    other: int  # a volunteer whose entries fall between hers
    newcomer: int  # enrolled, never in the ledger


@pytest.fixture
def district(node_app: NodeApp, clock: ManualClock) -> District:
    app = node_app
    sid = staff(app)
    her = enrol(app, "张桂兰", 1940, priority=True).id
    served = enrol(app, "李老太", 1938, priority=True).id
    other = enrol(app, "李秀英", 1962).id
    grants = []
    for _ in range(3):
        earn(app, clock, her, 30, served)
        earn(app, clock, other, 15, served)
        grants.append(app.execute(ledger.grant, her, 60, sid, "补贴").seq)
    app.execute(ledger.reverse, grants[0], sid, "误发")
    # her own hours pay for her service: the 120 granted minutes, then 30 she earned (one
    # entry, both of her accounts)
    serve(app, clock, her, other, 150, source=PaymentSource.OWN)
    app.execute(ledger.donate, her, 15)
    newcomer = enrol(app, "王志愿", 1990).id
    return District(app, her, other, newcomer)


def _all(d: District, person_id: int) -> list[tuple[int, int]]:
    view = d.app.query(ledger.history, person_id, 0, 1000)
    return [(e.seq, delta) for e, delta in view.entries]


def test_the_district_gives_her_a_varied_history(district: District) -> None:
    d = district
    seqs = [seq for seq, _ in _all(d, d.her)]
    assert len(seqs) == 9 and seqs == sorted(seqs)
    assert [delta for _, delta in _all(d, d.her)] == [30, 60, 30, 60, 30, 60, -60, -150, -15]
    assert seqs != list(range(seqs[0], seqs[0] + len(seqs)))  # others' entries between
    view = d.app.query(ledger.history, d.her, 0, 1000)
    with d.app.db.read() as conn:
        hers = {a.code for a in Repo(conn).ledger.accounts_of(d.her)}
    assert len(hers) == 2
    assert any(len({p.account.code for p in e.entry.postings} & hers) == 2
               for e, _ in view.entries), "no entry touches both of her accounts"


@pytest.mark.parametrize("limit", [1, 3, 9, 1000])
def test_newest_first_is_the_latest_entries_in_reverse(district: District, limit: int) -> None:
    d = district
    oldest_first = d.app.query(ledger.history, d.her, 0, 1000).entries
    newest_first = d.app.query(ledger.history, d.her, 0, limit, newest_first=True)
    assert newest_first.person_id == d.her
    assert list(newest_first.entries) == list(reversed(oldest_first))[:limit]
    assert [delta for _, delta in newest_first.entries] == [
        delta for _, delta in reversed(oldest_first)][:limit]


@pytest.mark.parametrize("limit", [1, 2, 4, 9])
def test_paging_back_reaches_the_first_entry_once_each(district: District, limit: int) -> None:
    d = district
    for person_id in (d.her, d.other):
        expected = list(reversed(_all(d, person_id)))
        read: list[tuple[int, int]] = []
        before = 0
        for _ in range(len(expected) + 1):
            page = d.app.query(ledger.history, person_id, 0, limit, newest_first=True,
                               before_seq=before).entries
            if not page:
                break
            assert len(page) <= limit
            read += [(e.seq, delta) for e, delta in page]
            before = page[-1][0].seq
        assert read == expected
        assert len({seq for seq, _ in read}) == len(read)


def test_before_seq_is_a_bound_not_an_entry_of_hers(district: District) -> None:
    d = district
    hers = [seq for seq, _ in _all(d, d.her)]
    everything = d.app.query(ledger.history, d.her, 0, 1000, newest_first=True).entries
    for before in (INT64_MAX, hers[-1] + 1, hers[-1], hers[3] + 1, hers[1], hers[0]):
        page = d.app.query(ledger.history, d.her, 0, 1000, newest_first=True,
                           before_seq=before).entries
        assert list(page) == [e for e in everything if e[0].seq < before]
    assert d.app.query(ledger.history, d.her, 0, 1000, newest_first=True,
                       before_seq=1).entries == ()


def test_a_person_with_no_entries_has_no_history_either_way(district: District) -> None:
    d = district
    for newest_first in (False, True):
        view = d.app.query(ledger.history, d.newcomer, 0, 100, newest_first=newest_first)
        assert view.person_id == d.newcomer and view.entries == ()


@pytest.mark.parametrize(("after_seq", "newest_first", "before_seq", "reason"), [
    (1, True, 0, "AFTER_SEQ_WITH_NEWEST_FIRST"),
    (3, True, 9, "AFTER_SEQ_WITH_NEWEST_FIRST"),
    (0, False, 5, "BEFORE_SEQ_NEEDS_NEWEST_FIRST"),
    (2, False, 5, "BEFORE_SEQ_NEEDS_NEWEST_FIRST"),
])
def test_mixed_paging_is_refused_and_changes_nothing(
        district: District, after_seq: int, newest_first: bool, before_seq: int,
        reason: str) -> None:
    d = district
    before = snapshot(d.app)
    with pytest.raises(InvalidArgument) as caught:
        d.app.query(ledger.history, d.her, after_seq, 10, newest_first=newest_first,
                    before_seq=before_seq)
    assert caught.value.reason == reason
    assert ("after_seq" if reason.startswith("AFTER") else "before_seq") in str(caught.value)
    assert snapshot(d.app) == before
