"""The protocol version on the wire (timebank.protocol, runtime.protocol), on real servers.

A client one minor version behind or ahead of a real clearinghouse is served (real
Submits and reads succeed), and sees the server's version in every answer's metadata;
a client of another major is refused FAILED_PRECONDITION PROTOCOL_MISMATCH, in both
languages, naming both versions and who must upgrade, and changes nothing; the
project's own channel (``runtime.tls.channel``: the node's link, its peer watch, the
CLI) carries the header; health checks and unversioned tools are served.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clearinghouse.api.server import OBSERVER
from clearinghouse.api.server import start_server as start_clearinghouse
from clearinghouse.api.servicer import SERVICE_NAME, ClearinghouseServicer, handlers
from clearinghouse.usecases import admission, claims
from clearinghouse.usecases.app import ClearinghouseApp
from node.link.connection import all_admissions
from runtime import server
from runtime.protocol import BAD_HEADER, MISMATCH, server_version, versioned
from runtime.rpcerrors import error_reason
from runtime.server import RunningServer
from runtime.tls import channel as tls_channel
from tests.clearinghouse.api.test_service import CH_KEY, LIMIT, TIMEOUT
from tests.clearinghouse.conftest import CITY_PUBLIC, certificate, registration, snapshot
from tests.clearinghouse.usecases.test_claims import GL, JN, KEYS
from timebank.envelope import encode
from timebank.protocol import HEADER, PROTOCOL, Version
from timebank.v1 import clearing_pb2 as pb
from timebank.v1 import clearing_pb2_grpc

# One engine is enough: the version is checked before any storage is touched.
pytestmark = pytest.mark.parametrize("ch_db_url", ["sqlite"], indirect=True)

AHEAD = Version(PROTOCOL.major, PROTOCOL.minor + 1)


def _admitted(app: ClearinghouseApp) -> ClearinghouseApp:
    for node, district in ((JN, "江宁区"), (GL, "鼓楼区")):
        app.execute(admission.admit, certificate(node, district, KEYS[node]), CITY_PUBLIC)
        app.execute(claims.set_net_debit_limit, node, LIMIT)
    return app


@pytest.fixture
def current(ch_app: ClearinghouseApp) -> Iterator[tuple[ClearinghouseApp, str]]:
    """A real clearinghouse as this release serves it (protocol PROTOCOL)."""
    running = start_clearinghouse(_admitted(ch_app), CH_KEY, "127.0.0.1:0")
    yield ch_app, f"127.0.0.1:{running.port}"
    running.stop(1.0)


def _serve_at(app: ClearinghouseApp, version: Version) -> RunningServer:
    """The same clearinghouse servicer, served by a server speaking ``version``: what a
    clearinghouse of another release answers."""
    servicer = ClearinghouseServicer(app, CH_KEY)
    app.after_write = servicer.publish_head
    return server.start_server(
        SERVICE_NAME, lambda s: s.add_generic_rpc_handlers((handlers(servicer),)), OBSERVER,
        "127.0.0.1:0", max_message_bytes=64 * 1024, workers=4,
        thread_name_prefix="protocol-test", tls=None, on_stop=servicer.close,
        protocol=version)


@pytest.fixture
def newer(ch_app: ClearinghouseApp) -> Iterator[tuple[ClearinghouseApp, str]]:
    """A real clearinghouse one minor version ahead of this release."""
    running = _serve_at(_admitted(ch_app), AHEAD)
    yield ch_app, f"127.0.0.1:{running.port}"
    running.stop(1.0)


def _talk(address: str, version: Version | None) -> tuple[int, Version | None]:
    """Submit a registration and read the tree head, as a client at ``version`` (None:
    through the project's own channel); the head's size and the server's version."""
    made = tls_channel(address, None) if version is None else versioned(
        grpc.insecure_channel(address), version)
    with made as channel:
        stub = clearing_pb2_grpc.ClearinghouseServiceStub(channel)
        reg = registration("ab" * 32, JN, JN, KEYS[JN])
        receipt = stub.Submit(pb.Envelope.FromString(encode(reg)), timeout=TIMEOUT)
        assert receipt.kind == "receipt"
        head, call = stub.GetTreeHead.with_call(pb.GetTreeHeadRequest(), timeout=TIMEOUT)
        return head.head.size, server_version(call.initial_metadata())


def test_a_client_one_minor_version_ahead_is_served(
        current: tuple[ClearinghouseApp, str]) -> None:
    _, address = current
    size, seen = _talk(address, AHEAD)
    assert size >= 3  # two admissions and the registration are in the log
    assert seen == PROTOCOL


def test_a_client_one_minor_version_behind_is_served(
        newer: tuple[ClearinghouseApp, str]) -> None:
    _, address = newer
    size, seen = _talk(address, None)  # this release's channel: PROTOCOL, a minor behind
    assert size >= 3
    assert seen == AHEAD


def _refused(address: str, version: Version) -> grpc.RpcError:
    with versioned(grpc.insecure_channel(address), version) as channel:
        stub = clearing_pb2_grpc.ClearinghouseServiceStub(channel)
        reg = registration("cd" * 32, JN, JN, KEYS[JN])
        with pytest.raises(grpc.RpcError) as refused:
            stub.Submit(pb.Envelope.FromString(encode(reg)), timeout=TIMEOUT)
        return refused.value


@pytest.mark.parametrize(("caller", "who"), [
    (Version(PROTOCOL.major + 1, 0), "this server must be upgraded"),
    (Version(PROTOCOL.major - 1, 7), "the caller must upgrade"),
])
def test_a_client_of_another_major_is_refused_and_told_who_must_upgrade(
        current: tuple[ClearinghouseApp, str], caller: Version, who: str) -> None:
    app, address = current
    before = snapshot(app)
    error = _refused(address, caller)
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == MISMATCH
    message = error.details() or ""
    assert f"协议 {PROTOCOL}" in message and f"调用方使用 {caller}" in message  # Chinese first
    assert f"speaks timebank protocol {PROTOCOL}, the caller {caller}" in message
    assert who in message
    assert server_version(error.initial_metadata()) == PROTOCOL
    assert snapshot(app) == before  # nothing was registered


def test_a_stream_of_another_major_is_refused_before_it_starts(
        current: tuple[ClearinghouseApp, str]) -> None:
    _, address = current
    with versioned(grpc.insecure_channel(address), Version(9, 0)) as channel:
        stub = clearing_pb2_grpc.ClearinghouseServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            next(iter(stub.Subscribe(pb.Envelope(kind="subscribe"), timeout=TIMEOUT)))
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(refused.value) == MISMATCH


def test_the_projects_own_channel_carries_the_header(
        ch_app: ClearinghouseApp) -> None:
    """The node's link reads the city's acts through ``runtime.tls.channel``: a
    clearinghouse of the next major refuses it, so the header was sent."""
    running = _serve_at(_admitted(ch_app), Version(PROTOCOL.major + 1, 0))
    try:
        with tls_channel(f"127.0.0.1:{running.port}", None) as channel, \
                pytest.raises(grpc.RpcError) as refused:
            all_admissions(clearing_pb2_grpc.ClearinghouseServiceStub(channel))
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "the caller must upgrade" in (refused.value.details() or "")
    finally:
        running.stop(1.0)


def test_an_unreadable_header_is_refused(current: tuple[ClearinghouseApp, str]) -> None:
    _, address = current
    with grpc.insecure_channel(address) as channel:
        stub = clearing_pb2_grpc.ClearinghouseServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetTreeHead(pb.GetTreeHeadRequest(), timeout=TIMEOUT,
                             metadata=((HEADER, "one.two"),))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(refused.value) == BAD_HEADER


def test_tools_without_the_header_and_health_checks_are_served(
        current: tuple[ClearinghouseApp, str]) -> None:
    """grpcurl, a monitor built from the exported protos, a Kubernetes probe: no header,
    still served; health is never gated, whatever a caller sends."""
    _, address = current
    with grpc.insecure_channel(address) as channel:
        head, call = clearing_pb2_grpc.ClearinghouseServiceStub(channel).GetTreeHead.with_call(
            pb.GetTreeHeadRequest(), timeout=TIMEOUT)
        assert head.head.size >= 2
        assert server_version(call.initial_metadata()) == PROTOCOL
    with versioned(grpc.insecure_channel(address), Version(9, 9)) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
        assert status.status == health_pb2.HealthCheckResponse.SERVING
