"""The ClearinghouseService servicer: envelopes in, use-case calls, signed envelopes out.

A signed envelope (Submit, Subscribe, Ack, AddCosignature) arrives as the bytes
received (``handlers`` installs no deserializer for it) and is read by the use-cases
(``wire.from_bytes``), which key and keep it by what was signed, never by those bytes
(``timebank.envelope.identity`` and ``encode``); any other request is parsed before the
servicer sees it (``runtime.observe``: a request that is not the method's message is
INVALID_ARGUMENT). A node's envelope is verified, parsed and acted on in one
transaction, with the key ring built inside it (``admission.key_ring``).

Submit runs in one transaction (``submit.submit``): it looks for the receipt already
given for this envelope (by identity, however it is encoded) and returns it byte for
byte, charging nobody; or else checks the signature, charges the signing node's token
bucket (``RateLimiter``: RESOURCE_EXHAUSTED BUSY when empty, nothing changed), does the
work and stores the new signed receipt. Subscribe takes only a
fresh, own-queue request (``claims.subscription``: STALE_SUBSCRIBE beyond 5 minutes);
an open stream reads its queue again as soon as a Submit has done work (deliveries it
queued are streamed at once), or else every ``poll_seconds``.
Everything the clearinghouse sends a node (receipts, deliveries) is signed with the
clearinghouse key. Errors become statuses where every call is observed
(``clearinghouse.api.server``); there are no business rules here.

CloseSettlement is the bureau's: it carries no signed envelope, so the caller's
certificate is its only authority. ``callers`` lets only a bureau operator's certificate
call it; this servicer refuses it too when the call came with none (a plaintext server
binds nobody), and logs every close under the operator's name. The statement is signed
as the serving schedule signs one (``settlement_signer``).
"""

# ruff: noqa: N802 - rpc method names are the contract's (CamelCase), not ours to choose

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import grpc
import structlog
from google.protobuf.message import Message
from nacl.signing import SigningKey

from clearinghouse.api import observe
from clearinghouse.api.ratelimit import RateLimiter
from clearinghouse.config import DEFAULT_SUBMIT_BURST, DEFAULT_SUBMITS_PER_SECOND
from clearinghouse.domain.claims import ClaimState
from clearinghouse.usecases import (
    admission,
    citykeys,
    claims,
    closing,
    directory,
    listing,
    log,
    settlement,
    submit,
    wire,
)
from clearinghouse.usecases.app import ClearinghouseApp, Tx
from runtime.errors import FailedPrecondition, PermissionDenied
from runtime.observe import note
from runtime.rpcstatus import grpc_code
from runtime.tls import BUREAU, NOT_A_BUREAU_CERTIFICATE, Identity, peer_identity
from timebank import checkpoint as notes
from timebank import transparency
from timebank.envelope import CLEARINGHOUSE, Signed, sign
from timebank.keys import key_id, public_key
from timebank.v1 import clearing_pb2 as pb

logger = structlog.get_logger("clearinghouse.api")

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["ClearinghouseService"].full_name
RECEIPT = "receipt"
DELIVERIES = "deliveries"
SUBSCRIBE = "subscribe"
ACK = "ack"
#: How often an open Subscribe looks for new deliveries, and how many it reads at once.
POLL_SECONDS = 0.1
DELIVERY_BATCH = 100
#: A stream message's deliveries stop short of this many bytes, under the 64 KiB a signed
#: body may have (a delivery relays a claim message of at most 8 KiB).
MAX_STREAM_MESSAGE_BYTES = 56 * 1024

def _chunks(batch: list[tuple[int, bytes]], max_bytes: int,
            ) -> Iterator[list[tuple[int, bytes]]]:
    """``batch`` cut, in order, into runs of at most ``max_bytes`` of deliveries (at
    least one each)."""
    run: list[tuple[int, bytes]] = []
    size = 0
    for item in batch:
        if run and size + len(item[1]) > max_bytes:
            yield run
            run, size = [], 0
        run.append(item)
        size += len(item[1])
    if run:
        yield run


def _envelope_pb(envelope: Signed) -> pb.Envelope:
    return pb.Envelope(kind=envelope.kind, body=envelope.body, signer=envelope.signer,
                       key_id=envelope.key_id, signature=envelope.signature)


def _own(envelope: Signed, node_id: str, what: str) -> None:
    if node_id != envelope.signer:
        raise PermissionDenied(f"node {envelope.signer} may {what} only its own queue, not "
                               f"{node_id[:16]!r}'s", "NOT_YOUR_QUEUE")


class ClearinghouseServicer:
    """Implements every rpc of ``timebank.v1.ClearinghouseService`` over one app, signing
    with the clearinghouse key. ``close()`` ends every open Subscribe stream."""

    def __init__(self, app: ClearinghouseApp, signing_key: SigningKey, *,
                 poll_seconds: float = POLL_SECONDS,
                 limiter: RateLimiter | None = None,
                 origin_key: bytes | None = None,
                 rotated_key: Callable[[bytes], SigningKey | None] | None = None,
                 settlement_signer: Callable[[], settlement.Sign] | None = None) -> None:
        self._app = app
        self._limiter = limiter if limiter is not None else RateLimiter(
            DEFAULT_SUBMITS_PER_SECOND, DEFAULT_SUBMIT_BURST)
        self._key = signing_key
        #: The log is named after its first key for ever (a rotation keeps the name).
        self.origin = transparency.clearinghouse_origin(origin_key or public_key(signing_key))
        #: The private key of a public key the city rotated this clearinghouse to.
        self._rotated_key = rotated_key
        #: Signs a statement CloseSettlement closes: the serving schedule's signer (the
        #: key that signs now), or else this servicer's key.
        self._settlement_signer = settlement_signer or (
            lambda: lambda kind, body: sign(kind, body, CLEARINGHOUSE, self._key))
        self._poll = poll_seconds
        self._closed = threading.Event()
        # A node's count is bumped when a Submit queued a delivery for it: its open
        # Subscribe reads again at once instead of at its next poll.
        self._changed = threading.Condition()
        self._generations: dict[str, int] = {}

    def close(self) -> None:
        self._closed.set()
        with self._changed:
            self._changed.notify_all()

    def wake_subscribers(self, *node_ids: str) -> None:
        """Deliveries may be queued for these nodes: their open Subscribe streams look now."""
        with self._changed:
            for node_id in node_ids:
                self._generations[node_id] = self._generations.get(node_id, 0) + 1
            self._changed.notify_all()

    def _sign(self, kind: str, body: bytes) -> pb.Envelope:
        return _envelope_pb(sign(kind, body, CLEARINGHOUSE, self._key))

    # ------------------------------------------------------------ Submit

    def Submit(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        envelope = wire.from_bytes(request)
        note(signer=envelope.signer, kind=envelope.kind)
        submit.check_kind(envelope)
        # Authenticate (or find the receipt) before charging the signer's rate limit, so
        # that only a node's own messages use up its allowance; then do the work.
        done = self._app.execute(submit.submit, request, self._seal, self._limiter.take)
        self._observe_positions(self._after(done))
        if done.claim is not None:
            note(claim_id=done.claim.claim_id, state=done.claim.state.value)
        if done.replayed:
            note(replayed=True)
        return done.receipt

    def SubmitBatch(self, batch: pb.SubmitBatchRequest,
                    context: grpc.ServicerContext) -> pb.SubmitBatchResponse:
        raw = list(batch.envelopes)
        note(envelopes=len(raw))
        submit.check_batch_size(raw)  # before checking any signature
        verified = submit.check_signatures(self._app.key_rings.last(), raw)
        # with the other nodes' batches and acknowledgements queued beside it, in one
        # transaction (group commit); its answer is proven in the head signed after all
        done = self._app.execute_together(
            lambda tx: submit.submit_batch(tx, raw, self._seal, self._limiter.take, verified),
            lambda tx, results: submit.prove_batch(tx, results, self.publish_head,
                                                   batch.known_tree_size))
        out = pb.SubmitBatchResponse(head=done.head.note, consistency=done.consistency)
        refused, moved, claim_ids = 0, set(), []
        for result, proof in zip(done.results, done.logged, strict=True):
            if isinstance(result, submit.Submitted):
                moved |= self._after(result)
                if result.claim is not None:
                    claim_ids.append(result.claim.claim_id)
                out.results.add(receipt=result.receipt, logged=proof)
                continue
            refused += 1
            code = grpc_code(result)
            observe.batch_refusal("SubmitBatch", result.reason, result.message)
            out.results.add(refusal=pb.SubmitRefusal(code=code.name, reason=result.reason,
                                                     message=result.message))
        self._observe_positions(moved)
        # the batch's line names every claim it moved (at most MAX_BATCH): one line a
        # batch, not one a claim, keeps logging off the clearinghouse's busiest path
        note(refused=refused, tree_size=done.head.size, claim_ids=claim_ids)
        return out

    def publish_head(self, tx: Tx) -> transparency.Head:
        """Sign a tree head for the log as this transaction leaves it (if none exists),
        with the key the city's rotations name for its size (ADR 0018): from a rotation's
        effective size on, heads, receipts and deliveries are signed by the new key."""
        schedule = citykeys.rotated_log_keys(tx)
        if schedule is not None:
            wanted = schedule.at(log.log_of(tx).size())
            if wanted != public_key(self._key):
                found = None if self._rotated_key is None else self._rotated_key(wanted)
                if found is None or public_key(found) != wanted:
                    raise FailedPrecondition(
                        f"the city rotated the clearinghouse key to {key_id(wanted)}, which "
                        "this clearinghouse does not hold", "NEW_KEY_MISSING")
                self._key = found
        return log.publish_head(tx, self._sign_note, self.origin)

    def _sign_note(self, text: str) -> str:
        return notes.sign_note(text, self.origin, self._key)

    def _after(self, done: submit.Submitted) -> set[str]:
        """After a Submit's transaction: wake the streams it queued deliveries for, and
        count what it changed. Returns the nodes whose positions it moved."""
        if done.claim is not None and not done.replayed:
            self.wake_subscribers(done.claim.creditor, done.claim.debtor)
        if done.claim is not None and done.transition:
            observe.claim_transition(done.claim)
            if done.claim.state is ClaimState.COMPLETED:
                return {done.claim.debtor, done.claim.creditor}
        return set()

    def _observe_positions(self, node_ids: set[str]) -> None:
        if not node_ids:
            return
        found = self._app.query(  # one read transaction for them all
            lambda tx: {n: claims.position_of(tx, n) for n in sorted(node_ids)})
        for node_id, position in found.items():
            if position is not None:
                observe.position(node_id, *position)

    def _seal(self, receipt: bytes) -> bytes:
        """A serialised Receipt, signed, as the envelope bytes returned (and stored)."""
        return self._sign(RECEIPT, receipt).SerializeToString(deterministic=True)

    # ------------------------------------------------------------ deliveries

    def Subscribe(self, request: bytes, context: grpc.ServicerContext) -> Iterator[pb.Envelope]:
        envelope = wire.from_bytes(request)
        note(signer=envelope.signer)
        msg = self._app.query(lambda tx: claims.subscription(tx, envelope,
                                                             admission.key_ring(tx)))
        after = msg.after_seq
        note(after_seq=after)
        sent = 0
        while context.is_active() and not self._closed.is_set():
            with self._changed:
                seen = self._generations.get(msg.node_id, 0)
            batch = self._app.query(claims.deliveries_after, msg.node_id, after,
                                    DELIVERY_BATCH)
            for chunk in _chunks(batch, MAX_STREAM_MESSAGE_BYTES):
                yield self._sign(DELIVERIES, pb.DeliveryBatch(
                    deliveries=[delivery for _, delivery in chunk]).SerializeToString())
                after = chunk[-1][0]
                sent += len(chunk)
                note(delivered=sent, last_seq=after)
            if len(batch) < DELIVERY_BATCH:
                with self._changed:
                    self._changed.wait_for(
                        lambda seen=seen: self._closed.is_set()  # type: ignore[misc]
                        or self._generations.get(msg.node_id, 0) != seen, self._poll)

    def Ack(self, request: bytes, context: grpc.ServicerContext) -> pb.AckResponse:
        envelope = wire.from_bytes(request)

        def run(tx: Tx) -> int:
            body = directory.verify_node(tx, envelope, ACK, admission.cached_key_ring(tx))
            msg = wire.parse(pb.AckBody, body, ACK)
            _own(envelope, msg.node_id, "acknowledge")
            return claims.ack(tx, msg.node_id, msg.seq)

        return pb.AckResponse(acknowledged_seq=self._app.execute_together(
            run, lambda tx, seq: seq))

    # ------------------------------------------------------------ the transparency log

    def GetTreeHead(self, msg: pb.GetTreeHeadRequest,
                    context: grpc.ServicerContext) -> pb.GetTreeHeadResponse:
        return pb.GetTreeHeadResponse(
            head=self._app.query(log.head, msg.size, cosigned=msg.cosigned))

    def GetEntries(self, msg: pb.GetEntriesRequest,
                   context: grpc.ServicerContext) -> pb.GetEntriesResponse:
        return pb.GetEntriesResponse(
            entries=self._app.query(log.entries, msg.start, msg.end))

    def GetAdmissions(self, msg: pb.GetAdmissionsRequest,
                      context: grpc.ServicerContext) -> pb.GetAdmissionsResponse:
        return self._app.query(log.admissions, msg.skip)

    def GetInclusionProof(self, msg: pb.GetInclusionProofRequest,
                          context: grpc.ServicerContext) -> pb.GetInclusionProofResponse:
        return self._app.query(log.prove, msg)

    def GetConsistencyProof(self, msg: pb.GetConsistencyProofRequest,
                            context: grpc.ServicerContext) -> pb.GetConsistencyProofResponse:
        return self._app.query(log.consistency, msg.old_size, msg.new_size)

    def AddCosignature(self, request: bytes,
                       context: grpc.ServicerContext) -> pb.AddCosignatureResponse:
        envelope = wire.from_bytes(request)
        note(signer=envelope.signer)
        return pb.AddCosignatureResponse(head=self._app.execute_together(
            lambda tx: log.add_cosignature(tx, envelope, admission.cached_key_ring(tx),
                                           self.origin),
            lambda tx, head: head))

    # ------------------------------------------------------------ reads

    def LookupPerson(self, msg: pb.LookupPersonRequest,
                     context: grpc.ServicerContext) -> pb.LookupPersonResponse:
        note(person=observe.person(msg.person_ref))
        home = self._app.query(directory.lookup, msg.person_ref)
        return pb.LookupPersonResponse(person_ref=msg.person_ref, home_node_id=home)

    def GetPositions(self, msg: pb.GetPositionsRequest,
                     context: grpc.ServicerContext) -> pb.GetPositionsResponse:
        def run(tx: Tx) -> pb.GetPositionsResponse:
            found = claims.positions(tx)
            out = pb.GetPositionsResponse()
            for a in admission.admissions(tx):
                out.nodes.add(node_id=a.node_id, district=a.district,
                              net_minutes=found.of(a.node_id),
                              net_debit_limit_minutes=claims.net_debit_limit(tx, a.node_id))
            for (creditor, debtor), minutes in sorted(found.gross.items()):
                out.gross.add(creditor_node_id=creditor, debtor_node_id=debtor,
                              minutes=minutes)
            return out

        return self._app.query(run)

    # ------------------------------------------------------------ settlement

    def GetSettlement(self, msg: pb.GetSettlementRequest,
                      context: grpc.ServicerContext) -> pb.GetSettlementResponse:
        note(serial=msg.serial, period=msg.period[:40])
        return self._app.query(settlement.get, msg.serial, msg.period)

    def GetSettlementClaims(self, msg: pb.GetSettlementClaimsRequest,
                            context: grpc.ServicerContext) -> pb.GetSettlementClaimsResponse:
        note(serial=msg.serial, revision=msg.revision, node_id=msg.node_id[:16])
        return self._app.query(settlement.claims_page, msg.serial, msg.revision,
                               msg.node_id, msg.after_claim_id)

    # ------------------------------------------------------------ the bureau's console

    def ListClaims(self, msg: pb.ClearinghouseServiceListClaimsRequest,
                   context: grpc.ServicerContext) -> pb.ClearinghouseServiceListClaimsResponse:
        query = listing.query_of(msg)
        note(state=query.state.value if query.state else "", page_size=query.size)
        return self._app.query(listing.page, query)

    def CloseSettlement(self, msg: pb.CloseSettlementRequest,
                        context: grpc.ServicerContext) -> pb.CloseSettlementResponse:
        operator = _bureau_operator(context)
        note(operator=operator.name)
        request = closing.request_of(msg)
        note(period=request.named)
        closed = self._app.execute(closing.close, self._settlement_signer(), request)
        s = closed.statement
        note(serial=s.serial, log_index=closed.log_index)
        logger.info("结算期已由民政局操作员关闭 / settlement period closed by a bureau operator",
                    operator=operator.name, certificate_serial=f"{operator.serial:x}",
                    period=s.period, serial=s.serial, claims=s.sheet.claims,
                    log_index=closed.log_index, reason=request.reason)
        return closing.response_of(closed)


def _bureau_operator(context: grpc.ServicerContext) -> Identity:
    """The bureau operator a call's certificate names; PERMISSION_DENIED for anyone else,
    and for a call without a certificate (a plaintext server: ``callers`` checks
    nothing there, and a bureau rpc has no signature to fall back on)."""
    who = peer_identity(context)
    if who is None or who.kind != BUREAU:
        raise PermissionDenied(
            "只有民政局操作员证书能调用此方法（须经双向 TLS）/ only a bureau operator's "
            "certificate may call this, over mutual TLS; on this machine the bureau closes a "
            "period with `timebank clearinghouse settle close`", NOT_A_BUREAU_CERTIFICATE)
    return who


def _serialize(message: Message | bytes) -> bytes:
    """A response message's bytes; a stored receipt is returned exactly as stored."""
    return message if isinstance(message, bytes) else message.SerializeToString()


#: The request message of each method that does not take a signed envelope's bytes.
_REQUESTS: dict[str, type[Message]] = {
    "SubmitBatch": pb.SubmitBatchRequest, "LookupPerson": pb.LookupPersonRequest,
    "GetPositions": pb.GetPositionsRequest, "GetTreeHead": pb.GetTreeHeadRequest,
    "GetEntries": pb.GetEntriesRequest, "GetAdmissions": pb.GetAdmissionsRequest,
    "GetInclusionProof": pb.GetInclusionProofRequest,
    "GetConsistencyProof": pb.GetConsistencyProofRequest,
    "GetSettlement": pb.GetSettlementRequest,
    "GetSettlementClaims": pb.GetSettlementClaimsRequest,
    "ListClaims": pb.ClearinghouseServiceListClaimsRequest,
    "CloseSettlement": pb.CloseSettlementRequest,
}
_ENVELOPES = ("Submit", "Ack", "AddCosignature")


def handlers(servicer: ClearinghouseServicer) -> grpc.GenericRpcHandler:
    """The service's method handlers: a signed envelope's bytes as received, any other
    request as its message."""
    unary = {name: grpc.unary_unary_rpc_method_handler(
                 getattr(servicer, name), request_deserializer=request.FromString,
                 response_serializer=_serialize)
             for name, request in _REQUESTS.items()}
    unary |= {name: grpc.unary_unary_rpc_method_handler(getattr(servicer, name),
                                                        response_serializer=_serialize)
              for name in _ENVELOPES}
    return grpc.method_handlers_generic_handler(SERVICE_NAME, {
        **unary,
        "Subscribe": grpc.unary_stream_rpc_method_handler(
            servicer.Subscribe, response_serializer=_serialize),
    })
