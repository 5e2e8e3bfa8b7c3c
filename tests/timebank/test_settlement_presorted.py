"""``timebank.settlement.compute`` over claims streamed in claim-id order (``presorted``,
as the clearinghouse reads a million of them): the same sheet as over the claims in any
order, and a stream out of order or repeating a claim is refused."""

from __future__ import annotations

import random

import pytest

from timebank import settlement as st

NODES = ("320102", "320106", "320113", "320115")


def _claims(count: int, rng: random.Random) -> list[st.SettledClaim]:
    out = []
    for i in range(count):
        creditor, debtor = rng.sample(NODES, 2)
        out.append(st.SettledClaim(f"019a{i:04x}-0000-7000-8000-{rng.getrandbits(48):012x}",
                                   creditor, debtor, rng.randrange(1, 600),
                                   rng.choice(("redemption", "move")), i))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_presorted_claims_give_the_same_sheet(seed: int) -> None:
    rng = random.Random(seed)
    claims = _claims(rng.randrange(0, 300), rng)
    shuffled = rng.sample(claims, len(claims))
    openings = {NODES[0]: -rng.randrange(0, 100)}
    plain = st.compute(shuffled, NODES, openings=openings, rate_fen_per_hour=100)
    streamed = st.compute(iter(sorted(claims)), NODES, openings=openings,
                          rate_fen_per_hour=100, presorted=True)
    assert streamed == plain
    for line in streamed.lines:
        assert line.claims_sha256 == st.claims_digest(line.node_id, shuffled)


def test_a_presorted_stream_out_of_order_or_repeating_is_refused() -> None:
    claims = sorted(_claims(3, random.Random(1)))
    with pytest.raises(st.SettlementError) as caught:
        st.compute([claims[1], claims[0]], NODES, presorted=True)
    assert caught.value.reason == "UNSORTED"
    with pytest.raises(st.SettlementError) as caught:
        st.compute([claims[0], claims[0]], NODES, presorted=True)
    assert caught.value.reason == "DUPLICATE_CLAIM"
