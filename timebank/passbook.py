"""A person's passbook (电子存折): their balance and history as of an anchored checkpoint
of their district's ledger, signed by the district, with everything a reader needs to
tie it to the city's transparency log; and the checks that reader makes, offline, with
only the city's two public keys: the city root key (it signs the roster of districts)
and the clearinghouse key (it signs the log's tree heads).

The file is JSON (format ``FORMAT``): ``statement`` holds the data, ``signature`` the
node's signed envelope (kind ``KIND``) whose body is ``digest(statement)``, the SHA-256
of its canonical JSON. A digest, not the data itself, is signed because an envelope body
is at most 64 KiB and a long history is more. Bytes are standard base64, text stays
UTF-8 (Chinese names intact), numbers are integers.

Each entry carries exactly the fields its ledger hash covers (``timebank.chain``), its
previous hash, and its RFC 9162 inclusion proof in the ledger tree whose root the
anchored checkpoint states (leaves: the hashes of entries 1..count). The anchor brings
the signed checkpoint, its log leaf, the leaf's inclusion proof and the clearinghouse's
tree head; ``cosigned`` the same leaf proven in a head cosigned by a quorum of districts,
when one was available; ``rosters`` the city-signed rosters (``timebank.roster``) those
heads name.

``verify_statement`` checks every part, the most specific first, so a refusal names what
is wrong: the anchor's head names a city-signed roster, which gives the node's key as it
was when the checkpoint was logged (so a passbook outlives a key rotation); the
checkpoint is the node's and states the anchored entry count and ledger root; its log
leaf is in the clearinghouse's tree head, which a quorum of the roster that head names
cosigned, under the keys that roster lists and never counting the node itself; each
entry's hash is recomputed from its fields, chains to the entry before it where they
are consecutive, and is proven in the anchored ledger tree; the balance is the sum of
the person's postings; and last, the node signed all of it (with the key of either
roster).

What it cannot show: that the statement lists *every* entry touching the person (the
node chooses which to include). The quorum comes only from what the city signed: a
clearinghouse cannot lower it, and the witnesses refuse a head naming a roster they
cannot verify or one older than they have seen.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from google.protobuf.message import DecodeError, Message
from nacl.signing import SigningKey

from timebank import anchors, chain, merkle, transparency
from timebank import checkpoint as notes
from timebank import roster as rosters
from timebank.accounts import AccountCodeError, AccountKind, is_person_ref, parse_account
from timebank.admissions import chain_of
from timebank.citykeys import MAX_ROTATIONS, CityKeys, KeyChainError
from timebank.envelope import EnvelopeError, Signed, sign, verify
from timebank.v1 import clearing_pb2 as pb

__all__ = ["CODE_GROUP", "FILE_FIELDS", "FORMAT", "KIND", "STATEMENT_FIELDS", "StatementError",
           "Verified", "b64", "code_text", "digest", "file_bytes", "guard", "load",
           "paper_code", "sign_statement", "signed_digest", "verify_statement"]

FORMAT = "timebank-statement/v1"
KIND = "statement"
#: The fields a statement file has, and the fields of its signed ``statement`` object.
#: Anything else is refused: a reader must not be shown, or a later version give a
#: meaning to, data that the verifier passed over without checking.
FILE_FIELDS = frozenset({"format", "statement", "signature"})
STATEMENT_FIELDS = frozenset({"format", "node", "person", "balance", "entries", "anchor",
                              "cosigned", "rosters", "made_at", "key_acts"})

M = TypeVar("M", bound=Message)
T = TypeVar("T")


def b64(data: bytes) -> str:
    """Bytes as a passbook writes them: standard base64."""
    return base64.b64encode(data).decode("ascii")


def digest(statement: Any) -> bytes:
    """What the node signs: SHA-256 of the statement's canonical JSON."""
    return hashlib.sha256(chain.canonical_json(statement)).digest()


#: Hex characters in each group of a paper code (``paper_code``).
CODE_GROUP = 4


def paper_code(statement_digest: bytes) -> str:
    """The digest a paper passbook prints and ``timebank verify-statement`` says, for a
    person to compare by eye: all of it (a shortened code would be easier to forge), as
    lowercase hex in groups of ``CODE_GROUP`` characters, "3f9a 07c2 …"."""
    if len(statement_digest) != hashlib.sha256().digest_size:
        raise ValueError("a statement digest is the 32 bytes of a SHA-256")
    text = statement_digest.hex()
    return " ".join(text[i:i + CODE_GROUP] for i in range(0, len(text), CODE_GROUP))


def code_text(node_id: str, statement_digest: bytes) -> str:
    """What a paper passbook's QR code holds: the format, the district node that signed
    and the digest it signed, and nothing to follow (no address: a verifier reads the
    file it was given, never a server the paper names)."""
    if not node_id.isascii() or not node_id.isalnum() or len(node_id) > 16:
        raise ValueError("a node id is a few ASCII letters and digits")
    return f"{FORMAT} node={node_id} sha256={paper_code(statement_digest).replace(' ', '')}"


def file_bytes(signed: dict[str, Any]) -> bytes:
    """A signed statement as its file is written: UTF-8 JSON, Chinese kept as it is."""
    return json.dumps(signed, ensure_ascii=False, indent=1).encode("utf-8") + b"\n"


def sign_statement(statement: dict[str, Any], node_id: str, key: SigningKey) -> dict[str, Any]:
    """The passbook file: the statement and the node's envelope over its digest."""
    signed = sign(KIND, digest(statement), node_id, key)
    wire = pb.Envelope(kind=signed.kind, body=signed.body, signer=signed.signer,
                       key_id=signed.key_id, signature=signed.signature)
    return {"format": FORMAT, "statement": statement,
            "signature": b64(wire.SerializeToString(deterministic=True))}


def signed_digest(signed_file: dict[str, Any]) -> bytes:
    """The digest a passbook file made by ``sign_statement`` signs: its envelope's body,
    read back rather than hashed again (a long statement costs a hash a time)."""
    body = pb.Envelope.FromString(base64.b64decode(signed_file["signature"])).body
    assert len(body) == hashlib.sha256().digest_size, "a passbook signs a SHA-256 digest"
    return body


class StatementError(Exception):
    """The statement is not genuine, or not final; the message says precisely why."""


@dataclass(frozen=True, slots=True)
class Verified:
    """What a genuine statement shows: whose it is, their balance, and how final it is."""

    name: str
    person_ref: str
    node_id: str
    district: str
    total: int
    by_origin: dict[str, int]
    entries: int
    entry_count: int
    log_index: int
    head_size: int
    cosigners: list[str] = field(default_factory=list)
    districts: int = 0
    quorum: int = 0
    #: What the node signed (``digest``): the code on a paper passbook is this one's.
    statement_digest: bytes = b""

    @property
    def final(self) -> bool:
        return len(self.cosigners) >= self.quorum > 0


# ------------------------------------------------------------------ reading the file


def _get(obj: Any, key: str, kind: type[T], where: str) -> T:
    if not isinstance(obj, dict) or key not in obj:
        raise StatementError(f"the statement has no {where}")
    value = obj[key]
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise StatementError(f"the statement's {where} is not a {kind.__name__}")
    return value


def _only(obj: dict[str, Any], known: frozenset[str], where: str) -> None:
    """Refuse fields a statement of this format does not have, naming them."""
    unknown = sorted(str(k) for k in obj if k not in known)
    if unknown:
        shown = ", ".join(repr(k[:40]) for k in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise StatementError(f"the {where} has fields a {FORMAT} statement does not: "
                             f"{shown}{more} (it has only {', '.join(sorted(known))})")


def _bytes(text: object, where: str) -> bytes:
    if not isinstance(text, str):
        raise StatementError(f"the statement's {where} is not base64 text")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise StatementError(f"the statement's {where} is not valid base64") from None


def _hashes(value: object, where: str) -> list[bytes]:
    if not isinstance(value, list):
        raise StatementError(f"the statement's {where} is not a list of hashes")
    return [_bytes(h, where) for h in value]


def _parse(cls: type[M], data: bytes, where: str) -> M:
    msg = cls()
    try:
        msg.ParseFromString(data)
    except DecodeError:
        raise StatementError(f"the statement's {where} is not a serialised "
                             f"{cls.__name__}") from None
    return msg


def _envelope(data: bytes, where: str) -> Signed:
    wire = _parse(pb.Envelope, data, where)
    try:
        return Signed(wire.kind, wire.body, wire.signer, wire.key_id, wire.signature)
    except EnvelopeError as e:
        raise StatementError(f"the statement's {where} is not a well-formed envelope: "
                             f"{e}") from None


def _signed_by(env: Signed, key: bytes) -> bool:
    try:
        verify(env, key)
    except EnvelopeError:
        return False
    return True


# ------------------------------------------------------------------ the checks


#: Most rosters a statement may carry (the anchor's and the cosigned head's are enough).
MAX_ROSTERS = 8


def _chain(doc: dict[str, Any], city_key: bytes, ch_key: bytes) -> CityKeys:
    """The chain of the city's keys from the verifier's two keys through the rotations
    the statement carries (``key_acts``, optional; ADR 0018): city-signed, so carrying
    them lends the node no trust. A head after a clearinghouse key rotation verifies only
    under the key the city named."""
    carried = doc.get("key_acts", [])
    if not isinstance(carried, list) or len(carried) > 2 * MAX_ROTATIONS:
        raise StatementError(f"key_acts is a list of at most {2 * MAX_ROTATIONS} envelopes")
    try:
        return chain_of(city_key, [_bytes(t, f"key act {i + 1}")
                                   for i, t in enumerate(carried)], ch_key)
    except KeyChainError as e:
        raise StatementError(f"the key rotations it carries: {e}") from None


def _rosters(doc: dict[str, Any], city_key: bytes | CityKeys,
             ) -> dict[bytes, rosters.Roster]:
    """The city-signed rosters the statement carries, by digest: they give the districts
    of the city, their keys and so the quorum, at the heads the statement cites."""
    carried = _get(doc, "rosters", list, "rosters")
    if len(carried) > MAX_ROSTERS:
        raise StatementError(f"the statement carries more than {MAX_ROSTERS} rosters")
    out: dict[bytes, rosters.Roster] = {}
    for i, text in enumerate(carried):
        try:
            found = rosters.read_bytes(_bytes(text, f"roster {i + 1}"), city_key)
        except rosters.RosterError as e:
            raise StatementError(f"roster {i + 1} is not the city's: {e}") from None
        out[found.digest] = found
    return out


def _roster_of(head: transparency.Head, carried: dict[bytes, rosters.Roster],
               what: str) -> rosters.Roster:
    """The city-signed roster ``head`` names, which the statement must carry."""
    try:
        return rosters.by_digest(carried, head.roster)
    except rosters.RosterError as e:
        raise StatementError(f"the {what} tree head of {head.size} leaves: {e}") from None


def _final(head: transparency.Head, carried: dict[bytes, rosters.Roster], subject: str,
           what: str, now: int | None) -> tuple[rosters.Roster, list[str]]:
    """The roster the head names and its districts, other than ``subject``, whose
    cosignature verifies under the key it lists them with. A line that claims a
    member's key and does not verify refuses the statement (the head was tampered with),
    and so, given the verifier's clock, does one dated beyond the allowed clock skew
    after it."""
    try:
        return rosters.cosigned_by(head, carried, subject, now=now)
    except rosters.RosterError as e:
        raise StatementError(f"the {what} tree head of {head.size} leaves: {e}") from None
    except notes.FutureCosignature as e:
        raise StatementError(f"the tree head of {head.size} leaves: {e} (is this "
                             "computer's clock right?)") from None
    except notes.CheckpointError as e:
        raise StatementError(f"the tree head of {head.size} leaves carries a bad "
                             f"cosignature: {e}") from None


def _check_checkpoint(anchor: dict[str, Any], node_id: str, label: str,
                      key: bytes) -> tuple[bytes, int, bytes]:
    raw = _bytes(anchor.get("checkpoint"), "anchor checkpoint")
    env = _envelope(raw, "anchor checkpoint")
    if (env.kind != anchors.CHECKPOINT_KIND or env.signer != node_id
            or not _signed_by(env, key)):
        raise StatementError(f"the anchored checkpoint is not signed by {label}'s admitted key")
    body = _parse(pb.NodeCheckpoint, env.body, "anchor checkpoint")
    count = _get(anchor, "entry_count", int, "anchor entry count")
    root = _bytes(anchor.get("ledger_root"), "anchor ledger root")
    head = _bytes(anchor.get("chain_head"), "anchor chain head")
    if body.node_id != node_id or body.entry_count != count:
        raise StatementError(f"the checkpoint is of {body.entry_count} entries of node "
                             f"{body.node_id}, not the {count} the statement states")
    if body.ledger_root != root or body.chain_head != head:
        raise StatementError("the checkpoint's ledger root or chain head is not the one "
                             "the statement states")
    return raw, count, root


def _head(part: dict[str, Any], what: str,
          ch_key: bytes | transparency.LogKeys) -> transparency.Head:
    note = _get(part, "tree_head", str, f"{what} tree head")
    try:
        return transparency.check_head(note, ch_key)
    except transparency.LogError as e:
        raise StatementError(f"the {what} tree head: {e}") from None
    except notes.CheckpointError as e:
        raise StatementError(f"the {what} tree head is malformed: {e}") from None


def _check_logged(part: dict[str, Any], what: str, checkpoint: bytes, node_id: str,
                  head: transparency.Head) -> int:
    index = _get(part, "log_index", int, f"{what} log index")
    entry = _bytes(part.get("log_entry"), f"{what} log entry")
    leaf = _parse(pb.LogEntry, entry, f"{what} log entry")
    if (leaf.kind != anchors.LEAF_KIND or leaf.envelope != checkpoint
            or leaf.node_id != node_id):
        raise StatementError(f"the {what} log entry does not record this checkpoint")
    try:
        transparency.check_included(entry, index, head,
                                    _hashes(part.get("log_proof"), f"{what} log proof"))
    except transparency.LogError as e:
        raise StatementError(f"the {what} tree head: {e}") from None
    return index


def _canonical_entry(e: dict[str, Any]) -> bytes:
    """The entry's canonical bytes (``timebank.chain``), rebuilt from its fields."""
    postings = _get(e, "postings", list, "entry postings")
    for p in postings:
        if not (isinstance(p, list) and len(p) == 2 and isinstance(p[0], str)
                and isinstance(p[1], int) and not isinstance(p[1], bool)):
            raise StatementError("an entry's postings are not [account, minutes] pairs")
    return chain.entry_bytes(
        seq=e["seq"], kind=_get(e, "kind", str, "entry kind"),
        at=_get(e, "at", str, "entry time"), memo=_get(e, "memo", str, "entry memo"),
        order_id=_get(e, "order_id", int, "entry order id"),
        reverses_seq=_get(e, "reverses_seq", int, "entry reverses_seq"), postings=postings)


def _check_entries(entries: list[Any], node_id: str, count: int, root: bytes,
                   chain_head: bytes, ref: str) -> dict[str, int]:
    """Each entry's hash, chain links and ledger-tree proof; the person's sums by origin."""
    sums: dict[str, int] = {}
    last: tuple[int, bytes] | None = None
    for e in entries:
        seq = _get(e, "seq", int, "entry seq")
        if not 1 <= seq <= count or (last is not None and seq <= last[0]):
            raise StatementError(f"entry {seq} is out of order or beyond the {count} "
                                 "entries anchored")
        prev = _bytes(e.get("prev_hash"), f"entry {seq}'s previous hash")
        stated = _bytes(e.get("hash"), f"entry {seq}'s hash")
        if len(prev) != chain.HASH_SIZE or chain.link_hash(prev, _canonical_entry(e)) != stated:
            raise StatementError(f"entry {seq}'s contents do not match its hash")
        if seq == 1 and prev != chain.genesis_hash(node_id):
            raise StatementError(f"entry 1 does not start node {node_id}'s chain")
        if last is not None and last[0] == seq - 1 and prev != last[1]:
            raise StatementError(f"entry {seq} does not follow entry {seq - 1} in the chain")
        if seq == count and stated != chain_head:
            raise StatementError(f"entry {seq} is not the chain head the checkpoint names")
        if not merkle.verify_inclusion(stated, seq - 1, count,
                                       _hashes(e.get("proof"), f"entry {seq}'s proof"), root):
            raise StatementError(f"entry {seq} is not proven in the ledger of {count} "
                                 "entries the checkpoint anchors")
        for code, minutes in e["postings"]:
            try:
                account = parse_account(code)
            except AccountCodeError as err:
                raise StatementError(f"entry {seq}: {err}") from None
            if account.kind is AccountKind.PERSON and account.person_ref == ref:
                origin = str(account.origin)
                sums[origin] = sums.get(origin, 0) + minutes
        last = (seq, stated)
    return sums


def _check_balance(balance: dict[str, Any], sums: dict[str, int]) -> int:
    total = _get(balance, "total", int, "balance total")
    shown = _get(balance, "by_origin", dict, "balance by origin")
    if any(not isinstance(v, int) or isinstance(v, bool) for v in shown.values()):
        raise StatementError("the statement's balance by origin is not whole minutes")
    nonzero = {k: v for k, v in sums.items() if v}
    if {k: v for k, v in shown.items() if v} != nonzero:
        raise StatementError(f"the balance by origin shown ({_fmt(shown)}) is not the sum "
                             f"of the person's postings ({_fmt(nonzero)})")
    if total != sum(sums.values()):
        raise StatementError(f"the balance shown ({total} min) is not the sum of the "
                             f"person's postings ({sum(sums.values())} min)")
    return total


def _fmt(by_origin: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v} min" for k, v in sorted(by_origin.items())) or "nothing"


def _check_signature(doc: dict[str, Any], statement: dict[str, Any], node_id: str,
                     label: str, keys: tuple[bytes, ...]) -> None:
    env = _envelope(_bytes(doc.get("signature"), "signature"), "signature")
    if (env.kind != KIND or env.signer != node_id
            or not any(_signed_by(env, key) for key in keys)):
        raise StatementError(f"the statement is not signed by {label}'s admitted key")
    if env.body != digest(statement):
        raise StatementError(f"the statement was changed after {label} signed it")


def verify_statement(doc: Any, city_key: bytes, ch_key: bytes, *,
                     allow_uncosigned: bool = False, now: int | None = None) -> Verified:
    """Check a parsed statement file; raise StatementError naming the first failure.

    ``now`` (POSIX seconds): the verifier's clock, if it has one; cosignatures dated
    more than ``checkpoint.MAX_COSIGNATURE_SKEW`` seconds after it are refused. Without
    it, their times are not judged (the contract has no clock of its own)."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise StatementError(f"this is not a {FORMAT} file")
    _only(doc, FILE_FIELDS, "file")
    st = _get(doc, "statement", dict, "statement")
    if st.get("format") != FORMAT:
        raise StatementError(f"the signed part is not {FORMAT}")
    _only(st, STATEMENT_FIELDS, "signed statement")
    node = _get(st, "node", dict, "node")
    node_id = _get(node, "node_id", str, "node id")
    chain = _chain(st, city_key, ch_key)
    carried = _rosters(st, chain)
    anchor = _get(st, "anchor", dict, "anchor")
    anchor_head = _head(anchor, "anchor's", chain.log_keys())
    member = _roster_of(anchor_head, carried, "anchor's").member(node_id)
    if member is None:
        raise StatementError(f"the city's roster at the anchor does not admit node {node_id}")
    label = member.district
    if _get(node, "district", str, "district") != member.district:
        raise StatementError(f"the statement names node {node_id} {node['district']}, but "
                             f"the city admitted {node_id} as {member.district}")
    checkpoint, count, root = _check_checkpoint(anchor, node_id, label, member.public_key)
    index = _check_logged(anchor, "anchor's", checkpoint, node_id, anchor_head)
    head, what = anchor_head, "anchor's"
    if st.get("cosigned") is not None:
        final = _get(st, "cosigned", dict, "cosigned head")
        head, what = _head(final, "cosigned", chain.log_keys()), "cosigned"
        if _check_logged(final, "cosigned", checkpoint, node_id, head) != index:
            raise StatementError("the cosigned proof is of another log leaf than the anchor's")
    roster, cosigners = _final(head, carried, node_id, what, now)
    if len(cosigners) < roster.quorum and not allow_uncosigned:
        raise StatementError(
            f"not final: the tree head of {head.size} leaves is cosigned by "
            f"{len(cosigners)} of the city's {len(roster.members)} districts other than "
            f"{label} itself; a quorum is {roster.quorum}")
    now_member = roster.member(node_id)
    keys = (member.public_key,) + (() if now_member is None else (now_member.public_key,))
    person = _get(st, "person", dict, "person")
    ref = _get(person, "person_ref", str, "PersonRef")
    if not is_person_ref(ref):
        raise StatementError("the statement's PersonRef is not 64 lowercase hex characters")
    entries = _get(st, "entries", list, "entries")
    sums = _check_entries(entries, node_id, count, root,
                          _bytes(anchor.get("chain_head"), "anchor chain head"), ref)
    total = _check_balance(_get(st, "balance", dict, "balance"), sums)
    _check_signature(doc, st, node_id, label, keys)
    return Verified(name=_get(person, "name", str, "person's name"), person_ref=ref,
                    node_id=node_id, district=member.district, total=total,
                    by_origin={k: v for k, v in sorted(sums.items()) if v},
                    entries=len(entries), entry_count=count, log_index=index,
                    head_size=head.size, cosigners=cosigners,
                    districts=len(roster.members), quorum=roster.quorum,
                    statement_digest=digest(st))


def load(data: bytes) -> Any:
    """The JSON of a statement file; StatementError if it is not JSON."""
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StatementError(f"the file is not UTF-8 JSON: {e}") from None


def guard(check: Callable[[], Verified]) -> Verified:
    """Run a check; anything malformed that slipped past the field checks is a refusal."""
    try:
        return check()
    except StatementError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as e:
        raise StatementError(f"the statement is malformed: {type(e).__name__}: {e}") from None
