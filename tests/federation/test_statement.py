"""Passbooks (电子存折) in a whole city: a statement built after a person's hours are
anchored and a head is cosigned by a quorum verifies offline with only the city's two
public keys; every tampered part is refused with its own reason; a statement made before
a move still verifies after it; and the CLI round trip works as an operator runs it."""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from clearinghouse.bureau import issue_admission, publish_roster
from clearinghouse.usecases import admission
from node.bootstrap import init_data_dir
from node.link.statement import fetch
from node.usecases import claims, statement
from node.usecases.app import NodeApp
from runtime import keyfiles
from runtime.errors import FailedPrecondition
from runtime.tls import TlsSettings
from tests.conftest import CITY_SECRET
from tests.federation.conftest import CH_KEY, CITY_ROOT, City
from tests.federation.support import GL, JN, QX, enrol_at, restart_link
from tests.helpers import earn, enrol, id_card
from timebank import checkpoint as notes
from timebank.keys import public_key
from timebank.passbook import StatementError, guard, load, sign_statement, verify_statement

ROOT_PUB, CH_PUB = public_key(CITY_ROOT), public_key(CH_KEY)
Doc = dict[str, Any]


def _anchored(app: NodeApp) -> Any:
    return app.query(lambda tx: tx.repo.anchors.latest())


def anchor_and_cosign(city: City, node_id: str) -> None:
    """Checkpoint the node's ledger, wait for the log to anchor it, then have every
    district witness the latest head (a quorum of three)."""
    d = city[node_id]
    count = d.app.execute(claims_head_count)
    d.link.checkpoint_now()
    d.link.send_pending()
    city.wait_for(lambda: (_anchored(d.app) is not None
                           and _anchored(d.app).entry_count == count))
    for other in city.nodes.values():
        other.link.witness_once()


def claims_head_count(tx: Any) -> int:
    return int(tx.repo.ledger.head()[0])


def make(city: City, node_id: str, person_id: int) -> Doc:
    d = city[node_id]
    anchor = d.app.query(statement.latest_anchor)
    fetched = fetch(city.address, CH_PUB, int(anchor.log_index))
    assert fetched.warning == "", fetched.warning
    doc = d.app.query(statement.build_statement, person_id, anchor, fetched.proof,
                      rosters=fetched.rosters)
    signed = sign_statement(doc, node_id, d.key)
    # as the CLI writes it: through JSON text, Chinese kept
    text = json.dumps(signed, ensure_ascii=False, indent=1)
    assert "刘洋" in text
    parsed: Doc = json.loads(text)
    return parsed


def check(doc: Any, **kw: bool) -> Any:
    return guard(lambda: verify_statement(doc, ROOT_PUB, CH_PUB, **kw))


@pytest.fixture
def passbook(city: City) -> tuple[int, str, Doc]:
    number = id_card(1958)
    person = enrol_at(city, JN, "刘洋", number)
    elder = enrol(city[JN].app, "孙奶奶", 1936, priority=True).id
    earn(city[JN].app, city.clock, person, 90, elder)
    earn(city[JN].app, city.clock, person, 45, elder)
    city.settle()
    anchor_and_cosign(city, JN)
    return person, number, make(city, JN, person)


def test_a_statement_verifies_offline_with_the_right_balance(
        passbook: tuple[int, str, Doc]) -> None:
    _, _, doc = passbook
    found = check(doc)
    assert (found.name, found.district, found.node_id) == ("刘洋", "江宁区", JN)
    assert found.total == 135 and found.by_origin == {"individual": 135}
    # JN's own cosignature does not count toward its own passbook
    assert found.final and found.cosigners == sorted([GL, QX]) and found.quorum == 2
    assert found.entries == 2
    assert doc["statement"]["cosigned"] is not None
    assert len(doc["statement"]["rosters"]) == 1


def _flip(text: str) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[-1] ^= 1
    return base64.b64encode(bytes(raw)).decode()


def _entry_minutes(doc: Doc) -> None:
    postings = doc["statement"]["entries"][1]["postings"]
    for p in postings:
        if p[0].startswith("person/"):
            p[1] += 60


def _balance(doc: Doc) -> None:
    doc["statement"]["balance"]["total"] += 60
    doc["statement"]["balance"]["by_origin"]["individual"] += 60


def _proof_hash(doc: Doc) -> None:
    proof = doc["statement"]["entries"][0]["proof"]
    proof[0] = _flip(proof[0])


def _log_proof(doc: Doc) -> None:
    proof = doc["statement"]["cosigned"]["log_proof"]
    proof[0] = _flip(proof[0])


def _tree_head(doc: Doc) -> None:
    note = doc["statement"]["cosigned"]["tree_head"]
    origin, size, rest = note.split("\n", 2)
    doc["statement"]["cosigned"]["tree_head"] = f"{origin}\n{int(size) + 1}\n{rest}"


def _signature(doc: Doc) -> None:
    doc["signature"] = _flip(doc["signature"])


def _cosignatures(doc: Doc) -> None:
    part = doc["statement"]["cosigned"]
    parsed = notes.SignedNote.parse(part["tree_head"])
    kept = tuple(s for s in parsed.signatures if s.name != "timebank.district/320115"
                 and s.name != "timebank.district/320106")
    part["tree_head"] = notes.SignedNote(parsed.text, kept).format()


def _checkpoint(doc: Doc) -> None:
    doc["statement"]["anchor"]["checkpoint"] = _flip(doc["statement"]["anchor"]["checkpoint"])


def _name(doc: Doc) -> None:
    doc["statement"]["person"]["name"] = "李四"


def _district(doc: Doc) -> None:
    doc["statement"]["node"]["district"] = "鼓楼区"


def _roster(doc: Doc) -> None:
    found = doc["statement"]["rosters"]
    found[0] = _flip(found[0])


TAMPERS: dict[str, tuple[Callable[[Doc], None], str]] = {
    "entry minutes": (_entry_minutes, r"entry \d+'s contents do not match its hash"),
    "balance": (_balance, r"balance by origin shown .* is not the sum of the person's"),
    "ledger proof": (_proof_hash, r"entry \d+ is not proven in the ledger of \d+ entries"),
    "log proof": (_log_proof, r"cosigned tree head: log leaf \d+ is not proven"),
    "tree head": (_tree_head, "not signed by the clearinghouse"),
    "signature": (_signature, "the statement is not signed by 江宁区's admitted key"),
    "cosignatures": (_cosignatures, r"not final: .* cosigned by 1 of the city.s 3 districts"),
    "checkpoint": (_checkpoint, "checkpoint is not signed by 江宁区's admitted key"),
    "name": (_name, "the statement was changed after 江宁区 signed it"),
    "district": (_district, "names node 320115 鼓楼区, but the city admitted 320115 as 江宁区"),
    "roster": (_roster, "roster 1 is not the city's"),
}


@pytest.mark.parametrize("part", sorted(TAMPERS))
def test_each_tampered_part_is_refused_with_its_reason(
        passbook: tuple[int, str, Doc], part: str) -> None:
    _, _, doc = passbook
    tamper, reason = TAMPERS[part]
    bad = copy.deepcopy(doc)
    tamper(bad)
    with pytest.raises(StatementError, match=reason):
        check(bad)


def test_fewer_cosignatures_pass_only_when_allowed_and_then_the_signature_catches_it(
        passbook: tuple[int, str, Doc]) -> None:
    _, _, doc = passbook
    bad = copy.deepcopy(doc)
    _cosignatures(bad)
    with pytest.raises(StatementError, match="changed after 江宁区 signed it"):
        check(bad, allow_uncosigned=True)


@pytest.mark.parametrize("data", [b"", b"\xff", b"[]", b'{"format": "x"}',
                                  b'{"format": "timebank-statement/v1", "statement": 1}',
                                  b'{"format": "timebank-statement/v1", "statement": '
                                  b'{"format": "timebank-statement/v1", "node": {"node_id": 5}}}'])
def test_a_malformed_file_is_a_refusal_not_a_crash(data: bytes) -> None:
    with pytest.raises(StatementError):
        guard(lambda: verify_statement(load(data), ROOT_PUB, CH_PUB))


def test_malformed_fields_inside_a_real_statement_are_refusals(
        passbook: tuple[int, str, Doc]) -> None:
    _, _, doc = passbook
    for path, value in ((("entries", 0, "proof"), "nope"), (("entries", 0, "hash"), "%%"),
                        (("anchor", "log_index"), "7"), (("entries", 0, "postings"), [[1]]),
                        (("rosters",), ["AAAA"]), (("cosigned",), 3)):
        bad = copy.deepcopy(doc)
        target: Any = bad["statement"]
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        with pytest.raises(StatementError):
            check(bad)


def test_a_statement_made_before_a_move_verifies_after_it(
        city: City, passbook: tuple[int, str, Doc]) -> None:
    person, number, before = passbook
    arrived = enrol_at(city, QX, "刘洋", number, home=JN)
    city.settle()
    city[JN].app.execute(claims.start_move, person, QX)
    city.settle()
    assert city[JN].app.query(lambda tx: tx.repo.people.get(person).home_node_id) == QX
    anchor_and_cosign(city, JN)
    anchor_and_cosign(city, QX)

    assert check(before).total == 135  # still genuine, as of its own checkpoint
    with pytest.raises(FailedPrecondition, match="kept by district 320113"):
        make(city, JN, person)
    after = check(make(city, QX, arrived))
    assert (after.district, after.total) == ("栖霞区", 135)


def test_without_a_cosigned_head_the_statement_is_not_final(city: City) -> None:
    person = enrol_at(city, JN, "刘洋", id_card(1958))
    elder = enrol(city[JN].app, "孙奶奶", 1936, priority=True).id
    earn(city[JN].app, city.clock, person, 30, elder)
    city.settle()
    d = city[JN]
    d.link.checkpoint_now()
    d.link.send_pending()
    city.wait_for(lambda: _anchored(d.app) is not None)
    anchor = d.app.query(statement.latest_anchor)
    fetched = fetch(city.address, CH_PUB, int(anchor.log_index))
    if fetched.proof is None:  # the witness threads may already have cosigned a head
        assert "not final" in fetched.warning
    doc = sign_statement(d.app.query(statement.build_statement, person, anchor,
                                               None, rosters=fetched.rosters),
                                   JN, d.key)
    head = notes.SignedNote.parse(doc["statement"]["anchor"]["tree_head"])
    if len(head.signatures) == 1:  # only the clearinghouse's: nobody had cosigned it
        with pytest.raises(StatementError, match="not final"):
            check(doc)
    assert check(doc, allow_uncosigned=True).total == 30


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "city", *args], capture_output=True,
                          text=True, encoding="utf-8", timeout=120, check=False)


def test_the_cli_round_trip(city: City, passbook: tuple[int, str, Doc], tmp_path: Path) -> None:
    person, _, _ = passbook
    data_dir = tmp_path / "jn"
    data_dir.mkdir(mode=0o700)
    keyfiles.write_seed(data_dir / "node.key", city[JN].key)
    url = str(city[JN].app.db.writer.url)
    config = init_data_dir(data_dir, JN, "江宁区", database_url=url, city_secret=CITY_SECRET,
                           clearinghouse_address=city.address,
                           clearinghouse_public_key=CH_PUB.hex(),
                           city_public_key=ROOT_PUB.hex(),
                           tls=TlsSettings(insecure=True))  # the in-process city: plaintext
    out = tmp_path / "passbook.json"
    made = _cli("node", "statement", str(person), "--config", str(config), "--out", str(out))
    assert made.returncode == 0, made.stderr
    assert "written to" in made.stdout and "2.25 h (135 min)" in made.stdout
    keys_args = ["--city-key", ROOT_PUB.hex(), "--clearinghouse-key", CH_PUB.hex()]
    ok = _cli("verify-statement", str(out), *keys_args)
    assert ok.returncode == 0, ok.stderr
    assert "刘洋" in ok.stdout and "江宁区" in ok.stdout and "genuine" in ok.stdout
    assert "2.25 h (135 min)" in ok.stdout

    doc = json.loads(out.read_text(encoding="utf-8"))
    _entry_minutes(doc)
    out.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    bad = _cli("verify-statement", str(out), *keys_args)
    assert bad.returncode == 1
    assert "contents do not match its hash" in bad.stderr and "Traceback" not in bad.stderr
    out.write_text("{not json", encoding="utf-8")
    junk = _cli("verify-statement", str(out), *keys_args)
    assert junk.returncode == 1 and "Traceback" not in junk.stderr

    queued = _cli("node", "checkpoint", "--config", str(config))
    assert queued.returncode == 0, queued.stderr
    assert "2 entries were checkpointed before" in queued.stdout


def test_a_node_cannot_lower_the_quorum_by_leaving_rosters_out(
        city: City, passbook: tuple[int, str, Doc]) -> None:
    """The quorum comes from the city-signed roster the cosigned head names, which the
    statement must carry: without it nothing is final."""
    person, _, _ = passbook
    d = city[JN]
    anchor = d.app.query(statement.latest_anchor)
    fetched = fetch(city.address, CH_PUB, int(anchor.log_index))
    doc = d.app.query(statement.build_statement, person, anchor, fetched.proof, rosters=[])
    signed = json.loads(json.dumps(sign_statement(doc, JN, d.key)))
    with pytest.raises(StatementError, match="names roster epoch 1, which no city-signed"):
        verify_statement(signed, ROOT_PUB, CH_PUB)


def test_a_passbook_from_before_a_key_rotation_still_verifies_after_it(
        city: City, passbook: tuple[int, str, Doc]) -> None:
    """The bureau rotates 江宁区's key (a new certificate and a new roster epoch); the
    passbook made before still verifies, judged by the roster its heads name; the node,
    back with its new key, re-anchors its ledger, and a passbook made after verifies
    under the new key; a statement signed with a key the city never gave it does not."""
    person, _, before = passbook
    new_key = SigningKey(b"jiangning's rotated key".ljust(32, b"."))
    city.ch.execute(admission.admit, issue_admission(
        CITY_ROOT, JN, "江宁区", public_key(new_key), 2, city.clock.now()),
        public_key(CITY_ROOT))
    assert publish_roster(city.ch, CITY_ROOT) is not None  # epoch 2, the new key
    city[JN].link.stop()
    city[JN].key = new_key
    restart_link(city, JN)
    for n in (GL, QX):  # the other districts learn the new roster
        city[n].link.refresh_admissions()
    assert check(before).final  # made before the rotation, verified after it
    anchor_and_cosign(city, JN)
    after = make(city, JN, person)
    found = check(after)
    assert found.final and found.total == 135
    forged = copy.deepcopy(after)
    forged.update(sign_statement(forged["statement"], JN,
                                 SigningKey(b"not any key of jiangning".ljust(32, b"."))))
    with pytest.raises(StatementError, match="not signed by 江宁区's admitted key"):
        check(forged)
