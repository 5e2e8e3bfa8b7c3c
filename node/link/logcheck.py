"""Whether a signed tree head is one of the log a clearinghouse serves now (issue 14).

``locate`` asks the clearinghouse for a consistency proof from the head's size to its
latest head and lets ``timebank.forks`` decide: consistent, or evidence of a fork. A
path from a power-of-two size does not carry the prefix root the decision needs to be
conclusive, so for those the inclusion path of the next leaf is fetched too. A
clearinghouse whose log is smaller than the head gives no proof: that is refutable
evidence, until its log grows past the head.

Used by the node's log watch, the outside monitor (``timebank monitor``) and the remote
audit, with the stub of whichever clearinghouse they read: one way of asking, so that
they all find the same forks.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from timebank import forks, transparency
from timebank.v1 import clearing_pb2 as pb
from timebank.v1 import clearing_pb2_grpc

#: How long one call to the clearinghouse may take.
LOCATE_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Located:
    """Where a head stands: ``evidence`` None if it is of the log ``latest`` (the
    clearinghouse's latest head, as it served it) extends or equals."""

    head: transparency.Head
    latest: str
    evidence: forks.Evidence | None


def locate(stub: clearing_pb2_grpc.ClearinghouseServiceStub,
           clearinghouse_key: bytes | transparency.LogKeys,
           note: str, *, seen: str = "", log_seen: str = "the clearinghouse's log",
           timeout: float = LOCATE_TIMEOUT_SECONDS) -> Located:
    """Compare the signed head ``note`` with the clearinghouse's log. Raises
    ``transparency.LogError`` if the note (or the clearinghouse's own head) is not
    signed by the key, and ``grpc.RpcError`` if the clearinghouse does not answer."""
    head = transparency.check_head(note, clearinghouse_key)
    for _ in range(2):
        try:
            answer = stub.GetConsistencyProof(
                pb.GetConsistencyProofRequest(old_size=head.size, new_size=0), timeout=timeout)
            break
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise
        # Its log is smaller than a head signed with its key, unless it grew in between
        # (then ask again).
        latest = stub.GetTreeHead(pb.GetTreeHeadRequest(), timeout=timeout).head.note
        if transparency.check_head(latest, clearinghouse_key).size < head.size:
            return Located(head, latest, forks.compare(clearinghouse_key, note, latest, None,
                                                       seen=(seen, log_seen)))
    else:
        raise transparency.LogError("the clearinghouse's log neither contains nor refuses a "
                                    f"head of {head.size} leaves")
    latest, path = answer.new_head.note, list(answer.path)
    evidence = forks.compare(clearinghouse_key, note, latest, path, seen=(seen, log_seen))
    newer = answer.new_head.size
    if (evidence is not None and evidence.kind is forks.Kind.UNPROVEN
            and 0 < head.size < newer and head.size & (head.size - 1) == 0):
        proof = stub.GetInclusionProof(pb.GetInclusionProofRequest(size=newer, index=head.size),
                                       timeout=timeout)
        hint = forks.prefix_root_from_inclusion(head.size, newer, list(proof.logged.path))
        evidence = forks.compare(clearinghouse_key, note, latest, path, prefix_root=hint,
                                 seen=(seen, log_seen))
    return Located(head, latest, evidence)


__all__ = ["LOCATE_TIMEOUT_SECONDS", "Located", "locate"]
