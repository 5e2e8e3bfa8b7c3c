"""Submit: the receipt is stored with the work, in one transaction, and the same envelope,
in any encoding, gets the same receipt back without the work running again or being
charged to anyone. SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import random
from datetime import timedelta
from pathlib import Path

import pytest
from nacl.signing import SigningKey
from sqlalchemy import text

from clearinghouse.domain.claims import ClaimKind, ClaimState
from clearinghouse.storage import migrate
from clearinghouse.storage.db import Database
from clearinghouse.usecases import admission, claims, directory, log, submit, wire
from clearinghouse.usecases.app import ClearinghouseApp
from clearinghouse.usecases.clock import ManualClock
from runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    InvariantViolation,
    PermissionDenied,
    ResourceExhausted,
)
from tests.clearinghouse.conftest import (
    CITY_PUBLIC,
    certificate,
    refused,
    registration,
    revocation,
    snapshot,
)
from tests.clearinghouse.usecases.test_claims import (
    ALICE,
    GL,
    JN,
    KEYS,
    LIMIT,
    QX,
    cid,
    decision,
    finishing,
    proposal,
    ring,
)
from tests.reencode import reencoded
from timebank.envelope import CLEARINGHOUSE, Signed, encode, identity, sign, verify
from timebank.keys import key_id, public_key
from timebank.v1 import clearing_pb2

CH_KEY = SigningKey(hashlib.sha256(b"clearinghouse key (submit tests)").digest())
KEYS_ID = {node: key_id(public_key(key)) for node, key in KEYS.items()}


@pytest.fixture
def city(ch_app: ClearinghouseApp) -> ClearinghouseApp:
    """As in test_claims: three districts, Alice homed at 江宁区 (registered directly)."""
    for node, district in ((JN, "江宁区"), (GL, "鼓楼区"), (QX, "栖霞区")):
        ch_app.execute(admission.admit, certificate(node, district, KEYS[node]), CITY_PUBLIC)
        ch_app.execute(claims.set_net_debit_limit, node, LIMIT)
    ch_app.execute(directory.register, registration(ALICE, JN, JN, KEYS[JN]), ring(ch_app))
    return ch_app


def seal(receipt: bytes) -> bytes:
    envelope = sign("receipt", receipt, CLEARINGHOUSE, CH_KEY)
    return wire.to_bytes(envelope)


def receipt_of(sealed: bytes) -> clearing_pb2.Receipt:
    envelope = wire.from_bytes(sealed)
    assert envelope.kind == "receipt"
    return clearing_pb2.Receipt.FromString(verify(envelope, public_key(CH_KEY)))


def receipts(app: ClearinghouseApp) -> int:
    return len(snapshot(app)["receipts"])


def test_the_same_bytes_get_the_same_receipt_without_running_again(
        city: ClearinghouseApp, ch_clock: ManualClock) -> None:
    request = wire.to_bytes(proposal(1, city))
    first = city.execute(submit.submit, request, seal)
    assert not first.replayed and first.transition and first.claim is not None
    receipt = receipt_of(first.receipt)
    assert receipt.envelope_sha256 == identity(proposal(1, city))
    assert receipt.state == clearing_pb2.CLAIM_STATE_PROPOSED and receipt.claim_id == cid(1)
    charged: list[str] = []
    replay = city.execute(submit.submit, request, seal, charged.append)
    assert replay.replayed and replay.receipt == first.receipt and charged == []

    ch_clock.advance(timedelta(minutes=1))
    accepted = city.execute(submit.submit, wire.to_bytes(decision(1)), seal)
    assert accepted.claim is not None and accepted.claim.state is ClaimState.ACCEPTED
    before = snapshot(city)
    ch_clock.advance(timedelta(minutes=1))
    again = city.execute(submit.submit, request, seal)  # the claim has moved on since
    assert again.replayed and again.receipt == first.receipt and again.claim is None
    assert snapshot(city) == before


def test_the_receipt_commits_with_the_work_or_not_at_all(city: ClearinghouseApp,
                                                         ) -> None:
    request = wire.to_bytes(proposal(1, city))

    def broken_seal(_receipt: bytes) -> bytes:
        raise FailedPrecondition("the signing key went away", "TEST")

    assert refused(city, submit.submit, request, broken_seal).reason == "TEST"
    assert city.query(lambda tx: tx.repo.claim(cid(1))) is None  # the work rolled back too
    done = city.execute(submit.submit, request, seal)
    assert receipts(city) == 1  # the fixture registered Alice without Submit
    assert city.query(lambda tx: tx.repo.receipt(identity(proposal(1, city)))) == (
        done.receipt)


def test_a_reencoded_envelope_is_the_same_envelope(city: ClearinghouseApp) -> None:
    """Fields reordered or repeated, unknown fields, longer varints: the receipt given,
    nothing logged or stored again, nobody charged; the leaf records the canonical
    encoding whatever encoding came first."""
    env = proposal(1, city)
    rng = random.Random(4)
    first = city.execute(submit.submit, reencoded(wire.to_bytes(env), rng), seal)
    leaf = city.query(lambda tx: log.log_of(tx).leaf(first.log_index))
    assert clearing_pb2.LogEntry.FromString(leaf).envelope == encode(env)
    before = snapshot(city)
    charged: list[str] = []
    for _ in range(50):
        again = city.execute(submit.submit, reencoded(wire.to_bytes(env), rng), seal,
                             charged.append)
        assert again.replayed and again.receipt == first.receipt
        assert again.log_index == first.log_index
    assert snapshot(city) == before and charged == []


def test_a_replay_with_a_signature_that_does_not_verify_is_refused(
        city: ClearinghouseApp) -> None:
    env = proposal(1, city)
    city.execute(submit.submit, wire.to_bytes(env), seal)
    before = snapshot(city)
    charged: list[str] = []
    forged = Signed(env.kind, env.body, env.signer, env.key_id, bytes(64))
    error = refused(city, submit.submit, wire.to_bytes(forged), seal, charged.append)
    assert isinstance(error, PermissionDenied) and error.reason == "BAD_SIGNATURE"
    assert snapshot(city) == before and charged == []


def test_a_replay_after_its_key_was_revoked_still_gets_its_receipt(
        city: ClearinghouseApp) -> None:
    request = wire.to_bytes(proposal(1, city))
    first = city.execute(submit.submit, request, seal)
    city.execute(admission.revoke, revocation(GL, KEYS_ID[GL]), CITY_PUBLIC)
    assert city.execute(submit.submit, request, seal).receipt == first.receipt


def test_refusals_store_no_receipt(city: ClearinghouseApp) -> None:
    unknown_person = proposal(1, city, payer=hashlib.sha256(b"nobody").hexdigest())
    for request, reason in (
            (wire.to_bytes(unknown_person), "UNKNOWN_PERSON"),
            (wire.to_bytes(sign("claim.settle", b"", GL, KEYS[GL])), "WRONG_KIND"),
            (b"\xff\xff", "MALFORMED_ENVELOPE")):
        assert refused(city, submit.submit, request, seal).reason == reason


def test_nothing_is_charged_before_the_sender_is_authenticated(city: ClearinghouseApp,
                                                               ) -> None:
    """The rate limit (``charge``) is applied only to a node's own messages: a forged,
    unknown or unadmitted signer is refused first, and charges nobody."""
    charged: list[str] = []
    good = proposal(1, city)
    forged = Signed(good.kind, good.body, good.signer, good.key_id, bytes(64))
    stranger = sign("claim.propose", good.body, GL, SigningKey(bytes(32)))
    unadmitted = sign("claim.propose", good.body, "320199", SigningKey(bytes(32)))
    for envelope, reason in ((forged, "BAD_SIGNATURE"), (stranger, "UNKNOWN_KEY"),
                             (unadmitted, "UNKNOWN_SIGNER")):
        error = refused(city, submit.submit, wire.to_bytes(envelope), seal, charged.append)
        assert isinstance(error, PermissionDenied) and error.reason == reason
    wrong = sign("subscribe", b"", JN, KEYS[JN])
    error = refused(city, submit.submit, wire.to_bytes(wrong), seal, charged.append)
    assert isinstance(error, InvalidArgument)
    assert charged == []
    city.execute(submit.submit, wire.to_bytes(good), seal, charged.append)
    assert charged == [GL]


def test_a_refusal_by_the_rate_limit_changes_nothing(city: ClearinghouseApp) -> None:
    def busy(signer: str) -> None:
        raise ResourceExhausted(f"district {signer} sent too much; slow down", "BUSY")

    error = refused(city, submit.submit, wire.to_bytes(proposal(1, city)), seal, busy)
    assert error.reason == "BUSY"


def test_the_cached_key_ring_never_lets_a_revoked_key_in_and_learns_new_nodes(
        ch_app: ClearinghouseApp) -> None:
    """Submit verifies with the key ring the app cached (rebuilding it per message cost
    more than the message). A key revoked since the ring was cached is still refused, by
    the stored admission; a node admitted since is still accepted, by a rebuilt ring."""
    ch_app.execute(admission.admit, certificate(JN, "江宁区", KEYS[JN]), CITY_PUBLIC)
    first = wire.to_bytes(registration("a" * 64, JN, JN, KEYS[JN]))
    ch_app.execute(submit.submit, first, seal)  # the ring is cached now
    cached = ch_app.query(admission.cached_key_ring)

    ch_app.execute(admission.revoke, revocation(JN, KEYS_ID[JN]), CITY_PUBLIC)
    assert ch_app.query(admission.cached_key_ring) is cached  # still the stale ring
    late = wire.to_bytes(registration("b" * 64, JN, JN, KEYS[JN]))
    error = refused(ch_app, submit.submit, late, seal)
    assert isinstance(error, PermissionDenied) and error.reason == "REVOKED_KEY"

    ch_app.execute(admission.admit, certificate(GL, "鼓楼区", KEYS[GL]), CITY_PUBLIC)
    newcomer = wire.to_bytes(registration("c" * 64, GL, GL, KEYS[GL]))
    done = ch_app.execute(submit.submit, newcomer, seal)
    assert receipt_of(done.receipt).envelope_sha256 == identity(wire.from_bytes(newcomer))


def test_each_app_keeps_the_key_ring_of_its_own_database(
        ch_app: ClearinghouseApp, tmp_path: Path) -> None:
    """The ring is the app's state, not the process's: another clearinghouse in the same
    process (another city's database) neither sees this one's ring nor lends it its own."""
    other_db = Database(f"sqlite:///{tmp_path / 'another-city.sqlite3'}")
    migrate.upgrade(other_db.writer)
    other = ClearinghouseApp(other_db, ManualClock())
    try:
        assert ch_app.key_rings.last() is None and other.key_rings.last() is None
        ch_app.execute(admission.admit, certificate(JN, "江宁区", KEYS[JN]), CITY_PUBLIC)
        ch_app.execute(submit.submit, wire.to_bytes(registration("a" * 64, JN, JN, KEYS[JN])),
                       seal)
        cached = ch_app.key_rings.last()
        assert cached is not None and (JN, KEYS_ID[JN]) in cached
        assert other.key_rings.last() is None
        # the other city never admitted 江宁区: its Submit refuses the node's envelope
        error = refused(other, submit.submit,
                        wire.to_bytes(registration("b" * 64, JN, JN, KEYS[JN])), seal)
        assert isinstance(error, PermissionDenied) and error.reason == "UNKNOWN_SIGNER"
        assert (JN, KEYS_ID[JN]) not in (other.key_rings.last() or {})
        assert ch_app.key_rings.last() is cached
    finally:
        other_db.dispose()


def test_signatures_checked_before_the_transaction_still_meet_the_stored_admission(
        ch_app: ClearinghouseApp) -> None:
    """SubmitBatch checks signatures against the cached ring before it queues for the
    writer. What passed there is trusted for its signature only: a key revoked since is
    refused in the transaction; a forged envelope is not trusted, and is refused with its
    own reason."""
    ch_app.execute(admission.admit, certificate(JN, "江宁区", KEYS[JN]), CITY_PUBLIC)
    ch_app.execute(admission.admit, certificate(GL, "鼓楼区", KEYS[GL]), CITY_PUBLIC)
    first = wire.to_bytes(registration("a" * 64, JN, JN, KEYS[JN]))
    ch_app.execute(submit.submit, first, seal)  # the ring is cached now
    ring_before = ch_app.key_rings.last()
    assert ring_before is not None

    good = wire.to_bytes(registration("b" * 64, GL, GL, KEYS[GL]))
    forged = wire.to_bytes(registration("c" * 64, GL, GL, KEYS[JN]))  # JN's key, GL's name
    late = wire.to_bytes(registration("d" * 64, JN, JN, KEYS[JN]))
    checked = submit.check_signatures(ring_before, [good, forged, late, b"\x00not an envelope"])
    assert sorted(e.body for e in checked) == sorted(
        wire.from_bytes(r).body for r in (good, late))

    ch_app.execute(admission.revoke, revocation(JN, KEYS_ID[JN]), CITY_PUBLIC)
    before = snapshot(ch_app)
    results = ch_app.execute(submit.submit_batch, [good, forged, late], seal, None, checked)
    assert isinstance(results[0], submit.Submitted)
    assert isinstance(results[1], PermissionDenied)
    assert results[1].reason in ("WRONG_KEY", "UNKNOWN_KEY", "BAD_SIGNATURE")
    assert isinstance(results[2], PermissionDenied) and results[2].reason == "REVOKED_KEY"
    after = snapshot(ch_app)
    assert len(after["directory"]) == len(before["directory"]) + 1
    assert submit.check_signatures(None, [good]) == {}


def test_a_batch_that_leaves_positions_unbalanced_commits_nothing(
        city: ClearinghouseApp) -> None:
    """Net positions must sum to zero when a transaction that moved them commits: a
    batch over a corrupted position (as a bad restore or a hand edit would leave) is
    rolled back whole, with the ledger rule's error, not a refusal of one envelope."""
    move = proposal(1, city, kind=ClaimKind.MOVE, creditor=GL, debtor=JN, minutes=60,
                    origins=[60])
    with city.db.write() as conn:
        conn.execute(text("UPDATE positions SET net_minutes = net_minutes + 5 "
                          "WHERE node_id = :n"), {"n": JN})
    before = snapshot(city)
    batch = [move, finishing(1, posted=60, signer=GL)]
    with pytest.raises(InvariantViolation, match="sum to 5"):
        city.execute(submit.submit_batch, [wire.to_bytes(e) for e in batch], seal)
    assert snapshot(city) == before
