"""The outbox sender (ADR 0005, 0006, 0007).

Signs each outbox message with the node key and submits the messages due in batches
(SubmitBatch; never two of one claim at once). Nothing is acted on unless the answer's
tree head is the clearinghouse's and extends the last one this node verified, and each
receipt is the clearinghouse's, for the envelope sent (its identity), with its log leaf
proven in that head (``TrustedLog``). Envelopes are sent in their canonical encoding,
the one the log records (and a checkpoint's passbook cites). The receipts of a batch
are applied in one transaction, with the head they are proven in; temporary failures
back off, final refusals are applied.
"""

from __future__ import annotations

import threading

import grpc
import structlog

from node.domain.claims import OutboxRecord
from node.link.connection import CALL_TIMEOUT_SECONDS, Connection
from node.link.supervise import ClearinghouseAway
from node.link.verified_log import ReceiptError, VerifiedLog, accepted, reconciled
from node.usecases import checkpoints, claims, tree_heads
from node.usecases.app import NodeApp, Tx
from runtime.rpcerrors import error_reason
from runtime.tls import CERTIFICATE_REFUSALS
from timebank.transparency import LogError
from timebank.trusted_log import TrustedLog
from timebank.v1 import clearing_pb2 as pb

log = structlog.get_logger("node.clearing")

#: The most messages in one SubmitBatch (the clearinghouse's own limit), and the most
#: bytes (under its 64 KiB message limit, with room for the framing).
SEND_BATCH = 64
MAX_BATCH_BYTES = 60 * 1024
#: How long an idle sender waits for the outbox to be written before looking anyway.
IDLE_WAIT_SECONDS = 0.2
#: Statuses after which a message may go through later: the clearinghouse is away,
#: busy or over a limit that settles (LIMIT_REACHED, BUSY). A call refused for the
#: node's certificate (revoked, another district's: ``CERTIFICATE_REFUSALS``) says
#: nothing of its messages: they wait, as when the clearinghouse is away, until an
#: operator has fixed the certificate.
TEMPORARY = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                       grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED,
                       grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN,
                       grpc.StatusCode.INTERNAL})
_AWAY = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})

_Failure = tuple[OutboxRecord, grpc.StatusCode, str, str]  # message, code, reason, text
_Taken = tuple[OutboxRecord, bytes, pb.Receipt, pb.LogInclusion]  # message, sent, receipt, leaf


class Sender:
    """Sends the outbox until ``stop``; ``wake`` says something was written to it."""

    def __init__(self, app: NodeApp, connection: Connection, verified: VerifiedLog,
                 stop: threading.Event, wake: threading.Event) -> None:
        self._app = app
        self._conn = connection
        self._log = verified
        self._stop = stop
        self._wake = wake

    def run(self) -> None:
        while not self._stop.is_set():
            due = self._app.query(claims.outbox_due, SEND_BATCH)
            self._send_all(due)
            if not due:
                self._wake.wait(IDLE_WAIT_SECONDS)
                self._wake.clear()

    def send_pending(self) -> int:
        """Send every message due now, once each (for tests and one-shot tools)."""
        due = self._app.query(claims.outbox_due, SEND_BATCH)
        self._send_all(due)
        return len(due)

    def _send_all(self, due: list[OutboxRecord]) -> None:
        """Submit ``due`` in batches. ``outbox_due`` gives at most one message per claim
        (a claim's messages go in order), so a batch's messages are independent, except
        that a registration must be acted on before any later message about that person:
        the clearinghouse acts on a batch in order, and a batch ends at the size limits."""
        batch: list[tuple[OutboxRecord, bytes]] = []
        size = 0
        for message in due:
            raw = self._conn.sign_canonical(message.kind, message.envelope)
            if batch and (len(batch) == SEND_BATCH or size + len(raw) > MAX_BATCH_BYTES):
                self._send_batch(batch)
                batch, size = [], 0
            batch.append((message, raw))
            size += len(raw) + 8
        if batch:
            self._send_batch(batch)

    def _send_batch(self, batch: list[tuple[OutboxRecord, bytes]]) -> None:
        """Submit the batch in one SubmitBatch call; apply every receipt in one
        transaction (``apply_receipt`` applies each once); then the refusals and the
        temporary failures, one by one. A receipt that does not check out is applied
        after nothing else and raised; an unreachable clearinghouse backs the whole
        sender off once the rest is applied."""
        assert 0 < len(batch) <= SEND_BATCH
        if self._stop.is_set():
            return
        known = self._log.snapshot()
        request = pb.SubmitBatchRequest(envelopes=[raw for _, raw in batch],
                                        known_tree_size=known.size)
        failed: list[_Failure] = []
        taken: list[_Taken] = []
        bad: ReceiptError | None = None
        proven: TrustedLog | None = None
        try:
            answer = self._conn.stub.SubmitBatch(request, timeout=CALL_TIMEOUT_SECONDS)
        except grpc.RpcError as e:  # the whole call failed: every message waits
            code, reason, text = e.code(), error_reason(e), e.details() or ""
            failed = [(message, code, reason, text) for message, _ in batch]
        else:
            if len(answer.results) != len(batch):
                raise ReceiptError(f"the clearinghouse answered {len(answer.results)} "
                                   f"results for {len(batch)} messages")
            if any(r.WhichOneof("outcome") == "receipt" for r in answer.results):
                # Nothing is acted on unless the head is the clearinghouse's and extends
                # the last one this node verified.
                proven = accepted(known, answer.head, list(answer.consistency))
            for (message, raw), result in zip(batch, answer.results, strict=True):
                if result.WhichOneof("outcome") == "receipt":
                    assert proven is not None
                    try:
                        receipt = proven.check_receipt(result.receipt, raw, result.logged)
                    except LogError as e:
                        bad = ReceiptError(str(e))
                        continue
                    taken.append((message, raw, receipt, result.logged))
                    continue
                refusal = result.refusal
                code = grpc.StatusCode.__members__.get(refusal.code, grpc.StatusCode.UNKNOWN)
                failed.append((message, code, refusal.reason, refusal.message))
        if taken:
            assert proven is not None
            self._apply(known, proven, taken)
        away = False
        for message, code, reason, text in failed:
            refused_certificate = reason in CERTIFICATE_REFUSALS
            if code in TEMPORARY or refused_certificate:
                self._app.execute(claims.retry_later, message.id,
                                  f"{code.name} {reason}: {text}", reason or code.name)
                away = away or code in _AWAY or refused_certificate
                continue
            log.warning("the clearinghouse refused a message", kind=message.kind,
                        claim_id=message.claim_id, outbox_id=message.id, code=code.name,
                        reason=reason, detail=text)
            self._app.execute(claims.apply_refusal, message.id, code.name, reason, text)
        if bad is not None:
            raise bad
        if away:  # the clearinghouse is away: back off the whole sender
            raise ClearinghouseAway(f"{failed[0][1].name}: {failed[0][3]}")

    def _apply(self, known: TrustedLog, proven: TrustedLog, taken: list[_Taken]) -> None:
        """Apply the receipts proven in ``proven`` (accepted from ``known``) in one
        transaction, storing its head if it is the largest verified."""
        head = proven.head
        assert head is not None

        def apply(tx: Tx, grows: bool) -> None:
            if grows:
                tree_heads.store(tx, head)
            for message, raw, receipt, logged in taken:
                claims.apply_receipt(tx, message.id, receipt.state, receipt.reason,
                                     sent=message)
                if message.kind == checkpoints.CHECKPOINT:
                    checkpoints.anchored(tx, message.envelope, raw, logged, head.note)

        with self._log.lock:
            current = self._log.current()
            merged = proven
            if current.head != known.head:  # the witness verified another head meanwhile
                small, large = sorted((current.size, proven.size))
                merged = reconciled(current, proven, self._conn.consistency(small, large))
            grows = current.head is None or proven.size > current.size
            self._app.execute(apply, grows)
            if grows:
                self._log.hold(merged)
        # one line a batch (not one a message): the claims the clearinghouse took
        log.info("messages taken by the clearinghouse", count=len(taken),
                 claim_ids=[m.claim_id for m, *_ in taken if m.claim_id],
                 states=[_state_name(r.state) for m, _, r, _ in taken if m.claim_id],
                 log_size=head.size)


def _state_name(state: int) -> str:
    """A receipt's claim state as its name (the number, for one this node does not know)."""
    return pb.ClaimState.Name(state) if state in pb.ClaimState.values() else str(state)  # type: ignore[arg-type]
