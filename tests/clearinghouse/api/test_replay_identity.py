"""A public envelope re-encoded is the same envelope, on a real clearinghouse server.

Every logged envelope is public (GetEntries). Anyone can rewrite its bytes without
touching what was signed: fields in another order or written twice, unknown fields,
longer varints. Each of a thousand such rewrites, sent by Submit or by SubmitBatch,
gets the receipt the envelope got, appends no leaf, writes no row, and is charged to
nobody: the district's own next Submit still goes through under a tiny rate limit."""

from __future__ import annotations

import random
from collections.abc import Iterator

import grpc
import pytest

from clearinghouse.api.server import start_server
from clearinghouse.usecases import admission, claims
from clearinghouse.usecases.app import ClearinghouseApp
from runtime.server import RunningServer
from tests.clearinghouse.api.test_service import CH_KEY, LIMIT, TIMEOUT
from tests.clearinghouse.conftest import CITY_PUBLIC, certificate, registration, snapshot
from tests.clearinghouse.usecases.test_claims import GL, JN, KEYS
from tests.reencode import reencoded
from timebank.envelope import decode, encode, identity
from timebank.v1 import clearing_pb2 as pb
from timebank.v1 import clearing_pb2_grpc

SUBMIT = "/timebank.v1.ClearinghouseService/Submit"
VARIANTS = 1000
BATCH = 64


@pytest.fixture
def tight(ch_app: ClearinghouseApp) -> Iterator[RunningServer]:
    """A clearinghouse whose districts may Submit one envelope a second, two at once: a
    few dozen charges anywhere would leave JN's bucket empty."""
    for node, district in ((JN, "江宁区"), (GL, "鼓楼区")):
        ch_app.execute(admission.admit, certificate(node, district, KEYS[node]), CITY_PUBLIC)
        ch_app.execute(claims.set_net_debit_limit, node, LIMIT)
    running = start_server(ch_app, CH_KEY, "127.0.0.1:0", submits_per_second=1,
                           submit_burst=2)
    yield running
    running.stop(1.0)


def test_a_thousand_reencodings_of_a_logged_envelope_change_nothing(
        ch_app: ClearinghouseApp, tight: RunningServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{tight.port}") as channel:
        stub = clearing_pb2_grpc.ClearinghouseServiceStub(channel)
        submit_raw = channel.unary_unary(SUBMIT)  # the bytes exactly as given
        first = stub.Submit(pb.Envelope.FromString(encode(
            registration("a" * 64, JN, JN, KEYS[JN]))), timeout=TIMEOUT).SerializeToString()

        size = stub.GetTreeHead(pb.GetTreeHeadRequest(), timeout=TIMEOUT).head.size
        leaves = stub.GetEntries(pb.GetEntriesRequest(start=0, end=size),
                                 timeout=TIMEOUT).entries
        logged = next(pb.LogEntry.FromString(e).envelope for e in leaves
                      if pb.LogEntry.FromString(e).kind == "registration")
        envelope = decode(logged)
        assert encode(envelope) == logged  # the log holds the canonical encoding
        rng = random.Random(1014)
        variants = {reencoded(logged, rng) for _ in range(VARIANTS * 2)}
        variants = set(sorted(variants)[:VARIANTS])
        assert len(variants) == VARIANTS and logged not in variants
        assert all(identity(decode(v)) == identity(envelope) for v in variants)
        before = snapshot(ch_app)

        ordered = sorted(variants)
        rng.shuffle(ordered)
        one_by_one, batched = ordered[:VARIANTS // 2], ordered[VARIANTS // 2:]
        for data in one_by_one:
            assert submit_raw(data, timeout=TIMEOUT) == first
        for start in range(0, len(batched), BATCH):
            chunk = batched[start:start + BATCH]
            answer = stub.SubmitBatch(pb.SubmitBatchRequest(envelopes=chunk, known_tree_size=size),
                                      timeout=TIMEOUT)
            assert [r.receipt for r in answer.results] == [first] * len(chunk)
            assert all(r.logged.index == answer.results[0].logged.index
                       for r in answer.results)

        assert stub.GetTreeHead(pb.GetTreeHeadRequest(), timeout=TIMEOUT).head.size == size
        assert snapshot(ch_app) == before  # no leaf, receipt, head or any other row
        # Nobody charged JN for any of it: its own next message goes through at once.
        stub.Submit(pb.Envelope.FromString(encode(registration("b" * 64, JN, JN, KEYS[JN]))),
                    timeout=TIMEOUT)
        assert stub.GetTreeHead(pb.GetTreeHeadRequest(), timeout=TIMEOUT).head.size == size + 1
