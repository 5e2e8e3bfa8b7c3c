"""Reads that carry envelopes come in pages of at most ``log.PAGE_BYTES`` (1 MiB), well
under gRPC's 4 MiB response limit, and the readers that page ask on from where a page
ended: GetEntries over forty ~60 KB leaves of a real clearinghouse server, the remote
audit (`timebank audit --clearinghouse`) of it, and GetAdmissions with a small budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest

from clearinghouse.api.server import start_server
from clearinghouse.usecases import admission, claims, log
from clearinghouse.usecases.app import ClearinghouseApp
from node.link.connection import all_admissions
from runtime.rpcerrors import error_reason
from runtime.server import RunningServer
from tests.clearinghouse.api.test_service import CH_KEY, CH_PUBLIC, LIMIT, TIMEOUT
from tests.clearinghouse.conftest import CITY_PUBLIC, certificate, node_key
from tests.clearinghouse.usecases.test_claims import GL, JN, KEYS
from timebank import merkle, transparency
from timebank.envelope import encode, sign
from timebank.v1 import clearing_pb2 as pb
from timebank.v1 import clearing_pb2_grpc

LARGE = 40
PADDING = 60_000  # bytes of an unknown field in each registration body


def _large_registration(n: int) -> pb.Envelope:
    """A signed registration of about 60 KB: padded with an unknown field (field 15,
    length-delimited), which the body keeps under the signature."""
    body = pb.DirectoryRegistration(person_ref=f"{n:064x}", home_node_id=JN).SerializeToString()
    body += b"\x7a" + bytes([0xE0, 0xD4, 0x03]) + bytes([n % 256]) * PADDING  # 60000 varint
    return pb.Envelope.FromString(encode(sign("directory.register", body, JN, KEYS[JN])))


@pytest.fixture
def served(ch_app: ClearinghouseApp) -> Iterator[tuple[ClearinghouseApp, RunningServer]]:
    for node, district in ((JN, "江宁区"), (GL, "鼓楼区")):
        ch_app.execute(admission.admit, certificate(node, district, KEYS[node]), CITY_PUBLIC)
        ch_app.execute(claims.set_net_debit_limit, node, LIMIT)
    running = start_server(ch_app, CH_KEY, "127.0.0.1:0")
    yield ch_app, running
    running.stop(1.0)


def test_entries_come_in_pages_under_the_budget_and_the_remote_audit_reads_them_all(
        served: tuple[ClearinghouseApp, RunningServer]) -> None:
    _, running = served
    address = f"127.0.0.1:{running.port}"
    with grpc.insecure_channel(address) as channel:
        stub = clearing_pb2_grpc.ClearinghouseServiceStub(channel)
        for n in range(LARGE):
            stub.Submit(_large_registration(n), timeout=TIMEOUT)
        head = transparency.check_head(
            stub.GetTreeHead(pb.GetTreeHeadRequest(), timeout=TIMEOUT).head.note, CH_PUBLIC)
        assert head.size >= LARGE
        leaves: list[bytes] = []
        pages = []
        while len(leaves) < head.size:
            page = stub.GetEntries(pb.GetEntriesRequest(start=len(leaves), end=head.size),
                                   timeout=TIMEOUT)
            assert page.entries, "a page holds at least one entry"
            assert page.ByteSize() <= log.PAGE_BYTES
            pages.append(len(page.entries))
            leaves += page.entries
        assert len(pages) >= 3 and max(pages) < head.size  # short pages, not one answer
        assert merkle.root(leaves) == head.root
        # one entry larger than the whole budget would still come, alone
        assert log.page_length([log.PAGE_BYTES * 2, 10]) == 1
        assert log.page_length([]) == 0

    done = subprocess.run(
        [sys.executable, "-m", "city", "audit", "--clearinghouse", address,
         "--clearinghouse-key", CH_PUBLIC.hex(), "--json", "--insecure"],  # a plaintext server
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONIOENCODING": "utf-8", "COLUMNS": "200"})
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["ok"] is True
    entries = next(c for c in summary["checks"] if c["name"] == "log entries")
    assert f"{head.size} entries fetched" in json.dumps(entries)


def test_admissions_come_in_pages_and_a_reader_gets_them_all(
        served: tuple[ClearinghouseApp, RunningServer],
        monkeypatch: pytest.MonkeyPatch) -> None:
    app, running = served
    for i in range(12):  # twelve more districts, one with a rotated key
        node = f"3201{20 + i:02d}"
        app.execute(admission.admit, certificate(node, f"区{i}", node_key(node)), CITY_PUBLIC)
    app.execute(admission.admit, certificate(JN, "江宁区", node_key(JN, 1), serial=2),
                CITY_PUBLIC)
    monkeypatch.setattr(log, "PAGE_BYTES", 700)  # three or four certificates a page
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = clearing_pb2_grpc.ClearinghouseServiceStub(channel)
        first = stub.GetAdmissions(pb.GetAdmissionsRequest(), timeout=TIMEOUT)
        assert first.more and first.total == 15 and 0 < len(first.certificates) < 15
        assert first.ByteSize() <= 700 + 64
        everything = list(all_admissions(stub).certificates)
        assert len(everything) == len(set(everything)) == 15
        monkeypatch.setattr(log, "PAGE_BYTES", 1 << 20)
        whole = stub.GetAdmissions(pb.GetAdmissionsRequest(), timeout=TIMEOUT)
        assert not whole.more and list(whole.certificates) == everything
        past = stub.GetAdmissions(pb.GetAdmissionsRequest(skip=15), timeout=TIMEOUT)
        assert not past.more and not past.certificates and past.total == 15
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetAdmissions(pb.GetAdmissionsRequest(skip=2**63), timeout=TIMEOUT)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert error_reason(caught.value) == "BAD_PAGE"
