"""The subscriber against a real clearinghouse: a database slower than the stream fills
the bounded backlog and pauses the reader, never more; what waited is applied in order
once the database is free; deliveries the clearinghouse did not sign apply nothing."""

from __future__ import annotations

import threading

import grpc
import pytest

from node.domain.claims import ClaimState
from node.link.connection import Connection
from node.link.subscriber import APPLY_BATCH, BACKLOG_ITEMS, Subscriber
from node.link.verified_log import ReceiptError
from node.usecases import claims
from tests.federation.conftest import City
from tests.federation.support import GL, JN, family, node_claim, order_for_mother
from tests.node.link.support import STRANGER, eventually, replace_link
from timebank.keys import public_key
from timebank.v1 import clearing_pb2_grpc


def queued_for(city: City, node_id: str) -> int:
    return int(city.ch.query(lambda tx: tx.repo.last_delivery_seq(node_id)))


def test_the_backlog_is_bounded_in_stream_messages() -> None:
    assert 1 <= APPLY_BATCH <= BACKLOG_ITEMS  # a whole transaction's worth can wait
    with pytest.raises(ValueError, match="at least one"):
        Subscriber(None, None, threading.Event(), threading.Event(),  # type: ignore[arg-type]
                   backlog_items=0)


def test_a_slow_database_pauses_the_stream_at_the_backlog_bound(city: City) -> None:
    f = family(city, earned=600)
    bound = 2
    link = replace_link(city, JN, backlog_items=bound, witness_seconds=3600)
    subscriber = link.subscriber
    jn = city[JN].app
    applied_before = jn.query(claims.last_applied_seq)
    placed: list[str] = []
    seen: list[int] = []
    # 江宁区's database is busy (this test holds its one writer): what the clearinghouse
    # streams meanwhile waits in the backlog, then in the stream itself.
    with jn.db.write():
        for _ in range(12):
            before = queued_for(city, JN)
            order = order_for_mother(city, f, 30)  # 鼓楼区 proposes to 江宁区
            assert order.record.claim_id is not None
            placed.append(order.record.claim_id)
            assert eventually(lambda b=before: queued_for(city, JN) > b, 10)  # type: ignore[misc]
            if eventually(lambda: subscriber.paused, 0.5):
                break
            seen.append(subscriber.backlog)
        assert subscriber.paused, "the reader never had to wait for room"
        for _ in range(20):  # paused, it stays paused at the bound
            seen.append(subscriber.backlog)
            assert subscriber.paused
            threading.Event().wait(0.01)
        assert jn.query(claims.last_applied_seq) == applied_before
    assert max(seen) == bound and all(0 <= n <= bound for n in seen)
    assert len(placed) >= bound + 2  # one being applied, the backlog, one in the reader's hand
    # the database is free: everything that waited is applied, in order, once
    city.settle()
    assert jn.query(claims.last_applied_seq) == queued_for(city, JN)
    for claim_id in placed:
        assert node_claim(city, JN, claim_id) is ClaimState.ACCEPTED
        assert node_claim(city, GL, claim_id) is ClaimState.ACCEPTED
    assert not subscriber.paused and subscriber.backlog == 0


def test_deliveries_the_clearinghouse_did_not_sign_apply_nothing(city: City) -> None:
    f = family(city, earned=600)
    replace_link(city, JN, start=False)  # 江宁区 is away while 鼓楼区 proposes
    order = order_for_mother(city, f, 30)
    applied = city[JN].app.query(claims.last_applied_seq)
    assert eventually(lambda: queued_for(city, JN) > applied, 10)
    jn = city[JN]
    stop = threading.Event()
    with grpc.insecure_channel(city.address) as channel:
        stranger = Connection(clearing_pb2_grpc.ClearinghouseServiceStub(channel), city.address,
                              JN, jn.key, public_key(STRANGER))
        with pytest.raises(ReceiptError, match="a delivery does not verify"):
            Subscriber(jn.app, stranger, stop, threading.Event()).run()
    assert jn.app.query(claims.last_applied_seq) == applied
    assert node_claim(city, JN, order.record.claim_id) is None
    # with the clearinghouse's key, the same deliveries are applied
    replace_link(city, JN)
    city.settle()
    assert node_claim(city, JN, order.record.claim_id) is ClaimState.ACCEPTED
