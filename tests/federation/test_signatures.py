"""End-to-end signatures (issue 14): a node acts on what the clearinghouse relays only if
the district that must say it signed it with a key the city certified for it and never
revoked. A delivery that fails is refused: recorded, acknowledged, counted, shown by the
ledger check, and nothing else on the node changes. What a dishonest clearinghouse would
do is done here by writing its delivery queue directly.

The same with real processes is tests/city/test_signatures.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, timedelta

from nacl.signing import SigningKey
from prometheus_client import REGISTRY
from sqlalchemy import text

from clearinghouse.bureau import issue_admission, issue_revocation
from clearinghouse.usecases import admission
from clearinghouse.usecases import claims as ch_claims
from node.domain.claims import ClaimState, new_claim_id
from node.usecases import claims, ledger
from node.usecases.app import NodeApp
from tests.federation.conftest import CITY_ROOT, City
from tests.federation.support import GL, JN, QX, enrol_at, node_claim
from tests.helpers import earn, enrol, id_card
from tests.node.link.support import eventually
from timebank.keys import key_id, public_key
from timebank.v1 import clearing_pb2 as pb

STRANGER = SigningKey(b"a key the city never certified".ljust(32, b"."))


@dataclass(frozen=True)
class State:
    """What a refused delivery must leave as it was on the node."""

    ledger_head: tuple[int, bytes]
    claims: int
    holds: int
    outbox: int
    available: int


def state(app: NodeApp, person: int) -> State:
    with app.db.read() as conn:
        claims_n = conn.execute(text("SELECT COUNT(*) FROM claims")).scalar_one()
        holds_n = conn.execute(text("SELECT COUNT(*) FROM holds")).scalar_one()
        outbox_n = conn.execute(text("SELECT COUNT(*) FROM outbox")).scalar_one()
    return State(app.query(lambda tx: tx.repo.ledger.head()), int(claims_n), int(holds_n),
                 int(outbox_n), app.query(ledger.balance, person).available)


def proposal(city: City, person_ref: str, *, creditor: str = GL,
             minutes: int = 60) -> bytes:
    """A redemption proposal from ``creditor`` for hours ``person_ref`` keeps in 江宁区."""
    now = city.clock.now()
    body = pb.ClaimProposal(
        claim_id=new_claim_id(int(now.timestamp() * 1000)), kind=pb.CLAIM_KIND_REDEMPTION,
        creditor_node_id=creditor, debtor_node_id=JN, payer_ref=person_ref,
        recipient_ref=person_ref, recipient_age=60, minutes=minutes)
    body.created_at.FromDatetime(now.astimezone(UTC))
    body.expires_at.FromDatetime((now + timedelta(days=30)).astimezone(UTC))
    return body.SerializeToString()


def signed(body: bytes, signer: str, key: SigningKey) -> pb.Envelope:
    from timebank.envelope import sign

    s = sign("claim.propose", body, signer, key)
    return pb.Envelope(kind=s.kind, body=s.body, signer=s.signer, key_id=s.key_id,
                       signature=s.signature)


def queue(city: City, recipient: str, relayed: pb.Envelope) -> int:
    """What a dishonest clearinghouse does: put a delivery in the node's queue itself."""
    def run(tx):  # type: ignore[no-untyped-def]
        seq = tx.repo.last_delivery_seq(recipient) + 1
        delivery = pb.Delivery(seq=seq, recipient_node_id=recipient, relayed=relayed,
                               state=pb.CLAIM_STATE_PROPOSED)
        delivery.at.FromDatetime(tx.now.astimezone(UTC))
        tx.repo.insert_delivery(recipient, seq, delivery.SerializeToString(), tx.now)
        return seq
    return int(city.ch.execute(run))


def acked(city: City, node_id: str) -> int:
    return int(city.ch.query(lambda tx: tx.repo.acked_seq(node_id)) or 0)


def refused_total(reason: str) -> float:
    return REGISTRY.get_sample_value("timebank_node_refused_deliveries_total",
                                     {"reason": reason}) or 0.0


def daughter(city: City) -> tuple[int, str]:
    """王芳, at home in 江宁区 with 2 h earned: what a forged proposal would hold."""
    jn = city[JN].app
    person = enrol_at(city, JN, "王芳", id_card(1965))
    elder = enrol(jn, "赵大爷", 1938, priority=True).id
    earn(jn, city.clock, person, 120, elder)
    city.settle()
    return person, jn.query(lambda tx: tx.repo.people.get(person)).person_ref


def wait_acked(city: City, node_id: str, seq: int) -> None:
    assert eventually(lambda: acked(city, node_id) >= seq, 15), (acked(city, node_id), seq)


def test_relayed_envelopes_not_signed_by_an_admitted_key_are_refused(city: City) -> None:
    person, ref = daughter(city)
    jn = city[JN].app
    before = state(jn, person)
    counts = {r: refused_total(r) for r in ("BAD_SIGNATURE", "UNKNOWN_KEY", "NOT_THE_PARTY")}

    genuine = signed(proposal(city, ref), GL, city[GL].key)
    forged = pb.Envelope()
    forged.CopyFrom(genuine)
    forged.signature = bytes(64)  # GL's key named, its signature not there
    queue(city, JN, forged)
    # signed by a key the city never certified for 鼓楼区
    queue(city, JN, signed(proposal(city, ref), GL, STRANGER))
    # 栖霞区's own key, on a proposal only 鼓楼区 (the creditor) may make
    last = queue(city, JN, signed(proposal(city, ref), QX, city[QX].key))
    wait_acked(city, JN, last)

    assert state(jn, person) == before
    assert jn.query(claims.last_applied_seq) == last
    report = jn.query(ledger.check_ledger)
    assert report.ok and report.refused_deliveries == 3
    assert [r.split(":")[-2].split()[-1] for r in report.refusals] == [
        "NOT_THE_PARTY", "UNKNOWN_KEY", "BAD_SIGNATURE"]
    assert all(f"delivery {n}" in r for n, r in zip((last, last - 1, last - 2),
                                                       report.refusals, strict=True))
    assert "by 320106 key" in report.refusals[2]
    for reason, before_n in counts.items():
        assert refused_total(reason) == before_n + 1
    # the node goes on: the next delivery, a genuine one, is applied
    order_claim = proposal(city, ref, minutes=30)
    after = queue(city, JN, signed(order_claim, GL, city[GL].key))
    wait_acked(city, JN, after)  # acknowledged once the stream is quiet
    taken = pb.ClaimProposal.FromString(order_claim).claim_id
    assert node_claim(city, JN, taken) is ClaimState.ACCEPTED
    assert jn.query(ledger.balance, person).held == 30


def test_a_signer_admitted_since_the_last_look_is_asked_for_once(city: City) -> None:
    person, ref = daughter(city)
    newcomer, key = "320114", SigningKey(b"a district admitted just now".ljust(32, b"."))
    city[JN].link.refresh_admissions()  # the view is fresh: only an unknown key asks again
    cert = issue_admission(CITY_ROOT, newcomer, "雨花台区", public_key(key), 1,
                           city.clock.now())
    city.ch.execute(admission.admit, cert, public_key(CITY_ROOT))
    city.ch.execute(ch_claims.set_net_debit_limit, newcomer, 1000)
    calls = city[JN].link.city.refreshes
    body = proposal(city, ref, creditor=newcomer)
    seq = queue(city, JN, signed(body, newcomer, key))
    wait_acked(city, JN, seq)
    assert node_claim(city, JN, pb.ClaimProposal.FromString(body).claim_id) \
        is ClaimState.ACCEPTED
    assert city[JN].link.city.refreshes == calls + 1
    assert city[JN].app.query(ledger.check_ledger).refused_deliveries == 0
    assert city[JN].app.query(ledger.balance, person).held == 60


def test_a_revoked_key_signs_nothing_the_nodes_act_on(city: City) -> None:
    person, ref = daughter(city)
    jn = city[JN].app
    gl_key = city[GL].key
    act = issue_revocation(CITY_ROOT, GL, key_id(public_key(gl_key)), "lost with a laptop",
                           city.clock.now())
    city.ch.execute(admission.revoke, act, public_key(CITY_ROOT))
    city[JN].link.refresh_admissions()  # what the link does within FRESH_SECONDS
    before = state(jn, person)
    revoked_before = refused_total("REVOKED_KEY")
    seq = queue(city, JN, signed(proposal(city, ref), GL, gl_key))  # the genuine, revoked key
    wait_acked(city, JN, seq)
    assert state(jn, person) == before
    report = jn.query(ledger.check_ledger)
    assert report.refused_deliveries == 1 and "REVOKED_KEY" in report.refusals[0]
    assert refused_total("REVOKED_KEY") == revoked_before + 1
    # and the node knows 鼓楼区 is no longer admitted: nothing is claimed with it
    # three certificates, the roster of them and a revocation
    assert jn.query(lambda tx: tx.repo.city.count()) == 5
