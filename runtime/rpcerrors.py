"""Reading a refusal on the client side: the ``google.rpc.ErrorInfo`` reason a node or
the clearinghouse attaches to every error status it returns."""

from __future__ import annotations

import grpc


def error_reason(e: grpc.RpcError) -> str:
    """The ErrorInfo reason of a failed call ("" when there is none)."""
    try:
        from google.rpc import error_details_pb2
        from grpc_status import rpc_status

        status = rpc_status.from_call(e)
    except Exception:  # details are optional; the status code suffices
        return ""
    if status is None:
        return ""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return ""
