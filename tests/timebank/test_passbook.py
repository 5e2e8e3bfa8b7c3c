"""A passbook verified with the contract alone: this module builds a city's passbook by
hand from the contract's pieces (keys, envelopes, the ledger's hash chain, account codes,
the log's Merkle tree, signed and cosigned checkpoints) and imports no service; each
refusal names the part that is wrong; and a process that verifies one loads no service."""

from __future__ import annotations

import ast
import copy
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from timebank import anchors, chain, merkle, roster, transparency
from timebank import checkpoint as notes
from timebank.accounts import Account, Origin
from timebank.envelope import CITY, Signed, sign
from timebank.keys import public_key
from timebank.passbook import (
    FILE_FIELDS,
    FORMAT,
    STATEMENT_FIELDS,
    StatementError,
    b64,
    guard,
    load,
    sign_statement,
    verify_statement,
)
from timebank.v1 import clearing_pb2 as pb

CITY_KEY = SigningKey(b"passbook test: the city root".ljust(32, b"."))
CH_KEY = SigningKey(b"passbook test: the clearinghouse".ljust(32, b"."))
JN, GL, QX = "320115", "320106", "320113"
DISTRICTS = {JN: "江宁区", GL: "鼓楼区", QX: "栖霞区"}
NODE_KEYS = {n: SigningKey(f"passbook test: node {n}".encode().ljust(32, b".")) for n in DISTRICTS}
REF, OTHER = "ab" * 32, "cd" * 32
AT = "2026-03-02T01:00:00.000000Z"
SIGNED_AT = 1_772_413_200

Posting = tuple[str, int]
Doc = dict[str, Any]

LEDGER: list[tuple[str, str, list[Posting]]] = [  # kind, memo, postings
    ("service", "order 1", [("issuance/individual", -90),
                            (Account.of_person(REF, Origin.INDIVIDUAL).code, 90)]),
    ("service", "order 2", [("issuance/individual", -30),
                            (Account.of_person(OTHER, Origin.INDIVIDUAL).code, 30)]),
    ("donation", "捐给养老池", [(Account.of_person(REF, Origin.INDIVIDUAL).code, -15),
                              ("donation_pool", 15)]),
    ("grant", "city grant", [("city_grant", -60),
                             (Account.of_person(REF, Origin.GRANTED).code, 60)]),
]


def _wire(signed: Signed) -> bytes:
    return pb.Envelope(kind=signed.kind, body=signed.body, signer=signed.signer,
                       key_id=signed.key_id, signature=signed.signature
                       ).SerializeToString(deterministic=True)


def _certificate(node_id: str) -> bytes:
    body = pb.AdmissionCertificate(node_id=node_id, district=DISTRICTS[node_id],
                                   public_key=public_key(NODE_KEYS[node_id]), serial=1)
    return _wire(sign("admission", body.SerializeToString(deterministic=True), CITY, CITY_KEY))


def _logged(index: int, entry: bytes, path: Sequence[bytes], note: str) -> Doc:
    return {"log_index": index, "log_entry": b64(entry), "log_proof": [b64(h) for h in path],
            "tree_head": note}


def _roster(members: Sequence[str], epoch: int = 1, city: SigningKey = CITY_KEY,
            keys: dict[str, SigningKey] | None = None) -> bytes:
    found = (keys or NODE_KEYS)
    body = roster.body(epoch, [roster.Member(n, DISTRICTS[n], public_key(found[n]), 1)
                               for n in members], datetime(2026, 3, 2, tzinfo=UTC))
    return _wire(sign(roster.KIND, body, CITY, city))


def make_passbook(ledger: Sequence[tuple[str, str, list[Posting]]] = tuple(LEDGER), *,
                  cosigners: Sequence[str] = (JN, GL, QX), districts: int | None = None,
                  roster_envelope: bytes | None = None,
                  keys: dict[str, SigningKey] | None = None) -> Doc:
    """District JN's passbook of person REF, as of a checkpoint of the whole ``ledger``,
    logged after the three admissions and the city's roster of them, and proven in a
    head cosigned by ``cosigners``. ``roster_envelope``: another roster the head names
    instead; ``districts``: another district count on the head; ``keys``: the nodes'
    keys at the time (the roster's, and those that sign)."""
    keys = keys or NODE_KEYS
    hashes: list[bytes] = []
    docs: list[Doc] = []
    prev = chain.genesis_hash(JN)
    for seq, (kind, memo, postings) in enumerate(ledger, 1):
        fields = {"seq": seq, "kind": kind, "at": AT, "memo": memo, "order_id": seq,
                  "reverses_seq": 0, "postings": [list(p) for p in postings]}
        hashed = chain.link_hash(prev, chain.entry_bytes(**fields))
        if any(code.startswith(f"person/{REF}/") for code, _ in postings):
            docs.append({**fields, "prev_hash": b64(prev), "hash": b64(hashed)})
        hashes.append(hashed)
        prev = hashed
    root = merkle.root(hashes)
    for doc in docs:
        doc["proof"] = [b64(h) for h in merkle.inclusion_proof(hashes, doc["seq"] - 1)]
    checkpoint = _wire(sign(anchors.CHECKPOINT_KIND, pb.NodeCheckpoint(
        node_id=JN, entry_count=len(hashes), chain_head=prev, ledger_root=root
    ).SerializeToString(deterministic=True), JN, keys[JN]))

    certificates = [_certificate(n) for n in DISTRICTS]
    leaves = [pb.LogEntry(kind="admission", envelope=c, node_id=n).SerializeToString()
              for c, n in zip(certificates, DISTRICTS, strict=True)]
    city_roster = roster_envelope or _roster(tuple(DISTRICTS), keys=keys)
    named = roster.read_bytes(city_roster, public_key(CITY_KEY)) if roster_envelope is None \
        else _unchecked(city_roster)
    leaves.append(pb.LogEntry(kind="roster", envelope=city_roster).SerializeToString())
    leaves.append(pb.LogEntry(kind=anchors.LEAF_KIND, envelope=checkpoint, node_id=JN)
                  .SerializeToString(deterministic=True))
    index = len(leaves) - 1
    origin = transparency.clearinghouse_origin(public_key(CH_KEY))
    text = notes.Checkpoint(origin, len(leaves), merkle.root(leaves),
                            (transparency.districts_line(
                                len(named.members) if districts is None else districts),
                             transparency.roster_line(named.epoch, named.digest),
                             transparency.time_line(SIGNED_AT))).body()
    note = notes.sign_note(text, origin, CH_KEY)
    cosigned = notes.add_signatures(note, *(
        notes.cosign(text, transparency.witness_name(n), keys[n], SIGNED_AT)
        for n in cosigners))
    path = merkle.inclusion_proof(leaves, index)

    by_origin: dict[str, int] = {}
    for _, _, postings in ledger:
        for code, minutes in postings:
            if code.startswith(f"person/{REF}/"):
                origin_name = code.rsplit("/", 1)[1]
                by_origin[origin_name] = by_origin.get(origin_name, 0) + minutes
    statement = {
        "format": FORMAT,
        "node": {"node_id": JN, "district": DISTRICTS[JN]},
        "person": {"id": 7, "name": "刘洋", "kind": "individual", "person_ref": REF,
                   "home_node_id": JN, "home_district": DISTRICTS[JN]},
        "balance": {"total": sum(by_origin.values()), "by_origin": by_origin},
        "entries": docs,
        "anchor": {"entry_count": len(hashes), "chain_head": b64(prev),
                   "ledger_root": b64(root), "checkpoint": b64(checkpoint),
                   **_logged(index, leaves[index], path, note)},
        "cosigned": _logged(index, leaves[index], path, cosigned),
        "rosters": [b64(city_roster)],
        "made_at": AT,
    }
    signed = sign_statement(statement, JN, keys[JN])
    parsed: Doc = json.loads(json.dumps(signed, ensure_ascii=False))  # as a file holds it
    return parsed


def _unchecked(envelope: bytes) -> roster.Roster:
    """A roster as a forger names it: epoch and digest of whatever was signed."""
    wire = pb.Envelope.FromString(envelope)
    body = pb.Roster.FromString(wire.body)
    return roster.Roster(body.epoch, tuple(roster.Member(m.node_id, m.district,
                                                         bytes(m.public_key), m.serial)
                                           for m in body.members),
                         0, hashlib.sha256(wire.body).digest(), envelope)


def check(doc: Any, **kw: Any) -> Any:
    return guard(lambda: verify_statement(doc, public_key(CITY_KEY), public_key(CH_KEY), **kw))


def test_a_passbook_verifies_with_the_contract_alone() -> None:
    found = check(make_passbook())
    assert (found.name, found.person_ref, found.node_id, found.district) == (
        "刘洋", REF, JN, "江宁区")
    assert found.total == 135 and found.by_origin == {"granted": 60, "individual": 75}
    assert (found.entries, found.entry_count, found.log_index, found.head_size) == (3, 4, 4, 5)
    # JN's own cosignature never counts for JN's passbook
    assert found.cosigners == sorted([GL, QX]) and found.quorum == 2 and found.final


def test_a_head_cosigned_by_fewer_than_a_quorum_is_not_final() -> None:
    doc = make_passbook(cosigners=(JN, GL))
    with pytest.raises(StatementError, match=r"not final: .* cosigned by 1 of the city's 3 "
                                             r"districts other than 江宁区 itself; a quorum "
                                             r"is 2"):
        check(doc)
    found = check(doc, allow_uncosigned=True)
    assert found.total == 135 and not found.final


def _set(path: tuple[str | int, ...], value: object) -> Callable[[Doc], None]:
    def change(doc: Doc) -> None:
        target: Any = doc["statement"]
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


def _drop_entry(doc: Doc) -> None:
    del doc["statement"]["entries"][1]


def _other_proof(doc: Doc) -> None:
    entries = doc["statement"]["entries"]
    entries[0]["proof"] = entries[1]["proof"]


TAMPERS: dict[str, tuple[Callable[[Doc], None], str]] = {
    "memo": (_set(("entries", 1, "memo"), "捐给别人"), "entry 3's contents do not match"),
    "minutes": (_set(("entries", 0, "postings", 1, 1), 900), "entry 1's contents do not"),
    "ledger proof": (_other_proof, "entry 1 is not proven in the ledger of 4 entries"),
    "an entry left out": (_drop_entry, r"balance by origin shown \(granted 60 min, "
                                       r"individual 75 min\) is not the sum"),
    "balance": (_set(("balance", "total"), 136), r"balance shown \(136 min\) is not the sum"),
    "name": (_set(("person", "name"), "李四"), "changed after 江宁区 signed it"),
    "district": (_set(("node", "district"), "鼓楼区"), "the city admitted 320115 as 江宁区"),
    "PersonRef": (_set(("person", "person_ref"), "AB" * 32), "PersonRef is not 64 lowercase"),
    "entry count": (_set(("anchor", "entry_count"), 5), "not the 5 the statement states"),
    "log index": (_set(("cosigned", "log_index"), 2),
                  "cosigned tree head: log leaf 2 is not proven"),
    "rosters": (_set(("rosters",), []), "names roster epoch 1, which no city-signed roster"),
}


@pytest.mark.parametrize("part", sorted(TAMPERS))
def test_each_tampered_part_is_refused_with_its_reason(part: str) -> None:
    tamper, reason = TAMPERS[part]
    doc = make_passbook()
    bad = copy.deepcopy(doc)
    tamper(bad)
    with pytest.raises(StatementError, match=reason):
        check(bad)
    check(doc)  # the untouched passbook still verifies


@pytest.mark.parametrize(("where", "field"), [
    ((), "note"), ((), "Statement"), ((), ""), (("statement",), "balance_note"),
    (("statement",), "Format"), (("statement",), "signature")])
def test_a_field_the_format_does_not_have_is_refused(where: tuple[str, ...],
                                                     field: str) -> None:
    doc = make_passbook()
    target = doc
    for key in where:
        target = target[key]
    target[field] = "看这里"
    part = "signed statement" if where else "file"
    with pytest.raises(StatementError, match=f"the {part} has fields a timebank-statement/v1 "
                                             f"statement does not: {field!r}"):
        check(doc)


def test_the_fields_the_format_has_are_all_it_takes() -> None:
    doc = make_passbook()
    assert set(doc) == FILE_FIELDS
    # key_acts only after a rotation of the city's keys (ADR 0018)
    assert set(doc["statement"]) == STATEMENT_FIELDS - {"key_acts"}
    del doc["statement"]["made_at"]  # not checked, and not needed
    doc["signature"] = make_passbook_signature(doc)
    check(doc)


def make_passbook_signature(doc: Doc) -> str:
    signed: str = sign_statement(doc["statement"], JN, NODE_KEYS[JN])["signature"]
    return signed


def test_a_bad_cosignature_under_a_districts_key_refuses_the_statement() -> None:
    doc = make_passbook()
    cosigned = doc["statement"]["cosigned"]
    name = transparency.witness_name(GL)
    line = next(ln for ln in cosigned["tree_head"].splitlines() if f" {name} " in ln)
    sig = notes.NoteSignature.parse_line(line)
    flipped = notes.NoteSignature(sig.name, sig.key_hash, sig.payload[:-1]
                                  + bytes([sig.payload[-1] ^ 1])).line().rstrip("\n")
    cosigned["tree_head"] = cosigned["tree_head"].replace(line, flipped)
    doc["signature"] = make_passbook_signature(doc)
    with pytest.raises(StatementError, match=f"carries a bad cosignature: invalid "
                                             f"cosignature by {name}"):
        check(doc)


def test_cosignatures_from_the_future_are_refused_by_a_verifier_with_a_clock() -> None:
    doc = make_passbook()
    assert check(doc, now=SIGNED_AT).final
    assert check(doc, now=SIGNED_AT - notes.MAX_COSIGNATURE_SKEW).final
    with pytest.raises(StatementError, match=r"dated 1772413200, 301 s after this clock.*"
                                             r"is this computer's clock right"):
        check(doc, now=SIGNED_AT - notes.MAX_COSIGNATURE_SKEW - 1)


def test_keys_other_than_the_citys_are_refused() -> None:
    doc = make_passbook()
    stranger = public_key(SigningKey(b"not the city".ljust(32, b".")))
    with pytest.raises(StatementError, match="roster 1 is not the city's"):
        verify_statement(doc, stranger, public_key(CH_KEY))
    with pytest.raises(StatementError, match="anchor's tree head: the tree head is not "
                                             "signed by the clearinghouse"):
        verify_statement(doc, public_key(CITY_KEY), stranger)


def _forged_ledger() -> list[tuple[str, str, list[Posting]]]:
    """JN's ledger rewritten: the elder's grant of 60 minutes made 6,060 (re-hashed)."""
    forged = copy.deepcopy(LEDGER)
    forged[3] = ("grant", "city grant", [("city_grant", -6060),
                                         (Account.of_person(REF, Origin.GRANTED).code, 6060)])
    return forged


def test_a_forged_passbook_with_a_low_district_count_is_not_final() -> None:
    """The attack of a clearinghouse and the home district together: a forked log whose
    head says the city had one district, cosigned by the home district. The count on the
    head must match the city-signed roster it names, and the home district's own
    cosignature never counts toward its own passbook."""
    with pytest.raises(StatementError, match="says the city had 1 districts; the roster "
                                             "it names lists 3"):
        check(make_passbook(_forged_ledger(), cosigners=(JN,), districts=1))
    with pytest.raises(StatementError, match=r"cosigned by 0 of the city's 3 districts "
                                             r"other than 江宁区 itself; a quorum is 2"):
        check(make_passbook(_forged_ledger(), cosigners=(JN,)))


def test_a_roster_the_city_did_not_sign_cannot_lower_the_quorum() -> None:
    forged = _roster((JN,), city=CH_KEY)  # the clearinghouse signs a roster of its own
    with pytest.raises(StatementError, match="roster 1 is not the city's"):
        check(make_passbook(_forged_ledger(), cosigners=(JN,), roster_envelope=forged))


def test_an_old_one_district_roster_still_never_lets_a_district_vouch_for_itself() -> None:
    """Even a genuine roster from when the city had only JN (epoch 1) cannot make JN's
    own cosignature final: a quorum counts other districts only."""
    only_jn = _roster((JN,))
    with pytest.raises(StatementError, match=r"cosigned by 0 of the city's 1 districts "
                                             r"other than 江宁区 itself; a quorum is 1"):
        check(make_passbook(_forged_ledger(), cosigners=(JN,), roster_envelope=only_jn))


def test_a_passbook_from_before_a_key_rotation_verifies_after_it() -> None:
    """Signed with the keys the roster of its head lists: later rotations do not matter,
    and a statement claiming another key for the node at that head is refused."""
    old = make_passbook()  # JN's first key, in roster epoch 1
    assert check(old).final
    rotated = {**NODE_KEYS, JN: SigningKey(b"passbook test: JN's new key".ljust(32, b"."))}
    assert check(make_passbook(keys=rotated)).final  # a later passbook, later keys
    signed_by_new = copy.deepcopy(old)
    signed_by_new.update(sign_statement(signed_by_new["statement"], JN, rotated[JN]))
    with pytest.raises(StatementError, match="not signed by 江宁区's admitted key"):
        check(signed_by_new)


def test_a_posting_to_no_account_is_refused_even_when_hashed_and_signed() -> None:
    ledger = [*LEDGER[:3], ("grant", "x", [("city_grant", -60), (f"person/{REF}/gift", 60)])]
    with pytest.raises(StatementError, match="entry 4: not an account code: 'person/"):
        check(make_passbook(ledger))


def test_a_malformed_file_is_a_refusal() -> None:
    for data in (b"", b"\xff", b"[]", json.dumps({"format": FORMAT}).encode()):
        with pytest.raises(StatementError):
            check(load(data))


_SERVICES = ("node", "clearinghouse", "city", "runtime")


def test_this_module_imports_no_service() -> None:
    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    imported = {alias.name for n in ast.walk(tree) if isinstance(n, ast.Import)
                for alias in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported and not {m for m in imported if m.split(".")[0] in _SERVICES}


def test_a_process_verifying_a_passbook_loads_no_service(tmp_path: Path) -> None:
    file = tmp_path / "passbook.json"
    file.write_text(json.dumps(make_passbook(), ensure_ascii=False), encoding="utf-8")
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from timebank.passbook import load, verify_statement\n"
        f"found = verify_statement(load(Path({str(file)!r}).read_bytes()), "
        f"bytes.fromhex({public_key(CITY_KEY).hex()!r}), "
        f"bytes.fromhex({public_key(CH_KEY).hex()!r}))\n"
        f"loaded = sorted({{m.split('.')[0] for m in sys.modules}} & {set(_SERVICES)!r})\n"
        "print(found.total, found.final, loaded)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["135", "True", "[]"]


def _with_key_acts(doc: Doc, *acts: bytes) -> Doc:
    doc["statement"]["key_acts"] = [b64(a) for a in acts]
    doc["signature"] = make_passbook_signature(doc)
    return doc


def _ch_rotation(effective_size: int, signer: SigningKey = CITY_KEY) -> bytes:
    from timebank import citykeys
    from timebank.envelope import CITY, encode, sign

    body = citykeys.clearinghouse_rotation_body(1, public_key(CH_KEY),
                                                public_key(SigningKey(b"n" * 32)),
                                                effective_size, SIGNED_AT)
    return encode(sign(citykeys.CLEARINGHOUSE_KEY, body, CITY, signer))


def test_a_passbook_from_before_a_clearinghouse_key_rotation_still_verifies() -> None:
    """Its heads are smaller than the size the rotation takes effect at: the old key
    still signs them, for ever, whether or not the verifier knows of the rotation."""
    plain = make_passbook()
    sizes = [transparency.read_head(plain["statement"][part]["tree_head"]).size
             for part in ("anchor", "cosigned")]
    assert check(plain).final
    assert check(_with_key_acts(make_passbook(), _ch_rotation(max(sizes) + 1))).final
    # a rotation the city signed that covers these heads: the old key no longer does
    with pytest.raises(StatementError, match="not signed by the clearinghouse"):
        check(_with_key_acts(make_passbook(), _ch_rotation(min(sizes))))
    # one only the clearinghouse signed is no rotation at all
    assert check(_with_key_acts(make_passbook(), _ch_rotation(1, signer=CH_KEY))).final


def test_the_digest_a_file_signs_is_read_back_from_its_envelope() -> None:
    from timebank.passbook import digest, signed_digest

    doc = make_passbook()
    assert signed_digest(doc) == digest(doc["statement"])
    assert check(doc).statement_digest == signed_digest(doc)
