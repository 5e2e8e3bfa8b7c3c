"""The directory: PersonRef → home node, and nothing else about the person.

A node registers the people whose home it is, in a ``directory.register`` envelope it
signs itself. The first registration of a PersonRef wins; the same registration again
changes nothing. A person's home changes only through a completed move claim.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from clearinghouse.domain.claims import check_node_id
from clearinghouse.storage.repo import DirectoryRecord
from clearinghouse.usecases import admission, wire
from clearinghouse.usecases.app import Tx
from runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from timebank.envelope import EnvelopeError, KeyRing, Reason, Signed
from timebank.v1 import clearing_pb2

REGISTER = "directory.register"
_PERSON_REF = re.compile(r"[0-9a-f]{64}")


def check_person_ref(person_ref: str) -> str:
    if not _PERSON_REF.fullmatch(person_ref):
        raise InvalidArgument(
            "a PersonRef is 64 lowercase hexadecimal characters (HMAC-SHA256)",
            "MALFORMED_PERSON_REF")
    return person_ref


def verify_node(tx: Tx, envelope: Signed, kind: str, ring: KeyRing) -> bytes:
    """The body of an envelope of ``kind`` signed by an admitted node's current,
    unrevoked key (checked against ``ring`` and against the stored admissions, so a
    stale ring cannot let a just-revoked key through)."""
    if not isinstance(envelope, Signed):
        raise InvalidArgument("not a signed envelope", "MALFORMED_ENVELOPE")
    wire.check_kind(envelope, kind)
    verified = _verified(tx)
    body = verified.get(envelope)
    if body is None:
        try:
            body = ring.verify(envelope)
        except EnvelopeError as e:
            if e.reason not in (Reason.UNKNOWN_SIGNER, Reason.UNKNOWN_KEY):
                raise wire.refused(e) from None
            try:  # a ring from before this node (or key) was admitted: read the admissions
                body = admission.key_ring(tx).verify(envelope)
            except EnvelopeError as again:
                raise wire.refused(again) from None
        verified[envelope] = body
    admitted = tx.repo.admission(envelope.signer)
    if admitted is None or admitted.key_id != envelope.key_id or admitted.revoked:
        raise PermissionDenied(
            f"key {envelope.key_id} of {envelope.signer} is not an admitted, unrevoked key",
            "REVOKED_KEY" if admitted is not None else "UNKNOWN_SIGNER")
    return body


def _verified(tx: Tx) -> dict[Signed, bytes]:
    """Envelopes whose signature this transaction already trusts, with their bodies.

    A signature is checked once per transaction (a Submit checks its signer before
    charging its rate limit, then the use-case checks the envelope it acts on), or before
    it (``note_verified``)."""
    return tx.cache.verified


def note_verified(tx: Tx, verified: Mapping[Signed, bytes]) -> None:
    """Trust these signatures, checked before the transaction against the cached key
    ring (``submit.check_signatures``). ``verify_node`` still checks each signer's stored
    admission, in this transaction."""
    _verified(tx).update(verified)


def register(tx: Tx, envelope: Signed, ring: KeyRing) -> DirectoryRecord:
    """Record PersonRef → home node from the home node's signed registration.

    PERMISSION_DENIED: not signed by an admitted, unrevoked node key, or signed by a node
    for another node (NOT_YOUR_PERSON). FAILED_PRECONDITION: the person's home is
    already another node (HOMED_ELSEWHERE). Registering the same home again returns the
    first registration unchanged.
    """
    body = verify_node(tx, envelope, REGISTER, ring)
    reg = wire.parse(clearing_pb2.DirectoryRegistration, body, REGISTER)
    check_person_ref(reg.person_ref)
    check_node_id("home node id", reg.home_node_id)
    if reg.home_node_id != envelope.signer:
        raise PermissionDenied(
            f"node {envelope.signer} may register only its own people, not a home at "
            f"{reg.home_node_id}", "NOT_YOUR_PERSON")
    found = tx.repo.directory_entry(reg.person_ref)
    if found is not None:
        if found.home_node_id != reg.home_node_id:
            raise FailedPrecondition(
                f"this person's home is node {found.home_node_id}; a home changes only "
                "through a completed move claim", "HOMED_ELSEWHERE")
        return found
    record = DirectoryRecord(reg.person_ref, reg.home_node_id, tx.now, wire.to_bytes(envelope))
    tx.repo.insert_directory_entry(record)
    return record


def lookup(tx: Tx, person_ref: str) -> str:
    """The home node id of a PersonRef (NOT_FOUND UNKNOWN_PERSON if none registered it)."""
    found = tx.repo.directory_entry(check_person_ref(person_ref))
    if found is None:
        raise NotFound("no district has registered this person", "UNKNOWN_PERSON")
    return found.home_node_id
