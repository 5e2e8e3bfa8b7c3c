"""Ledger entries: zero-sum postings, the canonical bytes, the hash chain, reversals, draws."""

from __future__ import annotations

import hashlib
import itertools
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.domain.ledger import (
    CITY_GRANT,
    CLEARING,
    CONSUMPTION,
    DONATION_POOL,
    MAX_POSTINGS,
    Account,
    AccountKind,
    Entry,
    EntryKind,
    Origin,
    Posting,
    apply,
    canonical_bytes,
    chain_hash,
    draw,
    genesis_hash,
    issuance,
    merge_postings,
    reversal_of,
)
from runtime.errors import InvariantViolation
from timebank.minutes import MAX_MINUTES, format_hours, hours

AT = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
REF = "ab" * 32
VOL = Account.of_person(REF, Origin.INDIVIDUAL)
GRANTED = Account.of_person(REF, Origin.GRANTED)


def service(minutes: int = 60, at: datetime = AT) -> Entry:
    return Entry(EntryKind.SERVICE, (
        Posting(issuance(Origin.INDIVIDUAL), -minutes), Posting(VOL, minutes),
        Posting(CITY_GRANT, -minutes), Posting(CONSUMPTION, minutes)), at, memo="order 1",
        order_id=1)


# ------------------------------------------------------------------ accounts


def test_account_codes() -> None:
    assert VOL.code == f"person/{REF}/individual"
    assert issuance(Origin.GROUP).code == "issuance/group"
    assert DONATION_POOL.code == "donation_pool"
    assert CITY_GRANT.code == "city_grant"
    assert CONSUMPTION.code == "consumption"
    assert CLEARING.code == "clearing"


def test_account_shapes_are_enforced() -> None:
    with pytest.raises(InvariantViolation):
        Account(AccountKind.PERSON, Origin.INDIVIDUAL)  # no person
    with pytest.raises(InvariantViolation):
        Account(AccountKind.DONATION_POOL, Origin.DONATED, REF)  # a person on a pool
    with pytest.raises(InvariantViolation):
        Account(AccountKind.PERSON, None, REF)  # no origin
    with pytest.raises(InvariantViolation):
        Account(AccountKind.ISSUANCE)


def test_which_accounts_never_go_negative() -> None:
    assert VOL.never_negative and DONATION_POOL.never_negative and CONSUMPTION.never_negative
    assert not issuance(Origin.INDIVIDUAL).never_negative
    assert not CITY_GRANT.never_negative and not CLEARING.never_negative


# ------------------------------------------------------------------ entry invariants


def test_a_balanced_entry_is_accepted() -> None:
    e = service()
    assert sum(p.minutes for p in e.postings) == 0


@pytest.mark.parametrize("postings", [
    (),
    (Posting(VOL, 0),),
    (Posting(VOL, 60),),  # one posting cannot balance
])
def test_entries_need_two_postings(postings: tuple[Posting, ...]) -> None:
    with pytest.raises(InvariantViolation):
        Entry(EntryKind.DONATION, postings, AT)


def test_entries_sum_to_zero() -> None:
    with pytest.raises(InvariantViolation, match="sum to zero"):
        Entry(EntryKind.DONATION, (Posting(VOL, -60), Posting(DONATION_POOL, 59)), AT)


def test_no_zero_postings() -> None:
    with pytest.raises(InvariantViolation, match="out of range"):
        Entry(EntryKind.DONATION, (Posting(VOL, -60), Posting(DONATION_POOL, 60),
                                   Posting(CONSUMPTION, 0)), AT)


def test_postings_are_bounded() -> None:
    big = MAX_MINUTES + 1
    with pytest.raises(InvariantViolation, match="out of range"):
        Entry(EntryKind.GRANT, (Posting(CITY_GRANT, -big), Posting(GRANTED, big)), AT)
    Entry(EntryKind.GRANT, (Posting(CITY_GRANT, -MAX_MINUTES), Posting(GRANTED, MAX_MINUTES)), AT)


def test_one_posting_per_account() -> None:
    with pytest.raises(InvariantViolation, match="at most once"):
        Entry(EntryKind.DONATION, (Posting(VOL, -60), Posting(VOL, 60)), AT)


def test_at_most_max_postings() -> None:
    people = [Account.of_person(f"{i:064x}", Origin.INDIVIDUAL) for i in range(MAX_POSTINGS)]
    ok = (*(Posting(a, 1) for a in people[:-1]), Posting(CITY_GRANT, -(MAX_POSTINGS - 1)))
    Entry(EntryKind.GRANT, ok, AT)
    too_many = (*(Posting(a, 1) for a in people), Posting(CITY_GRANT, -MAX_POSTINGS))
    with pytest.raises(InvariantViolation, match="postings"):
        Entry(EntryKind.GRANT, too_many, AT)


def test_times_are_timezone_aware() -> None:
    with pytest.raises(InvariantViolation, match="timezone"):
        service(at=datetime(2026, 3, 2, 1, 0))


def test_memo_is_bounded() -> None:
    with pytest.raises(InvariantViolation, match="memo"):
        Entry(EntryKind.DONATION, (Posting(VOL, -1), Posting(DONATION_POOL, 1)), AT,
              memo="x" * 501)


# ------------------------------------------------------------------ canonical bytes and chain


def test_canonical_bytes_are_sorted_compact_json() -> None:
    e = Entry(EntryKind.DONATION, (Posting(VOL, -60), Posting(DONATION_POOL, 60)), AT,
              memo="捐赠 \"quote\"")
    raw = canonical_bytes(3, e)
    doc = json.loads(raw)
    assert doc == {"seq": 3, "kind": "donation", "at": "2026-03-02T01:00:00.000000Z",
                   "memo": "捐赠 \"quote\"", "order_id": 0, "reverses_seq": 0,
                   "postings": [[VOL.code, -60], ["donation_pool", 60]]}
    assert raw == json.dumps(doc, sort_keys=True, separators=(",", ":"),
                             ensure_ascii=False).encode()
    assert "捐赠".encode() in raw  # UTF-8, not \u escapes
    assert b" :" not in raw and b", " not in raw


def test_canonical_bytes_do_not_depend_on_the_time_zone_given() -> None:
    shanghai = timezone(timedelta(hours=8))
    assert canonical_bytes(1, service(at=AT)) == canonical_bytes(1, service(
        at=AT.astimezone(shanghai)))


def test_canonical_bytes_keep_microseconds_and_posting_order() -> None:
    a = service(at=AT + timedelta(microseconds=1))
    assert b"01:00:00.000001Z" in canonical_bytes(1, a)
    reordered = Entry(a.kind, tuple(reversed(a.postings)), a.at, a.memo, a.order_id)
    assert canonical_bytes(1, a) != canonical_bytes(1, reordered)


def test_every_field_is_bound_by_the_bytes() -> None:
    base = service()
    variants = [
        Entry(EntryKind.GRANT, base.postings, base.at, base.memo, base.order_id),
        Entry(base.kind, base.postings, base.at + timedelta(microseconds=1), base.memo, 1),
        Entry(base.kind, base.postings, base.at, base.memo + ".", base.order_id),
        Entry(base.kind, base.postings, base.at, base.memo, 2),
        Entry(base.kind, base.postings, base.at, base.memo, 1, reverses_seq=1),
        service(61),
    ]
    seen = {canonical_bytes(1, base), canonical_bytes(2, base)}
    for v in variants:
        seen.add(canonical_bytes(1, v))
    assert len(seen) == 2 + len(variants)


def test_genesis_binds_the_chain_to_the_node() -> None:
    g = genesis_hash("320115")
    assert g == hashlib.sha256(b"timebank.v1/ledger-genesis\x00320115").digest()
    assert g != genesis_hash("320104")
    assert len(g) == 32


def test_chain_hash_is_sha256_of_prev_and_bytes() -> None:
    prev = genesis_hash("320115")
    e = service()
    assert chain_hash(prev, 1, e) == hashlib.sha256(prev + canonical_bytes(1, e)).digest()
    with pytest.raises(InvariantViolation):
        chain_hash(b"short", 1, e)


def test_a_chain_is_deterministic_and_detects_any_change() -> None:
    entries = [service(m, AT + timedelta(minutes=m)) for m in (15, 30, 45, 60)]

    def chain(es: list[Entry]) -> list[bytes]:
        h, out = genesis_hash("320115"), []
        for seq, e in enumerate(es, 1):
            h = chain_hash(h, seq, e)
            out.append(h)
        return out

    heads = chain(entries)
    assert heads == chain(list(entries))
    assert len(set(heads)) == len(heads)
    tampered = list(entries)
    tampered[1] = service(31, entries[1].at)
    changed = chain(tampered)
    assert changed[0] == heads[0]
    assert all(a != b for a, b in zip(changed[1:], heads[1:], strict=True))


# ------------------------------------------------------------------ reversals, apply, merge


def test_reversal_negates_every_posting() -> None:
    original = service()
    later = AT + timedelta(days=1)
    r = reversal_of(original, 5, later, "staff 1: wrong volunteer")
    assert r.kind is EntryKind.REVERSAL
    assert r.reverses_seq == 5 and r.order_id == original.order_id and r.at == later
    assert [(p.account, p.minutes) for p in r.postings] == [
        (p.account, -p.minutes) for p in original.postings]
    after = apply(apply({}, original), r)
    assert set(after.values()) == {0}


def test_a_reversal_is_not_reversed() -> None:
    r = reversal_of(service(), 1, AT, "x")
    with pytest.raises(InvariantViolation):
        reversal_of(r, 2, AT, "y")


def test_apply_is_pure() -> None:
    before = {VOL.code: 10}
    after = apply(before, service(60))
    assert before == {VOL.code: 10}
    assert after[VOL.code] == 70 and after["consumption"] == 60
    assert sum(after.values()) == 10


def test_merge_postings_combines_and_drops_zeros_in_first_seen_order() -> None:
    merged = merge_postings([(issuance(Origin.INDIVIDUAL), -60), (VOL, 45), (DONATION_POOL, 15),
                             (DONATION_POOL, -60), (CONSUMPTION, 60), (VOL, 0)])
    assert merged == (Posting(issuance(Origin.INDIVIDUAL), -60), Posting(VOL, 45),
                      Posting(DONATION_POOL, -45), Posting(CONSUMPTION, 60))
    assert merge_postings([(VOL, 5), (VOL, -5)]) == ()


# ------------------------------------------------------------------ draw


def test_draw_takes_buckets_in_order() -> None:
    assert draw([(GRANTED, 30), (VOL, 100)], 50) == [(GRANTED, 30), (VOL, 20)]
    assert draw([(GRANTED, 0), (VOL, 100)], 50) == [(VOL, 50)]
    assert draw([(GRANTED, -5), (VOL, 100)], 50) == [(VOL, 50)]
    assert draw([(GRANTED, 30), (VOL, 100)], 0) == []
    assert draw([(GRANTED, 60), (VOL, 100)], 60) == [(GRANTED, 60)]


def test_draw_refuses_shortfalls_and_negative_amounts() -> None:
    with pytest.raises(InvariantViolation, match="short by 10"):
        draw([(GRANTED, 30), (VOL, 20)], 60)
    with pytest.raises(InvariantViolation):
        draw([(VOL, 20)], -1)


@given(st.lists(st.integers(-100, 1000), min_size=1, max_size=5), st.integers(0, 5000))
def test_draw_properties(available: list[int], amount: int) -> None:
    accounts = [Account.of_person(f"{i:064x}", Origin.INDIVIDUAL) for i in range(len(available))]
    buckets = list(zip(accounts, available, strict=True))
    if sum(max(0, a) for a in available) < amount:
        with pytest.raises(InvariantViolation):
            draw(buckets, amount)
        return
    taken = draw(buckets, amount)
    assert sum(m for _, m in taken) == amount
    limits = dict(buckets)
    assert all(0 < m <= limits[a] for a, m in taken)
    # earlier buckets are emptied before later ones are touched
    order = [a for a, _ in buckets]
    for (a, m), nxt in itertools.pairwise(taken):
        assert m == limits[a] and order.index(a) < order.index(nxt[0])


# ------------------------------------------------------------------ minutes shown as hours


@pytest.mark.parametrize(("minutes", "shown"), [
    (0, "0.00 h"), (1, "0.02 h"), (15, "0.25 h"), (20, "0.33 h"), (30, "0.50 h"),
    (40, "0.67 h"), (45, "0.75 h"), (60, "1.00 h"), (75, "1.25 h"), (90_000, "1500.00 h"),
    (-20, "-0.33 h"), (-60, "-1.00 h"), (3_227_415, "53790.25 h"),
])
def test_format_hours(minutes: int, shown: str) -> None:
    assert format_hours(minutes) == shown


@given(st.integers(-(10**13), 10**13))
def test_format_hours_is_minutes_over_sixty_rounded_half_away(minutes: int) -> None:
    shown = format_hours(minutes)
    assert shown.endswith(" h")
    number = shown[:-2]
    whole, _, frac = number.lstrip("-").partition(".")
    assert len(frac) == 2 and whole.isdigit()
    expected = (Decimal(abs(minutes)) / 60).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    assert Decimal(number.lstrip("-")) == expected
    assert number.startswith("-") == (minutes < 0)
    assert format_hours(-minutes) == (shown if minutes == 0 else
                                      (shown[1:] if minutes < 0 else "-" + shown))


def test_hours_are_whole_minutes() -> None:
    assert hours(1500) == 90_000 and hours(0) == 0
