"""Admission and revocation of district nodes, and the key ring built from them.

The bureau's city root key signs an ``admission`` certificate (node id, district, the
node's Ed25519 public key, a serial) and, to withdraw a key, a ``revocation``. The
clearinghouse verifies the city's signature over the bytes received, then parses and
stores the envelope as received. Re-admitting the identical certificate changes
nothing. A certificate with a higher serial replaces the node's admission; if it names
a new key, the old key is revoked for ever (key rotation). A revoked key never returns.
"""

from __future__ import annotations

from datetime import UTC

from clearinghouse.domain.claims import check_node_id
from clearinghouse.storage.repo import AdmissionRecord
from clearinghouse.usecases import citykeys, log, wire
from clearinghouse.usecases.app import Tx
from runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from timebank.citykeys import KeyChainError, root_key_for
from timebank.envelope import CITY, EnvelopeError, KeyRing, Signed, verify
from timebank.keys import PUBLIC_KEY_LEN, key_id
from timebank.transparency import MAX_LOG_NUMBER
from timebank.v1 import clearing_pb2

ADMISSION = "admission"
REVOCATION = "revocation"
MAX_DISTRICT_LEN = 64
MAX_REASON_LEN = 200
#: A newly admitted node may not be a net debtor at all until the bureau sets its limit.
DEFAULT_NET_DEBIT_LIMIT_MINUTES = 0


def verify_city(tx: Tx, envelope: Signed, kind: str, city_public_key: bytes) -> bytes:
    """The body of a city-signed envelope of ``kind``, or the refusal (nothing parsed):
    checked under the root key the chain of the city's keys allows for it once the root
    key has been rotated (PERMISSION_DENIED ROTATED_OUT_CITY_KEY for an act a retired
    root signed after its rotation), else under ``city_public_key``."""
    if not isinstance(envelope, Signed):
        raise InvalidArgument("not a signed envelope", "MALFORMED_ENVELOPE")
    wire.check_kind(envelope, kind)
    if envelope.signer != CITY:
        raise PermissionDenied(
            f"a {kind!r} envelope is signed by the city root key, not by "
            f"{envelope.signer!r}", "NOT_CITY_SIGNED")
    try:
        return verify(envelope, root_key_for(citykeys.keys_for(tx, city_public_key),
                                             envelope))
    except KeyChainError as e:
        raise citykeys.signer_refused(e) from None
    except EnvelopeError as e:
        raise wire.refused(e) from None


def admit(tx: Tx, certificate: Signed, city_public_key: bytes) -> AdmissionRecord:
    """Admit the node a city-signed ``admission`` certificate names; return its admission.

    INVALID_ARGUMENT: wrong kind, malformed body or field. PERMISSION_DENIED: not signed
    by the city root key (BAD_SIGNATURE, WRONG_KEY, NOT_CITY_SIGNED). ALREADY_EXISTS: the
    node is admitted under another certificate with an equal or higher serial
    (STALE_SERIAL), or the key belongs to another node (KEY_IN_USE). FAILED_PRECONDITION:
    the certificate is not valid yet (NOT_YET_VALID), or names a revoked key (KEY_REVOKED).
    """
    body = verify_city(tx, certificate, ADMISSION, city_public_key)
    cert = wire.parse(clearing_pb2.AdmissionCertificate, body, ADMISSION)
    check_node_id("node id", cert.node_id)
    district = cert.district.strip()
    if not district or len(district) > MAX_DISTRICT_LEN or district != cert.district:
        raise InvalidArgument(
            f"a district name is 1 to {MAX_DISTRICT_LEN} characters without surrounding "
            "spaces", "MALFORMED_DISTRICT")
    if len(cert.public_key) != PUBLIC_KEY_LEN:
        raise InvalidArgument(
            f"a node's public key is a {PUBLIC_KEY_LEN}-byte Ed25519 key, not "
            f"{len(cert.public_key)} bytes", "MALFORMED_PUBLIC_KEY")
    if not 1 <= cert.serial <= MAX_LOG_NUMBER:  # stored as a signed 64-bit integer
        raise InvalidArgument(f"a certificate's serial is 1 to {MAX_LOG_NUMBER}",
                              "MALFORMED_SERIAL")
    if cert.HasField("not_before") and cert.not_before.ToDatetime(tzinfo=UTC) > tx.now:
        raise FailedPrecondition(
            f"the certificate for {cert.node_id} is not valid before "
            f"{cert.not_before.ToJsonString()}", "NOT_YET_VALID")
    new = AdmissionRecord(
        node_id=cert.node_id, district=district, public_key=bytes(cert.public_key),
        key_id=key_id(bytes(cert.public_key)), serial=cert.serial,
        certificate=wire.to_bytes(certificate), admitted_at=tx.now)

    old = tx.repo.admission(new.node_id)
    if old is not None and wire.from_bytes(old.certificate).body == certificate.body:
        return old  # the same certificate again: nothing changes
    holder = tx.repo.key_holder(new.public_key)
    if holder is not None and holder != new.node_id:
        raise AlreadyExists(
            f"key {new.key_id} belongs to node {holder}; every node has its own key",
            "KEY_IN_USE")
    if old is None:
        tx.repo.insert_admission(new, DEFAULT_NET_DEBIT_LIMIT_MINUTES)
        log.record_city_act(tx, log.ADMISSION, certificate, new.node_id)
        return new
    if new.serial <= old.serial:
        raise AlreadyExists(
            f"node {new.node_id} is already admitted under certificate serial {old.serial}; "
            f"a new certificate (serial {new.serial}) must carry a higher serial",
            "STALE_SERIAL")
    retired = {r.key_id for r in tx.repo.retired_keys(new.node_id)}
    if new.key_id in retired or (new.key_id == old.key_id and old.revoked):
        raise FailedPrecondition(
            f"key {new.key_id} of {new.node_id} was revoked and can never be admitted "
            "again; issue a certificate for a new key", "KEY_REVOKED")
    tx.repo.replace_admission(old, new, tx.now)
    log.record_city_act(tx, log.ADMISSION, certificate, new.node_id)
    return new


def revoke(tx: Tx, revocation: Signed, city_public_key: bytes) -> None:
    """Revoke a node key for ever, by a city-signed ``revocation``.

    The node's current key stops being accepted at once; the node needs a new
    certificate (higher serial, new key) to sign again. A key already retired by
    rotation keeps its revocation on record. The same revocation again changes nothing;
    a different one for a key already revoked by the bureau is ALREADY_EXISTS. An
    unknown node or key is NOT_FOUND.
    """
    body = verify_city(tx, revocation, REVOCATION, city_public_key)
    act = wire.parse(clearing_pb2.Revocation, body, REVOCATION)
    check_node_id("node id", act.node_id)
    if len(act.reason) > MAX_REASON_LEN:
        raise InvalidArgument(f"a revocation's reason is at most {MAX_REASON_LEN} characters",
                              "MALFORMED_REASON")
    admission = tx.repo.admission(act.node_id)
    if admission is None:
        raise NotFound(f"node {act.node_id} was never admitted", "UNKNOWN_NODE")
    received = wire.to_bytes(revocation)
    if act.key_id == admission.key_id:
        recorded = admission.revocation
        if recorded is None:
            tx.repo.revoke_current_key(act.node_id, act.key_id, received, tx.now)
            log.record_city_act(tx, log.REVOCATION, revocation, act.node_id)
            return
    else:
        retired = {r.key_id: r for r in tx.repo.retired_keys(act.node_id)}
        if act.key_id not in retired:
            raise NotFound(f"node {act.node_id} never held a key {act.key_id[:16]!r}",
                           "UNKNOWN_KEY")
        recorded = retired[act.key_id].revocation
        if recorded is None:
            tx.repo.record_retired_revocation(act.key_id, received)
            log.record_city_act(tx, log.REVOCATION, revocation, act.node_id)
            return
    if wire.from_bytes(recorded).body != revocation.body:
        raise AlreadyExists(f"key {act.key_id} of {act.node_id} was already revoked",
                            "ALREADY_REVOKED")


def key_ring(tx: Tx) -> KeyRing:
    """The node keys the clearinghouse accepts: every admitted, unrevoked key; revoked
    and retired keys are marked revoked, so their envelopes fail with REVOKED_KEY.
    Read from the admissions now (and remembered, ``cached_key_ring``)."""
    ring = _build_ring(tx)
    tx.key_rings.remember(ring)
    return ring


def cached_key_ring(tx: Tx) -> KeyRing:
    """``key_ring`` as last read by this app (``app.KeyRingCache``, which says why a stale
    one is safe): for the Submit path, where rebuilding the ring from every admission on
    each message would cost more than the message."""
    cached = tx.key_rings.last()
    return cached if cached is not None else key_ring(tx)


def _build_ring(tx: Tx) -> KeyRing:
    ring = KeyRing()
    for old in tx.repo.retired_keys():
        ring.revoke(old.node_id, old.key_id)
    for admission in tx.repo.admissions():
        if admission.revoked:
            ring.revoke(admission.node_id, admission.key_id)
        else:
            ring.add(admission.node_id, admission.public_key)
    return ring


def admissions(tx: Tx) -> list[AdmissionRecord]:
    """Every admitted node, by node id."""
    return tx.repo.admissions()


def admission(tx: Tx, node_id: str) -> AdmissionRecord | None:
    """The node's current admission, if it was ever admitted."""
    return tx.repo.admission(node_id)
