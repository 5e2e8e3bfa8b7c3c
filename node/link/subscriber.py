"""The delivery subscriber (ADR 0005, 0006).

Keeps one Subscribe stream open from the last delivery applied. A reader thread takes
the stream's messages (each a batch of up to 100 deliveries, signed by the
clearinghouse) into a queue of at most ``backlog_items``; the subscriber's own thread
applies whatever has arrived, up to ``APPLY_BATCH`` messages in one transaction, after
checking the clearinghouse's signature on each, and acknowledges what it applied.

The clearinghouse's signature says only that it relays a delivery. What a relayed
envelope says is acted on only if its signer's own signature verifies under a key the
city's certificates give it (``CityView``, at most ``FRESH_SECONDS`` old, and asked for
again once for a batch when a key is not in it); otherwise the delivery is refused,
logged, counted and acknowledged like any other, and nothing else changes
(``claims.apply_delivery``).

The queue is bounded so that a database slower than the stream costs time, not memory:
when it is full the reader stops reading, gRPC's flow control stops the clearinghouse
sending, and nothing is lost (what was not read is delivered again on the next
Subscribe). The inbox makes each delivery apply once; a failure rolls back its batch,
and the next Subscribe starts after the last delivery committed.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from datetime import UTC

import grpc
import structlog
from google.protobuf.message import DecodeError

from node import metrics
from node.link.city import CityView
from node.link.connection import CALL_TIMEOUT_SECONDS, Connection, from_wire
from node.link.verified_log import ReceiptError
from node.usecases import claims
from node.usecases.app import NodeApp, Tx
from timebank.envelope import CLEARINGHOUSE, EnvelopeError, verify
from timebank.v1 import clearing_pb2 as pb

log = structlog.get_logger("node.clearing")

#: The most stream messages applied in one transaction.
APPLY_BATCH = 10
#: The most stream messages read and waiting to be applied (the clearinghouse sends at
#: most 56 KiB in one; the channel's receive limit bounds what any other could send).
BACKLOG_ITEMS = 2 * APPLY_BATCH
#: Acknowledge at least every this many deliveries, or this often; and once the stream
#: has been quiet this long, whatever was applied since the last acknowledgement.
ACK_EVERY_DELIVERIES = 100
ACK_EVERY_SECONDS = 0.5
#: How often a reader waiting for room looks whether the stream was given up.
_PUT_POLL_SECONDS = 0.1
#: How long a reader takes to see its stream cancelled, at most (it is waited for).
_READER_EXIT_SECONDS = 1.0

_Item = pb.Envelope | BaseException | None  # a message; the stream failed; it ended


class _Backlog:
    """What one stream's reader has read and the subscriber not yet taken, at most
    ``items`` in all: messages, then the stream's end (None) or failure (the exception)."""

    def __init__(self, items: int) -> None:
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=items)
        self.given_up = threading.Event()  # the subscriber is done with this stream
        self.waiting = threading.Event()  # the reader holds a message it has no room for

    def __len__(self) -> int:
        return self._queue.qsize()

    def put(self, item: _Item) -> bool:
        """Put ``item``, waiting while the backlog is full; False if the stream was given
        up meanwhile."""
        try:
            self._queue.put_nowait(item)
            return True
        except queue.Full:
            pass
        self.waiting.set()
        try:
            while not self.given_up.is_set():
                try:
                    self._queue.put(item, timeout=_PUT_POLL_SECONDS)
                    return True
                except queue.Full:
                    continue
            return False
        finally:
            self.waiting.clear()

    def take(self, most: int, wait: float) -> list[_Item]:
        """What has arrived: at least one item, waiting up to ``wait`` seconds for it
        (none if nothing came); at most ``most``, the last of them the stream's end or
        failure if it came."""
        try:
            batch = [self._queue.get(timeout=wait)]
        except queue.Empty:
            return []
        while len(batch) < most and isinstance(batch[-1], pb.Envelope):
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        assert 1 <= len(batch) <= most
        return batch


def _read(stream: Iterator[pb.Envelope], backlog: _Backlog) -> None:
    """The reader: the stream's messages into ``backlog`` as room allows, then its end or
    its failure; until the subscriber gives the stream up."""
    try:
        for envelope in stream:
            if not backlog.put(envelope):
                return
        backlog.put(None)
    except BaseException as e:  # handed to the applying thread, which raises it
        backlog.put(e)


class Subscriber:
    """Applies this node's deliveries until ``stop``; ``wake`` tells the sender that
    answers may be waiting in the outbox."""

    def __init__(self, app: NodeApp, connection: Connection, stop: threading.Event,
                 wake: threading.Event, *, backlog_items: int = BACKLOG_ITEMS,
                 city: CityView | None = None) -> None:
        if backlog_items < 1:
            raise ValueError("the subscriber's backlog holds at least one message")
        self._app = app
        self._conn = connection
        self._city = city if city is not None else CityView(app, connection, stop)
        self._stop = stop
        self._wake = wake
        self.backlog_items = backlog_items
        self._stream: grpc.Future | None = None  # type: ignore[type-arg]
        self._backlog: _Backlog | None = None

    @property
    def backlog(self) -> int:
        """Stream messages read and not yet taken to be applied (0 with no stream)."""
        backlog = self._backlog
        return 0 if backlog is None else len(backlog)

    @property
    def paused(self) -> bool:
        """Whether the reader holds a message it has no room for, and so reads no more."""
        backlog = self._backlog
        return backlog is not None and backlog.waiting.is_set()

    def cancel(self) -> None:
        """End the open stream (on stop)."""
        stream = self._stream
        if stream is not None:
            stream.cancel()

    def run(self) -> None:
        """One Subscribe stream, applied until it ends; raises on any failure."""
        after = self._app.query(claims.last_applied_seq)
        body = pb.SubscribeBody(node_id=self._conn.node_id, after_seq=after)
        body.at.FromDatetime(self._app.clock.now().astimezone(UTC))
        stream = self._conn.stub.Subscribe(
            self._conn.sign("subscribe", body.SerializeToString()))
        self._stream = stream  # type: ignore[assignment]
        if self._stop.is_set():  # stopped while it was opening: ``cancel`` missed it
            stream.cancel()
        backlog = self._backlog = _Backlog(self.backlog_items)
        reader = threading.Thread(target=_read, args=(stream, backlog),
                                  name="timebank-subscribe-reader", daemon=True)
        reader.start()
        # An acknowledgement waits for the clearinghouse's write lock, behind other
        # districts' batches: it goes out without holding up the deliveries behind it,
        # one at a time (they only move forward, so a later one covers a lost one).
        # ``acked``: the last sent; ``confirmed``: the last the clearinghouse took.
        acked = confirmed = seq = after
        last_ack = time.monotonic()
        acking: grpc.Future | None = None  # type: ignore[type-arg]
        try:
            while True:
                batch = backlog.take(APPLY_BATCH, ACK_EVERY_SECONDS)
                envelopes = [e for e in batch if isinstance(e, pb.Envelope)]
                if envelopes:
                    seq = self._apply([d for e in envelopes for d in self._deliveries(e)])
                due = seq > acked and (not batch or seq - acked >= ACK_EVERY_DELIVERIES
                                       or time.monotonic() - last_ack > ACK_EVERY_SECONDS)
                if due and (acking is None or acking.done()):
                    if _acknowledged(acking):
                        confirmed = acked
                    acking, acked, last_ack = self._ack_later(seq), seq, time.monotonic()
                if not batch:
                    continue
                end = batch[-1]
                if end is None:
                    return
                if isinstance(end, BaseException):
                    raise end
        finally:
            backlog.given_up.set()
            self._stream = None
            self._backlog = None
            stream.cancel()
            reader.join(_READER_EXIT_SECONDS)
            if acking is not None and acking.done() and _acknowledged(acking):
                confirmed = acked
            elif acking is not None:
                acking.cancel()
            applied = self._app.query(claims.last_applied_seq)
            if applied > confirmed and not self._stop.is_set():
                self._ack(applied)

    def _apply(self, deliveries: list[pb.Delivery]) -> int:
        """Apply ``deliveries`` in one transaction, each checked against the city's
        admissions as fresh as ``FRESH_SECONDS`` (asked for once more if one names a key
        not in them); the last one's sequence number."""
        relayed = [d.relayed for d in deliveries if d.HasField("relayed")]
        city = self._city.fresh() if relayed else self._city.current()
        if any(not city.knows_key(e.signer, e.key_id) for e in relayed):
            self._city.refresh()
            city = self._city.current()

        def apply(tx: Tx) -> list[claims.Applied]:
            return [claims.apply_delivery(tx, d, city) for d in deliveries]

        done = self._app.execute(apply)
        new = [a for a in done if a.new and a.refused is None]
        if new:  # one line a batch: the claims the deliveries concern
            log.info("deliveries applied", first_seq=new[0].seq, last_seq=new[-1].seq,
                     kinds=[a.kind for a in new], claim_ids=[a.claim_id for a in new])
        for applied in done:
            refused = applied.refused
            if refused is None:
                continue
            metrics.REFUSED_DELIVERIES.labels(reason=refused.reason).inc()
            log.error("delivery refused: the envelope relayed is not signed by an admitted, "
                      "unrevoked key of the district that must say it; nothing of it was "
                      "applied", seq=refused.seq, kind=refused.kind, signer=refused.signer,
                      key_id=refused.key_id, claim_id=refused.claim_id,
                      reason=refused.reason, detail=refused.detail)
        if any(a.new and a.refused is None for a in done):
            self._wake.set()  # their answers may be in the outbox now
        return deliveries[-1].seq

    def _deliveries(self, envelope: pb.Envelope) -> list[pb.Delivery]:
        """The deliveries in a stream message, once it is checked to be a batch the
        clearinghouse signed."""
        try:
            body = verify(from_wire(envelope), self._conn.log_keys.named(envelope.key_id))
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
        body = pb.AckBody(node_id=self._conn.node_id, seq=seq)
        return self._conn.sign("ack", body.SerializeToString())

    def _ack(self, seq: int) -> None:
        self._conn.stub.Ack(self._ack_request(seq), timeout=CALL_TIMEOUT_SECONDS)

    def _ack_later(self, seq: int) -> grpc.Future:  # type: ignore[type-arg]
        return self._conn.stub.Ack.future(self._ack_request(seq), timeout=CALL_TIMEOUT_SECONDS)


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
