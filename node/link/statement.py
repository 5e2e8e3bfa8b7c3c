"""What a passbook (电子存折) needs from the clearinghouse: the anchor's log leaf proven in
the latest head a quorum of districts cosigned, and the city-signed rosters that give a
verifier the districts, their keys and the quorum (``timebank.passbook``).

One copy for both makers of a passbook: `timebank node statement` opens a channel of
its own (``fetch``); the serving node asks over its link's channel (``fetch_from``,
through ``ClearingLink.passbook_proofs``). Either way the wait is bounded: every call
shares one deadline, ``seconds`` from the start, so a clearinghouse that answers slowly
page after page still cannot hold the caller longer.

What could not be had is a warning for the statement's reader (Chinese first, then
English), not a failure: a statement without a cosigned head is still genuine, only not
final. A proof that does not hold under the clearinghouse's key is the one failure
(``ProofRefused``): the clearinghouse gave something it did not sign, or a leaf it did
not log.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import grpc

from node.link.connection import AdmissionsChanged, all_admissions
from runtime.tls import ClientTls, channel
from timebank import transparency
from timebank.v1 import clearing_pb2 as pb
from timebank.v1 import clearing_pb2_grpc

#: How long making a passbook waits for the clearinghouse, every call of it together.
RPC_SECONDS = 10.0
#: The shortest wait a call is given once the deadline is near (it then fails at once).
_LEAST_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class Fetched:
    """The cosigned proof (None: none to be had), the city's rosters as serialised
    envelopes, and what the statement will lack ("": nothing)."""

    proof: pb.GetInclusionProofResponse | None
    rosters: list[bytes] = field(default_factory=list)
    warning: str = ""


class ProofRefused(Exception):
    """The clearinghouse's cosigned proof does not hold under its key."""


#: The reader's warnings (Chinese first, then English).
UNREACHABLE = ("市清算中心暂时无法连接（{code}），存折未附全市名册，重新出具后才能核验 / the "
               "clearinghouse at {address} cannot be reached ({code}); the statement carries "
               "no city roster and will not verify until it is made again")
NO_ROSTERS = ("未能读取全市名册（{code}），存折未附名册 / the clearinghouse's log could not be "
              "read ({code}); the statement carries no city roster")
NOT_FINAL = ("各区尚未共同确认最新的日志树头，此存折暂非最终版本，稍后可重新出具 / no tree "
             "head is cosigned by a quorum of districts yet: the statement cites the anchor's "
             "own head and is not final (verify it with --allow-uncosigned, or make it again "
             "once the districts have cosigned)")


def fetch(address: str, ch_key: bytes | transparency.LogKeys, index: int,
          tls: ClientTls | None = None, seconds: float = RPC_SECONDS) -> Fetched:
    """``fetch_from`` the clearinghouse at ``address``, on a channel of its own (mutual
    TLS as ``tls`` says)."""
    with channel(address, tls) as opened:
        return fetch_from(clearing_pb2_grpc.ClearinghouseServiceStub(opened), address,
                          ch_key, index, seconds)


def fetch_from(stub: clearing_pb2_grpc.ClearinghouseServiceStub, address: str,
               ch_key: bytes | transparency.LogKeys, index: int,
               seconds: float = RPC_SECONDS) -> Fetched:
    """Log leaf ``index`` (the anchor's) proven in the latest quorum-cosigned head, and
    the city's rosters, within ``seconds`` in all; ``ProofRefused`` if the proof given
    does not hold under ``ch_key`` (the clearinghouse keys trusted now)."""
    if index < 0 or not 0 < seconds <= 10 * RPC_SECONDS:
        raise ValueError("a log index is not negative and a wait is a few seconds")
    deadline = time.monotonic() + seconds

    def left() -> float:
        return max(_LEAST_SECONDS, deadline - time.monotonic())

    proof: pb.GetInclusionProofResponse | None
    try:
        proof = stub.GetInclusionProof(pb.GetInclusionProofRequest(index=index, cosigned=True),
                                       timeout=left())
    except grpc.RpcError as e:
        # NOT_FOUND: no head is cosigned yet; INVALID_ARGUMENT: the latest cosigned head
        # is older than the anchor's leaf.
        if e.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
            return Fetched(None, [], UNREACHABLE.format(address=address, code=e.code().name))
        proof = None
    if proof is not None:
        try:
            head = transparency.check_head(proof.head.note, ch_key)
            transparency.check_included(proof.logged.entry, index, head,
                                        list(proof.logged.path))
        except transparency.LogError as e:
            raise ProofRefused(f"市清算中心给出的共同确认证明不成立 / the clearinghouse's "
                               f"cosigned proof does not hold: {e}") from None
    try:
        rosters = list(all_admissions(stub, left(), deadline=deadline).rosters)
    except grpc.RpcError as e:
        return Fetched(proof, [], NO_ROSTERS.format(code=e.code().name))
    except AdmissionsChanged:
        return Fetched(proof, [], NO_ROSTERS.format(code="CHANGING"))
    return Fetched(proof, rosters, "" if proof is not None else NOT_FINAL)
