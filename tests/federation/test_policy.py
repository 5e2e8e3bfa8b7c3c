"""One city policy, signed: a real clearinghouse gRPC server and district nodes with their
real links. A district that serves a policy the city did not sign, or an outdated one,
is refused by the clearinghouse (POLICY_NOT_CURRENT), its operator sees why on the claim,
and nothing is recorded or left held. (The switch at a future time across real
processes on the dev clock is tests/city/test_policy_switch.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from rich.console import Console

from clearinghouse.bureau import issue_policy
from clearinghouse.domain.claims import ClaimState as ChState
from clearinghouse.usecases import policies as ch_policies
from node.api import convert
from node.cli.claims import render_claim
from node.domain.claims import ClaimState
from node.domain.orders import OrderState
from node.link.clearing_link import ClearingLink
from node.usecases import claims
from tests.federation.conftest import CH_KEY, CITY_ROOT, City, make_city
from tests.federation.support import (
    GL,
    JN,
    QX,
    assert_consistent,
    assert_nothing_held,
    ch_claim,
    family,
    order_for_mother,
    order_state,
)
from timebank.citypolicy import GRACE
from timebank.keys import public_key
from timebank.policy import DEFAULT_POLICY_TOML, policy_sha256

#: 鼓楼区 shortens its own publicity period: the issue's finding.
SHORTENED = DEFAULT_POLICY_TOML.replace("publicity_days = 7", "publicity_days = 0")
THREE_DAYS = DEFAULT_POLICY_TOML.replace("publicity_days = 7", "publicity_days = 3")


def issue(city: City, serial: int, text: str, after: timedelta = timedelta(0)) -> None:
    now = city.clock.now()
    act = issue_policy(CITY_ROOT, serial, text, now + after, now)
    city.ch.execute(ch_policies.issue, act, public_key(CITY_ROOT))


def shown(claim: claims.ClaimView) -> str:
    console = Console(width=400, record=True)
    console.print(render_claim(convert.claim_pb(claim)))
    return console.export_text()


@pytest.fixture
def gulou_shortens(tmp_path: Path) -> Iterator[City]:
    """鼓楼区 runs its own file (publicity 0 days) and has no city key; 江宁区 and 栖霞区
    run the city's signed policy."""
    yield from make_city(tmp_path, f"sqlite:///{tmp_path / 'ch.sqlite3'}",
                         local_policies={GL: SHORTENED}, city_keyed={JN, QX})


@pytest.fixture
def all_signed(tmp_path: Path) -> Iterator[City]:
    """Every district is configured with the city key and runs the published file."""
    yield from make_city(tmp_path, f"sqlite:///{tmp_path / 'ch.sqlite3'}",
                         city_keyed={JN, GL, QX})


@pytest.fixture
def jiangning_own(tmp_path: Path) -> Iterator[City]:
    """江宁区, the home of the hours, runs its own file and has no city key."""
    yield from make_city(tmp_path, f"sqlite:///{tmp_path / 'ch.sqlite3'}",
                         local_policies={JN: SHORTENED}, city_keyed={GL, QX})


def test_a_district_serving_an_unsigned_policy_is_refused(gulou_shortens: City) -> None:
    city = gulou_shortens
    issue(city, 1, DEFAULT_POLICY_TOML)
    city.clock.advance(GRACE)
    for node_id in (JN, QX):
        city[node_id].link.fetch_policies()
        assert city[node_id].app.policy.digest == policy_sha256(DEFAULT_POLICY_TOML).hex()
    assert city[GL].app.policy.publicity_days == 0  # unsigned: its own file

    f = family(city)
    order = order_for_mother(city, f)
    city.settle()
    claim_id = order.record.claim_id
    assert claim_id
    claim = city[GL].app.query(claims.get_claim, claim_id)
    assert claim.state is ClaimState.REJECTED and claim.reason == "POLICY_NOT_CURRENT"
    ours, theirs = policy_sha256(SHORTENED).hex()[:12], policy_sha256(DEFAULT_POLICY_TOML
                                                                        ).hex()[:12]
    assert ours in claim.detail and theirs in claim.detail
    text = shown(claim)
    assert "POLICY_NOT_CURRENT" in text and "what to do" in text
    assert "[city] public_key" in text
    # nothing was recorded at the clearinghouse, the order is cancelled, nothing is held
    assert ch_claim(city, claim_id) is None
    assert order_state(city, GL, order.record.id) is OrderState.CANCELLED
    assert_nothing_held(city)
    assert assert_consistent(city) == {JN: 0, GL: 0, QX: 0}


def test_an_outdated_policy_is_refused_until_the_node_has_the_current_one(
        all_signed: City) -> None:
    city = all_signed
    issue(city, 1, DEFAULT_POLICY_TOML)
    for d in city.nodes.values():
        d.link.fetch_policies()
    city.clock.advance(GRACE)
    f = family(city)
    # 鼓楼区 goes offline; meanwhile the city puts policy 2 in force in an hour
    city[GL].link.stop()
    issue(city, 2, THREE_DAYS, timedelta(hours=1))
    city[JN].link.fetch_policies()
    city.clock.advance(timedelta(hours=1) + GRACE)
    assert city[JN].app.policy.publicity_days == 3
    assert city[GL].app.policy.publicity_days == 7  # still policy 1: outdated
    order = order_for_mother(city, f)  # proposed under policy 1, while offline
    link = ClearingLink(city[GL].app, city.address, public_key(CH_KEY), city[GL].key,
                        city_public_key=public_key(CITY_ROOT))
    link.start()
    city[GL].link = link
    city.settle()
    claim = city[GL].app.query(claims.get_claim, order.record.claim_id or "")
    assert claim.state is ClaimState.REJECTED and claim.reason == "POLICY_NOT_CURRENT"
    assert ch_claim(city, claim.claim_id) is None
    # the link fetched policy 2 on starting: the next claim is made under it
    city.wait_for(lambda: city[GL].app.policy.publicity_days == 3)
    again = order_for_mother(city, f)
    city.settle()
    accepted = city[GL].app.query(claims.get_claim, again.record.claim_id or "")
    assert accepted.state is ClaimState.ACCEPTED
    assert ch_claim(city, accepted.claim_id) is ChState.ACCEPTED


def test_a_decision_under_another_policy_is_refused_and_shown(jiangning_own: City) -> None:
    """The home district (the debtor) runs a policy of its own: its decision is refused,
    its operator sees why on the claim, and the claim expires with nothing held."""
    city = jiangning_own
    issue(city, 1, DEFAULT_POLICY_TOML)
    for node_id in (GL, QX):
        city[node_id].link.fetch_policies()
    city.clock.advance(GRACE)
    f = family(city)
    order = order_for_mother(city, f)
    city.settle()
    claim_id = order.record.claim_id or ""
    at_home = city[JN].app.query(claims.get_claim, claim_id)
    assert at_home.state is ClaimState.ACCEPTED  # decided here, under its own file
    assert "POLICY_NOT_CURRENT" in at_home.detail
    assert "what to do" in shown(at_home)
    assert ch_claim(city, claim_id) is ChState.PROPOSED  # the decision was not taken
    assert city[GL].app.query(claims.get_claim, claim_id).state is ClaimState.PROPOSED
    city.clock.advance(claims.REDEMPTION_WINDOW + timedelta(minutes=1))
    city.wait_for(lambda: ch_claim(city, claim_id) is ChState.EXPIRED)
    city.settle()
    for node_id in (GL, JN):
        assert city[node_id].app.query(claims.get_claim, claim_id).state \
            is ClaimState.EXPIRED
    assert_nothing_held(city)
    assert assert_consistent(city) == {JN: 0, GL: 0, QX: 0}
