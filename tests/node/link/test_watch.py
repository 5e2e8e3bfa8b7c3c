"""The log watch against real clearinghouses: the federation tests' city, then a second
clearinghouse serving a copy of the first one's database under the same key (a split
view). 江宁区 stays on copy A, 鼓楼区 and 栖霞区 move to copy B, both copies take more
writes. Each node's real gRPC server answers GetLogHeads; each watch compares its
peers' heads with its own clearinghouse's log.

What must happen: before anything differs, nobody sees a fork; afterwards 江宁区 holds
conclusive evidence (its log is the larger, so the peers' heads are not its prefixes),
the others at least refutable evidence, every piece re-checks with the key alone;
江宁区's heads never become final (one cosigner of three) and it raises the finality
alarm, while the majority's heads become final. The alarms show in GetLogHeads and in
the ``timebank.log`` health service; what is kept survives a new link.
"""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack, closing
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clearinghouse.api.server import start_server as start_clearinghouse
from clearinghouse.storage.db import Database as ChDatabase
from clearinghouse.usecases.app import ClearinghouseApp
from node.api.server import start_server as start_node
from node.link.clearing_link import ClearingLink
from node.link.watch import HEALTH_SERVICE, Finality
from node.usecases import log_watch, tree_heads
from tests.federation.conftest import CH_KEY, City
from tests.federation.support import GL, JN, QX, enrol_at
from tests.helpers import id_card
from tests.node.link.support import CH_PUBLIC, eventually
from timebank import forks
from timebank.v1 import clearing_pb2, clearing_pb2_grpc, node_pb2, node_pb2_grpc

NODES = (JN, GL, QX)
pytestmark = pytest.mark.timeout(180)


def _free_ports(count: int) -> list[int]:
    with ExitStack() as stack:
        found = []
        for _ in range(count):
            s = stack.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            found.append(int(s.getsockname()[1]))
        return found


def _cosigned_size(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = clearing_pb2_grpc.ClearinghouseServiceStub(channel)
        try:
            return int(stub.GetTreeHead(clearing_pb2.GetTreeHeadRequest(cosigned=True),
                                        timeout=5).head.size)
        except grpc.RpcError:
            return 0


def _latest_size(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = clearing_pb2_grpc.ClearinghouseServiceStub(channel)
        return int(stub.GetTreeHead(clearing_pb2.GetTreeHeadRequest(), timeout=5).head.size)


def _verified(city: City, node_id: str) -> int:
    head = city[node_id].app.query(tree_heads.verified, CH_PUBLIC)
    return 0 if head is None else head.size


def _heads(address: str) -> node_pb2.GetLogHeadsResponse:
    with grpc.insecure_channel(address) as channel:
        answer: node_pb2.GetLogHeadsResponse = node_pb2_grpc.NodeServiceStub(channel).GetLogHeads(
            node_pb2.GetLogHeadsRequest(), timeout=5)
        return answer


def _log_health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        return int(health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=HEALTH_SERVICE), timeout=5).status)


@pytest.fixture
def split(city: City, tmp_path: Path) -> Iterator[tuple[City, str, dict[str, str]]]:
    """The city with a shared history every district cosigned, then split: copy B of
    the clearinghouse (same key, a copy of the database), 江宁区 on A, the others on B,
    every node serving gRPC and watching its two peers (by hand: long intervals)."""
    for n in NODES:
        enrol_at(city, n, "王芳", id_card(1965, n))
    city.settle()
    assert eventually(lambda: _cosigned_size(city.address) == _latest_size(city.address), 20)
    copy = tmp_path / "ch-copy-b.sqlite3"
    with closing(sqlite3.connect(tmp_path / "ch.sqlite3")) as src, \
            closing(sqlite3.connect(copy)) as dst:
        src.backup(dst)
    db_b = ChDatabase(f"sqlite:///{copy}")
    server_b = start_clearinghouse(ClearinghouseApp(db_b, city.clock), CH_KEY)
    address_b = f"127.0.0.1:{server_b.port}"
    addresses = dict(zip(NODES, (f"127.0.0.1:{p}" for p in _free_ports(3)), strict=True))
    servers = []
    try:
        for n in NODES:
            city[n].link.stop()
            city[n].link = ClearingLink(
                city[n].app, city.address if n == JN else address_b, CH_PUBLIC, city[n].key,
                peers=[a for m, a in addresses.items() if m != n], watch_seconds=3600,
                finality_seconds=1.0)
            servers.append(start_node(city[n].app, addresses[n], link=city[n].link))
        for n in NODES:  # every peer serves before the first round looks at it
            city[n].link.start()
        yield city, address_b, addresses
    finally:
        for s in servers:
            s.stop(1)
        server_b.stop(1)
        db_b.dispose()


def test_a_split_view_is_found_proven_and_the_minority_never_becomes_final(
        split: tuple[City, str, dict[str, str]]) -> None:
    city, address_b, addresses = split
    # ---- nothing differs yet: every head every peer holds is of each one's log
    for n in NODES:
        round_ = city[n].link.watch_once()
        assert round_.checked >= 3 and not round_.forks and not round_.unreachable, (n, round_)
        assert not round_.bad_heads, (n, round_)
    assert _log_health(addresses[JN]) == health_pb2.HealthCheckResponse.SERVING
    shared = _latest_size(city.address)

    # ---- both copies take writes: more on A (江宁区) than on B
    for i in range(4):
        enrol_at(city, JN, f"李{i}", id_card(1950, JN))
    enrol_at(city, GL, "张伟", id_card(1990, GL))
    assert eventually(lambda: _latest_size(city.address) >= shared + 4
                      and _latest_size(address_b) >= shared + 1, 20)
    assert eventually(lambda: all(_verified(city, n) > shared for n in (JN, GL)), 20)

    # ---- 江宁区 finds conclusive evidence: its peers' heads are not prefixes of its log
    found = city[JN].link.watch_once()
    assert found.forks, found
    assert any(e.conclusive for e in found.forks), [e.summary() for e in found.forks]
    # and 鼓楼区, whose log is the smaller, at least refutable evidence
    assert city[GL].link.watch_once().forks

    # ---- kept, served to anyone, re-checkable with the clearinghouse's key alone
    heads = _heads(addresses[JN])
    assert heads.clearinghouse_key == CH_PUBLIC.hex() and heads.node_id == JN
    assert [a.kind for a in heads.alarms if a.kind == log_watch.FORK]
    checked = [forks.check(forks.load(text), CH_PUBLIC) for text in heads.evidence]
    assert any(e.kind in (forks.Kind.PREFIX, forks.Kind.SAME_SIZE) for e in checked)
    sizes = {h.size for e in checked for h in e.heads}
    assert any(s > shared for s in sizes)
    assert _log_health(addresses[JN]) == health_pb2.HealthCheckResponse.NOT_SERVING
    again = city[JN].link.watch_once()  # the same fork is not kept twice
    assert len(city[JN].app.query(log_watch.status, CH_PUBLIC).forks) == len(heads.evidence)
    assert again.forks

    # ---- finality: 江宁区's own heads past the split have one cosigner of three
    assert _cosigned_size(city.address) <= shared
    assert eventually(lambda: city[JN].link.watch_once().finality is not None, 10)
    status = city[JN].app.query(log_watch.status, CH_PUBLIC)
    assert status.finality is not None and status.finality.final_size <= shared
    assert log_watch.FINALITY_KIND in [a.kind for a in _heads(addresses[JN]).alarms]
    # the majority's heads become final on B: no finality alarm there
    assert eventually(lambda: _cosigned_size(address_b) >= _latest_size(address_b), 20)
    assert eventually(lambda: city[GL].link.watch_once().lag_seconds == 0, 20)
    assert city[GL].app.query(log_watch.status, CH_PUBLIC).finality is None
    final = city[GL].app.query(tree_heads.final, CH_PUBLIC)
    assert final is not None and final.size > shared


def test_finality_waits_for_the_oldest_head_not_covered() -> None:
    clock = Finality(10.0, keep=3)
    assert clock.observe(5, 5, 0.0, 1000) == 0.0
    assert clock.observe(7, 5, 1.0, 1001) == 0.0  # first seen now
    assert clock.observe(9, 5, 4.0, 1004) == 3.0  # the oldest (7) counts
    for i, size in enumerate((10, 11, 12)):  # more than it keeps: the oldest stays
        clock.observe(size, 5, 5.0 + i, 1005 + i)
    assert clock.alarm(5, 11.5) is not None and clock.alarm(5, 11.5).size == 7  # type: ignore[union-attr]
    assert clock.observe(12, 9, 12.0, 1012) == 12.0 - 6.0  # 7 covered: 11 is the oldest kept
    assert clock.alarm(9, 12.0) is None
    assert clock.observe(12, 12, 13.0, 1013) == 0.0
    with pytest.raises(ValueError):
        Finality(0)
