"""What one reader of the city's transparency log has verified, and the checks that keep
it honest (ADR 0007, 0013). Pure: no I/O, no clock, no threads.

A ``TrustedLog`` trusts one thing from outside, the clearinghouse's public key, and holds
the last tree head it verified under it. Every check a reader makes goes through it, so
that a node's sender, its witness and an offline verifier refuse the same things for the
same reasons:

- a new signed head is accepted only if the clearinghouse signed it, for this log (the
  origin its key names), and it extends the held head: the size never shrinks, another
  root at the held size is a fork, a larger tree needs an RFC 9162 consistency proof
  from the held one;
- a receipt is acted on only if the clearinghouse signed it, for the envelope sent (its
  identity, ``timebank.envelope.identity``), and its log leaf records that envelope in
  its canonical encoding and the state the receipt states and is proven in the held
  head;
- two heads verified from a common one along different paths (two threads of one node)
  must be consistent with each other too.

A view is immutable: accepting a head gives a new view and leaves the old one as it
was, so a caller can check a reply against the view it sent the request from while
another thread moves on (python-tuf's TrustedMetadataSet does the same job as one
mutable object behind one client; here two workers share the view, under their lock).
Whatever is refused raises ``transparency.LogError`` and changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.message import DecodeError

from timebank import transparency
from timebank.envelope import (
    CLEARINGHOUSE,
    EnvelopeError,
    Signed,
    decode,
    encode,
    identity,
    verify,
)
from timebank.keys import PUBLIC_KEY_LEN
from timebank.transparency import Head, LogError
from timebank.v1 import clearing_pb2 as pb

RECEIPT = "receipt"


class TrustedLog:
    """The clearinghouse's log as far as this reader has verified it: its key and the
    last head verified under it (None before the first, which is trusted on first use,
    as the node has always done)."""

    __slots__ = ("_head", "_key", "_keys", "_origin")

    def __init__(self, clearinghouse_key: bytes | transparency.LogKeys,
                 held: str | None = None) -> None:
        """Trust ``clearinghouse_key`` (or the keys the city's rotations name for each
        size, ``transparency.LogKeys``); ``held``, a signed head verified before (as a
        reader stored it), is checked again rather than believed."""
        keys = transparency.log_keys(clearinghouse_key)
        if not isinstance(keys.first, bytes) or len(keys.first) != PUBLIC_KEY_LEN:
            raise ValueError(f"a clearinghouse key is {PUBLIC_KEY_LEN} bytes")
        self._keys = keys
        self._key = keys.first
        self._origin = keys.origin
        self._head: Head | None = None if held is None else self.verify(held)

    def _holding(self, head: Head) -> TrustedLog:
        view = TrustedLog.__new__(TrustedLog)
        view._key, view._keys, view._origin, view._head = (self._key, self._keys,
                                                           self._origin, head)
        return view

    def with_keys(self, keys: transparency.LogKeys) -> TrustedLog:
        """This view, trusting the keys of a longer chain of the same log (a rotation
        the city signed since)."""
        if keys.first != self._key:
            raise ValueError("the keys of another log")
        view = self._holding(self._head) if self._head is not None else TrustedLog(keys)
        view._keys = keys
        return view

    @property
    def keys(self) -> transparency.LogKeys:
        """Which key signs heads of which size."""
        return self._keys

    def __repr__(self) -> str:
        return f"TrustedLog({self._origin!r}, size={self.size})"

    @property
    def key(self) -> bytes:
        """The clearinghouse's first public key (the log's name): the one thing trusted
        from outside; later keys only by the city's rotations."""
        return self._key

    @property
    def origin(self) -> str:
        """The log's name, which every head it signs must carry."""
        return self._origin

    @property
    def head(self) -> Head | None:
        """The last head verified (None before the first)."""
        return self._head

    @property
    def size(self) -> int:
        """The size of the held head (0 before the first)."""
        return 0 if self._head is None else self._head.size

    # ------------------------------------------------------------ signed heads

    def verify(self, note: str) -> Head:
        """The head a signed checkpoint states, once the clearinghouse's signature and
        this log's origin are checked; nothing about the held head (for a head cited
        on its own, as a passbook cites one)."""
        return transparency.check_head(note, self._keys)

    def accept(self, note: str, consistency: Sequence[bytes]) -> TrustedLog:
        """The view holding the head ``note`` states, if the clearinghouse signed it for
        this log and it extends the held head by ``consistency`` (the proof from the
        held size to the new one; none is needed from nothing, or at the same size).
        Refused: a bad or missing signature, another log's head, a smaller tree, another
        root at the held size, a proof that does not prove."""
        head = self.verify(note)
        transparency.check_extends(self._head, head, list(consistency))
        return self._holding(head)

    def reconcile(self, other: TrustedLog, consistency: Sequence[bytes]) -> TrustedLog:
        """Two views verified from a common head along different paths must be of one
        history: the larger head extends the smaller by ``consistency`` (the proof from
        the smaller size to the larger). Returns the view holding the larger."""
        if other.key != self._key:
            raise ValueError("views of two different logs cannot be reconciled")
        if other.head is None:
            return self
        if self._head is None:
            return other
        small, large = sorted((self, other), key=lambda view: view.size)
        assert large.head is not None
        return small.accept(large.head.note, consistency)

    # ------------------------------------------------------------ proofs

    def check_included(self, entry: bytes, index: int, path: Sequence[bytes]) -> None:
        """Leaf ``index`` of the held head is ``entry``, by the inclusion proof ``path``."""
        if self._head is None:
            raise LogError("no tree head is held yet: nothing can be proven in it")
        transparency.check_included(entry, index, self._head, list(path))

    def check_receipt(self, receipt: bytes, sent: bytes, logged: pb.LogInclusion) -> pb.Receipt:
        """The receipt inside ``receipt`` (a serialised envelope), once it is checked to be
        the clearinghouse's, for the envelope ``sent`` (its identity, whatever bytes
        carried it), and its log leaf (``logged``) to record that envelope in its
        canonical encoding and the claim state the receipt states, proven in the held
        head."""
        try:
            envelope = pb.Envelope.FromString(receipt)
            body = verify(Signed(envelope.kind, envelope.body, envelope.signer,
                                 envelope.key_id, envelope.signature),
                          self._keys.named(envelope.key_id))
            if envelope.kind != RECEIPT or envelope.signer != CLEARINGHOUSE:
                raise LogError(f"expected a receipt, got {envelope.kind!r}")
            answer = pb.Receipt.FromString(body)
        except (EnvelopeError, DecodeError) as e:
            raise LogError(f"the clearinghouse's receipt does not verify: {e}") from None
        try:
            ours = decode(sent)
        except EnvelopeError as e:
            raise ValueError(f"what was sent is not an envelope: {e}") from None
        if answer.envelope_sha256 != identity(ours):
            raise LogError("the receipt is for another envelope than the one sent")
        try:
            entry = pb.LogEntry.FromString(logged.entry)
        except DecodeError:
            raise LogError("the receipt's log leaf is not a LogEntry") from None
        if (logged.index != answer.log_index or entry.envelope != encode(ours)
                or entry.claim_id != answer.claim_id
                or (answer.claim_id and entry.state != answer.state)):
            raise LogError("the receipt's log leaf does not record what was sent")
        self.check_included(logged.entry, logged.index, logged.path)
        return answer


__all__ = ["RECEIPT", "TrustedLog"]
