"""The city-signed roster: the clearinghouse takes only the next epoch listing exactly who
is admitted, logs it, names it in every head, and counts a quorum over it alone."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from clearinghouse.bureau import issue_roster, publish_roster
from clearinghouse.usecases import admission, log, roster
from clearinghouse.usecases.app import ClearinghouseApp, Tx
from runtime.errors import FailedPrecondition, PermissionDenied
from tests.clearinghouse.conftest import (
    CITY_KEY,
    CITY_PUBLIC,
    certificate,
    node_key,
    refused,
    revocation,
)
from timebank import checkpoint as notes
from timebank import transparency
from timebank.keys import SigningKey, key_id, public_key
from timebank.roster import Member

JN, GL, QX = "320115", "320106", "320113"
NAMES = {JN: "江宁区", GL: "鼓楼区", QX: "栖霞区"}
CH_KEY = SigningKey(b"roster test: the clearinghouse".ljust(32, b"."))
ORIGIN = transparency.clearinghouse_origin(public_key(CH_KEY))


def _sign(text: str) -> str:
    return notes.sign_note(text, ORIGIN, CH_KEY)


def publishing(app: ClearinghouseApp) -> ClearinghouseApp:
    app.after_write = lambda tx: log.publish_head(tx, _sign, ORIGIN)
    return app


def admit_all(app: ClearinghouseApp, ids: tuple[str, ...] = (JN, GL, QX)) -> None:
    for n in ids:
        app.execute(admission.admit, certificate(n, NAMES[n], node_key(n)), CITY_PUBLIC)


def member(n: str, generation: int = 0, serial: int = 1) -> Member:
    return Member(n, NAMES[n], public_key(node_key(n, generation)), serial)


def latest_head(app: ClearinghouseApp) -> transparency.Head:
    return transparency.check_head(app.query(log.head).note, public_key(CH_KEY))


def test_a_published_roster_is_logged_and_named_by_every_head(
        ch_app: ClearinghouseApp) -> None:
    app = publishing(ch_app)
    admit_all(app)
    assert transparency.read_head(app.query(log.head).note).roster is None
    published = publish_roster(app, CITY_KEY)
    assert published is not None and published.epoch == 1
    assert [m.node_id for m in published.members] == sorted([JN, GL, QX])
    head = latest_head(app)
    assert head.roster == (1, published.digest) and head.districts == 3
    leaf = app.query(log.entries, head.size - 1, head.size)[0]
    assert b"roster" in leaf
    assert publish_roster(app, CITY_KEY) is None  # nothing changed: no new epoch
    assert list(app.query(log.admissions).rosters) == [published.envelope]


def test_a_rotation_needs_a_new_epoch_with_the_new_key(ch_app: ClearinghouseApp) -> None:
    app = publishing(ch_app)
    admit_all(app)
    first = publish_roster(app, CITY_KEY)
    assert first is not None
    app.execute(admission.admit, certificate(JN, NAMES[JN], node_key(JN, 1), serial=2),
                CITY_PUBLIC)
    assert not app.query(roster.is_current)
    second = publish_roster(app, CITY_KEY)
    assert second is not None and second.epoch == 2
    found = second.member(JN)
    assert found is not None and found.public_key == public_key(node_key(JN, 1))
    assert latest_head(app).roster == (2, second.digest)


def test_a_revoked_key_leaves_the_roster(ch_app: ClearinghouseApp) -> None:
    app = publishing(ch_app)
    admit_all(app)
    publish_roster(app, CITY_KEY)
    app.execute(admission.revoke, revocation(GL, key_id(public_key(node_key(GL)))),
                CITY_PUBLIC)
    after = publish_roster(app, CITY_KEY)
    assert after is not None and [m.node_id for m in after.members] == sorted([JN, QX])


@pytest.mark.parametrize(("make", "reason"), [
    (lambda now: issue_roster(CITY_KEY, 2, [member(GL), member(JN), member(QX)], now),
     "STALE_EPOCH"),
    (lambda now: issue_roster(CITY_KEY, 1, [member(GL), member(JN)], now), "ROSTER_MISMATCH"),
    (lambda now: issue_roster(CITY_KEY, 1, [member(GL), member(JN, 1), member(QX)], now),
     "ROSTER_MISMATCH"),
])
def test_a_roster_that_is_not_the_next_truth_is_refused(
        ch_app: ClearinghouseApp, make: Callable[..., object], reason: str) -> None:
    admit_all(ch_app)
    error = refused(ch_app, roster.publish, make(ch_app.clock.now()), CITY_PUBLIC)
    assert isinstance(error, FailedPrecondition) and error.reason == reason


def test_a_roster_not_signed_by_the_city_is_refused(ch_app: ClearinghouseApp) -> None:
    admit_all(ch_app)
    other = SigningKey(b"not the city".ljust(32, b"."))
    forged = issue_roster(other, 1, [member(GL), member(JN), member(QX)],
                          ch_app.clock.now())
    error = refused(ch_app, roster.publish, forged, CITY_PUBLIC)
    assert isinstance(error, PermissionDenied)


def _cosign(app: ClearinghouseApp, size: int, nodes: tuple[str, ...]) -> None:
    def add(tx: Tx) -> None:
        found = log.log_of(tx).tree_head(size)
        assert found is not None
        text = notes.SignedNote.parse(found[1]).text
        for n in nodes:
            line = notes.cosign(text, transparency.witness_name(n), node_key(n), 1_800_000_000)
            log.log_of(tx).add_cosignature(size, n, line.rstrip("\n"), 1_800_000_000, tx.now)
    app.execute(add)


def test_finality_is_a_quorum_of_the_roster_the_head_names(ch_app: ClearinghouseApp) -> None:
    app = publishing(ch_app)
    admit_all(app)
    unnamed = latest_head(app)  # before any roster: never final, whoever cosigns
    _cosign(app, unnamed.size, (JN, GL, QX))
    with pytest.raises(Exception, match="no tree head has been cosigned by a quorum"):
        app.query(log.head, 0, cosigned=True)
    publish_roster(app, CITY_KEY)
    named = latest_head(app)
    _cosign(app, named.size, (JN,))
    with pytest.raises(Exception, match="no tree head has been cosigned by a quorum"):
        app.query(log.head, 0, cosigned=True)
    _cosign(app, named.size, (GL,))
    assert app.query(log.head, 0, cosigned=True).size == named.size
