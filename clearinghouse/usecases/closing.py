"""A settlement period closed at a bureau operator's request (``CloseSettlement``, from
the bureau's console).

It is ``settlement.close``, the function `timebank clearinghouse settle close` and the
serving schedule call, with the same checks, the same statement signed by the same
clearinghouse key and the same leaf; what this adds is the request's own checks (a
month or a log size, and a reason for the log) and one refusal said the way the console
reads it: a period closed already is FAILED_PRECONDITION ``ALREADY_CLOSED`` (the state
of the city refuses it, as an unended month does), where the command line says
ALREADY_EXISTS. Who asked is the caller's certificate's business (``clearinghouse.api``
checks it is a bureau operator's and logs the name); nothing here trusts the request for
it.
"""

from __future__ import annotations

from dataclasses import dataclass

from clearinghouse.usecases import settlement, wire
from clearinghouse.usecases.app import Tx
from runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from timebank.v1 import clearing_pb2 as pb

#: The most characters of an operator's reason (as of a decision's, ``settlement``).
MAX_REASON = settlement.MAX_TEXT
#: The most characters of a period or label read at all (a label is far shorter).
MAX_NAME = 64


@dataclass(frozen=True, slots=True)
class CloseRequest:
    """What the operator asked, checked: a calendar month, or a log size with an
    optional label; and why."""

    period: str | None
    up_to: int | None
    label: str | None
    reason: str

    def __post_init__(self) -> None:
        assert (self.period is None) != (self.up_to is None), self
        assert self.label is None or self.up_to is not None, self
        assert 1 <= len(self.reason) <= MAX_REASON and self.reason == self.reason.strip()

    @property
    def named(self) -> str:
        """The period's label as ``settlement.close`` names it."""
        if self.period is not None:
            return self.period
        return self.label or f"log-{self.up_to}"


def request_of(msg: pb.CloseSettlementRequest) -> CloseRequest:
    """The request, checked (INVALID_ARGUMENT BAD_PERIOD, BAD_REASON); the period's own
    form is ``settlement.close``'s to check."""
    which = msg.WhichOneof("end")
    if which is None:
        raise InvalidArgument("给出 period（YYYY-MM）或 up_to（日志条数）之一 / give a period "
                              "(a calendar month, YYYY-MM) or up_to (a log size)", "BAD_PERIOD")
    if which == "period" and msg.label:
        raise InvalidArgument("label 只与 up_to 一起用 / a label goes with up_to: a month is "
                              "named by itself", "BAD_PERIOD")
    for text in (msg.period, msg.label):
        if len(text) > MAX_NAME:
            raise InvalidArgument(f"期间名称过长 / a period's name is at most {MAX_NAME} "
                                  f"characters", "BAD_PERIOD")
    reason = msg.reason.strip()
    if not 1 <= len(reason) <= MAX_REASON:
        raise InvalidArgument(f"写明结算理由（至多 {MAX_REASON} 字）/ say why the period is "
                              f"closed now, in at most {MAX_REASON} characters: it is logged "
                              "with your name", "BAD_REASON")
    if which == "period":
        return CloseRequest(msg.period, None, None, reason)
    return CloseRequest(None, msg.up_to, msg.label or None, reason)


def close(tx: Tx, sign: settlement.Sign, request: CloseRequest) -> settlement.Closed:
    """Close the period ``request`` names, as ``settlement.close`` does (its refusals,
    but ALREADY_CLOSED as FAILED_PRECONDITION)."""
    try:
        return settlement.close(tx, sign, period=request.period, up_to=request.up_to,
                                label=request.label)
    except AlreadyExists as e:
        if e.reason != "ALREADY_CLOSED":  # pragma: no cover - close refuses nothing else so
            raise
        raise FailedPrecondition(
            f"期间 {request.named} 已结算 / the period {request.named} is closed already; "
            "GetSettlement reads its statement", e.reason) from None


def response_of(closed: settlement.Closed) -> pb.CloseSettlementResponse:
    """What ``CloseSettlement`` answers: the statement as ``GetSettlement`` returns it."""
    s = closed.statement
    return pb.CloseSettlementResponse(
        serial=s.serial, period=s.period, revision=s.revision,
        statement=wire.to_bytes(closed.envelope), log_index=closed.log_index,
        final=closed.final)


__all__ = ["MAX_REASON", "CloseRequest", "close", "request_of", "response_of"]
