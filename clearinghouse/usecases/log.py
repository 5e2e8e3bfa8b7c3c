"""The transparency log (ADR 0007): what becomes a leaf, the signed tree heads, proofs
and witnesses' cosignatures.

Every event the clearinghouse vouches for is appended, in the transaction that makes
it, as a serialised ``timebank.v1.LogEntry`` (RFC 9162 leaf data): an admission, a
revocation, a roster or a city policy (the city's envelope), a net debit limit, every
Submit that got a receipt (the node's envelope in its canonical encoding, and the claim
state it led to), an expiry, a node's ledger checkpoint. The receipt names its leaf
(``Receipt.log_index``).

A tree head is a C2SP checkpoint (``timebank.checkpoint``) signed by the clearinghouse
under the log's origin; ``publish_head`` signs one for every size a write transaction
leaves behind, in that transaction. District nodes witness heads: a node cosigns a head
only after checking it is consistent with the last it verified, and heads cosigned by
more than half of the admitted districts are the ones anything final cites.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC

from clearinghouse.domain.claims import Claim, ClaimKind
from clearinghouse.storage.merkle_log import LeafRow, LogMark, MerkleLog
from clearinghouse.usecases import directory, roster, wire
from clearinghouse.usecases.app import Tx
from runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from timebank import anchors, settlement, transparency
from timebank import checkpoint as notes
from timebank.envelope import KeyRing, Signed
from timebank.v1 import clearing_pb2

COSIGN = "cosign"
#: The most entries one GetEntries returns.
MAX_ENTRIES = 1000
#: A page of envelopes (GetEntries, GetAdmissions) stops before its envelopes would take
#: more than this many bytes, well under gRPC's 4 MiB response limit (a leaf recording a
#: Submit is up to about 64 KiB); it always holds at least one.
PAGE_BYTES = 1 << 20
#: What protobuf adds to each envelope of a repeated bytes field, at most (a tag and a
#: length of up to three bytes), counted against the page's bytes.
_FRAMING = 4

#: Leaf kinds.
ADMISSION = "admission"
REVOCATION = "revocation"
ROSTER = "roster"
POLICY = "policy"
LIMIT = "limit"
REGISTRATION = "registration"
CLAIM = "claim"
EXPIRY = "expiry"
CHECKPOINT = anchors.LEAF_KIND

#: What the Submit of each envelope kind records.
SUBMIT_KINDS = {"directory.register": REGISTRATION, "claim.propose": CLAIM,
                "claim.decide": CLAIM, "claim.finish": CLAIM,
                anchors.CHECKPOINT_KIND: CHECKPOINT,
                # a district's side of a settlement statement (issue 16): the leaf kind
                # is the envelope kind
                settlement.COUNTERSIGN_KIND: settlement.COUNTERSIGN_KIND,
                settlement.DISPUTE_KIND: settlement.DISPUTE_KIND}


def log_of(tx: Tx) -> MerkleLog:
    """The log as this transaction sees it (one instance per transaction: it keeps the
    size it read)."""
    found = tx.cache.merkle_log
    if found is None:
        found = tx.cache.merkle_log = MerkleLog(tx.repo.conn, tx.repo.log_size_at_lock())
    return found


def deferring(tx: Tx) -> AbstractContextManager[None]:
    """Write the leaves appended inside together, at its end (``MerkleLog.deferring``)."""
    return log_of(tx).deferring()


def mark(tx: Tx) -> LogMark:
    """Where the log stands, for ``undo_to`` (inside ``deferring``)."""
    return log_of(tx).mark()


def undo_to(tx: Tx, mark: LogMark) -> None:
    """Forget the leaves appended since ``mark`` (a savepoint undid their work)."""
    log_of(tx).undo_to(mark)


# what becomes a leaf -----------------------------------------------------------------

def _stamp(entry: clearing_pb2.LogEntry, tx: Tx) -> clearing_pb2.LogEntry:
    entry.at.FromDatetime(tx.now.astimezone(UTC))
    return entry


def _claim_fields(entry: clearing_pb2.LogEntry, claim: Claim) -> None:
    entry.claim_id = claim.claim_id
    entry.state = wire.wire_state(claim.state)
    entry.reason = wire.wire_reason(claim.reason)
    entry.minutes = claim.posted_minutes if claim.posted_minutes is not None else claim.minutes
    entry.creditor_node_id = claim.creditor
    entry.debtor_node_id = claim.debtor
    entry.claim_kind = (clearing_pb2.CLAIM_KIND_MOVE if claim.kind is ClaimKind.MOVE
                        else clearing_pb2.CLAIM_KIND_REDEMPTION)


def append(tx: Tx, entry: clearing_pb2.LogEntry) -> int:
    """Append one entry; returns its leaf index."""
    data = entry.SerializeToString(deterministic=True)
    return log_of(tx).append([LeafRow(data=data, kind=entry.kind,
                                      claim_id=entry.claim_id or None,
                                      node_id=entry.node_id or None)], tx.now)


def record_submit(tx: Tx, envelope: Signed, claim: Claim | None) -> int:
    """The leaf for a Submit that gets a receipt: the envelope in its canonical encoding
    (however it arrived) and, for a claim, the state it led to."""
    entry = _stamp(clearing_pb2.LogEntry(kind=SUBMIT_KINDS[envelope.kind],
                                         envelope=wire.to_bytes(envelope),
                                         node_id=envelope.signer), tx)
    if claim is not None:
        _claim_fields(entry, claim)
    return append(tx, entry)


def record_expiry(tx: Tx, claim: Claim) -> int:
    entry = _stamp(clearing_pb2.LogEntry(kind=EXPIRY), tx)
    _claim_fields(entry, claim)
    return append(tx, entry)


def record_city_act(tx: Tx, kind: str, certificate: Signed, node_id: str) -> int:
    """An admission, a revocation, a roster or a city policy (``node_id`` empty for the
    last two): the city's envelope, verbatim as stored."""
    return append(tx, _stamp(clearing_pb2.LogEntry(
        kind=kind, envelope=wire.to_bytes(certificate), node_id=node_id), tx))


def record_settlement(tx: Tx, envelope: Signed, node_id: str = "") -> int:
    """A settlement statement (the clearinghouse's envelope), or the city's decision or
    default on one: the envelope in its canonical encoding, under its own kind."""
    return append(tx, _stamp(clearing_pb2.LogEntry(
        kind=envelope.kind, envelope=wire.to_bytes(envelope), node_id=node_id), tx))


def record_limit(tx: Tx, node_id: str, minutes: int) -> int:
    return append(tx, _stamp(clearing_pb2.LogEntry(kind=LIMIT, node_id=node_id,
                                                   minutes=minutes), tx))


# tree heads --------------------------------------------------------------------------

def publish_head(tx: Tx, sign_note: Callable[[str], str],
                 log_origin: str) -> transparency.Head:
    """Sign and store a head for the log's current size, unless one exists; return the
    head of the current size. Called at the end of every write transaction that may
    have appended."""
    log = log_of(tx)
    size = log.size()
    published = tx.cache.published_head
    if published is not None and published.size == size:
        return published  # this transaction signed it already
    found = tx.repo.committed_head(size)
    if found is None:
        found = log.tree_head(size)
        if found is not None and not log.added_head(size):  # an earlier transaction's
            tx.repo.remember_committed_head(size, found)
    if found is not None:
        return transparency.read_head(found[1])
    root = log.root(size)
    named = roster.named(tx)
    if named is None:  # a city whose bureau has signed no roster yet: nothing is final
        lines: tuple[str, ...] = (transparency.districts_line(tx.repo.admitted_count()),)
    else:
        lines = (transparency.districts_line(len(named.members)),
                 transparency.roster_line(named.epoch, named.digest))
    lines += (transparency.time_line(int(tx.now.timestamp())),)
    note = sign_note(notes.Checkpoint(log_origin, size, root, lines).body())
    log.add_tree_head(size, root, note, tx.now)
    head = tx.cache.published_head = transparency.read_head(note)
    return head


def _cosigned_by_quorum(tx: Tx, size: int) -> bool:
    """The head of ``size`` is cosigned by more than half the districts of the
    city-signed roster it names (a head naming none is never final)."""
    found = log_of(tx).tree_head(size)
    line = None if found is None else transparency.read_head(found[1]).roster
    if line is None:
        return False
    named = roster.of_epoch(tx, line[0])
    if named is None or named.digest != line[1]:
        return False
    members = set(named.members)
    cosigners = {w for w, _, _ in log_of(tx).cosignatures(size)}
    return len(cosigners & members) >= named.quorum


def quorum_head_from(tx: Tx, size: int) -> clearing_pb2.TreeHead | None:
    """The smallest head of ``size`` leaves or more cosigned by a quorum of the
    city-signed roster it names, with its cosignatures (None: no such head yet)."""
    for _ in range(64):  # heads with enough lines, by any witness, until one has a quorum
        candidates = log_of(tx).cosigned_sizes_from(size, 1, limit=64)
        chosen = next((s for s in candidates if _cosigned_by_quorum(tx, s)), None)
        if chosen is not None:
            return head(tx, chosen)
        if len(candidates) < 64:
            return None
        size = candidates[-1] + 1
    return None


def head(tx: Tx, size: int = 0, *, cosigned: bool = False) -> clearing_pb2.TreeHead:
    """A stored head with its cosignatures: of ``size``, or the latest (cosigned by a
    quorum of districts, if asked). NOT_FOUND if there is none."""
    log = log_of(tx)
    if not 0 <= size <= transparency.MAX_LOG_NUMBER:
        raise InvalidArgument(f"a tree size is 0 to {transparency.MAX_LOG_NUMBER}",
                              "BAD_LOG_RANGE")
    if size == 0 and cosigned:
        candidates = log.cosigned_sizes(1, limit=64)
        chosen = next((s for s in candidates if _cosigned_by_quorum(tx, s)), None)
        if chosen is None:
            raise NotFound("no tree head has been cosigned by a quorum of districts yet",
                           "NO_COSIGNED_HEAD")
        size = chosen
    if size == 0:
        latest = log.latest_tree_head()
        if latest is None:
            raise NotFound("the log has no tree head yet", "NO_TREE_HEAD")
        size = latest[0]
    found = log.tree_head(size)
    if found is None:
        raise NotFound(f"no tree head of size {size} was published", "NO_TREE_HEAD")
    root, note = found
    cosigs = log.cosignatures(size)
    lines = [line for _, line, _ in cosigs]
    full = note if not lines else note + "".join(line + "\n" for line in lines)
    out = clearing_pb2.TreeHead(size=size, root=root, note=full,
                                cosigners=[w for w, _, _ in cosigs])
    signed_at = transparency.read_head(note).at
    if signed_at is not None:
        out.at.FromSeconds(signed_at)
    return out


def inclusion(tx: Tx, index: int, size: int) -> clearing_pb2.LogInclusion:
    log = log_of(tx)
    if not 0 <= index < size <= log.size():
        raise InvalidArgument(f"leaf {index} is not in a tree of size {size}",
                              "BAD_LOG_RANGE")
    return clearing_pb2.LogInclusion(index=index, entry=log.leaf(index),
                                     path=log.inclusion_proof(index, size))


def inclusions(tx: Tx, indexes: list[int], size: int) -> list[clearing_pb2.LogInclusion]:
    """``inclusion`` of several leaves in one head, their hashes read together."""
    log = log_of(tx)
    paths = log.inclusion_proofs(indexes, size)
    return [clearing_pb2.LogInclusion(index=i, entry=log.leaf(i), path=path)
            for i, path in zip(indexes, paths, strict=True)]


def prove(tx: Tx, request: clearing_pb2.GetInclusionProofRequest,
          ) -> clearing_pb2.GetInclusionProofResponse:
    """An inclusion proof of a leaf (by index, or a claim's latest leaf) in a head."""
    found = head(tx, request.size, cosigned=request.cosigned)
    which = request.WhichOneof("leaf")
    if which == "claim_id":
        indexes = log_of(tx).leaf_indexes_of_claim(request.claim_id)
        indexes = [i for i in indexes if i < found.size]
        if not indexes:
            raise NotFound("no leaf of this claim is in that tree head", "UNKNOWN_CLAIM")
        index = indexes[-1]
    elif which == "index":
        index = request.index
    else:
        raise InvalidArgument("name a leaf by index or claim id", "BAD_LOG_RANGE")
    return clearing_pb2.GetInclusionProofResponse(logged=inclusion(tx, index, found.size),
                                                  head=found)


def consistency(tx: Tx, old_size: int,
                new_size: int = 0) -> clearing_pb2.GetConsistencyProofResponse:
    new = head(tx, new_size)
    if not 0 <= old_size <= new.size:
        raise InvalidArgument(f"a consistency proof goes from a smaller tree to a larger, "
                              f"not {old_size} to {new.size}", "BAD_LOG_RANGE")
    path = log_of(tx).consistency_proof(old_size, new.size) if old_size > 0 else []
    return clearing_pb2.GetConsistencyProofResponse(path=path, new_head=new)


def page_length(sizes: list[int], budget: int | None = None) -> int:
    """How many of the envelopes of ``sizes`` (bytes each, in order) one page takes: as
    many as fit within ``budget`` bytes (``PAGE_BYTES``) with their framing, never none."""
    budget = PAGE_BYTES if budget is None else budget
    total = 0
    for count, size in enumerate(sizes):
        total += size + _FRAMING
        if total > budget:
            return max(count, 1)
    return len(sizes)


def admissions(tx: Tx, skip: int = 0) -> clearing_pb2.GetAdmissionsResponse:
    """Every certificate accepted, current and retired, every city-signed revocation
    (as received), every city-signed roster by epoch and every city-signed policy by
    serial, and the districts revoked (``revoked_node_ids``, the clearinghouse's own
    summary: a node trusts only the city's signatures); one page of at most
    ``PAGE_BYTES`` of envelopes, from the ``skip``-th on.

    The envelopes are listed in one order, field by field as the proto says (the
    certificates: the current admissions by node id, then the retired keys by node id
    and serial; then revocations, rosters, policies, the rotations of the city's keys),
    and ``total`` says how many there
    are; a page that stops early says
    ``more``, and the caller asks again with ``skip`` the number it has. Should ``total``
    change between pages, the list changed: start again."""
    if isinstance(skip, bool) or not 0 <= skip <= transparency.MAX_LOG_NUMBER:
        raise InvalidArgument(f"skip is 0 to {transparency.MAX_LOG_NUMBER}", "BAD_PAGE")
    out = clearing_pb2.GetAdmissionsResponse()
    current = tx.repo.admissions()
    out.revoked_node_ids.extend(a.node_id for a in current if a.revoked)
    retired = tx.repo.retired_keys()
    certificates = [a.certificate for a in current] + [r.certificate for r in retired]
    revocations = [a.revocation for a in current if a.revocation is not None]
    revocations += [r.revocation for r in retired if r.revocation is not None]
    listed = [(out.certificates, c) for c in certificates]
    listed += [(out.revocations, r) for r in revocations]
    listed += [(out.rosters, r) for r in tx.repo.rosters()]
    listed += [(out.policies, p.envelope) for p in tx.repo.city_policies()]
    listed += [(out.key_acts, e) for _, _, e in tx.repo.key_acts()]
    rest = listed[skip:]
    taken = page_length([len(envelope) for _, envelope in rest])
    for field, envelope in rest[:taken]:
        field.append(envelope)
    out.total = len(listed)
    out.more = taken < len(rest)
    return out


def entries(tx: Tx, start: int, end: int) -> list[bytes]:
    """Leaves from ``start``, toward ``end`` (exclusive; at most ``MAX_ENTRIES``): as many
    as one page of ``PAGE_BYTES`` holds, at least one. A reader asks again from where
    the page ended."""
    log = log_of(tx)
    if not 0 <= start < end <= log.size() or end - start > MAX_ENTRIES:
        raise InvalidArgument(
            f"entries are read {MAX_ENTRIES} at most at a time, within the log's "
            f"{log.size()} leaves", "BAD_LOG_RANGE")
    return log.leaves(start, start + page_length(log.leaf_sizes(start, end)))


# witnesses ---------------------------------------------------------------------------

def add_cosignature(tx: Tx, envelope: Signed, ring: KeyRing,
                    log_origin: str) -> clearing_pb2.TreeHead:
    """Store a district's cosignature on a head, after checking it: signed by the node's
    admitted key (the envelope), for a head this log published, and a valid C2SP
    cosignature by that node's key over exactly that head, dated no more than
    ``MAX_COSIGNATURE_SKEW`` seconds after this clearinghouse's clock (PERMISSION_DENIED
    COSIGNATURE_IN_FUTURE otherwise: a witness's clock ahead could make any head look
    freshly witnessed later)."""
    body = directory.verify_node(tx, envelope, COSIGN, ring)
    msg = wire.parse(clearing_pb2.CosignBody, body, COSIGN)
    if msg.node_id != envelope.signer:
        raise PermissionDenied(f"node {envelope.signer} may cosign only as itself",
                               "NOT_YOUR_SIGNATURE")
    log = log_of(tx)
    if not 0 <= msg.size <= transparency.MAX_LOG_NUMBER:
        raise InvalidArgument(f"a cosigned tree size is 0 to {transparency.MAX_LOG_NUMBER}",
                              "BAD_LOG_RANGE")
    found = log.tree_head(msg.size)
    if found is None:
        raise NotFound(f"no tree head of size {msg.size} was published", "NO_TREE_HEAD")
    _, note = found
    admitted = tx.repo.admission(msg.node_id)
    assert admitted is not None, "verify_node accepts only admitted, unrevoked signers"
    line = msg.signature_line.rstrip("\n")
    if "\n" in line or len(line) > 512:
        raise InvalidArgument("a cosignature is one signature line", "MALFORMED_COSIGNATURE")
    try:
        timestamp = notes.verify_cosignature(note + line + "\n",
                                             transparency.witness_name(msg.node_id),
                                             admitted.public_key, now=int(tx.now.timestamp()))
    except notes.FutureCosignature as e:
        raise PermissionDenied(f"{e}: check node {msg.node_id}'s clock and cosign again",
                               "COSIGNATURE_IN_FUTURE") from None
    except notes.CheckpointError as e:
        raise PermissionDenied(f"the cosignature does not verify: {e}",
                               "BAD_COSIGNATURE") from None
    existing = {w: ln for w, ln, _ in log.cosignatures(msg.size)}
    if msg.node_id in existing and existing[msg.node_id] != line:
        raise FailedPrecondition(f"node {msg.node_id} already cosigned this head",
                                 "ALREADY_COSIGNED")
    if msg.node_id not in existing:
        log.add_cosignature(msg.size, msg.node_id, line, timestamp, tx.now)
    return head(tx, msg.size)
