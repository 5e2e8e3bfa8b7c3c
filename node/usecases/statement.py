"""A person's passbook (电子存折): their balance and history as of an anchored checkpoint,
with everything an offline verifier needs to tie it to the city's transparency log.

The format, how it is signed (``sign_statement``) and how a reader checks it are the
contract's: ``timebank.passbook``. Here the node builds one from its ledger: each entry
with exactly the fields ``node.domain.ledger.canonical_bytes`` hashes (so its hash can be
recomputed), its previous hash, and its RFC 9162 inclusion proof in the ledger tree whose
root the anchored checkpoint states (leaves: the hashes of entries 1..count).

Building is pure reading: ``build_statement`` runs in a read transaction. The API keeps
each passbook it sends (``keep_issued``) and gives it again by its code (``issued``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from node.domain.ledger import format_time
from runtime.errors import FailedPrecondition, InvariantViolation, NotFound
from timebank import anchors, merkle, transparency
from timebank.citykeys import KEY_KINDS
from timebank.passbook import FORMAT, b64
from timebank.v1 import clearing_pb2 as pb

if TYPE_CHECKING:  # the storage layer loads only where a statement is built (not to check one)
    from node.domain.ledger import StoredEntry
    from node.storage.anchors import LoggedAnchor
    from node.storage.passbooks import IssuedPassbook
    from node.usecases.app import Tx

_PAGE = 1000


def _entries_upto(tx: Tx, account_ids: list[int], count: int) -> list[StoredEntry]:
    out: list[StoredEntry] = []
    after = 0
    while True:
        page = tx.repo.ledger.entries_touching(account_ids, after, _PAGE)
        out.extend(e for e in page if e.seq <= count)
        if len(page) < _PAGE or page[-1].seq >= count:
            return out
        after = page[-1].seq


def _prover(leaves: Sequence[bytes]) -> Callable[[int], list[bytes]]:
    """Inclusion proofs in the tree of ``leaves``, hashing each subtree once."""
    hashes = [merkle.leaf_hash(leaf) for leaf in leaves]
    memo: dict[tuple[int, int], bytes] = {}

    def perfect(start: int, end: int) -> bytes:
        if end - start == 1:
            return hashes[start]
        found = memo.get((start, end))
        if found is None:
            mid = (start + end) // 2
            found = memo[(start, end)] = merkle.node_hash(perfect(start, mid),
                                                          perfect(mid, end))
        return found

    def prove(index: int) -> list[bytes]:
        return [merkle.hash_of_range(perfect, s, e)
                for s, e in merkle.inclusion_path_ranges(index, len(leaves))]

    return prove


def _entry_doc(stored: StoredEntry, proof: list[bytes]) -> dict[str, Any]:
    e = stored.entry
    return {
        "seq": stored.seq,
        "kind": str(e.kind),
        "at": format_time(e.at),
        "memo": e.memo,
        "order_id": e.order_id,
        "reverses_seq": e.reverses_seq,
        "postings": [[p.account.code, p.minutes] for p in e.postings],
        "prev_hash": b64(stored.prev_hash),
        "hash": b64(stored.hash),
        "proof": [b64(h) for h in proof],
    }


def _logged(index: int, entry: bytes, path: Sequence[bytes], head: str) -> dict[str, Any]:
    return {"log_index": index, "log_entry": b64(entry), "log_proof": [b64(h) for h in path],
            "tree_head": head}


def build_statement(tx: Tx, person_id: int, anchor_row: Any,
                    proof_in_cosigned_head: pb.GetInclusionProofResponse | None = None, *,
                    rosters: Sequence[bytes] = (),
                    made_at: datetime | None = None) -> dict[str, Any]:
    """The unsigned statement of ``person_id`` as of ``anchor_row`` (a logged anchor).

    ``rosters`` are serialised city-signed ``roster`` envelopes (all the clearinghouse
    has); the statement carries those its tree heads name, which give a verifier the
    districts, their keys and the quorum. ``timebank.passbook.sign_statement`` adds the
    node's signature."""
    if anchor_row is None or anchor_row.log_index is None:
        raise FailedPrecondition("no checkpoint of this ledger has been anchored in the "
                                 "city's log yet", "NOT_ANCHORED")
    person = tx.repo.people.get(person_id)
    if person.visitor:
        raise FailedPrecondition(
            f"person {person_id}'s hours are kept by district {person.home_node_id}; "
            "their passbook comes from there", "NOT_HOME_DISTRICT")
    count = int(anchor_row.entry_count)
    accounts = tx.repo.ledger.accounts_of(person.id)
    prefix = f"person/{person.person_ref}/"
    entries = _entries_upto(tx, [a.id for a in accounts], count)
    leaves = tx.repo.ledger.entry_hashes(count)
    if merkle.root(leaves) != bytes(anchor_row.ledger_root):
        raise InvariantViolation(f"the ledger's first {count} entries no longer have the "
                                 "root that was anchored: run `timebank node check`")
    prove = _prover(leaves)
    by_origin: dict[str, int] = {}
    docs = []
    for stored in entries:
        for p in stored.entry.postings:
            if p.account.code.startswith(prefix):
                origin = p.account.code[len(prefix):]
                by_origin[origin] = by_origin.get(origin, 0) + p.minutes
        docs.append(_entry_doc(stored, prove(stored.seq - 1)))
    anchor = {
        "entry_count": count,
        "chain_head": b64(bytes(anchor_row.chain_head)),
        "ledger_root": b64(bytes(anchor_row.ledger_root)),
        "checkpoint": b64(bytes(anchor_row.checkpoint)),
        **_logged(int(anchor_row.log_index), bytes(anchor_row.log_entry),
                  anchors.proof_path(anchor_row.log_proof), str(anchor_row.tree_head)),
    }
    cosigned = None
    named = {_roster_named(str(anchor_row.tree_head))}
    if proof_in_cosigned_head is not None:
        logged = proof_in_cosigned_head.logged
        cosigned = _logged(logged.index, logged.entry, list(logged.path),
                           proof_in_cosigned_head.head.note)
        named.add(_roster_named(proof_in_cosigned_head.head.note))
    carried = [r for r in rosters
               if hashlib.sha256(pb.Envelope.FromString(r).body).digest() in named]
    return {
        "format": FORMAT,
        "node": {"node_id": tx.node.node_id, "district": tx.node.district},
        "person": {"id": person.id, "name": person.name, "kind": person.kind,
                   "person_ref": person.person_ref, "home_node_id": tx.node.node_id,
                   "home_district": tx.node.district},
        "balance": {"total": sum(by_origin.values()),
                    "by_origin": dict(sorted(by_origin.items()))},
        "entries": docs,
        "anchor": anchor,
        "cosigned": cosigned,
        "rosters": [b64(r) for r in carried],
        "made_at": format_time(made_at or tx.now),
        **_key_acts(tx),
    }


def _key_acts(tx: Tx) -> dict[str, list[str]]:
    """The rotations of the city's keys this node holds (city-signed), for a verifier
    who holds only the keys the city started with (ADR 0018); none: no field."""
    found = [b64(e) for e in tx.repo.city.envelopes()
             if pb.Envelope.FromString(e).kind in KEY_KINDS]
    return {"key_acts": found} if found else {}


def _roster_named(note: str) -> bytes | None:
    """The digest of the roster a head names (None if it names none)."""
    line = transparency.read_head(note).roster
    return None if line is None else line[1]


def latest_anchor(tx: Tx) -> LoggedAnchor:
    """The anchor of the most entries the log has recorded; NOT_FOUND if none yet."""
    found = tx.repo.anchors.latest()
    if found is None:
        raise NotFound("no checkpoint of this ledger has been anchored in the city's log "
                       "yet: run `timebank node checkpoint --config FILE`, let the serving "
                       "node send it to the clearinghouse, and try again", "NOT_ANCHORED")
    return found


#: The largest passbook file the node's API sends (its responses are at most 4 MiB);
#: a longer history's passbook is made by the operator (`timebank node statement`).
MAX_SERVED_BYTES = 3 * 1024 * 1024


def passbook_anchor(tx: Tx, person_id: int) -> LoggedAnchor:
    """The anchor a passbook of ``person_id`` is made as of, for the node's API: refused
    before the clearinghouse is asked for anything, FAILED_PRECONDITION when no
    checkpoint of the ledger is in the city's log yet or another district keeps the
    person's hours (NOT_FOUND: no such person)."""
    person = tx.repo.people.get(person_id)
    if person.visitor:
        raise FailedPrecondition(
            f"此人的时间由 {person.home_node_id} 区保管，请向该区索取存折 / person "
            f"{person_id}'s hours are kept by district {person.home_node_id}; their "
            "passbook comes from there", "NOT_HOME_DISTRICT")
    found = tx.repo.anchors.latest()
    if found is None or found.log_index is None:
        raise FailedPrecondition(
            "本区账本尚未在全市公开日志中封存，暂时不能出具存折，请稍后再试 / no checkpoint "
            "of this district's ledger has been anchored in the city's log yet, so no "
            "passbook can be made: the node anchors its ledger on a schedule (or the "
            "operator runs `timebank node checkpoint`); try again later", "NOT_ANCHORED")
    return found


def keep_issued(tx: Tx, person_id: int, statement_file: bytes, code: bytes, warning: str,
                made_at: datetime) -> None:
    """Keep a passbook file the API is about to send, by the digest its node signed (the
    code its paper prints), so that the same file can be had again: a statement made
    later says another time and cites another head, and has another code."""
    tx.repo.passbooks.add(code, person_id, made_at, warning, statement_file)


def issued(tx: Tx, person_id: int, code: bytes) -> IssuedPassbook:
    """The passbook of ``person_id`` this node issued with ``code``; NOT_FOUND if none
    (also when the code is another person's: whose it is, is not said)."""
    found = tx.repo.passbooks.get(code)
    if found is None or found.person_id != person_id:
        raise NotFound(f"本区没有为此人签发过核对码为 {code.hex()[:8]}… 的存折 / this district "
                       f"issued no passbook of person {person_id} with the code "
                       f"{code.hex()[:8]}…", "UNKNOWN_PASSBOOK")
    return found
