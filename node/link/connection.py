"""What every worker of the link needs to call the clearinghouse: the stub over the
link's one channel, who this node is and its key, and the clearinghouse's key."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from nacl.signing import SigningKey

from timebank.envelope import Signed, encode, sign
from timebank.transparency import LogKeys
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


class LogKeyRing:
    """The clearinghouse keys this node trusts now, shared by the link's workers: the one
    in its configuration, then each key a rotation the city signed names from a tree
    size on (``CityView`` updates it; ADR 0018). Never a key on the clearinghouse's
    word."""

    def __init__(self, first: bytes) -> None:
        self._keys = LogKeys(first)
        self._lock = threading.Lock()

    @property
    def current(self) -> LogKeys:
        with self._lock:
            return self._keys

    def update(self, keys: LogKeys) -> bool:
        """Trust a longer chain of the same log; return whether it changed."""
        with self._lock:
            if keys.first != self._keys.first or len(keys.changes) <= len(self._keys.changes):
                return False
            self._keys = keys
            return True


@dataclass(frozen=True, slots=True)
class Connection:
    """The clearinghouse at ``address``, as this node (``node_id``, signing with ``key``)
    talks to it; ``clearinghouse_key`` is the public key it must sign with."""

    stub: clearing_pb2_grpc.ClearinghouseServiceStub
    address: str
    node_id: str
    key: SigningKey
    clearinghouse_key: bytes
    ring: LogKeyRing | None = None

    @property
    def log_keys(self) -> LogKeys:
        """The clearinghouse keys trusted now (the configured one, and those the city
        rotated it to)."""
        return self.ring.current if self.ring is not None else LogKeys(self.clearinghouse_key)

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


#: How often the admissions may change under a reader before it gives up.
ADMISSIONS_ATTEMPTS = 3
#: The most pages one read of the admissions takes (each at most 1 MiB).
MAX_ADMISSION_PAGES = 64


class AdmissionsChanged(Exception):
    """The city's acts changed every time they were read, page by page."""


def all_admissions(stub: clearing_pb2_grpc.ClearinghouseServiceStub,
                   timeout: float = CALL_TIMEOUT_SECONDS, *,
                   deadline: float | None = None) -> pb.GetAdmissionsResponse:
    """Every envelope of GetAdmissions in one message, read page by page (each page is at
    most 1 MiB); if the list changes while it is read (``total`` differs), it is read
    again from the start. Whoever uses them verifies each under the city key.

    Each call waits at most ``timeout`` seconds and, given a ``deadline`` (on
    ``time.monotonic``'s clock), no later than it: the whole read is then bounded."""

    def wait() -> float:
        if deadline is None:
            return timeout
        return max(0.05, min(timeout, deadline - time.monotonic()))

    for _ in range(ADMISSIONS_ATTEMPTS):
        found = stub.GetAdmissions(pb.GetAdmissionsRequest(), timeout=wait())
        whole = pb.GetAdmissionsResponse()
        whole.CopyFrom(found)
        received = _count(found)
        for _ in range(MAX_ADMISSION_PAGES):
            if not found.more or not _count(found):
                break
            found = stub.GetAdmissions(pb.GetAdmissionsRequest(skip=received),
                                       timeout=wait())
            if found.total != whole.total:
                break
            for name in ("certificates", "revocations", "rosters", "policies", "key_acts"):
                getattr(whole, name).extend(getattr(found, name))
            received += _count(found)
        if found.total == whole.total and not found.more:
            whole.more = False
            return whole
    raise AdmissionsChanged(f"the city's admissions changed {ADMISSIONS_ATTEMPTS} times "
                            "while they were read; try again")


def _count(page: pb.GetAdmissionsResponse) -> int:
    return (len(page.certificates) + len(page.revocations) + len(page.rosters)
            + len(page.policies) + len(page.key_acts))
