"""A small city for settlement tests: three districts, a city roster, people homed in
each, claims completed through Submit (so each has its completing leaf), tree heads the
districts cosign, and the signed acts of settlement. Shared by the use-case, api and
crash tests."""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from nacl.signing import SigningKey
from sqlalchemy import Table, insert

from clearinghouse.bootstrap import open_app, origin_key, signing_key
from clearinghouse.bureau import publish_roster
from clearinghouse.config import load_config
from clearinghouse.storage import schema
from clearinghouse.storage.settlements import Settlements
from clearinghouse.usecases import admission, claims, directory, log, submit, wire
from clearinghouse.usecases import settlement as settle
from clearinghouse.usecases.app import ClearinghouseApp, Tx
from tests.clearinghouse.conftest import CITY_KEY, CITY_PUBLIC, certificate, registration
from tests.clearinghouse.usecases.test_claims import (
    GL,
    JN,
    KEYS,
    QX,
    cid,
    decision,
    finishing,
    proposal,
    ring,
)
from timebank import checkpoint as notes
from timebank import settlement as st
from timebank import transparency
from timebank.envelope import CITY, CLEARINGHOUSE, Signed, identity, sign
from timebank.keys import public_key
from timebank.v1 import clearing_pb2 as pb

CLAIMS = cast(Table, schema.ClaimRow.__table__)
CH_KEY = SigningKey(hashlib.sha256(b"clearinghouse key (settlement tests)").digest())
ORIGIN = transparency.clearinghouse_origin(public_key(CH_KEY))
NAMES = {JN: "江宁区", GL: "鼓楼区", QX: "栖霞区"}
#: A person homed in each district (the debtor of a redemption is the payer's home).
HOMES = {node: hashlib.sha256(f"person of {node}".encode()).hexdigest() for node in NAMES}
LIMIT = 100_000


def ch_sign(kind: str, body: bytes) -> Signed:
    """The clearinghouse's signature on a statement."""
    return sign(kind, body, CLEARINGHOUSE, CH_KEY)


def seal(receipt: bytes) -> bytes:
    return wire.to_bytes(sign("receipt", receipt, CLEARINGHOUSE, CH_KEY))


def publishing(app: ClearinghouseApp) -> ClearinghouseApp:
    """Every write transaction signs a tree head, as the serving clearinghouse does."""
    app.after_write = lambda tx: log.publish_head(
        tx, lambda text: notes.sign_note(text, ORIGIN, CH_KEY), ORIGIN)
    return app


def found_city(app: ClearinghouseApp) -> ClearinghouseApp:
    """Three districts admitted with limits, the roster signed, a person homed in each."""
    publishing(app)
    for node, district in NAMES.items():
        app.execute(admission.admit, certificate(node, district, KEYS[node]), CITY_PUBLIC)
        app.execute(claims.set_net_debit_limit, node, LIMIT)
    publish_roster(app, CITY_KEY)
    for node, person in HOMES.items():
        app.execute(directory.register, registration(person, node, node, KEYS[node]),
                    ring(app))
    return app


def complete(app: ClearinghouseApp, n: int, creditor: str, debtor: str,
             minutes: int = 120) -> str:
    """Claim ``n`` proposed, accepted and completed through Submit: ``debtor``'s person
    spent ``minutes`` with ``creditor``."""
    app.execute(submit.submit, wire.to_bytes(proposal(
        n, app, creditor=creditor, debtor=debtor, payer=HOMES[debtor], minutes=minutes)),
        seal)
    app.execute(submit.submit, wire.to_bytes(decision(n, signer=debtor)), seal)
    app.execute(submit.submit, wire.to_bytes(finishing(n, signer=creditor)), seal)
    return cid(n)


def cosign_latest(app: ClearinghouseApp, nodes: Sequence[str] = (JN, GL)) -> int:
    """``nodes`` cosign the latest tree head (a quorum of three: two); returns its size."""
    def add(tx: Tx) -> int:
        size, _, note = log.log_of(tx).latest_tree_head() or (0, b"", "")
        text = notes.SignedNote.parse(note).text
        at = int(tx.now.timestamp())
        for n in nodes:
            line = notes.cosign(text, transparency.witness_name(n), KEYS[n], at)
            log.log_of(tx).add_cosignature(size, n, line.rstrip("\n"), at, tx.now)
        return size
    return app.execute(add)


def log_size(app: ClearinghouseApp) -> int:
    return app.query(lambda tx: log.log_of(tx).size())


def close(app: ClearinghouseApp, **kwargs: object) -> settle.Closed:
    closed: settle.Closed = app.execute(settle.close, ch_sign, **kwargs)  # type: ignore[arg-type]
    return closed


def statement_of(closed: settle.Closed) -> st.Statement:
    return st.parse_statement(closed.envelope.body)


def countersign_env(node: str, statement: st.Statement, envelope: Signed, *,
                    key: SigningKey | None = None, named: str | None = None) -> Signed:
    body = pb.SettlementCountersign(node_id=named or node, serial=statement.serial,
                                    revision=statement.revision,
                                    statement_sha256=identity(envelope))
    body.at.FromDatetime(datetime(2026, 12, 1, tzinfo=UTC))
    return sign(st.COUNTERSIGN_KIND, body.SerializeToString(), node, key or KEYS[node])


def dispute_env(node: str, statement: st.Statement, envelope: Signed,
                disputed: Iterable[str], detail: str = "") -> Signed:
    body = pb.SettlementDispute(node_id=node, serial=statement.serial,
                                revision=statement.revision,
                                statement_sha256=identity(envelope), detail=detail)
    for claim_id in sorted(disputed):
        body.claims.add(claim_id=claim_id, reason=st.MISSING_HERE, statement_minutes=120)
    return sign(st.DISPUTE_KIND, body.SerializeToString(), node, KEYS[node])


def decision_env(statement: st.Statement, envelope: Signed, *, revise: bool,
                 overruled: Sequence[str] = (), excluded: Sequence[str] = (),
                 reason: str = "区局核实 / checked by the bureau",
                 key: SigningKey = CITY_KEY) -> Signed:
    body = pb.SettlementDecision(serial=statement.serial, revision=statement.revision,
                                 statement_sha256=identity(envelope), revise=revise,
                                 overruled_node_ids=sorted(overruled),
                                 excluded_claim_ids=sorted(excluded), reason=reason)
    return sign(st.DECISION_KIND, body.SerializeToString(), CITY, key)


def default_env(statement: st.Statement, envelope: Signed, node: str, minutes: int,
                treatment: str = "carry", fen: int = 0) -> Signed:
    body = pb.SettlementDefault(serial=statement.serial, statement_sha256=identity(envelope),
                                node_id=node, unpaid_minutes=minutes, unpaid_fen=fen,
                                treatment=treatment, reason="未按期结清 / not settled in time")
    return sign(st.DEFAULT_KIND, body.SerializeToString(), CITY, CITY_KEY)


def send(app: ClearinghouseApp, envelope: Signed) -> submit.Submitted:
    done: submit.Submitted = app.execute(submit.submit, wire.to_bytes(envelope), seal)
    return done


__all__ = ["CH_KEY", "CITY_PUBLIC", "GL", "HOMES", "JN", "KEYS", "QX"]


def own_app(config_path: Path) -> ClearinghouseApp:
    """The clearinghouse of an ``init`` data directory, signing heads with its own key
    as ``serve`` does (the caller disposes ``app.db``)."""
    config = load_config(config_path)
    app = open_app(config)
    key = signing_key(config, app)
    origin = transparency.clearinghouse_origin(origin_key(app) or public_key(key))
    app.after_write = lambda tx: log.publish_head(
        tx, lambda text: notes.sign_note(text, origin, key), origin)
    return app


def bulk_completed(app: ClearinghouseApp, count: int, nodes: Sequence[str],
                   rng: random.Random) -> dict[str, int]:
    """``count`` completed redemptions between ``nodes`` written straight into the
    claims (a large period's set-up, not what a test looks at), their completing leaves
    among the log's, and the running positions moved by them; returns the nets."""
    size = log_size(app)
    now = app.clock.now()
    net = dict.fromkeys(nodes, 0)
    rows = []
    for i in range(count):
        creditor, debtor = rng.sample(list(nodes), 2)
        minutes = rng.randrange(15, 241)
        net[creditor] += minutes
        net[debtor] -= minutes
        rows.append(dict(claim_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                         kind="redemption", creditor=creditor, debtor=debtor,
                         payer_ref=f"{i:064x}", minutes=minutes, posted_minutes=minutes,
                         state="completed", reason=None, created_at=now, expires_at=now,
                         updated_at=now, proposal=b"p", completed_index=i % size))
    with app.db.write() as conn:
        for start in range(0, len(rows), 10_000):
            conn.execute(insert(CLAIMS), rows[start:start + 10_000])
        Settlements(conn).add_to_positions(net)
    return net
