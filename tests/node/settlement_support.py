"""A city in miniature for the node's settlement tests: a city root key, a test
clearinghouse key and three districts' keys (real Ed25519), the city-signed roster and
admissions, tree heads cosigned by chosen districts, and statements, countersignatures
and decisions signed as the real parties sign them. The node under test is 江宁区
(320115, ``tests.conftest.NODE_ID``); its completed claims are written to its own
database the way the claims use-cases leave them (a claim row and its ledger leg)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from nacl.signing import SigningKey

from node.domain import claims as model
from node.domain.claims import Claim, ClaimKind, ClaimState, Role
from node.domain.ledger import CITY_GRANT, CLEARING, CONSUMPTION, Entry, EntryKind, Origin, Posting
from node.usecases.app import NodeApp, Tx
from timebank import checkpoint as notes
from timebank import roster, settlement, transparency
from timebank.admissions import CityAdmissions, chain_of, verify_act
from timebank.citykeys import CityKeys
from timebank.envelope import CITY, CLEARINGHOUSE, encode, identity, sign
from timebank.keys import public_key
from timebank.v1 import clearing_pb2 as pb

JN, GL, QX = "320115", "320106", "320113"
NAMES = {JN: "江宁区", GL: "鼓楼区", QX: "栖霞区"}
DISTRICTS = (GL, QX, JN)
CITY_KEY = SigningKey(b"settlement tests: the city root".ljust(32, b"."))
CH_KEY = SigningKey(b"settlement tests: clearinghouse".ljust(32, b"."))
OTHER_KEY = SigningKey(b"settlement tests: someone else".ljust(32, b"."))
KEYS = {n: SigningKey(f"settlement tests: {n}".encode().ljust(32, b".")) for n in DISTRICTS}
LOG_KEYS = transparency.LogKeys(public_key(CH_KEY))
ORIGIN = transparency.clearinghouse_origin(public_key(CH_KEY))
PERSON = "ab" * 32
T0 = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)


def certificate(node_id: str) -> bytes:
    body = pb.AdmissionCertificate(node_id=node_id, district=NAMES[node_id],
                                   public_key=public_key(KEYS[node_id]), serial=1)
    return encode(sign("admission", body.SerializeToString(), CITY, CITY_KEY))


def city() -> CityAdmissions:
    """The city's admissions of the three districts, verified under the city key."""
    return CityAdmissions([verify_act(certificate(n), public_key(CITY_KEY))
                           for n in DISTRICTS])


def city_keys() -> CityKeys:
    return chain_of(public_key(CITY_KEY), [])


def the_roster() -> roster.Roster:
    members = [roster.Member(n, NAMES[n], public_key(KEYS[n]), 1) for n in DISTRICTS]
    body = roster.body(1, members, T0)
    return roster.read(sign(roster.KIND, body, CITY, CITY_KEY), public_key(CITY_KEY))


def rosters(named: bytes | None = None) -> Mapping[bytes, roster.Roster]:
    found = the_roster()
    return {found.digest: found}


def head(size: int, cosigners: Iterable[str] = (GL, QX), *,
         key: SigningKey = CH_KEY) -> str:
    """A tree head of ``size`` leaves (its root made up), signed by ``key`` and cosigned
    by ``cosigners`` under their district keys."""
    r = the_roster()
    text = notes.Checkpoint(ORIGIN, size, hashlib.sha256(b"root %d" % size).digest(), (
        transparency.districts_line(len(r.members)),
        transparency.time_line(int(T0.timestamp())), r.line())).body()
    note = notes.sign_note(text, ORIGIN, key)
    lines = [notes.cosign(text, transparency.witness_name(n), KEYS[n], int(T0.timestamp()))
             for n in cosigners]
    return notes.add_signatures(note, *lines) if lines else note


def statement(claims: Sequence[settlement.SettledClaim], *, serial: int = 1,
              revision: int = 1, end: int = 100, start: int = 0, note: str | None = None,
              previous: bytes = b"", key: SigningKey = CH_KEY,
              period: str = "2026-11") -> bytes:
    """A statement of ``claims`` signed by ``key`` (the clearinghouse's, by default), as
    the clearinghouse serves it (a serialised envelope)."""
    sheet = settlement.compute(claims, DISTRICTS)
    s = settlement.Statement(serial, revision, period, start, end,
                             note if note is not None else head(end), T0 + timedelta(days=30),
                             previous, b"", "carry", sheet)
    return encode(sign(settlement.STATEMENT_KIND, settlement.statement_body(s), CLEARINGHOUSE,
                       key))


def statement_id(envelope: bytes) -> bytes:
    from timebank.envelope import decode

    return identity(decode(envelope))


def countersign(node_id: str, envelope: bytes, *, serial: int = 1, revision: int = 1,
                key: SigningKey | None = None) -> bytes:
    body = pb.SettlementCountersign(node_id=node_id, serial=serial, revision=revision,
                                    statement_sha256=statement_id(envelope))
    body.at.FromDatetime(T0)
    return encode(sign(settlement.COUNTERSIGN_KIND, body.SerializeToString(), node_id,
                       key or KEYS[node_id]))


def decision(envelope: bytes, overruled: Sequence[str], *, serial: int = 1,
             revision: int = 1, key: SigningKey = CITY_KEY) -> bytes:
    body = pb.SettlementDecision(serial=serial, revision=revision,
                                 statement_sha256=statement_id(envelope), revise=False,
                                 overruled_node_ids=list(overruled), reason="维持原结算单")
    body.at.FromDatetime(T0)
    return encode(sign(settlement.DECISION_KIND, body.SerializeToString(), CITY, key))


def answer(envelope: bytes, countersigns: Sequence[bytes] = (),
           decisions: Sequence[bytes] = ()) -> pb.GetSettlementResponse:
    return pb.GetSettlementResponse(statements=[envelope], countersigns=list(countersigns),
                         decisions=list(decisions))


# ------------------------------------------------------------------ the node's ledger

_counter = iter(range(1, 10**9))


def claim_id() -> str:
    n = next(_counter)
    return model.new_claim_id(1_780_000_000_000 + n, n.to_bytes(10, "big"))


def completed(app: NodeApp, counterparty: str, minutes: int, *, creditor: bool,
              posted: int | None = None) -> settlement.SettledClaim:
    """A move this node completed with ``counterparty`` (this node its new home when
    ``creditor``), its ledger leg posted as ``node.usecases.claims`` posts it; the claim as
    the statement lists it (with ``minutes``; the ledger posts ``posted`` if given)."""
    cid = claim_id()
    here = minutes if posted is None else posted

    def write(tx: Tx) -> None:
        c = Claim(cid, ClaimKind.MOVE, Role.CREDITOR if creditor else Role.DEBTOR,
                  counterparty, PERSON, here, ClaimState.COMPLETED, tx.now + timedelta(days=1),
                  tx.now, tx.now, origins=((Origin.INDIVIDUAL, here),), posted_minutes=here)
        tx.repo.claims.add(c)
        postings = ((Posting(CLEARING, -here), Posting(CONSUMPTION, here)) if creditor
                    else (Posting(CITY_GRANT, -here), Posting(CLEARING, here)))
        tx.repo.ledger.append(Entry(EntryKind.CLAIM, postings, tx.now, memo=f"claim {cid}"),
                              {})

    app.execute(write)
    node = app.node.node_id
    return settlement.SettledClaim(cid, node if creditor else counterparty,
                                   counterparty if creditor else node, minutes, "move", 5)


def between(creditor: str, debtor: str, minutes: int) -> settlement.SettledClaim:
    """A claim between two other districts (not in this node's ledger)."""
    return settlement.SettledClaim(claim_id(), creditor, debtor, minutes, "move", 7)


def clearing(app: NodeApp) -> int:
    def read(tx: Tx) -> int:
        found = tx.repo.ledger.account(CLEARING.code)
        return 0 if found is None else found.balance
    return app.query(read)


def mine(claims: Iterable[settlement.SettledClaim], node_id: str = JN,
         ) -> list[settlement.SettledClaim]:
    """The claims GetSettlementClaims lists for ``node_id``: its own, by claim id."""
    return sorted((c for c in claims if node_id in (c.creditor, c.debtor)),
                  key=lambda c: c.claim_id)
