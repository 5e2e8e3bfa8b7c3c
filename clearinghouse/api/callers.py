"""Who may call what: the client certificate bound to the district a call acts for.

With mutual TLS every caller presented a certificate the city CA issued, and gRPC
checked it (chain, validity; ``runtime.tls`` refuses a revoked one). ``check`` runs
before every call's handler (``runtime.server``'s checks) and reads the identity the
certificate's SAN names (``runtime.tls.identity_of``):

* a node's certificate (``timebank:node:<id>``) may call the reads and the rpcs that
  carry a node's signed envelope, and only with envelopes its own district signed: an
  envelope signed by another district (a stolen envelope, another district's key used
  on this connection) is refused PERMISSION_DENIED ``CERTIFICATE_NOT_FOR_DISTRICT``,
  before anything is read or changed;
* an observer's certificate (``timebank:observer:<name>``: monitor, audit) may call
  only the reads (PERMISSION_DENIED ``READ_ONLY_CERTIFICATE``);
* a bureau operator's certificate (``timebank:bureau:<name>``: the bureau's console) may
  call the reads and the bureau's own rpcs (``BUREAU``: closing a settlement period), and
  nothing that carries a district's signed envelopes (``NOT_A_NODE_CERTIFICATE``); no
  other certificate may call a ``BUREAU`` rpc (``NOT_A_BUREAU_CERTIFICATE``);
* a certificate naming none of them (a server's) may call nothing
  (``CERTIFICATE_NOT_A_CALLER``); so may no certificate at all.

Each method is in exactly one of ``READS``, ``ENVELOPES``, ``BATCHES`` and ``BUREAU``; a
method in none (a new rpc nobody classified) is refused to everyone, and a test holds the
table to the service's descriptor. The signed envelope stays the authority on what a call
does: this only makes a stolen envelope or key useless without the district's
certificate. A ``BUREAU`` rpc carries no signature: the certificate is its only
authority, so its servicer also refuses a call that came without one (plaintext).
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.message import DecodeError

from runtime.errors import InvalidArgument, PermissionDenied, Unauthenticated
from runtime.tls import BUREAU as BUREAU_KIND
from runtime.tls import (
    CERTIFICATE_NOT_A_CALLER,
    CERTIFICATE_NOT_FOR_DISTRICT,
    NO_CLIENT_CERTIFICATE,
    NODE,
    NOT_A_BUREAU_CERTIFICATE,
    NOT_A_NODE_CERTIFICATE,
    OBSERVER,
    READ_ONLY_CERTIFICATE,
    Identity,
    peer_certificate,
    peer_identity,
)
from timebank.v1 import clearing_pb2 as pb

#: Reads: anyone with a certificate of the city may call them.
READS = frozenset({"GetTreeHead", "GetEntries", "GetAdmissions", "GetInclusionProof",
                   "GetConsistencyProof", "LookupPerson", "GetPositions", "GetSettlement",
                   "GetSettlementClaims", "ListClaims"})
#: A node's signed envelope as the request: the signer must be the certificate's node.
ENVELOPES = frozenset({"Submit", "Subscribe", "Ack", "AddCosignature"})
#: Signed envelopes in ``envelopes``: every signer must be the certificate's node.
BATCHES = frozenset({"SubmitBatch"})
#: The bureau's acts on the clearinghouse: only a bureau operator's certificate.
BUREAU = frozenset({"CloseSettlement"})


def _signer(raw: bytes) -> str:
    """The signer an envelope names (its signature is the servicer's to check). Bytes
    that are not an envelope are refused as the servicer refuses them."""
    try:
        return str(pb.Envelope.FromString(raw).signer)
    except DecodeError:
        raise InvalidArgument("the envelope is not a timebank.v1.Envelope",
                              "MALFORMED_ENVELOPE") from None


def _signers(method: str, request: Any) -> list[str]:
    """The districts a call acts for: the signers of the envelopes it carries."""
    if method in ENVELOPES:
        return [_signer(request)]
    assert isinstance(request, pb.SubmitBatchRequest), type(request)
    return [_signer(raw) for raw in request.envelopes]


def allowed(who: Identity, method: str, request: Any) -> None:
    """Refuse (PermissionDenied) what ``who`` may not do; return if it may."""
    if method not in READS | ENVELOPES | BATCHES | BUREAU:
        raise PermissionDenied(f"{method} 不对任何证书开放 / {method} is open to no "
                               f"certificate", "METHOD_NOT_OPEN")
    if method in BUREAU and who.kind != BUREAU_KIND:
        raise PermissionDenied(
            f"只有民政局操作员证书能调用 {method}，此证书属于 {who} / only a bureau "
            f"operator's certificate may call {method}; this certificate names {who}",
            NOT_A_BUREAU_CERTIFICATE)
    if who.kind == BUREAU_KIND:
        if method not in READS | BUREAU:
            raise PermissionDenied(
                f"民政局操作员证书（{who.name}）不代表任何区，不能调用 {method} / a bureau "
                f"operator's certificate ({who.name}) acts for no district; {method} carries "
                f"a district's signed envelopes", NOT_A_NODE_CERTIFICATE)
        return
    if who.kind == OBSERVER:
        if method not in READS:
            raise PermissionDenied(
                f"观察者证书（{who.name}）只能读取，不能调用 {method} / an observer "
                f"certificate ({who.name}) may only read; {method} changes the city",
                READ_ONLY_CERTIFICATE)
        return
    if who.kind != NODE:  # pragma: no cover - identity_of names no other kind
        raise PermissionDenied(f"证书类型 {who.kind} 不能调用 / a {who.kind} certificate "
                               f"calls nothing", CERTIFICATE_NOT_A_CALLER)
    if method in READS:
        return
    for signer in _signers(method, request):
        if signer != who.name:
            raise PermissionDenied(
                f"证书属于 {who.name} 区，此调用却代表 {signer[:16]} 区 / the certificate names "
                f"district {who.name}, but this call acts for {signer[:16]!r}: a node acts "
                f"only for its own district", CERTIFICATE_NOT_FOR_DISTRICT)


def check(method: str, request: Any, context: grpc.ServicerContext) -> None:
    """The ``runtime.server`` check: the caller's certificate, bound to the call."""
    if peer_certificate(context) is None:
        raise Unauthenticated("未出示客户端证书 / no client certificate was presented",
                              NO_CLIENT_CERTIFICATE)
    who = peer_identity(context)
    if who is None:
        raise PermissionDenied(
            "该证书不属于节点、观察者或民政局操作员（服务器证书？）/ the certificate names "
            "no district's node, observer or bureau operator (a server certificate?); ask "
            "the bureau for a node, observer or bureau certificate", CERTIFICATE_NOT_A_CALLER)
    allowed(who, method, request)


__all__ = ["BATCHES", "BUREAU", "ENVELOPES", "READS", "allowed", "check"]
