"""What every worker of the link needs to call the clearinghouse: the stub over the
link's one channel, who this node is and its key, and the clearinghouse's key."""

from __future__ import annotations

from dataclasses import dataclass

from nacl.signing import SigningKey

from timebank.envelope import Signed, encode, sign
from timebank.v1 import clearing_pb2 as pb
from timebank.v1 import clearing_pb2_grpc

#: How long any one call to the clearinghouse may take.
CALL_TIMEOUT_SECONDS = 10.0


def from_wire(envelope: pb.Envelope) -> Signed:
    return Signed(envelope.kind, envelope.body, envelope.signer, envelope.key_id,
                  envelope.signature)


def to_wire(envelope: Signed) -> pb.Envelope:
    return pb.Envelope(kind=envelope.kind, body=envelope.body, signer=envelope.signer,
                       key_id=envelope.key_id, signature=envelope.signature)


@dataclass(frozen=True, slots=True)
class Connection:
    """The clearinghouse at ``address``, as this node (``node_id``, signing with ``key``)
    talks to it; ``clearinghouse_key`` is the public key it must sign with."""

    stub: clearing_pb2_grpc.ClearinghouseServiceStub
    address: str
    node_id: str
    key: SigningKey
    clearinghouse_key: bytes

    def sign(self, kind: str, body: bytes) -> pb.Envelope:
        """``body`` as an envelope of ``kind`` signed by this node."""
        return to_wire(sign(kind, body, self.node_id, self.key))

    def sign_canonical(self, kind: str, body: bytes) -> bytes:
        """``body`` as an envelope of ``kind`` signed by this node, in the canonical
        encoding (``timebank.envelope.encode``): the bytes the log will record."""
        return encode(sign(kind, body, self.node_id, self.key))

    def consistency(self, old_size: int, new_size: int) -> list[bytes]:
        """The clearinghouse's proof that the tree of ``new_size`` extends the one of
        ``old_size`` (none is needed from nothing or to the same size)."""
        if not 0 < old_size < new_size:
            return []
        return list(self.stub.GetConsistencyProof(pb.GetConsistencyProofRequest(
            old_size=old_size, new_size=new_size), timeout=CALL_TIMEOUT_SECONDS).path)
