"""The node's connection to the city clearinghouse: the outbox sender and the delivery
subscriber, two threads that run beside the gRPC server (ADR 0005, 0006).

The node opens every connection itself; it needs no inbound port. The **sender** signs
each outbox message with the node key, submits it, checks the clearinghouse's signature
on the receipt and that the receipt is for exactly the bytes sent, then applies it in
one transaction; temporary failures back off, final refusals are applied. The
**subscriber** keeps one Subscribe stream open from the last delivery applied, checks
the clearinghouse's signature on every delivery, applies each in its own transaction
(the inbox makes a redelivery change nothing) and acknowledges what it has applied.
Either thread survives any failure: it logs, waits and starts again.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from datetime import UTC

import grpc
import structlog
from google.protobuf.message import DecodeError
from nacl.signing import SigningKey

from node.usecases import claims
from node.usecases.app import NodeApp
from timebank.envelope import CLEARINGHOUSE, EnvelopeError, Signed, sign, verify
from timebank.rpcerrors import error_reason
from timebank.v1 import clearing_pb2 as pb
from timebank.v1 import clearing_pb2_grpc

log = structlog.get_logger("node.clearing")

SUBMIT_TIMEOUT_SECONDS = 10.0
SEND_BATCH = 64
IDLE_WAIT_SECONDS = 0.02
RECONNECT_FIRST = 0.2
RECONNECT_MAX = 10.0
ACK_EVERY_SECONDS = 0.5
#: Statuses after which a message may go through later: the clearinghouse is away,
#: busy or over a limit that settles (LIMIT_REACHED, BUSY).
TEMPORARY = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                       grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED,
                       grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN,
                       grpc.StatusCode.INTERNAL})


class ReceiptError(Exception):
    """The clearinghouse's answer is not a receipt it signed for what was sent."""


def _signed(envelope: pb.Envelope) -> Signed:
    return Signed(envelope.kind, envelope.body, envelope.signer, envelope.key_id,
                  envelope.signature)


def _to_wire(envelope: Signed) -> pb.Envelope:
    return pb.Envelope(kind=envelope.kind, body=envelope.body, signer=envelope.signer,
                       key_id=envelope.key_id, signature=envelope.signature)


class ClearingLink:
    """The sender and the subscriber of one node. ``start()``; ``stop()`` on shutdown."""

    def __init__(self, app: NodeApp, address: str, clearinghouse_key: bytes,
                 signing_key: SigningKey, *,
                 channel_options: list[tuple[str, int]] | None = None) -> None:
        self._app = app
        self._node_id = app.node.node_id
        self._ch_key = clearinghouse_key
        self._key = signing_key
        self._channel = grpc.insecure_channel(address, options=channel_options or [])
        self._stub = clearing_pb2_grpc.ClearinghouseServiceStub(self._channel)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._stream: grpc.Future | None = None  # type: ignore[type-arg]
        self.address = address

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        for name, target in (("sender", self._send_loop), ("subscriber", self._subscribe_loop)):
            thread = threading.Thread(target=self._guarded(target), name=f"timebank-{name}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        stream = self._stream
        if stream is not None:
            stream.cancel()
        for thread in self._threads:
            thread.join(timeout)
        self._channel.close()

    def wake(self) -> None:
        """Something was written to the outbox: send it now rather than at the next poll."""
        self._wake.set()

    def _guarded(self, loop: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            delay = RECONNECT_FIRST
            while not self._stop.is_set():
                try:
                    loop()
                    delay = RECONNECT_FIRST
                except Exception as e:  # the link must outlive any failure
                    if self._stop.is_set():
                        return
                    if isinstance(e, grpc.RpcError):
                        log.warning("clearinghouse unreachable; will retry",
                                    address=self.address, code=e.code().name,
                                    retry_in_seconds=round(delay, 1))
                    else:
                        log.exception("clearing link failed; will retry",
                                      retry_in_seconds=round(delay, 1))
                    self._stop.wait(delay)
                    delay = min(RECONNECT_MAX, delay * 2)
        return run

    # ------------------------------------------------------------ sender

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            due = self._app.query(claims.outbox_due, SEND_BATCH)
            for message in due:
                if self._stop.is_set():
                    return
                self._send(message.id, message.kind, message.envelope)
            if not due:
                self._wake.wait(IDLE_WAIT_SECONDS * 10)
                self._wake.clear()

    def send_pending(self) -> int:
        """Send every message due now, once each (for tests and one-shot tools)."""
        due = self._app.query(claims.outbox_due, SEND_BATCH)
        for message in due:
            self._send(message.id, message.kind, message.envelope)
        return len(due)

    def _send(self, message_id: int, kind: str, body: bytes) -> None:
        raw = _to_wire(sign(kind, body, self._node_id, self._key)).SerializeToString()
        try:
            answer = self._stub.Submit(pb.Envelope.FromString(raw),
                                       timeout=SUBMIT_TIMEOUT_SECONDS)
        except grpc.RpcError as e:
            code, reason, text = e.code(), error_reason(e), e.details() or ""
            if code in TEMPORARY:
                self._app.execute(claims.retry_later, message_id, f"{code.name} {reason}: {text}")
                if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise  # the clearinghouse is away: back off the whole sender
                return
            log.warning("the clearinghouse refused a message", kind=kind,
                        outbox_id=message_id, code=code.name, reason=reason, detail=text)
            self._app.execute(claims.apply_refusal, message_id, code.name, reason, text)
            return
        receipt = self._receipt(answer, raw)
        self._app.execute(claims.apply_receipt, message_id, receipt.state, receipt.reason)

    def _receipt(self, answer: pb.Envelope, sent: bytes) -> pb.Receipt:
        try:
            body = verify(_signed(answer), self._ch_key)
            if answer.kind != "receipt" or answer.signer != CLEARINGHOUSE:
                raise ReceiptError(f"expected a receipt, got {answer.kind!r}")
            receipt = pb.Receipt.FromString(body)
        except (EnvelopeError, DecodeError) as e:
            raise ReceiptError(f"the clearinghouse's receipt does not verify: {e}") from None
        if receipt.envelope_sha256 != hashlib.sha256(sent).digest():
            raise ReceiptError("the receipt is for other bytes than were sent")
        return receipt

    # ------------------------------------------------------------ subscriber

    def _subscribe_loop(self) -> None:
        after = self._app.query(claims.last_applied_seq)
        body = pb.SubscribeBody(node_id=self._node_id, after_seq=after)
        body.at.FromDatetime(self._app.clock.now().astimezone(UTC))
        request = _to_wire(sign("subscribe", body.SerializeToString(), self._node_id,
                                self._key))
        stream = self._stub.Subscribe(request)
        self._stream = stream  # type: ignore[assignment]
        acked, last_ack = after, time.monotonic()
        try:
            for envelope in stream:
                delivery = self._delivery(envelope)
                if self._app.execute(claims.apply_delivery, delivery):
                    self._wake.set()  # its answer may be in the outbox now
                if delivery.seq - acked >= 100 or time.monotonic() - last_ack > ACK_EVERY_SECONDS:
                    acked, last_ack = self._ack(delivery.seq), time.monotonic()
        finally:
            self._stream = None
            applied = self._app.query(claims.last_applied_seq)
            if applied > acked and not self._stop.is_set():
                self._ack(applied)

    def _delivery(self, envelope: pb.Envelope) -> pb.Delivery:
        try:
            body = verify(_signed(envelope), self._ch_key)
            if envelope.kind != "delivery" or envelope.signer != CLEARINGHOUSE:
                raise ReceiptError(f"expected a delivery, got {envelope.kind!r}")
            return pb.Delivery.FromString(body)
        except (EnvelopeError, DecodeError) as e:
            raise ReceiptError(f"a delivery does not verify: {e}") from None

    def _ack(self, seq: int) -> int:
        body = pb.AckBody(node_id=self._node_id, seq=seq)
        self._stub.Ack(_to_wire(sign("ack", body.SerializeToString(), self._node_id,
                                     self._key)), timeout=SUBMIT_TIMEOUT_SECONDS)
        return seq
