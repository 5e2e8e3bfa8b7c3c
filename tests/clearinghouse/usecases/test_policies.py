"""The city policy at the clearinghouse: the bureau's signed acts, recorded and logged,
and claims refused unless made under the policy in force. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta

from nacl.signing import SigningKey

from clearinghouse.bureau import issue_policy
from clearinghouse.domain.claims import ClaimState
from clearinghouse.usecases import claims, log, policies
from clearinghouse.usecases.app import ClearinghouseApp
from clearinghouse.usecases.clock import ManualClock
from runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, PermissionDenied
from tests.clearinghouse.conftest import CITY_KEY, CITY_PUBLIC, refused, snapshot, stamp
from tests.clearinghouse.usecases.test_claims import (  # noqa: F401 - the fixture
    ALICE,
    GL,
    JN,
    KEYS,
    MOTHER,
    cid,
    city,
    ring,
)
from timebank.citypolicy import GRACE
from timebank.envelope import CITY, Signed, sign
from timebank.policy import DEFAULT_POLICY_TOML, policy_sha256
from timebank.v1 import clearing_pb2

SHORT = DEFAULT_POLICY_TOML.replace("publicity_days = 7", "publicity_days = 0")
CITY_DIGEST = policy_sha256(DEFAULT_POLICY_TOML)
SHORT_DIGEST = policy_sha256(SHORT)


def issue(app: ClearinghouseApp, serial: int, text: str = DEFAULT_POLICY_TOML,
          effective: datetime | None = None, *,
          key: SigningKey = CITY_KEY) -> policies.Issued:
    now = app.clock.now()
    act = issue_policy(key, serial, text, effective or now, now)
    return app.execute(policies.issue, act, CITY_PUBLIC)


def act(app: ClearinghouseApp, serial: int, text: str = DEFAULT_POLICY_TOML,
        effective: datetime | None = None) -> Signed:
    now = app.clock.now()
    return issue_policy(CITY_KEY, serial, text, effective or now, now)


def proposal(n: int, app: ClearinghouseApp, digest: bytes) -> Signed:
    now = app.clock.now()
    body = clearing_pb2.ClaimProposal(
        claim_id=cid(n), kind=clearing_pb2.CLAIM_KIND_REDEMPTION, creditor_node_id=GL,
        debtor_node_id=JN, payer_ref=ALICE, recipient_ref=MOTHER, recipient_age=82,
        minutes=60, policy_sha256=digest)
    body.created_at.CopyFrom(stamp(now))
    body.expires_at.CopyFrom(stamp(now + timedelta(days=7)))
    return sign("claim.propose", body.SerializeToString(), GL, KEYS[GL])


def decision(n: int, digest: bytes) -> Signed:
    body = clearing_pb2.ClaimDecision(claim_id=cid(n), accept=True, policy_sha256=digest)
    return sign("claim.decide", body.SerializeToString(), JN, KEYS[JN])


def test_issue_records_the_act_and_logs_a_policy_leaf(ch_app: ClearinghouseApp,
                                                      ch_clock: ManualClock) -> None:
    done = issue(ch_app, 1)
    assert done.log_index is not None
    assert (done.record.serial, done.record.sha256) == (1, CITY_DIGEST)
    assert done.record.effective_at == ch_clock.now()
    leaf = clearing_pb2.LogEntry.FromString(
        ch_app.query(lambda tx: log.log_of(tx).leaf(done.log_index)))
    assert leaf.kind == log.POLICY == "policy"
    assert leaf.envelope == done.record.envelope  # the city's envelope, verbatim
    assert not leaf.node_id
    published = ch_app.query(log.admissions)
    assert list(published.policies) == [done.record.envelope]
    # the same act again changes nothing, and logs nothing
    before = snapshot(ch_app)
    again = ch_app.execute(policies.issue, act(ch_app, 1), CITY_PUBLIC)
    assert again.log_index is None and again.record == done.record
    assert snapshot(ch_app) == before


def test_serials_run_without_gaps_and_never_go_back(ch_app: ClearinghouseApp,
                                                    ch_clock: ManualClock) -> None:
    issue(ch_app, 1)
    ch_clock.advance(timedelta(minutes=1))
    stale = refused(ch_app, policies.issue, act(ch_app, 1, SHORT), CITY_PUBLIC)
    assert isinstance(stale, AlreadyExists) and stale.reason == "STALE_SERIAL"
    assert "serial 2" in stale.message
    gap = refused(ch_app, policies.issue, act(ch_app, 3, SHORT), CITY_PUBLIC)
    assert isinstance(gap, FailedPrecondition) and gap.reason == "SERIAL_GAP"
    assert issue(ch_app, 2, SHORT).record.serial == 2
    assert [p.serial for p in ch_app.query(policies.city_policies)] == [1, 2]


def test_a_policy_taking_effect_in_the_past_is_refused(ch_app: ClearinghouseApp,
                                                       ch_clock: ManualClock) -> None:
    now = ch_clock.now()
    old = issue_policy(CITY_KEY, 1, DEFAULT_POLICY_TOML, now - timedelta(hours=1),
                       now - timedelta(hours=1))
    e = refused(ch_app, policies.issue, old, CITY_PUBLIC)
    assert isinstance(e, FailedPrecondition) and e.reason == "EFFECTIVE_IN_PAST"
    assert "in the past" in e.message


def test_a_text_the_nodes_would_refuse_is_refused_with_the_setting(
        ch_app: ClearinghouseApp) -> None:
    bad = act(ch_app, 1, DEFAULT_POLICY_TOML.replace("publicity_days = 7",
                                                     "publicity_days = 400"))
    e = refused(ch_app, policies.issue, bad, CITY_PUBLIC)
    assert isinstance(e, InvalidArgument) and e.reason == "BAD_POLICY"
    assert "publicity_days must be 0..90" in e.message
    unknown = refused(ch_app, policies.issue, act(ch_app, 1, "publicity_dayz = 3\n"),
                      CITY_PUBLIC)
    assert unknown.reason == "BAD_POLICY" and "publicity_dayz" in unknown.message


def test_only_the_city_root_key_issues_a_policy(ch_app: ClearinghouseApp) -> None:
    forged = issue_policy(SigningKey(b"not-the-city".ljust(32, b".")), 1,
                          DEFAULT_POLICY_TOML, ch_app.clock.now(), ch_app.clock.now())
    e = refused(ch_app, policies.issue, forged, CITY_PUBLIC)
    assert isinstance(e, PermissionDenied) and e.reason == "WRONG_KEY"
    by_node = sign("policy", act(ch_app, 1).body, GL, KEYS[GL])
    e = refused(ch_app, policies.issue, by_node, CITY_PUBLIC)
    assert isinstance(e, PermissionDenied) and e.reason == "NOT_CITY_SIGNED"
    admission_kind = sign("admission", act(ch_app, 1).body, CITY, CITY_KEY)
    assert refused(ch_app, policies.issue, admission_kind, CITY_PUBLIC).reason == "WRONG_KIND"


def test_before_any_city_policy_claims_are_not_checked(city: ClearinghouseApp) -> None:  # noqa: F811
    claim = city.execute(claims.propose, proposal(1, city, SHORT_DIGEST), ring(city))
    assert claim.state is ClaimState.PROPOSED


def test_a_claim_under_another_policy_is_refused_naming_both_digests(
        city: ClearinghouseApp, ch_clock: ManualClock) -> None:  # noqa: F811
    issue(city, 1)
    # within GRACE of the first policy's time, a claim made before it still goes through
    city.execute(claims.propose, proposal(9, city, SHORT_DIGEST), ring(city))
    ch_clock.advance(GRACE)
    e = refused(city, claims.propose, proposal(1, city, SHORT_DIGEST), ring(city))
    assert isinstance(e, FailedPrecondition) and e.reason == "POLICY_NOT_CURRENT"
    assert SHORT_DIGEST.hex()[:12] in e.message and CITY_DIGEST.hex()[:12] in e.message
    assert "serial 1" in e.message and len(e.message) <= 200
    unsigned = refused(city, claims.propose, proposal(1, city, b""), ring(city))
    assert unsigned.reason == "POLICY_NOT_CURRENT" and "none" in unsigned.message
    # under the city's policy it goes through; a decision under another is refused
    assert city.execute(claims.propose, proposal(1, city, CITY_DIGEST), ring(city)).state \
        is ClaimState.PROPOSED
    e = refused(city, claims.decide, decision(1, SHORT_DIGEST), ring(city))
    assert e.reason == "POLICY_NOT_CURRENT" and "claim decision" in e.message
    assert city.execute(claims.decide, decision(1, CITY_DIGEST), ring(city)).state \
        is ClaimState.ACCEPTED


def test_a_scheduled_policy_takes_over_at_its_time_with_a_grace(
        city: ClearinghouseApp, ch_clock: ManualClock) -> None:  # noqa: F811
    issue(city, 1)
    ch_clock.advance(GRACE)
    switch = ch_clock.now() + timedelta(days=1)
    issue(city, 2, SHORT, switch)
    # before the switch (and its grace) only the policy in force is accepted
    assert refused(city, claims.propose, proposal(1, city, SHORT_DIGEST),
                   ring(city)).reason == "POLICY_NOT_CURRENT"
    ch_clock.advance(switch - GRACE - ch_clock.now())
    city.execute(claims.propose, proposal(2, city, SHORT_DIGEST), ring(city))
    ch_clock.advance(switch + GRACE - timedelta(seconds=1) - ch_clock.now())
    city.execute(claims.propose, proposal(3, city, CITY_DIGEST), ring(city))  # in flight
    ch_clock.advance(switch + GRACE - ch_clock.now())
    e = refused(city, claims.propose, proposal(4, city, CITY_DIGEST), ring(city))
    assert e.reason == "POLICY_NOT_CURRENT" and "serial 2" in e.message
    city.execute(claims.propose, proposal(5, city, SHORT_DIGEST), ring(city))


def test_the_check_reads_the_policies_once_per_transaction(
        city: ClearinghouseApp) -> None:  # noqa: F811
    issue(city, 1)

    def twice(tx):  # type: ignore[no-untyped-def]
        policies.check_current(tx, CITY_DIGEST, GL, "claim proposal")
        first = tx.cache.policy_terms
        policies.check_current(tx, CITY_DIGEST, GL, "claim proposal")
        return first is tx.cache.policy_terms and len(first) == 1

    assert city.query(twice)


def test_a_policy_issued_by_another_process_is_taken_at_once(
        city: ClearinghouseApp, ch_clock: ManualClock) -> None:  # noqa: F811
    """The serving clearinghouse caches the policies around now; the bureau's `policy
    issue` writes through another app. A digest the cache does not know is checked
    against the database before it is refused."""
    issue(city, 1)
    ch_clock.advance(GRACE)
    city.execute(claims.propose, proposal(1, city, CITY_DIGEST), ring(city))  # caches
    bureau = ClearinghouseApp(city.db, ch_clock)
    issue(bureau, 2, SHORT)
    ch_clock.advance(timedelta(milliseconds=100))  # well within the cache's life
    assert city.execute(claims.propose, proposal(2, city, SHORT_DIGEST), ring(city)).state \
        is ClaimState.PROPOSED
    ch_clock.advance(GRACE)
    assert refused(city, claims.propose, proposal(3, city, CITY_DIGEST),
                   ring(city)).reason == "POLICY_NOT_CURRENT"
