"""The city policy: the bureau's signed acts, and the check every claim message passes.

The bureau issues a policy as a city-signed ``policy`` envelope (``timebank.citypolicy``:
serial, TOML text, effective and issue times). ``issue`` checks it with the contract's
reader, the same one every node uses, so a text the clearinghouse records is one every
node parses; it records the envelope as received and appends it to the log as a leaf of
kind ``policy``. Serials go 1, 2, 3 ... with no gap, so that a node holding serials 1 to
n knows it holds them all; a policy may not take effect in the past (a little leeway,
``ISSUE_LEEWAY``, covers the time between signing and recording).

Every claim proposal and decision states the digest of the policy its signer decided
under (``policy_sha256``). ``check_current`` refuses one whose digest is not the city
policy in force at the clearinghouse's time, with FAILED_PRECONDITION
``POLICY_NOT_CURRENT`` and a message naming both digests: a district that shortened its
own publicity period, or serves an outdated or unsigned policy, is refused before any
claim of it is recorded. Around a change the policy in force just before or after is
accepted too (``timebank.citypolicy.GRACE``). Before the city's first policy is in
force nothing is checked: until then each node runs its local policy file.

A node's ledger checkpoint names its policy too, but is never refused for it: anchoring
a ledger must not stop, and the checkpoint's leaf shows in the log which policy each
district said it ran, for an auditor to compare with the policy leaves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from clearinghouse.storage.repo import PolicyRecord
from clearinghouse.usecases import citykeys, log, wire
from clearinghouse.usecases.app import Tx
from runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, PermissionDenied
from timebank import citypolicy
from timebank.citypolicy import GRACE, PolicyActError, Term
from timebank.envelope import Signed
from timebank.policy import short_digest

POLICY = citypolicy.POLICY_KIND
POLICY_NOT_CURRENT = "POLICY_NOT_CURRENT"
STALE_SERIAL = "STALE_SERIAL"
SERIAL_GAP = "SERIAL_GAP"
EFFECTIVE_IN_PAST = "EFFECTIVE_IN_PAST"
#: How far before the clearinghouse's clock a new policy's effective time may be when it
#: is recorded: the bureau signs "now", and the clearinghouse records it a moment later.
ISSUE_LEEWAY = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Issued:
    """What ``issue`` did: the policy as recorded, its log leaf (None: it was recorded
    before, the same act again changes nothing)."""

    record: PolicyRecord
    log_index: int | None


def _refused(e: PolicyActError) -> InvalidArgument | PermissionDenied:
    if e.reason in citypolicy.SIGNATURE_REASONS:
        return PermissionDenied(f"the policy was refused: {e.message}", e.reason)
    return InvalidArgument(f"the policy was refused: {e.message}", e.reason)


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds")


def issue(tx: Tx, envelope: Signed, city_public_key: bytes) -> Issued:
    """Record a city-signed ``policy`` act and log it.

    PERMISSION_DENIED: not signed by the city root key (NOT_CITY_SIGNED, BAD_SIGNATURE,
    WRONG_KEY). INVALID_ARGUMENT: wrong kind, a body that is not a CityPolicy, times
    missing or out of range, a policy text the nodes would refuse (BAD_POLICY, with the
    setting and why). ALREADY_EXISTS STALE_SERIAL: the serial was used for another
    policy, or is not above the last. FAILED_PRECONDITION: a serial beyond the next
    (SERIAL_GAP), an effective time in the past (EFFECTIVE_IN_PAST). The same act again
    returns the record and changes nothing.
    """
    try:
        act = citypolicy.read_city_policy(envelope, citykeys.keys_for(tx, city_public_key))
    except PolicyActError as e:
        raise _refused(e) from None
    existing = tx.repo.city_policy(act.serial)
    if existing is not None:
        if wire.from_bytes(existing.envelope).body == envelope.body:
            return Issued(existing, None)
        raise AlreadyExists(
            f"policy serial {act.serial} was issued already (digest "
            f"{short_digest(existing.sha256)}); a new policy needs serial "
            f"{tx.repo.last_policy_serial() + 1}", STALE_SERIAL)
    last = tx.repo.last_policy_serial()
    if act.serial <= last:
        raise AlreadyExists(f"policy serial {act.serial} is not above the last issued, "
                            f"{last}; a new policy needs serial {last + 1}", STALE_SERIAL)
    if act.serial != last + 1:
        raise FailedPrecondition(f"the next policy serial is {last + 1}, not {act.serial}: "
                                 "serials have no gaps", SERIAL_GAP)
    if act.effective_at < tx.now - ISSUE_LEEWAY:
        raise FailedPrecondition(
            f"policy {act.serial} would take effect at {_stamp(act.effective_at)}, in the "
            f"past (the clearinghouse's time is {_stamp(tx.now)}); a policy takes effect "
            "now or later", EFFECTIVE_IN_PAST)
    record = PolicyRecord(act.serial, act.sha256, act.effective_at, act.issued_at,
                          wire.to_bytes(envelope), tx.now)
    tx.repo.insert_city_policy(record)
    tx.cache.policy_terms = None
    tx.policy_terms.forget()
    index = log.record_city_act(tx, log.POLICY, envelope, "")
    return Issued(record, index)


def city_policies(tx: Tx) -> list[PolicyRecord]:
    """Every policy the bureau issued, by serial."""
    return tx.repo.city_policies()


def terms_around_now(tx: Tx, *, reread: bool = False) -> list[Term]:
    """The policies that can be in force within ``GRACE`` of now: read once a
    transaction, and taken from the app's cache when it read them a moment ago
    (``PolicyTermsCache``); ``reread`` reads them from the database whatever."""
    found = None if reread else tx.cache.policy_terms or tx.policy_terms.fresh(tx.now)
    if found is None:
        found = tx.repo.policy_terms_since(tx.now - GRACE)
        tx.policy_terms.remember(tx.now, found)
    tx.cache.policy_terms = found
    return found


def check_current(tx: Tx, sha256: bytes, signer: str, what: str) -> None:
    """Refuse (FAILED_PRECONDITION POLICY_NOT_CURRENT) a message of ``signer`` made under
    a policy whose digest is not the city's in force now (or within ``GRACE`` of now).
    The message names both digests and what the district's operator should do. A digest
    the cached policies do not accept is checked against the database before it is
    refused (a policy may have been issued since)."""
    terms = terms_around_now(tx)
    accepted = citypolicy.accepted_digests(terms, tx.now)
    if accepted is None or sha256 in accepted:
        return
    terms = terms_around_now(tx, reread=True)
    accepted = citypolicy.accepted_digests(terms, tx.now)
    if accepted is None or sha256 in accepted:
        return
    current = citypolicy.in_force(terms, tx.now)
    assert current is not None, "a policy is in force whenever some digest is required"
    raise FailedPrecondition(
        f"district {signer}'s {what} is under policy {short_digest(sha256)}, not the city "
        f"policy in force, {short_digest(current.sha256)} (serial {current.serial}): let "
        "the node fetch the city-signed policy, then try again", POLICY_NOT_CURRENT)
