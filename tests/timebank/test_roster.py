"""The city-signed roster and what a witness checks of the roster a head names."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from nacl.signing import SigningKey

from timebank import checkpoint as notes
from timebank import roster, transparency
from timebank.envelope import CITY, Signed, sign
from timebank.keys import public_key

CITY_KEY = SigningKey(b"roster test: the city".ljust(32, b"."))
CH_KEY = SigningKey(b"roster test: the clearinghouse".ljust(32, b"."))
AT = datetime(2026, 12, 1, tzinfo=UTC)
NAMES = {"320115": "江宁区", "320106": "鼓楼区", "320113": "栖霞区"}


def member(node_id: str) -> roster.Member:
    key = SigningKey(f"roster test {node_id}".encode().ljust(32, b"."))
    return roster.Member(node_id, NAMES[node_id], public_key(key), 1)


def signed(epoch: int, ids: tuple[str, ...], key: SigningKey = CITY_KEY) -> Signed:
    return sign(roster.KIND, roster.body(epoch, [member(n) for n in ids], AT), CITY, key)


def head(lines: tuple[str, ...], size: int = 5) -> transparency.Head:
    origin = transparency.clearinghouse_origin(public_key(CH_KEY))
    text = notes.Checkpoint(origin, size, bytes(32), lines).body()
    return transparency.check_head(notes.sign_note(text, origin, CH_KEY), public_key(CH_KEY))


def named(r: roster.Roster, districts: int | None = None) -> tuple[str, ...]:
    count = len(r.members) if districts is None else districts
    return (transparency.districts_line(count), r.line(), transparency.time_line(1))


def test_a_roster_round_trips_and_counts_a_quorum_without_the_subject() -> None:
    r = roster.read(signed(3, ("320115", "320106", "320113")), public_key(CITY_KEY))
    assert r.epoch == 3 and [m.node_id for m in r.members] == ["320106", "320113", "320115"]
    assert r.quorum == 2 and r.member("320115") == member("320115")
    assert r.counted(["320115", "320106", "999999"], subject="320115") == ["320106"]
    assert not r.is_final(["320115", "320106"], subject="320115")
    assert r.is_final(["320113", "320106"], subject="320115")
    assert roster.read_bytes(r.envelope, public_key(CITY_KEY)) == r


def test_a_roster_not_signed_by_the_city_is_refused() -> None:
    other = SigningKey(b"someone else".ljust(32, b"."))
    with pytest.raises(roster.RosterError, match="not signed by the city root key"):
        roster.read(signed(1, ("320115",), other), public_key(CITY_KEY))


def test_a_malformed_roster_is_never_signed() -> None:
    twice = [member("320115"), member("320115")]
    with pytest.raises(roster.RosterError, match="strictly increasing"):
        roster.body(1, twice, AT)


def test_a_witness_cosigns_only_under_a_roster_the_city_signed() -> None:
    first = roster.read(signed(1, ("320115", "320106")), public_key(CITY_KEY))
    second = roster.read(signed(2, ("320115", "320106", "320113")), public_key(CITY_KEY))
    known = {first.digest: first, second.digest: second}
    assert roster.check_head(head(named(second)), known, last_epoch=2) == second
    with pytest.raises(transparency.LogError, match="names no city-signed roster"):
        roster.check_head(head((transparency.districts_line(1),)), known)
    with pytest.raises(transparency.LogError, match="rolled the city back"):
        roster.check_head(head(named(first)), known, last_epoch=2)
    with pytest.raises(transparency.LogError, match="says the city had 1 districts"):
        roster.check_head(head(named(second, districts=1)), known)
    stranger = roster.read(signed(2, ("320115",), CITY_KEY), public_key(CITY_KEY))
    with pytest.raises(transparency.LogError, match="which the city did not sign"):
        roster.check_head(head(named(stranger)), known)


def test_a_malformed_roster_line_is_refused() -> None:
    with pytest.raises(transparency.LogError, match="roster line is malformed"):
        head(("timebank-roster 1 AAAA",))
