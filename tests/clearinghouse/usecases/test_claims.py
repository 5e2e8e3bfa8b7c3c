"""Claims through the clearinghouse: propose, decide, finish, expire; deliveries and acks;
positions and limits. Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta

import pytest
from google.protobuf.message import Message
from nacl.signing import SigningKey
from sqlalchemy import text

from clearinghouse.domain.claims import (
    MAX_MOVE_MINUTES,
    Claim,
    ClaimKind,
    ClaimState,
    RejectReason,
)
from clearinghouse.usecases import admission, claims, directory
from clearinghouse.usecases.app import ClearinghouseApp, Tx
from clearinghouse.usecases.clock import ManualClock
from runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    InvariantViolation,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from tests.clearinghouse.conftest import (
    CITY_PUBLIC,
    certificate,
    node_key,
    refused,
    registration,
    revocation,
    snapshot,
    stamp,
)
from timebank.envelope import KeyRing, Signed, sign
from timebank.keys import key_id, public_key
from timebank.v1 import clearing_pb2, node_pb2

JN, GL, QX = "320115", "320106", "320113"  # 江宁区, 鼓楼区, 栖霞区
KEYS = {JN: node_key(JN), GL: node_key(GL), QX: node_key(QX)}
ALICE = hashlib.sha256(b"alice").hexdigest()
MOTHER = hashlib.sha256(b"alice's mother").hexdigest()
LIMIT = 10_000
WEEK = timedelta(days=7)

R = clearing_pb2


def cid(n: int) -> str:
    """A UUIDv7 claim id (fixed time part; the tail makes it unique)."""
    return f"019a0000-0000-7000-8000-{n:012x}"


@pytest.fixture
def city(ch_app: ClearinghouseApp) -> ClearinghouseApp:
    """Three admitted districts, each allowed to owe LIMIT minutes; Alice homed at 江宁区."""
    for node, district in ((JN, "江宁区"), (GL, "鼓楼区"), (QX, "栖霞区")):
        ch_app.execute(admission.admit, certificate(node, district, KEYS[node]), CITY_PUBLIC)
        ch_app.execute(claims.set_net_debit_limit, node, LIMIT)
    ch_app.execute(directory.register, registration(ALICE, JN, JN, KEYS[JN]), ring(ch_app))
    return ch_app


def ring(app: ClearinghouseApp) -> KeyRing:
    return app.query(admission.key_ring)


ORIGINS = (node_pb2.ORIGIN_INDIVIDUAL, node_pb2.ORIGIN_GRANTED, node_pb2.ORIGIN_GROUP,
           node_pb2.ORIGIN_DONATED)


def proposal(n: int, app: ClearinghouseApp, *, kind: ClaimKind = ClaimKind.REDEMPTION,
             creditor: str = GL, debtor: str = JN, payer: str = ALICE, minutes: int = 120,
             window: timedelta = WEEK, signer: str | None = None,
             key: SigningKey | None = None,
             origins: Sequence[int | tuple[int, int]] | None = None,
             claim_id: str | None = None) -> Signed:
    now = app.clock.now()
    body = clearing_pb2.ClaimProposal(
        claim_id=claim_id or cid(n),
        kind=R.CLAIM_KIND_MOVE if kind is ClaimKind.MOVE else R.CLAIM_KIND_REDEMPTION,
        creditor_node_id=creditor, debtor_node_id=debtor, payer_ref=payer, minutes=minutes)
    if kind is ClaimKind.REDEMPTION:
        body.recipient_ref = MOTHER
        body.recipient_age = 82
    for i, amount in enumerate(origins or []):
        if isinstance(amount, tuple):  # (origin, minutes), as given
            body.origins.add(origin=amount[0], minutes=amount[1])
        else:  # one origin after another
            body.origins.add(origin=ORIGINS[i % len(ORIGINS)], minutes=amount)
    body.created_at.CopyFrom(stamp(now))
    body.expires_at.CopyFrom(stamp(now + window))
    signer = signer or (debtor if kind is ClaimKind.MOVE else creditor)
    return sign("claim.propose", body.SerializeToString(), signer, key or KEYS[signer])


def decision(n: int, *, accept: bool = True,
             reason: clearing_pb2.ClaimReason.ValueType = R.CLAIM_REASON_UNSPECIFIED,
             signer: str = JN,
             key: SigningKey | None = None) -> Signed:
    body = clearing_pb2.ClaimDecision(claim_id=cid(n), accept=accept, reason=reason,
                                      detail="" if accept else "balance too low")
    return sign("claim.decide", body.SerializeToString(), signer, key or KEYS[signer])


def finishing(n: int, *, complete: bool = True, posted: int = 0,
              reason: clearing_pb2.ClaimReason.ValueType = R.CLAIM_REASON_UNSPECIFIED,
              signer: str = GL) -> Signed:
    body = clearing_pb2.ClaimFinish(claim_id=cid(n), complete=complete, reason=reason,
                                    posted_minutes=posted)
    return sign("claim.finish", body.SerializeToString(), signer, KEYS[signer])


def propose(app: ClearinghouseApp, envelope: Signed) -> Claim:
    return app.execute(claims.propose, envelope, ring(app))


def decide(app: ClearinghouseApp, envelope: Signed) -> Claim:
    return app.execute(claims.decide, envelope, ring(app))


def finish(app: ClearinghouseApp, envelope: Signed) -> Claim:
    return app.execute(claims.finish, envelope, ring(app))


def queue(app: ClearinghouseApp, node_id: str, after: int = 0) -> list[clearing_pb2.Delivery]:
    found = []
    for seq, payload in app.query(claims.deliveries_after, node_id, after, 1000):
        delivery = clearing_pb2.Delivery.FromString(payload)
        assert (delivery.seq, delivery.recipient_node_id) == (seq, node_id)
        found.append(delivery)
    return found


def relayed(delivery: clearing_pb2.Delivery) -> bytes:
    return delivery.relayed.body


def net(app: ClearinghouseApp) -> dict[str, int]:
    return dict(app.query(claims.positions).net)


# the happy paths -------------------------------------------------------------------

def test_a_redemption_end_to_end(city: ClearinghouseApp, ch_clock: ManualClock) -> None:
    offer = proposal(1, city)
    claim = propose(city, offer)
    assert (claim.state, claim.creditor, claim.debtor, claim.minutes) == (
        ClaimState.PROPOSED, GL, JN, 120)
    assert claim.created_at == ch_clock.now()
    [to_jn] = queue(city, JN)
    assert relayed(to_jn) == offer.body and to_jn.relayed.signature == offer.signature
    assert to_jn.state == R.CLAIM_STATE_PROPOSED and to_jn.seq == 1
    assert queue(city, GL) == []

    ch_clock.advance(timedelta(minutes=5))
    accepted = decide(city, decision(1))
    assert accepted.state is ClaimState.ACCEPTED and accepted.updated_at == ch_clock.now()
    [to_gl] = queue(city, GL)
    assert to_gl.state == R.CLAIM_STATE_ACCEPTED and relayed(to_gl) == decision(1).body
    assert net(city) == {JN: 0, GL: 0, QX: 0}

    ch_clock.advance(timedelta(hours=3))
    done = finish(city, finishing(1, posted=90))  # the service was recorded shorter
    assert (done.state, done.posted_minutes) == (ClaimState.COMPLETED, 90)
    assert [d.state for d in queue(city, JN)] == [R.CLAIM_STATE_PROPOSED,
                                                  R.CLAIM_STATE_COMPLETED]
    positions = city.query(claims.positions)
    assert dict(positions.net) == {JN: -90, GL: 90, QX: 0}
    assert sum(positions.net.values()) == 0
    assert dict(positions.gross) == {(GL, JN): 90}


def test_a_move_end_to_end(city: ClearinghouseApp, ch_clock: ManualClock) -> None:
    offer = proposal(2, city, kind=ClaimKind.MOVE, creditor=QX, debtor=JN, minutes=600,
                     origins=[400, 200])
    claim = propose(city, offer)
    # the proposer is the debtor, holding the balance as it proposes: accepted at once
    assert claim.kind is ClaimKind.MOVE and claim.state is ClaimState.ACCEPTED
    [to_qx] = queue(city, QX)  # the new home is told
    assert relayed(to_qx) == offer.body
    assert queue(city, JN) == []

    # a decision sent anyway by the old home changes nothing and tells nobody
    before = snapshot(city)
    assert decide(city, decision(2)).state is ClaimState.ACCEPTED
    assert snapshot(city) == before
    assert refused(city, claims.finish, finishing(2, posted=300, signer=QX),
                   ring(city)).reason == "PARTIAL_MOVE"
    done = finish(city, finishing(2, signer=QX))
    assert (done.state, done.posted_minutes) == (ClaimState.COMPLETED, 600)
    assert city.query(directory.lookup, ALICE) == QX
    assert net(city) == {JN: -600, GL: 0, QX: 600}
    # the new home registering her again changes nothing; the old home may not
    before = snapshot(city)
    city.execute(directory.register, registration(ALICE, QX, QX, KEYS[QX]), ring(city))
    assert snapshot(city) == before
    assert refused(city, directory.register, registration(ALICE, JN, JN, KEYS[JN]),
                   ring(city)).reason == "HOMED_ELSEWHERE"
    # and a redemption must now name her new home
    assert refused(city, claims.propose, proposal(3, city), ring(city)).reason == (
        "NOT_HOME_DISTRICT")
    assert propose(city, proposal(3, city, debtor=QX)).debtor == QX


def test_the_debtor_rejects(city: ClearinghouseApp) -> None:
    offer = proposal(1, city)
    propose(city, offer)
    rejected = decide(city, decision(1, accept=False,
                                     reason=R.CLAIM_REASON_INSUFFICIENT_BALANCE))
    assert (rejected.state, rejected.reason) == (ClaimState.REJECTED,
                                                 RejectReason.INSUFFICIENT_BALANCE)
    assert [d.state for d in queue(city, GL)] == [R.CLAIM_STATE_REJECTED]
    before = snapshot(city)
    assert propose(city, offer) == rejected  # one claim id, one outcome, for ever
    assert snapshot(city) == before
    assert refused(city, claims.decide, decision(1), ring(city)).reason == "CLAIM_STATE"
    # a rejection needs a reason the debtor may give
    propose(city, proposal(2, city))
    assert refused(city, claims.decide, decision(2, accept=False),
                   ring(city)).reason == "BAD_REASON"
    assert refused(city, claims.decide, decision(2, accept=False,
                                                 reason=R.CLAIM_REASON_CANCELLED),
                   ring(city)).reason == "BAD_REASON"
    assert refused(city, claims.decide, decision(2, reason=R.CLAIM_REASON_POLICY),
                   ring(city)).reason == "BAD_REASON"


def test_the_creditor_voids(city: ClearinghouseApp) -> None:
    propose(city, proposal(1, city))
    decide(city, decision(1))
    voided = finish(city, finishing(1, complete=False))
    assert (voided.state, voided.reason) == (ClaimState.VOIDED, RejectReason.CANCELLED)
    assert queue(city, JN)[-1].state == R.CLAIM_STATE_VOIDED
    assert net(city) == {JN: 0, GL: 0, QX: 0}
    assert refused(city, claims.finish, finishing(1), ring(city)).reason == "CLAIM_STATE"


def test_open_claims_expire_and_both_parties_are_told(
        city: ClearinghouseApp, ch_clock: ManualClock) -> None:
    propose(city, proposal(1, city, window=timedelta(hours=1)))
    propose(city, proposal(2, city, window=timedelta(hours=2)))
    decide(city, decision(2))
    propose(city, proposal(3, city, window=WEEK))
    assert city.execute(claims.expire_due) == []

    ch_clock.advance(timedelta(hours=2))
    expired = city.execute(claims.expire_due)
    assert [(c.claim_id, c.state, c.reason) for c in expired] == [
        (cid(1), ClaimState.EXPIRED, RejectReason.EXPIRED),
        (cid(2), ClaimState.EXPIRED, RejectReason.EXPIRED)]
    for node in (GL, JN):
        tail = [(d.expired_claim_id, d.state) for d in queue(city, node)
                if d.expired_claim_id]
        assert tail == [(cid(1), R.CLAIM_STATE_EXPIRED), (cid(2), R.CLAIM_STATE_EXPIRED)]
    assert city.execute(claims.expire_due) == []
    # too late to act on them now; the hold they had counts no more against the limit
    assert refused(city, claims.finish, finishing(2), ring(city)).reason == "CLAIM_STATE"
    assert refused(city, claims.decide, decision(1), ring(city)).reason == "CLAIM_STATE"


def test_acting_after_the_deadline_before_the_sweep(
        city: ClearinghouseApp, ch_clock: ManualClock) -> None:
    propose(city, proposal(1, city, window=timedelta(hours=1)))
    ch_clock.advance(timedelta(hours=1))
    assert refused(city, claims.decide, decision(1), ring(city)).reason == "CLAIM_EXPIRED"
    assert [c.claim_id for c in city.execute(claims.expire_due)] == [cid(1)]


def test_the_sweep_is_bounded(city: ClearinghouseApp, ch_clock: ManualClock) -> None:
    for n in range(1, 4):
        propose(city, proposal(n, city, minutes=10, window=timedelta(minutes=n)))
    ch_clock.advance(timedelta(hours=1))
    assert [c.claim_id for c in city.execute(claims.expire_due, 2)] == [cid(1), cid(2)]
    assert [c.claim_id for c in city.execute(claims.expire_due, 2)] == [cid(3)]
    assert refused(city, claims.expire_due, 0).reason == "BAD_LIMIT"


# replays ---------------------------------------------------------------------------

def test_replayed_envelopes_change_nothing(city: ClearinghouseApp,
                                          ch_clock: ManualClock) -> None:
    offer = proposal(1, city)
    first = propose(city, offer)
    before = snapshot(city)
    ch_clock.advance(timedelta(days=6, hours=23))  # a late replay still gets the outcome
    assert propose(city, offer) == first
    assert snapshot(city) == before

    accepted = decide(city, decision(1))
    before = snapshot(city)
    assert decide(city, decision(1)) == accepted
    assert snapshot(city) == before

    done = finish(city, finishing(1))
    before = snapshot(city)
    assert finish(city, finishing(1)) == done
    assert decide(city, decision(1)) == done  # an old decision returns the claim as it is
    assert propose(city, offer) == done
    assert snapshot(city) == before
    ch_clock.advance(WEEK)
    assert propose(city, offer) == done
    assert city.execute(claims.expire_due) == []


def test_the_same_claim_id_with_another_body_is_refused(city: ClearinghouseApp) -> None:
    propose(city, proposal(1, city))
    for other in (proposal(1, city, minutes=121),  # a domain field differs
                  proposal(1, city, window=timedelta(days=6))):  # only the deadline does
        error = refused(city, claims.propose, other, ring(city))
        assert isinstance(error, AlreadyExists) and error.reason == "CLAIM_ID_REUSED"
    # the same id from the other party is not theirs to resubmit
    move = proposal(1, city, kind=ClaimKind.MOVE, creditor=GL, debtor=JN)
    error = refused(city, claims.propose, move, ring(city))
    assert isinstance(error, PermissionDenied) and error.reason == "NOT_YOUR_CLAIM"


# refusals: nothing changes anywhere ------------------------------------------------

def _tampered(envelope: Signed) -> Signed:
    bad = bytes([envelope.signature[0] ^ 1]) + envelope.signature[1:]
    return Signed(envelope.kind, envelope.body, envelope.signer, envelope.key_id, bad)


def test_envelope_refusals(city: ClearinghouseApp) -> None:
    stranger = SigningKey(b"stranger".ljust(32, b"."))
    cases: list[tuple[Signed, type[Exception], str]] = [
        (_tampered(proposal(1, city)), PermissionDenied, "BAD_SIGNATURE"),
        (proposal(1, city, key=node_key(GL, 9)), PermissionDenied, "UNKNOWN_KEY"),
        (proposal(1, city, creditor="320199", key=stranger), PermissionDenied,
         "UNKNOWN_SIGNER"),
        # 江宁区 proposing a redemption in 鼓楼区's name
        (proposal(1, city, signer=JN), PermissionDenied, "NOT_YOUR_CLAIM"),
        (sign("claim.decide", proposal(1, city).body, GL, KEYS[GL]), InvalidArgument,
         "WRONG_KIND"),
        (sign("claim.propose", b"\xff\xff", GL, KEYS[GL]), InvalidArgument, "MALFORMED_BODY"),
        (sign("claim.propose", bytes(claims.MAX_CLAIM_BODY_BYTES + 1), GL, KEYS[GL]),
         InvalidArgument, "OVERSIZED"),
    ]
    for envelope, status, reason in cases:
        error = refused(city, claims.propose, envelope, ring(city))
        assert (type(error), error.reason) == (status, reason), envelope


def test_a_revoked_key_is_refused_even_by_a_stale_ring(city: ClearinghouseApp) -> None:
    stale = ring(city)
    city.execute(admission.revoke, revocation(GL, key_id(public_key(KEYS[GL]))), CITY_PUBLIC)
    for keys in (stale, ring(city)):
        error = refused(city, claims.propose, proposal(1, city), keys)
        assert isinstance(error, PermissionDenied) and error.reason == "REVOKED_KEY"
    # nor may anyone claim from a district whose key is revoked
    error = refused(city, claims.propose,
                    proposal(1, city, kind=ClaimKind.MOVE, creditor=GL, debtor=JN,
                             origins=[120]), ring(city))
    assert isinstance(error, FailedPrecondition) and error.reason == "NODE_REVOKED"


def test_proposal_refusals(city: ClearinghouseApp, ch_clock: ManualClock) -> None:
    bob = hashlib.sha256(b"bob").hexdigest()
    cases: list[tuple[Signed, type[Exception], str]] = [
        (proposal(1, city, minutes=0), InvalidArgument, "MINUTES_OUT_OF_RANGE"),
        (proposal(1, city, minutes=1441), InvalidArgument, "MINUTES_OUT_OF_RANGE"),
        (proposal(1, city, kind=ClaimKind.MOVE, creditor=QX, minutes=MAX_MOVE_MINUTES + 1,
                  origins=[MAX_MOVE_MINUTES + 1]), InvalidArgument, "MINUTES_OUT_OF_RANGE"),
        (proposal(1, city, kind=ClaimKind.MOVE, creditor=QX, minutes=600, origins=[500]),
         InvalidArgument, "MALFORMED_ORIGINS"),
        (proposal(1, city, kind=ClaimKind.MOVE, creditor=QX, minutes=600,
                  origins=[(99, 600)]), InvalidArgument, "MALFORMED_ORIGINS"),
        (proposal(1, city, kind=ClaimKind.MOVE, creditor=QX, minutes=600,
                  origins=[(node_pb2.ORIGIN_UNSPECIFIED, 600)]),
         InvalidArgument, "MALFORMED_ORIGINS"),
        (proposal(1, city, kind=ClaimKind.MOVE, creditor=QX, minutes=600,
                  origins=[(node_pb2.ORIGIN_GROUP, 300), (node_pb2.ORIGIN_GROUP, 300)]),
         InvalidArgument, "MALFORMED_ORIGINS"),
        (proposal(1, city, window=timedelta(0)), InvalidArgument, "BAD_DEADLINE"),
        (proposal(1, city, window=-timedelta(hours=1)), InvalidArgument, "BAD_DEADLINE"),
        (proposal(1, city, window=timedelta(days=31)), InvalidArgument, "BAD_DEADLINE"),
        (proposal(1, city, claim_id="not-a-uuid"), InvalidArgument, "MALFORMED_CLAIM_ID"),
        (proposal(1, city, creditor=GL, debtor=GL), InvalidArgument, "CLAIM_TO_SELF"),
        (proposal(1, city, debtor=QX), FailedPrecondition, "NOT_HOME_DISTRICT"),
        (proposal(1, city, payer=bob), NotFound, "UNKNOWN_PERSON"),
        (proposal(1, city, debtor="320199"), NotFound, "UNKNOWN_NODE"),
    ]
    for envelope, status, reason in cases:
        error = refused(city, claims.propose, envelope, ring(city))
        assert (type(error), error.reason) == (status, reason), reason
    # none of them used the id: a good proposal under it is recorded
    assert propose(city, proposal(1, city)).state is ClaimState.PROPOSED


BAD_TIMES = [(253_402_300_800, 0), (-62_135_596_801, 0), (2**63 - 1, 0), (-(2**63), 0),
             (0, -1), (0, 10**9)]


def _retimed(envelope: Signed, field: str, seconds: int, nanos: int,
             body_type: type[Message], **changes: object) -> Signed:
    body = body_type.FromString(envelope.body)
    getattr(body, field).seconds, getattr(body, field).nanos = seconds, nanos
    for name, value in changes.items():
        setattr(body, name, value)
    return sign(envelope.kind, body.SerializeToString(), envelope.signer, KEYS[envelope.signer])


@pytest.mark.parametrize(("seconds", "nanos"), BAD_TIMES)
def test_a_time_that_is_no_time_is_refused_before_anything_else(
        city: ClearinghouseApp, seconds: int, nanos: int) -> None:
    """A Timestamp out of its range (year 1 to 9999, nanos 0 to 999,999,999) anywhere in
    a signed body is INVALID_ARGUMENT BAD_TIMESTAMP, named, before any other check (here
    a claim id that is not one, and a claim that does not exist)."""
    good = proposal(1, city)
    for field in ("expires_at", "created_at"):
        bad = _retimed(good, field, seconds, nanos, clearing_pb2.ClaimProposal,
                       claim_id="not-a-uuid")
        error = refused(city, claims.propose, bad, ring(city))
        assert (type(error), error.reason) == (InvalidArgument, "BAD_TIMESTAMP")
        assert f"ClaimProposal.{field} is not a valid time" in error.message
    for envelope, body_type, use in (
            (decision(7), clearing_pb2.ClaimDecision, claims.decide),
            (finishing(7), clearing_pb2.ClaimFinish, claims.finish)):
        error = refused(city, use, _retimed(envelope, "at", seconds, nanos, body_type),
                        ring(city))
        assert (type(error), error.reason) == (InvalidArgument, "BAD_TIMESTAMP")


def test_the_net_debit_limit_counts_open_claims(city: ClearinghouseApp) -> None:
    city.execute(claims.set_net_debit_limit, JN, 300)
    propose(city, proposal(1, city, minutes=200))
    error = refused(city, claims.propose, proposal(2, city, minutes=101), ring(city))
    assert isinstance(error, ResourceExhausted) and error.reason == "LIMIT_REACHED"
    decide(city, decision(1))
    finish(city, finishing(1, posted=150))  # JN now owes 150 net, nothing open
    propose(city, proposal(2, city, minutes=150))
    error = refused(city, claims.propose, proposal(3, city, minutes=1), ring(city))
    assert error.reason == "LIMIT_REACHED"
    # the limit is the debtor's: 鼓楼区 owes nothing and may still be claimed from
    city.execute(directory.register, registration(MOTHER, GL, GL, KEYS[GL]), ring(city))
    assert propose(city, proposal(3, city, creditor=QX, debtor=GL, payer=MOTHER)).minutes == 120


def test_the_pending_claims_limit(city: ClearinghouseApp) -> None:
    def propose_at_most_one(tx: Tx, envelope: Signed, keys: KeyRing) -> Claim:
        return claims.propose(tx, envelope, keys, max_pending=1)

    city.execute(propose_at_most_one, proposal(1, city), ring(city))
    error = refused(city, propose_at_most_one, proposal(2, city), ring(city))
    assert isinstance(error, ResourceExhausted) and error.reason == "BUSY"
    city.execute(claims.decide, decision(1, accept=False, reason=R.CLAIM_REASON_POLICY),
                 ring(city))
    assert city.execute(propose_at_most_one, proposal(2, city), ring(city)).minutes == 120


def test_only_the_right_party_decides_and_finishes(city: ClearinghouseApp) -> None:
    propose(city, proposal(1, city))
    for fn, envelope in ((claims.decide, decision(1, signer=GL)),
                         (claims.decide, decision(1, signer=QX)),
                         (claims.finish, finishing(1, signer=JN))):
        error = refused(city, fn, envelope, ring(city))
        assert isinstance(error, PermissionDenied) and error.reason == "NOT_YOUR_CLAIM"
    assert refused(city, claims.finish, finishing(1), ring(city)).reason == "CLAIM_STATE"
    decide(city, decision(1))
    for envelope, reason in ((finishing(1, posted=121), "MINUTES_OUT_OF_RANGE"),
                             (finishing(1, complete=False, posted=5), "MINUTES_OUT_OF_RANGE"),
                             (finishing(1, reason=R.CLAIM_REASON_POLICY), "BAD_REASON"),
                             (finishing(1, complete=False,
                                        reason=R.CLAIM_REASON_INSUFFICIENT_BALANCE),
                              "BAD_REASON")):
        assert refused(city, claims.finish, envelope, ring(city)).reason == reason
    missing = clearing_pb2.ClaimDecision(claim_id=cid(99), accept=True)
    error = refused(city, claims.decide,
                    sign("claim.decide", missing.SerializeToString(), JN, KEYS[JN]), ring(city))
    assert isinstance(error, NotFound) and error.reason == "UNKNOWN_CLAIM"


# deliveries and acks ---------------------------------------------------------------

def test_deliveries_in_order_and_acks(city: ClearinghouseApp) -> None:
    for n in range(1, 5):
        propose(city, proposal(n, city, minutes=10 * n))
    delivered = city.query(claims.deliveries_after, JN, 0, 1000)
    assert [seq for seq, _ in delivered] == [1, 2, 3, 4]
    assert [clearing_pb2.ClaimProposal.FromString(relayed(d)).minutes
            for d in queue(city, JN)] == [10, 20, 30, 40]
    assert [seq for seq, _ in city.query(claims.deliveries_after, JN, 2, 1)] == [3]
    assert city.query(claims.deliveries_after, GL, 0, 10) == []

    assert city.execute(claims.ack, JN, 2) == 2
    before = snapshot(city)
    assert city.execute(claims.ack, JN, 1) == 2  # late or repeated: no change
    assert city.execute(claims.ack, JN, 2) == 2
    assert snapshot(city) == before
    error = refused(city, claims.ack, JN, 5)
    assert isinstance(error, FailedPrecondition) and error.reason == "ACK_BEYOND_DELIVERED"
    assert refused(city, claims.ack, GL, 1).reason == "ACK_BEYOND_DELIVERED"
    assert city.execute(claims.ack, GL, 0) == 0
    assert city.execute(claims.ack, JN, 4) == 4
    # resuming after the last ack delivers what came since
    decide(city, decision(4))
    propose(city, proposal(5, city))
    assert [d.seq for d in queue(city, JN, after=4)] == [5]
    assert refused(city, claims.ack, "320199", 0).reason == "UNKNOWN_NODE"
    assert refused(city, claims.ack, JN, -1).reason == "BAD_SEQ"
    with pytest.raises(NotFound):
        city.query(claims.deliveries_after, "320199", 0, 10)
    with pytest.raises(InvalidArgument):
        city.query(claims.deliveries_after, JN, 0, 0)


# positions and limits --------------------------------------------------------------

def test_setting_limits(city: ClearinghouseApp) -> None:
    assert refused(city, claims.set_net_debit_limit, JN, -1).reason == "BAD_LIMIT"
    assert refused(city, claims.set_net_debit_limit, "320199", 5).reason == "UNKNOWN_NODE"
    assert refused(city, claims.set_net_debit_limit, "bad", 5).reason == "MALFORMED_NODE_ID"
    city.execute(claims.set_net_debit_limit, JN, 0)
    assert refused(city, claims.propose, proposal(1, city, minutes=1),
                   ring(city)).reason == "LIMIT_REACHED"


def test_positions_disagreeing_with_the_claims_are_a_bug(city: ClearinghouseApp) -> None:
    propose(city, proposal(1, city))
    decide(city, decision(1))
    finish(city, finishing(1))
    assert net(city) == {JN: -120, GL: 120, QX: 0}
    with city.db.write() as conn:
        conn.execute(text("UPDATE positions SET net_minutes = net_minutes + 1 "
                          f"WHERE node_id = '{GL}'"))
        conn.execute(text("UPDATE positions SET net_minutes = net_minutes - 1 "
                          f"WHERE node_id = '{JN}'"))
    with pytest.raises(InvariantViolation):
        city.query(claims.positions)


def test_stamps_are_the_clearinghouses(city: ClearinghouseApp, ch_clock: ManualClock) -> None:
    offer = proposal(1, city)
    ch_clock.advance(timedelta(minutes=1))  # the proposer's own created_at is ignored
    claim = propose(city, offer)
    assert claim.created_at == ch_clock.now()
    assert isinstance(claim.created_at, datetime) and claim.created_at.tzinfo is not None
    [delivery] = queue(city, JN)
    assert delivery.at.ToDatetime() == ch_clock.now().replace(tzinfo=None)



def test_one_open_move_per_person(city: ClearinghouseApp, ch_clock: ManualClock) -> None:
    move = proposal(1, city, kind=ClaimKind.MOVE, creditor=QX, debtor=JN, minutes=600,
                    origins=[600])
    assert propose(city, move).state is ClaimState.ACCEPTED  # proposed by its debtor
    other_move = proposal(2, city, kind=ClaimKind.MOVE, creditor=GL, debtor=JN, minutes=600,
                          origins=[600])
    redemption = proposal(3, city)
    for envelope in (other_move, redemption):  # open: her balance is in transit
        error = refused(city, claims.propose, envelope, ring(city))
        assert isinstance(error, FailedPrecondition)
        assert error.reason == claims.MOVE_IN_PROGRESS
        assert ALICE not in error.message and QX in error.message
    assert propose(city, move).state is ClaimState.ACCEPTED  # its own replay is fine
    ch_clock.advance(timedelta(minutes=1))
    assert decide(city, decision(1)).state is ClaimState.ACCEPTED  # said again: no change
    error = refused(city, claims.propose, redemption, ring(city))  # still open
    assert error.reason == claims.MOVE_IN_PROGRESS
    ch_clock.advance(timedelta(minutes=1))
    assert finish(city, finishing(1, complete=False, signer=QX)).state is ClaimState.VOIDED
    assert propose(city, redemption).state is ClaimState.PROPOSED  # she may act again


def test_a_completed_or_expired_move_frees_the_person(city: ClearinghouseApp,
                                                      ch_clock: ManualClock) -> None:
    propose(city, proposal(1, city, kind=ClaimKind.MOVE, creditor=QX, debtor=JN,
                           minutes=600, origins=[600]))
    ch_clock.advance(timedelta(minutes=1))
    decide(city, decision(1))
    assert finish(city, finishing(1, signer=QX)).state is ClaimState.COMPLETED
    assert city.query(directory.lookup, ALICE) == QX
    assert propose(city, proposal(2, city, debtor=QX)).state is ClaimState.PROPOSED
    # an open redemption does not stop a move; the move then stops new redemptions
    back = proposal(3, city, kind=ClaimKind.MOVE, creditor=JN, debtor=QX, minutes=60,
                    origins=[60], window=timedelta(minutes=5))
    assert propose(city, back).state is ClaimState.ACCEPTED
    assert refused(city, claims.propose, proposal(4, city, debtor=QX),
                   ring(city)).reason == claims.MOVE_IN_PROGRESS
    ch_clock.advance(timedelta(minutes=6))
    assert [c.claim_id for c in city.execute(claims.expire_due)] == [cid(3)]
    assert city.query(lambda tx: tx.repo.open_move(ALICE)) is None
    assert propose(city, proposal(4, city, debtor=QX)).state is ClaimState.PROPOSED
