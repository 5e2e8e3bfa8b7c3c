"""A node's API checks the protocol version too (runtime.protocol): the CLI's channel
(``node_channel``) carries this release's version past the check, a client of another
major is refused before anything else, and the node names its version either way."""

from __future__ import annotations

import grpc
import pytest

from node.cli.client import node_channel
from runtime.protocol import MISMATCH, server_version, versioned
from runtime.rpcerrors import error_reason
from tests.node.api.support import TIMEOUT, Api
from timebank.protocol import PROTOCOL, Version
from timebank.v1 import node_pb2 as pb
from timebank.v1 import node_pb2_grpc


def test_a_node_serves_its_own_cli_and_refuses_another_major(api: Api) -> None:
    address = f"127.0.0.1:{api.port}"
    with node_channel(address, None) as channel, pytest.raises(grpc.RpcError) as past:
        node_pb2_grpc.NodeServiceStub(channel).WhoAmI(pb.WhoAmIRequest(), timeout=TIMEOUT)
    assert past.value.code() is grpc.StatusCode.UNAUTHENTICATED  # past the version check
    assert server_version(past.value.initial_metadata()) == PROTOCOL

    newer = Version(PROTOCOL.major + 1, 0)
    with versioned(grpc.insecure_channel(address), newer) as channel, \
            pytest.raises(grpc.RpcError) as refused:
        node_pb2_grpc.NodeServiceStub(channel).WhoAmI(pb.WhoAmIRequest(), timeout=TIMEOUT)
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(refused.value) == MISMATCH
    assert "this server must be upgraded" in (refused.value.details() or "")
