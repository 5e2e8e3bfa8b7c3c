"""Numbers past what the log can hold are malformed requests: every public log read and
every signed sequence number or tree size at or beyond 2^63 is INVALID_ARGUMENT with a
reason, changes nothing, and never reaches the database driver (where it overflowed and
answered INTERNAL)."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from clearinghouse.usecases import claims
from clearinghouse.usecases.app import ClearinghouseApp
from runtime.errors import InvalidArgument
from runtime.rpcerrors import error_reason
from tests.clearinghouse.api.test_service import TIMEOUT, channel, server, stub  # noqa: F401
from tests.clearinghouse.conftest import refused
from tests.clearinghouse.usecases.test_claims import JN
from timebank.transparency import MAX_LOG_NUMBER
from timebank.v1 import clearing_pb2 as pb
from timebank.v1 import clearing_pb2_grpc

Stub = clearing_pb2_grpc.ClearinghouseServiceStub
TOO_LARGE = (MAX_LOG_NUMBER + 1, 2**64 - 1)

CALLS: dict[str, Callable[[Stub, int], object]] = {
    "GetTreeHead": lambda s, n: s.GetTreeHead(pb.GetTreeHeadRequest(size=n), timeout=TIMEOUT).head,
    "GetEntries": lambda s, n: s.GetEntries(pb.GetEntriesRequest(start=n - 1, end=n),
                                            timeout=TIMEOUT),
    "GetInclusionProof, size": lambda s, n: s.GetInclusionProof(
        pb.GetInclusionProofRequest(size=n, index=0), timeout=TIMEOUT),
    "GetInclusionProof, index": lambda s, n: s.GetInclusionProof(
        pb.GetInclusionProofRequest(index=n), timeout=TIMEOUT),
    "GetConsistencyProof, new": lambda s, n: s.GetConsistencyProof(
        pb.GetConsistencyProofRequest(old_size=1, new_size=n), timeout=TIMEOUT),
    "GetConsistencyProof, old": lambda s, n: s.GetConsistencyProof(
        pb.GetConsistencyProofRequest(old_size=n), timeout=TIMEOUT),
}


@pytest.mark.parametrize("number", TOO_LARGE)
@pytest.mark.parametrize("call", sorted(CALLS))
def test_a_log_read_past_the_largest_number_is_invalid_argument(
        stub: Stub, call: str, number: int) -> None:  # noqa: F811
    with pytest.raises(grpc.RpcError) as caught:
        CALLS[call](stub, number)
    error = caught.value
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert error_reason(error) == "BAD_LOG_RANGE"
    assert "internal error" not in (error.details() or "")


@pytest.mark.parametrize("number", TOO_LARGE)
def test_a_sequence_number_past_the_largest_is_refused_and_changes_nothing(
        ch_app: ClearinghouseApp, server: object, number: int) -> None:  # noqa: F811
    city = ch_app  # the server fixture admitted the districts
    with pytest.raises(InvalidArgument) as caught:
        city.query(claims.deliveries_after, JN, number, 10)
    assert caught.value.reason == "BAD_SEQ"
    error = refused(city, claims.ack, JN, number)
    assert isinstance(error, InvalidArgument) and error.reason == "BAD_SEQ"
    assert city.query(claims.deliveries_after, JN, MAX_LOG_NUMBER, 10) == []
