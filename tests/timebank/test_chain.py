"""The ledger's hash chain as anyone recomputes it: the exact canonical bytes, the
genesis that binds a chain to its node, and the link to the entry before."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest

from timebank import chain

ENTRY = {"seq": 2, "kind": "donation", "at": "2026-03-02T01:00:00.000000Z",
         "memo": "捐给养老池", "order_id": 0, "reverses_seq": 0,
         "postings": [("person/" + "ab" * 32 + "/individual", -15), ("donation_pool", 15)]}


def test_the_canonical_bytes_are_sorted_compact_utf8_json() -> None:
    assert chain.entry_bytes(**ENTRY) == (
        '{"at":"2026-03-02T01:00:00.000000Z","kind":"donation","memo":"捐给养老池",'
        '"order_id":0,"postings":[["person/' + "ab" * 32 + '/individual",-15],'
        '["donation_pool",15]],"reverses_seq":0,"seq":2}').encode("utf-8")


def test_a_chain_is_bound_to_its_node_and_links_each_entry_to_the_last() -> None:
    first = chain.genesis_hash("320115")
    assert first == hashlib.sha256(b"timebank.v1/ledger-genesis\x00320115").digest()
    assert first != chain.genesis_hash("320106")
    linked = chain.link_hash(first, chain.entry_bytes(**ENTRY))
    assert linked == hashlib.sha256(first + chain.entry_bytes(**ENTRY)).digest()
    assert linked != chain.link_hash(chain.genesis_hash("320106"), chain.entry_bytes(**ENTRY))
    with pytest.raises(ValueError, match="32 bytes"):
        chain.link_hash(first[:31], b"{}")


def test_times_are_written_in_utc_with_microseconds() -> None:
    at = datetime(2026, 3, 2, 9, 0, 0, 5, tzinfo=timezone(timedelta(hours=8)))
    assert chain.format_time(at) == "2026-03-02T01:00:00.000005Z"
    assert chain.format_time(at.astimezone(UTC)) == chain.format_time(at)
    with pytest.raises(ValueError, match="timezone-aware"):
        chain.format_time(datetime(2026, 3, 2))
