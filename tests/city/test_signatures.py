"""End-to-end signatures and key rotation with real processes (issue 14).

A clearinghouse and two district nodes run as their own processes (city/launcher.py).
What a dishonest clearinghouse would do is done by writing its delivery queue table
directly: a relayed proposal whose signature is forged, or signed by a key the city
never admitted for that district, or by a key the city has since revoked. The node
refuses each (a log line, a metric, `timebank node check`), acknowledges it, and
changes nothing; the same injection with a genuine signature is acted on, so the
refusals are the signatures' doing. Then a district's key is rotated for real, and the
node, restarted with its new key, anchors its unchanged ledger again; the new anchor is
in the log.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from city.audit import audit_data_dir
from city.launcher import CityLayout, CityProcesses, District, layout
from node.bootstrap import signing_identity
from node.config import load_config as load_node_config
from node.domain.claims import new_claim_id
from runtime import keyfiles
from tests.city.workload import (
    CityClient,
    clearinghouse_database,
    id_number,
    node_database,
    read_only,
)
from tests.jsonlog import json_lines
from timebank import anchors, transparency
from timebank.envelope import Signed, sign, verify
from timebank.keys import key_id, public_key
from timebank.v1 import clearing_pb2 as pb
from timebank.v1 import node_pb2

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

JN, GL = "320115", "320106"
TWO = (District(JN, "江宁区"), District(GL, "鼓楼区"))
STRANGER = SigningKey(b"a key the city never certified".ljust(32, b"."))
#: How stale the node's view of the city's acts may be when it checks a delivery
#: (node.link.city.FRESH_SECONDS), and a margin.
FRESH = 5.0 + 1.5


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "city", *args], capture_output=True,
                          text=True, encoding="utf-8", timeout=120, check=False)


def _key() -> str:
    return str(uuid.uuid4())


def _eventually(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.1)


@dataclass
class Town:
    city: CityLayout
    procs: CityProcesses
    client: CityClient
    metrics: str  # 江宁区's /metrics

    def node_db(self, node_id: str) -> Path:
        return node_database(self.city, node_id)

    def config(self, node_id: str) -> str:
        """The node's configuration file, as a command line names it."""
        return str(self.city.node(node_id).config_file)


@pytest.fixture
def town(tmp_path: Path) -> Iterator[Town]:
    city = layout(tmp_path / "city", TWO)
    with CityProcesses(city) as procs:  # each process serves metrics on a free port
        procs.start_all()
        metrics = procs.metrics_address(JN)
        assert metrics is not None
        client = CityClient(city)
        try:
            yield Town(city, procs, client, f"http://{metrics}/metrics")
        finally:
            client.close()


def _saver(town: Town) -> tuple[int, str]:
    """王芳 at home in 江宁区 with 2 h granted: what a forged proposal would hold."""
    c = town.client
    point = c.call(JN, "RegisterServicePoint", node_pb2.RegisterServicePointRequest(
        idempotency_key=_key(), code="JN-DS-01", name="东山街道服务点",
        street="东山街道")).service_point
    staff = c.call(JN, "RegisterStaff", node_pb2.RegisterStaffRequest(
        idempotency_key=_key(), name="陈静", service_point_id=point.id)).staff
    person = c.call(JN, "EnrolPerson", node_pb2.EnrolPersonRequest(
        idempotency_key=_key(), kind=node_pb2.PERSON_KIND_INDIVIDUAL, name="王芳",
        id_number=id_number(JN, 1940), phone="13900000000", priority=True)).person
    c.call(JN, "Grant", node_pb2.GrantRequest(idempotency_key=_key(), person_id=person.id,
                                              minutes=120, staff_id=staff.id, memo="高龄补贴"))
    return person.id, person.person_ref


def _proposal(person_ref: str, minutes: int = 60) -> tuple[str, bytes]:
    now = datetime.now(UTC)
    claim_id = new_claim_id(int(now.timestamp() * 1000))
    body = pb.ClaimProposal(claim_id=claim_id, kind=pb.CLAIM_KIND_REDEMPTION,
                            creditor_node_id=GL, debtor_node_id=JN, payer_ref=person_ref,
                            recipient_ref=person_ref, recipient_age=86, minutes=minutes)
    body.created_at.FromDatetime(now)
    body.expires_at.FromDatetime(now + timedelta(days=30))
    return claim_id, body.SerializeToString()


def _wire(s: Signed, signature: bytes | None = None) -> pb.Envelope:
    return pb.Envelope(kind=s.kind, body=s.body, signer=s.signer, key_id=s.key_id,
                       signature=s.signature if signature is None else signature)


def _inject(town: Town, relayed: pb.Envelope) -> int:
    """Put a delivery for 江宁区 straight into the clearinghouse's queue table, as a
    clearinghouse that wanted to could; the serving clearinghouse streams it."""
    with closing(sqlite3.connect(clearinghouse_database(town.city), timeout=30)) as conn, conn:
        seq = int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM deliveries "
                               "WHERE node_id = ?", (JN,)).fetchone()[0]) + 1
        delivery = pb.Delivery(seq=seq, recipient_node_id=JN, relayed=relayed,
                               state=pb.CLAIM_STATE_PROPOSED)
        delivery.at.FromDatetime(datetime.now(UTC))
        conn.execute("INSERT INTO deliveries (node_id, seq, envelope, created_at) "
                     "VALUES (?, ?, ?, ?)",
                     (JN, seq, delivery.SerializeToString(),
                      datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")))
    return seq


def _applied(town: Town) -> int:
    with read_only(town.node_db(JN)) as conn:
        return int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM inbox").fetchone()[0])


def _acked(town: Town) -> int:
    with read_only(clearinghouse_database(town.city)) as conn:
        return int(conn.execute("SELECT acked_seq FROM acks WHERE node_id = ?",
                                (JN,)).fetchone()[0])


def _settled(town: Town, seq: int) -> None:
    _eventually(lambda: _applied(town) >= seq and _acked(town) >= seq,
                f"delivery {seq} applied by 江宁区 and acknowledged")


def _state(town: Town, person: int) -> tuple[object, ...]:
    """江宁区 as a refused delivery must leave it."""
    report = town.client.call(JN, "CheckLedger", node_pb2.CheckLedgerRequest())
    balance = town.client.call(JN, "GetBalance", node_pb2.GetBalanceRequest(person_id=person))
    listed = town.client.call(JN, "ListClaims", node_pb2.ListClaimsRequest())
    with read_only(town.node_db(JN)) as conn:
        rows = tuple(int(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])
                     for t in ("claims", "holds", "outbox"))
    return (report.transactions, report.head_hash, balance.total_minutes,
            balance.held_minutes, len(listed.claims), *rows)


def _refused_metric(town: Town, reason: str) -> float:
    text = urllib.request.urlopen(town.metrics, timeout=5).read().decode()
    line = f'timebank_node_refused_deliveries_total{{reason="{reason}"}} '
    found = [ln for ln in text.splitlines() if ln.startswith(line)]
    return float(found[0].split()[-1]) if found else 0.0


def test_a_node_refuses_what_no_admitted_key_of_its_district_signed(town: Town) -> None:
    person, ref = _saver(town)
    before = _state(town, person)
    gl_key = keyfiles.read_seed(load_node_config(town.city.node(GL).config_file).signing_key_file)

    # a forged signature under 鼓楼区's real key id; a key the city never admitted for it
    _, body = _proposal(ref)
    forged = _inject(town, _wire(sign("claim.propose", body, GL, gl_key), bytes(64)))
    _, body = _proposal(ref)
    unknown = _inject(town, _wire(sign("claim.propose", body, GL, STRANGER)))
    _settled(town, unknown)
    assert _state(town, person) == before

    report = town.client.call(JN, "CheckLedger", node_pb2.CheckLedgerRequest())
    assert report.ok and report.refused_deliveries == 2
    assert f"delivery {unknown} (claim.propose by {GL} key {key_id(public_key(STRANGER))}" \
        in report.refusals[0] and "UNKNOWN_KEY" in report.refusals[0]
    assert f"delivery {forged} " in report.refusals[1] and "BAD_SIGNATURE" in report.refusals[1]
    check = _cli("node", "check", "--config", town.config(JN))
    assert check.returncode == 0, check.stderr
    assert "refused deliveries" in check.stdout and "BAD_SIGNATURE" in check.stdout
    log = town.procs.log_file(JN).read_text(encoding="utf-8")
    refused = [e for e in json_lines(log) if e["event"].startswith("delivery refused")]
    assert len(refused) == 2 and any(e.get("reason") == "UNKNOWN_KEY" for e in refused)
    assert _refused_metric(town, "BAD_SIGNATURE") == 1.0
    assert _refused_metric(town, "UNKNOWN_KEY") == 1.0

    # the same injection, signed by 鼓楼区's real and valid key, is acted on
    genuine_id, body = _proposal(ref, minutes=30)
    genuine = _inject(town, _wire(sign("claim.propose", body, GL, gl_key)))
    _settled(town, genuine)
    claim = town.client.call(JN, "GetClaim", node_pb2.GetClaimRequest(claim_id=genuine_id)).claim
    assert claim.state == "accepted" and claim.minutes == 30
    held = town.client.call(JN, "GetBalance", node_pb2.GetBalanceRequest(person_id=person))
    assert held.held_minutes == 30

    # the bureau revokes 鼓楼区's key; its later signatures are refused
    revoked = _cli("clearinghouse", "revoke", "--config", str(town.city.clearinghouse_config),
                   "--node-id", GL, "--key-id", key_id(public_key(gl_key)),
                   "--reason", "the node's disk was lost")
    assert revoked.returncode == 0, revoked.stderr
    time.sleep(FRESH)
    after_genuine = _state(town, person)
    _, body = _proposal(ref)
    late = _inject(town, _wire(sign("claim.propose", body, GL, gl_key)))
    _settled(town, late)
    assert _state(town, person) == after_genuine
    report = town.client.call(JN, "CheckLedger", node_pb2.CheckLedgerRequest())
    assert report.refused_deliveries == 3 and "REVOKED_KEY" in report.refusals[0]
    assert _refused_metric(town, "REVOKED_KEY") == 1.0


def _anchors(town: Town) -> list[tuple[int, str, int | None]]:
    with read_only(town.node_db(JN)) as conn:
        return [(int(n), str(k), None if i is None else int(i)) for n, k, i in conn.execute(
            "SELECT entry_count, key_id, log_index FROM log_anchors ORDER BY created_at")]


def test_after_a_real_key_rotation_the_node_anchors_its_ledger_again(town: Town) -> None:
    _saver(town)
    config = load_node_config(town.city.node(JN).config_file)
    old_kid, _ = signing_identity(config)
    queued = _cli("node", "checkpoint", "--config", town.config(JN))
    assert queued.returncode == 0 and "queued" in queued.stdout, queued.stderr
    _eventually(lambda: any(i is not None for _, _, i in _anchors(town)), "the first anchor")
    [(count, signed_by, _)] = _anchors(town)
    assert signed_by == old_kid
    again = _cli("node", "checkpoint", "--config", town.config(JN))
    assert "checkpointed before; nothing new queued" in again.stdout

    # a new key: the old one is put away, `node init` makes the new one, the bureau
    # admits it with a higher serial, and the node serves with it
    town.procs.stop(JN)
    config.signing_key_file.rename(config.signing_key_file.with_suffix(".old"))
    made = _cli("node", "init", "--config", town.config(JN))
    assert made.returncode == 0, made.stderr
    new_kid, new_public = signing_identity(config)
    assert new_kid != old_kid and new_public in made.stdout
    admitted = _cli("clearinghouse", "admit", "--config", str(town.city.clearinghouse_config),
                    "--node-id", JN, "--district", "江宁区", "--public-key", new_public,
                    "--serial", "2")
    assert admitted.returncode == 0, admitted.stderr
    assert f"old key {old_kid}" in admitted.stdout
    town.procs.start(JN)
    town.procs.wait_ready(JN)

    requeued = _cli("node", "checkpoint", "--config", town.config(JN))
    assert requeued.returncode == 0, requeued.stderr
    assert f"checkpoint of {count} ledger entries queued" in requeued.stdout
    assert new_kid in requeued.stdout
    _eventually(lambda: any(k == new_kid and i is not None for _, k, i in _anchors(town)),
                "the anchor under the new key")
    [(n_old, k_old, i_old), (n_new, k_new, i_new)] = _anchors(town)
    assert (n_old, k_old, n_new, k_new) == (count, old_kid, count, new_kid)
    assert i_old is not None and i_new is not None and i_new > i_old
    assert "nothing new queued" in _cli("node", "checkpoint", "--config",
                                        town.config(JN)).stdout

    # the new anchor is in the clearinghouse's log: the leaf records the envelope the new
    # key signed, proven in a head the clearinghouse signed
    with read_only(town.node_db(JN)) as conn:
        sent, leaf, path, note = conn.execute(
            "SELECT checkpoint, log_entry, log_proof, tree_head FROM log_anchors "
            "WHERE key_id = ?", (new_kid,)).fetchone()
    ch = town.client.clearinghouse()
    [raw] = ch.GetEntries(pb.GetEntriesRequest(start=i_new, end=i_new + 1), timeout=5).entries
    assert raw == bytes(leaf)
    entry = pb.LogEntry.FromString(raw)
    assert entry.kind == anchors.LEAF_KIND and entry.envelope == bytes(sent)
    envelope = pb.Envelope.FromString(entry.envelope)
    body = verify(Signed(envelope.kind, envelope.body, envelope.signer, envelope.key_id,
                         envelope.signature), bytes.fromhex(new_public))
    assert pb.NodeCheckpoint.FromString(body).entry_count == count
    ch_key = bytes.fromhex(town.city.clearinghouse_public_key)
    head = transparency.check_head(str(note), ch_key)
    transparency.check_included(bytes(leaf), i_new, head, anchors.proof_path(bytes(path)))
    latest = ch.GetTreeHead(pb.GetTreeHeadRequest(), timeout=5).head
    proof = ch.GetInclusionProof(pb.GetInclusionProofRequest(index=i_new, size=latest.size),
                                 timeout=5)
    transparency.check_included(proof.logged.entry, i_new,
                                transparency.check_head(latest.note, ch_key),
                                list(proof.logged.path))

    # the whole city still audits clean, offline, with both of 江宁区's keys on record
    town.procs.stop_all()
    report = audit_data_dir(town.city.data_dir)
    assert report.ok, report.first_bad
