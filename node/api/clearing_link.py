"""The node's connection to the city clearinghouse: the outbox sender and the delivery
subscriber, two threads that run beside the gRPC server (ADR 0005, 0006).

The node opens every connection itself; it needs no inbound port. The **sender** signs
each outbox message with the node key, submits it, checks the clearinghouse's signature
on the receipt and that the receipt is for exactly the bytes sent, then applies it;
the messages due are submitted in batches (SubmitBatch; never two of one claim at once)
and their receipts applied in one transaction; temporary failures back off, final refusals are
applied. The
**subscriber** keeps one Subscribe stream open from the last delivery applied, checks
the clearinghouse's signature on every batch of deliveries, applies the deliveries that have
arrived in one transaction (the inbox makes a redelivery change nothing) and
acknowledges what it has applied.
Either thread survives any failure: it logs, waits and starts again.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC

import grpc
import structlog
from google.protobuf.message import DecodeError
from nacl.signing import SigningKey

from node.storage.repo import OutboxRecord
from node.usecases import checkpoints, claims, tree_heads
from node.usecases.app import NodeApp, Tx
from runtime.rpcerrors import error_reason
from timebank import checkpoint as notes
from timebank import transparency
from timebank.envelope import CLEARINGHOUSE, EnvelopeError, Signed, sign, verify
from timebank.v1 import clearing_pb2 as pb
from timebank.v1 import clearing_pb2_grpc

log = structlog.get_logger("node.clearing")

SUBMIT_TIMEOUT_SECONDS = 10.0
#: The most messages in one SubmitBatch (the clearinghouse's own limit), and the most
#: bytes (under its 64 KiB message limit, with room for the framing).
SEND_BATCH = 64
MAX_BATCH_BYTES = 60 * 1024
#: The most stream messages (each a batch of up to 100 deliveries) the subscriber
#: applies in one transaction.
APPLY_BATCH = 10
IDLE_WAIT_SECONDS = 0.02
RECONNECT_FIRST = 0.2
RECONNECT_MAX = 10.0
ACK_EVERY_SECONDS = 0.5
#: How often the node looks for a new tree head to cosign, and anchors its ledger.
WITNESS_SECONDS = 2.0
CHECKPOINT_SECONDS = 600.0
#: Statuses after which a message may go through later: the clearinghouse is away,
#: busy or over a limit that settles (LIMIT_REACHED, BUSY).
TEMPORARY = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                       grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED,
                       grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN,
                       grpc.StatusCode.INTERNAL})


class ReceiptError(Exception):
    """The clearinghouse's answer is not a receipt it signed for what was sent."""


class ClearinghouseAway(Exception):
    """The clearinghouse could not be reached (or did not answer in time)."""


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
                 channel_options: list[tuple[str, int]] | None = None,
                 witness_seconds: float = WITNESS_SECONDS,
                 checkpoint_seconds: float = CHECKPOINT_SECONDS) -> None:
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
        self._witness_seconds = witness_seconds
        self._checkpoint_seconds = checkpoint_seconds
        # The last tree head verified: every head the clearinghouse shows must extend it.
        # Stored in the database (tree_heads); kept here too, guarded by the lock, so that
        # a batch does not read and re-verify it.
        self._head_lock = threading.Lock()
        self._verified: transparency.Head | None = None
        self._verified_loaded = False

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        for name, target in (("sender", self._send_loop), ("subscriber", self._subscribe_loop),
                             ("witness", self._witness_loop)):
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
                    if isinstance(e, grpc.RpcError | ClearinghouseAway):
                        code = e.code().name if isinstance(e, grpc.RpcError) else str(e)
                        log.warning("clearinghouse unreachable; will retry",
                                    address=self.address, code=code,
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
            self._send_all(due)
            if not due:
                self._wake.wait(IDLE_WAIT_SECONDS * 10)
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
            raw = _to_wire(sign(message.kind, message.envelope, self._node_id,
                                self._key)).SerializeToString()
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
        temporary failures, one by one. An unreachable clearinghouse backs the whole
        sender off once the rest is applied."""
        if self._stop.is_set():
            return
        with self._head_lock:
            known = self._verified_head()
        request = pb.SubmitBatchRequest(envelopes=[raw for _, raw in batch],
                                        known_tree_size=known.size if known else 0)
        failed: list[tuple[OutboxRecord, grpc.StatusCode, str, str]] = []
        receipts: list[tuple[OutboxRecord, bytes, pb.Receipt, pb.LogInclusion]] = []
        bad: ReceiptError | None = None
        head: transparency.Head | None = None
        try:
            answer = self._stub.SubmitBatch(request, timeout=SUBMIT_TIMEOUT_SECONDS)
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
                head = self._check_head(answer.head, known, list(answer.consistency))
            for (message, raw), result in zip(batch, answer.results, strict=True):
                if result.WhichOneof("outcome") == "receipt":
                    assert head is not None
                    try:
                        receipt = self._receipt(result.receipt, raw)
                        self._check_logged(result.logged, receipt, raw, head)
                    except ReceiptError as e:
                        bad = e
                        continue
                    receipts.append((message, raw, receipt, result.logged))
                    continue
                refusal = result.refusal
                code = grpc.StatusCode.__members__.get(refusal.code, grpc.StatusCode.UNKNOWN)
                failed.append((message, code, refusal.reason, refusal.message))
        if receipts:
            assert head is not None
            proven = head

            def apply(tx: Tx, grows: bool) -> None:
                if grows:
                    tree_heads.store(tx, proven)
                for message, raw, receipt, logged in receipts:
                    claims.apply_receipt(tx, message.id, receipt.state, receipt.reason,
                                         sent=message)
                    if message.kind == checkpoints.CHECKPOINT:
                        checkpoints.anchored(tx, message.envelope, raw, logged, proven.note)

            with self._head_lock:
                current = self._verified_head()
                if current != known:  # the witness verified another head meanwhile
                    self._reconcile(current, proven)
                grows = current is None or proven.size > current.size
                self._app.execute(apply, grows)
                if grows:
                    self._verified = proven
        away = False
        for message, code, reason, text in failed:
            if code in TEMPORARY:
                self._app.execute(claims.retry_later, message.id,
                                  f"{code.name} {reason}: {text}")
                away = away or code in (grpc.StatusCode.UNAVAILABLE,
                                        grpc.StatusCode.DEADLINE_EXCEEDED)
                continue
            log.warning("the clearinghouse refused a message", kind=message.kind,
                        outbox_id=message.id, code=code.name, reason=reason, detail=text)
            self._app.execute(claims.apply_refusal, message.id, code.name, reason, text)
        if bad is not None:
            raise bad
        if away:  # the clearinghouse is away: back off the whole sender
            raise ClearinghouseAway(f"{failed[0][1].name}: {failed[0][3]}")

    def _verified_head(self) -> transparency.Head | None:
        """The last head verified (the caller holds the lock)."""
        if not self._verified_loaded:
            self._verified = self._app.query(tree_heads.verified, self._ch_key)
            self._verified_loaded = True
        return self._verified

    def _reconcile(self, a: transparency.Head | None, b: transparency.Head) -> None:
        """Two heads verified from the same one by different paths must be consistent
        with each other too."""
        if a is None:
            return
        small, large = sorted((a, b), key=lambda h: h.size)
        self._check_head(large.note, small, self._consistency(small, large.size))

    def _consistency(self, old: transparency.Head | None, new_size: int) -> list[bytes]:
        """The clearinghouse's proof that the tree of ``new_size`` extends ``old`` (none
        is needed from nothing or to the same size)."""
        if old is None or not 0 < old.size < new_size:
            return []
        return list(self._stub.GetConsistencyProof(pb.GetConsistencyProofRequest(
            old_size=old.size, new_size=new_size), timeout=SUBMIT_TIMEOUT_SECONDS).path)

    def _check_head(self, note: str, known: transparency.Head | None,
                    consistency: list[bytes]) -> transparency.Head:
        try:
            head = transparency.check_head(note, self._ch_key)
            transparency.check_extends(known, head, consistency)
        except transparency.LogError as e:
            log.error("the clearinghouse's log does not check out; nothing was applied",
                      problem=str(e))
            raise ReceiptError(str(e)) from None
        return head

    @staticmethod
    def _check_logged(logged: pb.LogInclusion, receipt: pb.Receipt, sent: bytes,
                      head: transparency.Head) -> None:
        """The receipt's log leaf records exactly what was sent and the state the receipt
        states, and is proven in ``head``."""
        try:
            entry = pb.LogEntry.FromString(logged.entry)
        except DecodeError:
            raise ReceiptError("the receipt's log leaf is not a LogEntry") from None
        if (logged.index != receipt.log_index or entry.envelope != sent
                or entry.claim_id != receipt.claim_id
                or (receipt.claim_id and entry.state != receipt.state)):
            raise ReceiptError("the receipt's log leaf does not record what was sent")
        try:
            transparency.check_included(logged.entry, logged.index, head, list(logged.path))
        except transparency.LogError as e:
            raise ReceiptError(str(e)) from None

    def _receipt(self, raw: bytes, sent: bytes) -> pb.Receipt:
        try:
            answer = pb.Envelope.FromString(raw)
            body = verify(_signed(answer), self._ch_key)
            if answer.kind != "receipt" or answer.signer != CLEARINGHOUSE:
                raise ReceiptError(f"expected a receipt, got {answer.kind!r}")
            receipt = pb.Receipt.FromString(body)
        except (EnvelopeError, DecodeError) as e:
            raise ReceiptError(f"the clearinghouse's receipt does not verify: {e}") from None
        if receipt.envelope_sha256 != hashlib.sha256(sent).digest():
            raise ReceiptError("the receipt is for other bytes than were sent")
        return receipt

    # ------------------------------------------------------------ witness

    def _witness_loop(self) -> None:
        next_checkpoint = time.monotonic() + self._checkpoint_seconds
        while not self._stop.wait(self._witness_seconds):
            self.witness_once()
            if time.monotonic() >= next_checkpoint:
                self.checkpoint_now()
                next_checkpoint = time.monotonic() + self._checkpoint_seconds

    def checkpoint_now(self) -> checkpoints.Requested:
        """Queue a checkpoint of the ledger (if it grew) and send it."""
        requested = self._app.execute(checkpoints.request)
        if requested.queued:
            self._wake.set()
        return requested

    def witness_once(self) -> int:
        """Cosign the clearinghouse's latest tree head if it extends the last one this
        node verified (by a consistency proof) and is newer than the last it cosigned.
        Returns the size cosigned (0 if nothing was). The head is stored as cosigned
        before the cosignature leaves, so a crash can never lead to cosigning two
        inconsistent heads."""
        latest = self._stub.GetTreeHead(pb.GetTreeHeadRequest(), timeout=SUBMIT_TIMEOUT_SECONDS)
        with self._head_lock:
            known = self._verified_head()
        if known is not None and latest.size < known.size:
            return 0  # older than one already verified: look again next round
        # Fetched without the lock, which the sender needs to apply receipts ...
        proof = self._consistency(known, latest.size)
        with self._head_lock:
            current = self._verified_head()
            if current != known:  # ... unless it verified another head meanwhile
                if current is not None and latest.size < current.size:
                    return 0
                known, proof = current, self._consistency(current, latest.size)
            done = self._app.query(tree_heads.cosigned, self._ch_key)
            if done is not None and latest.size <= done.size:
                return 0
            head = self._check_head(latest.note, known, proof)
            self._app.execute(tree_heads.store, head, cosigned=True)
            self._verified = head
        text = notes.SignedNote.parse(head.note).text
        line = notes.cosign(text, transparency.witness_name(self._node_id), self._key,
                            int(self._app.clock.now().timestamp()))
        body = pb.CosignBody(node_id=self._node_id, size=head.size,
                             signature_line=line.rstrip("\n"))
        self._stub.AddCosignature(_to_wire(sign("cosign", body.SerializeToString(),
                                                self._node_id, self._key)),
                                  timeout=SUBMIT_TIMEOUT_SECONDS)
        return head.size

    # ------------------------------------------------------------ subscriber

    def _subscribe_loop(self) -> None:
        after = self._app.query(claims.last_applied_seq)
        body = pb.SubscribeBody(node_id=self._node_id, after_seq=after)
        body.at.FromDatetime(self._app.clock.now().astimezone(UTC))
        request = _to_wire(sign("subscribe", body.SerializeToString(), self._node_id,
                                self._key))
        stream = self._stub.Subscribe(request)
        self._stream = stream  # type: ignore[assignment]
        # A reader thread takes batches of deliveries off the stream as they come; this thread
        # applies whatever has arrived meanwhile (up to APPLY_BATCH messages) in one
        # transaction. The inbox
        # still makes each apply once; a failure rolls back the batch, and the next
        # Subscribe starts after the last delivery committed.
        incoming: queue.SimpleQueue[pb.Envelope | BaseException | None] = queue.SimpleQueue()

        def read() -> None:
            try:
                for envelope in stream:
                    incoming.put(envelope)
                incoming.put(None)
            except BaseException as e:  # handed to the applying thread, which raises it
                incoming.put(e)

        threading.Thread(target=read, name="timebank-subscribe-reader", daemon=True).start()
        # An acknowledgement waits for the clearinghouse's write lock, behind other
        # districts' batches: it goes out without holding up the deliveries behind it,
        # one at a time (they only move forward, so a later one covers a lost one).
        # ``acked``: the last sent; ``confirmed``: the last the clearinghouse took.
        acked = confirmed = after
        last_ack = time.monotonic()
        acking: grpc.Future | None = None  # type: ignore[type-arg]
        try:
            while True:
                batch = [incoming.get()]
                while len(batch) < APPLY_BATCH and isinstance(batch[-1], pb.Envelope):
                    try:
                        batch.append(incoming.get_nowait())
                    except queue.Empty:
                        break
                envelopes = [e for e in batch if isinstance(e, pb.Envelope)]
                if envelopes:
                    deliveries = [d for e in envelopes for d in self._deliveries(e)]

                    def apply(tx: Tx, deliveries: list[pb.Delivery] = deliveries) -> bool:
                        return any([claims.apply_delivery(tx, d) for d in deliveries])

                    if self._app.execute(apply):
                        self._wake.set()  # their answers may be in the outbox now
                    seq = deliveries[-1].seq
                    due = seq - acked >= 100 or time.monotonic() - last_ack > ACK_EVERY_SECONDS
                    if due and (acking is None or acking.done()):
                        if _acknowledged(acking):
                            confirmed = acked
                        acking, acked, last_ack = self._ack_later(seq), seq, time.monotonic()
                end = batch[-1]
                if end is None:
                    return
                if isinstance(end, BaseException):
                    raise end
        finally:
            self._stream = None
            stream.cancel()
            if acking is not None and acking.done() and _acknowledged(acking):
                confirmed = acked
            elif acking is not None:
                acking.cancel()
            applied = self._app.query(claims.last_applied_seq)
            if applied > confirmed and not self._stop.is_set():
                self._ack(applied)

    def _deliveries(self, envelope: pb.Envelope) -> list[pb.Delivery]:
        try:
            body = verify(_signed(envelope), self._ch_key)
            if envelope.kind != "deliveries" or envelope.signer != CLEARINGHOUSE:
                raise ReceiptError(f"expected deliveries, got {envelope.kind!r}")
            batch = pb.DeliveryBatch.FromString(body)
            found = [pb.Delivery.FromString(d) for d in batch.deliveries]
        except (EnvelopeError, DecodeError) as e:
            raise ReceiptError(f"a delivery does not verify: {e}") from None
        if not found:
            raise ReceiptError("the clearinghouse sent an empty batch of deliveries")
        return found

    def _ack_request(self, seq: int) -> pb.Envelope:
        body = pb.AckBody(node_id=self._node_id, seq=seq)
        return _to_wire(sign("ack", body.SerializeToString(), self._node_id, self._key))

    def _ack(self, seq: int) -> int:
        self._stub.Ack(self._ack_request(seq), timeout=SUBMIT_TIMEOUT_SECONDS)
        return seq

    def _ack_later(self, seq: int) -> grpc.Future:  # type: ignore[type-arg]
        return self._stub.Ack.future(self._ack_request(seq), timeout=SUBMIT_TIMEOUT_SECONDS)


def _acknowledged(acking: grpc.Future | None) -> bool:  # type: ignore[type-arg]
    """Whether a finished acknowledgement was taken; one that failed is logged (the next
    one covers it)."""
    if acking is None or acking.cancelled():
        return False
    error = acking.exception()
    if error is None:
        return True
    code = error.code().name if isinstance(error, grpc.Call) else str(error)
    log.warning("an acknowledgement did not reach the clearinghouse; the next one covers it",
                code=code)
    return False
