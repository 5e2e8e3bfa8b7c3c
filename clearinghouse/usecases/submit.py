"""A node's Submit: one signed envelope in, one signed receipt out, once.

``submit`` runs the use-case the envelope's kind names (``directory.register``,
``claim.propose``, ``claim.decide``, ``claim.finish``, ``node.checkpoint``), appends the
transparency-log leaf recording it (``log.record_submit``, the envelope's canonical
encoding), builds the ``timebank.v1.Receipt`` (the envelope's identity; for a claim its
id, state and reason; the time; the leaf's index), has it sealed (signed by the caller,
who holds the clearinghouse key) and stores the sealed bytes keyed by that identity —
all in the one transaction that did the work.

**Once means once per envelope, not per encoding.** An envelope is known by its
identity (``timebank.envelope.identity``: kind, body, signer, key id), never by the
bytes it arrived as: anyone can re-encode a public envelope (every logged one is) into
bytes that parse the same. The same envelope submitted again, in any encoding, gets the
stored receipt back, byte for byte, without running the use-case again (proto: "The
same envelope submitted again gets the same receipt"), even if the claim has moved on
since; it writes nothing and is not charged to anyone's rate limit. If it carries
another signature than the one logged, that signature must verify under the signer's
key (only the key's holder can make one), or it is refused. Refusals store nothing and
have no receipt.

``submit_batch`` does the same for up to ``MAX_BATCH`` envelopes in one transaction,
each in a savepoint, so that one envelope's refusal undoes only its own work and the
batch pays for one commit (and one call) instead of one each. The batch's log leaves
are written together at its end (a refused envelope's leaf is dropped before then).

The gRPC layer passes its rate limit as ``charge``, applied inside the same transaction
once the envelope is known to be new work signed by the node it names (a signature by
its admitted, unrevoked key): neither a forged envelope nor a replay of a node's logged
one can use up that node's allowance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from clearinghouse.domain.claims import Claim, ClaimState
from clearinghouse.usecases import (
    admission,
    checkpoints,
    claims,
    directory,
    log,
    settlement,
    wire,
)
from clearinghouse.usecases.app import Tx
from runtime.errors import InvalidArgument, Refusal
from timebank import transparency
from timebank.envelope import EnvelopeError, KeyRing, Signed, identity
from timebank.v1 import clearing_pb2

#: The envelope kinds Submit takes, and the use-case for each.
USE_CASES: dict[str, Callable[..., Any]] = {
    directory.REGISTER: directory.register,
    claims.PROPOSE: claims.propose,
    claims.DECIDE: claims.decide,
    claims.FINISH: claims.finish,
    checkpoints.CHECKPOINT: checkpoints.anchor,
    settlement.COUNTERSIGN: settlement.countersign,
    settlement.DISPUTE: settlement.dispute,
}


@dataclass(frozen=True, slots=True)
class Submitted:
    """What a Submit returns: the sealed receipt (serialised ``timebank.v1.Envelope``);
    the claim it concerns (None for a registration or a replay); whether the claim
    changed in this transaction (for the per-transition counts); whether this envelope
    (by identity) had a receipt already."""

    receipt: bytes
    claim: Claim | None = None
    transition: bool = False
    replayed: bool = False
    log_index: int = 0  # the log leaf recording what the receipt answers


#: The most envelopes one SubmitBatch takes.
MAX_BATCH = 64


def _logged_at(sealed: bytes) -> int:
    """The log index a stored receipt names."""
    return clearing_pb2.Receipt.FromString(wire.from_bytes(sealed).body).log_index


def check_kind(envelope: Signed) -> None:
    if envelope.kind not in USE_CASES:
        raise InvalidArgument(
            f"Submit takes {', '.join(sorted(USE_CASES))} envelopes, not "
            f"{envelope.kind!r}", "WRONG_KIND")


def _check_replay(tx: Tx, envelope: Signed, index: int) -> None:
    """An envelope whose identity has a receipt is a replay of the logged one; with
    another signature than the logged one's, that signature must verify too."""
    logged = clearing_pb2.LogEntry.FromString(log.log_of(tx).leaf(index))
    if wire.from_bytes(logged.envelope).signature == envelope.signature:
        return
    try:
        admission.cached_key_ring(tx).verify(envelope)
    except EnvelopeError as e:
        raise wire.refused(e) from None


def submit(tx: Tx, request: bytes, seal: Callable[[bytes], bytes],
           charge: Callable[[str], None] | None = None) -> Submitted:
    """Act on the envelope in ``request`` (the bytes received, in any encoding) and
    return its sealed receipt; ``seal(receipt_body)`` signs a serialised Receipt into
    envelope bytes.

    An envelope with a receipt already (by identity) gets it back and changes nothing.
    Otherwise ``charge(signer)`` (the rate limit; it raises to refuse) is called once the
    sender is known to be the node it names — the signature checks out against the
    node's current, unrevoked key — before any work, so that a refusal by the limit
    changes nothing and a forged envelope naming a node cannot use up its allowance."""
    envelope = wire.from_bytes(request)
    key = identity(envelope)
    stored = tx.repo.receipt(key)
    if stored is not None:  # the same envelope again (or concurrently), in any encoding
        index = _logged_at(stored)
        _check_replay(tx, envelope, index)
        return Submitted(stored, replayed=True, log_index=index)
    check_kind(envelope)
    if charge is not None:
        directory.verify_node(tx, envelope, envelope.kind, admission.cached_key_ring(tx))
        charge(envelope.signer)
    result = USE_CASES[envelope.kind](tx, envelope, admission.cached_key_ring(tx))
    claim = result if isinstance(result, Claim) else None
    index = log.record_submit(tx, envelope, claim)
    if claim is not None and claim.state is ClaimState.COMPLETED:
        # the completing leaf places the claim in a settlement period (a later leaf of
        # the same completion, a finish sent again, leaves it where it was)
        tx.repo.set_completed_index(claim.claim_id, index)
    if isinstance(result, settlement.PendingAct):
        result.record(tx, index)  # the act is stored under the leaf that logs it
    receipt = clearing_pb2.Receipt(envelope_sha256=key, log_index=index)
    if claim is not None:
        receipt.claim_id = claim.claim_id
        receipt.state = wire.wire_state(claim.state)
        receipt.reason = wire.wire_reason(claim.reason)
    receipt.at.FromDatetime(tx.now.astimezone(UTC))
    sealed = seal(receipt.SerializeToString(deterministic=True))
    tx.repo.insert_receipt(key, envelope.signer, envelope.kind, sealed, tx.now)
    # A transition is stamped with this transaction's time; a replayed body returns a
    # claim last changed earlier (the one blind spot: a clock that did not move).
    changed = claim is not None and claim.updated_at == tx.now
    return Submitted(sealed, claim, changed, log_index=index)


def check_batch_size(requests: list[bytes]) -> None:
    if not requests:
        raise InvalidArgument("a SubmitBatch needs at least one envelope", "EMPTY_BATCH")
    if len(requests) > MAX_BATCH:
        raise InvalidArgument(
            f"a SubmitBatch takes at most {MAX_BATCH} envelopes, not {len(requests)}; "
            "send the rest in another call", "BATCH_TOO_LARGE")


def check_signatures(ring: KeyRing | None, requests: Iterable[bytes]) -> dict[Signed, bytes]:
    """The envelopes among ``requests`` whose signatures check out against ``ring`` (the
    cached key ring), with their bodies: checked before the transaction.

    Ed25519 checks are a large part of a Submit's CPU and need no lock. Made by the
    calling thread before it queues for the writer, they run beside the writer's work
    (PyNaCl releases the GIL). Anything that fails here is left to ``submit``, which
    refuses it with its reason; what passes still has its signer's stored admission
    checked in the transaction."""
    verified: dict[Signed, bytes] = {}
    if ring is None:
        return verified
    for request in requests:
        try:
            envelope = wire.from_bytes(request)
            verified[envelope] = ring.verify(envelope)
        except (Refusal, EnvelopeError):
            continue
    return verified


def _parsed(requests: Iterable[bytes]) -> list[Signed]:
    """The envelopes among ``requests`` that parse (the others are refused one by one in
    the batch)."""
    found = []
    for request in requests:
        try:
            found.append(wire.from_bytes(request))
        except (Refusal, EnvelopeError):
            continue
    return found


def submit_batch(tx: Tx, requests: list[bytes], seal: Callable[[bytes], bytes],
                 charge: Callable[[str], None] | None = None,
                 verified: Mapping[Signed, bytes] | None = None,
                 ) -> list[Submitted | Refusal]:
    """``submit`` each of ``requests`` in its own savepoint of this transaction; return,
    in order, what each got: its receipt, or the refusal that undid its work. Anything
    else (a bug, the database failing) propagates and rolls the whole batch back.
    ``verified``: signatures checked before the transaction (``check_signatures``)."""
    if verified:
        directory.note_verified(tx, verified)
    check_batch_size(requests)
    results: list[Submitted | Refusal] = []
    envelopes = _parsed(requests)
    tx.repo.look_up_receipts(identity(envelope) for envelope in envelopes)
    claims.look_up(tx, envelopes)
    # the batch's leaves, deliveries and receipts are written together, at the end
    with log.deferring(tx), tx.repo.deferring():
        for request in requests:
            before = log.mark(tx)
            try:
                with tx.repo.savepoint():
                    results.append(submit(tx, request, seal, charge))
            except (Refusal, EnvelopeError) as e:
                log.undo_to(tx, before)  # its leaf, if it got one, was undone with it
                results.append(wire.refused(e) if isinstance(e, EnvelopeError) else e)
    assert len(results) == len(requests)
    return results


@dataclass(frozen=True, slots=True)
class ProvenBatch:
    """What a SubmitBatch answers: each envelope's outcome, with for each receipt its log
    leaf proven in ``head``, and the consistency proof to ``head`` from the tree size the
    node last verified."""

    results: list[Submitted | Refusal]
    logged: list[clearing_pb2.LogInclusion | None]
    head: transparency.Head
    consistency: list[bytes]


def prove_batch(tx: Tx, results: list[Submitted | Refusal],
                publish: Callable[[Tx], transparency.Head], known_size: int) -> ProvenBatch:
    """A batch's ``results`` with the tree head ``publish`` signs for the log as this
    transaction leaves it (possibly after other batches), every receipt's inclusion
    proof in it (read together) and the consistency proof to it from ``known_size``:
    all in this transaction, so they describe the same log."""
    head = publish(tx)
    done = [r.log_index for r in results if isinstance(r, Submitted)]
    proven = iter(log.inclusions(tx, done, head.size))
    logged = [next(proven) if isinstance(r, Submitted) else None for r in results]
    consistency = (log.log_of(tx).consistency_proof(known_size, head.size)
                   if 0 < known_size < head.size else [])
    return ProvenBatch(results, logged, head, consistency)
