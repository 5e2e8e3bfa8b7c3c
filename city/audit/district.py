"""A district's database: its hash chain and balances, its anchors in the clearinghouse's
log, and its claims against the clearinghouse's.

The chain is recomputed as the contract spells it (``timebank.chain`` over the account
codes of ``timebank.accounts``); whether each entry is one the ledger allows (postings
that sum to zero, ...) is the node domain's rule, ``node.domain.ledger.Entry``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError
from sqlalchemy import Connection, select

from city.audit import tables as t
from city.audit.clearinghouse import Clearinghouse, parse_signed
from city.audit.logscan import PAGE
from city.audit.report import Bad, BadRecord, Check, plural, run
from city.audit.storedlog import StoredLog
from node.domain import ledger
from runtime.errors import InvariantViolation
from timebank import anchors, chain, merkle, transparency
from timebank.accounts import Account, AccountCodeError, parse_account
from timebank.envelope import EnvelopeError, Signed, verify
from timebank.keys import key_id
from timebank.v1 import clearing_pb2 as pb


@dataclass
class Node:
    node_id: str
    district: str
    conn: Connection
    file: str
    hashes: list[bytes] = field(default_factory=list)  # recomputed chain, entry 1..n


def _entries(node: Node) -> Iterator[tuple[Any, list[Any]]]:
    entries, postings = t.entries, t.postings
    after = 0
    while True:
        rows = node.conn.execute(select(entries).where(entries.c.seq > after)
                                 .order_by(entries.c.seq).limit(PAGE)).all()
        if not rows:
            return
        by_seq: dict[int, list[Any]] = {r.seq: [] for r in rows}
        for p in node.conn.execute(select(postings).where(postings.c.seq.in_(list(by_seq)))
                                   .order_by(postings.c.seq, postings.c.position)):
            by_seq[p.seq].append(p)
        for r in rows:
            yield r, by_seq[r.seq]
        after = rows[-1].seq


def _accounts(node: Node) -> tuple[dict[int, Any], dict[int, Account]]:
    """The district's account rows by id, and the account each one's code names."""
    rows = {r.id: r for r in node.conn.execute(select(t.accounts).order_by(t.accounts.c.id))}
    named: dict[int, Account] = {}
    for account_id, row in rows.items():
        try:
            named[account_id] = parse_account(row.code)
        except AccountCodeError as e:
            raise Bad(BadRecord(node.file, "accounts", f"id {account_id}", str(e))) from None
    return rows, named


def _ledger_check(node: Node) -> str:
    accounts, named = _accounts(node)
    prev = chain.genesis_hash(node.node_id)
    first: BadRecord | None = None
    sums: dict[int, int] = {}
    count = postings_seen = 0

    def bad(table: str, entry: str, problem: str) -> None:
        nonlocal first
        if first is None:
            first = BadRecord(node.file, table, entry, problem)

    for row, postings in _entries(node):
        count += 1
        where = f"seq {row.seq}"
        if row.seq != count:
            bad("entries", f"seq {count}", f"entry {count} is missing (the next is "
                                           f"entry {row.seq})")
            count = int(row.seq)
        parts: list[ledger.Posting] = []
        hashed: list[tuple[str, int]] = []  # (account code, minutes), as the chain hashes
        for p in postings:
            postings_seen += 1
            sums[p.account_id] = sums.get(p.account_id, 0) + int(p.minutes)
            account = named.get(p.account_id)
            if account is None:
                bad("postings", f"{where}, posting {p.position}", "no such account")
                continue
            parts.append(ledger.Posting(ledger.Account(account.kind, account.origin,
                                                       account.person_ref),
                                        int(p.minutes)))
            hashed.append((account.code, int(p.minutes)))
        try:
            ledger.Entry(kind=ledger.EntryKind(row.kind), postings=tuple(parts), at=row.at,
                         memo=row.memo, order_id=int(row.order_id),
                         reverses_seq=int(row.reverses_seq or 0))
        except (InvariantViolation, ValueError) as e:
            total = sum(p.minutes for p in parts)
            problem = (f"its postings sum to {total:+d} min, not 0" if total else
                       f"its postings are not a valid entry: {str(e)[:120]}")
            bad("postings", where, problem)
            node.hashes.append(bytes(row.hash))
            prev = bytes(row.hash)
            continue
        if bytes(row.prev_hash) != prev:
            bad("entries", where, f"does not follow entry {row.seq - 1} (prev_hash)")
        canonical = chain.entry_bytes(
            seq=int(row.seq), kind=row.kind, at=chain.format_time(row.at), memo=row.memo,
            order_id=int(row.order_id), reverses_seq=int(row.reverses_seq or 0),
            postings=hashed)
        recomputed = chain.link_hash(prev, canonical)
        if recomputed != bytes(row.hash):
            bad("entries", where, "its contents (row or postings) do not match its hash")
        node.hashes.append(recomputed)
        prev = recomputed
    if first is not None:
        raise Bad(first)
    head = node.conn.execute(select(t.ledger_head)).first()
    if head is None or (int(head.seq), bytes(head.hash)) != (count, prev):
        raise Bad(BadRecord(node.file, "ledger_head", "id 1",
                             f"the head says entry {None if head is None else head.seq}; "
                             f"the chain ends at entry {count}"))
    for account_id, account in accounts.items():
        if sums.get(account_id, 0) != account.balance:
            raise Bad(BadRecord(node.file, "accounts", account.code,
                                 f"balance {account.balance}, postings sum to "
                                 f"{sums.get(account_id, 0)}"))
    return (f"{plural(count, 'entry')} and {plural(postings_seen, 'posting')} chain to the "
            f"head; {plural(len(accounts), 'account')} balance")


def _anchors_check(node: Node, ch: Clearinghouse) -> str:
    log = StoredLog(ch.conn)
    rows = node.conn.execute(select(t.log_anchors).order_by(t.log_anchors.c.entry_count)).all()
    keys = ch.node_keys.get(node.node_id, [])
    logged = 0
    for row in rows:
        where = f"entry_count {row.entry_count}"

        def bad(problem: str, file: str = node.file, table: str = "log_anchors",
                entry: str = where) -> Bad:
            return Bad(BadRecord(file, table, entry, problem))

        count = int(row.entry_count)
        if count > len(node.hashes):
            raise bad(f"anchors {count} entries; the ledger has {len(node.hashes)}")
        head = node.hashes[count - 1] if count else chain.genesis_hash(node.node_id)
        if bytes(row.chain_head) != head:
            raise bad(f"chain_head is not the chain's hash at entry {count}")
        if bytes(row.ledger_root) != merkle.root(node.hashes[:count]):
            raise bad(f"ledger_root is not the Merkle root of entries 1..{count}")
        if row.log_index is None:
            continue  # sent, not yet logged
        sent = bytes(row.checkpoint)
        try:
            signed = parse_signed(sent)
            if signed.signer != node.node_id or signed.kind != anchors.CHECKPOINT_KIND:
                raise ValueError(f"a {signed.kind} signed by {signed.signer}")
            body = next((verify(signed, k) for k in keys if _key_matches(signed, k)), None)
            if body is None:
                raise ValueError("not signed by the node's admitted key")
            cp = pb.NodeCheckpoint.FromString(body)
        except (EnvelopeError, DecodeError, ValueError) as e:
            raise bad(f"the checkpoint envelope does not verify: {e}") from None
        if (cp.node_id, cp.entry_count, cp.chain_head, cp.ledger_root) != (
                node.node_id, count, bytes(row.chain_head), bytes(row.ledger_root)):
            raise bad("the signed checkpoint states another count, head or root")
        idx = int(row.log_index)
        if idx >= ch.scan.size:
            raise bad(f"log_index {idx} is past the log's end ({ch.scan.size})")
        leaf = log.leaf(idx)
        if leaf is None:
            raise bad("missing below the log's size", ch.file, "log_leaves", f"idx {idx}")
        if bytes(row.log_entry or b"") != leaf:
            raise bad(f"log_entry is not the clearinghouse's leaf {idx}")
        try:
            entry = pb.LogEntry.FromString(leaf)
        except DecodeError:
            raise bad("the leaf is not a timebank.v1.LogEntry", ch.file, "log_leaves",
                      f"idx {idx}") from None
        if entry.kind != anchors.LEAF_KIND or entry.envelope != sent:
            raise bad(f"leaf {idx} does not record this checkpoint", ch.file, "log_leaves",
                      f"idx {idx}")
        try:
            th = transparency.check_head(str(row.tree_head or ""), ch.key)
            transparency.check_included(leaf, idx, th, anchors.proof_path(row.log_proof))
        except (transparency.LogError, ValueError) as e:
            raise bad(f"the inclusion proof does not hold: {e}") from None
        if ch.scan.roots.get(th.size) != th.root:
            raise bad(f"its tree head (size {th.size}) is not the clearinghouse's log")
        logged += 1
    if not rows:
        return "no anchors yet"
    pending = len(rows) - logged
    last = rows[-1]
    waiting = f", {pending} not yet logged" if pending else ""
    return (f"{plural(len(rows), 'anchor')} of the chain hold (latest: "
            f"{plural(last.entry_count, 'entry')}); {logged} proven in the log{waiting}")


def _key_matches(signed: Signed, key: bytes) -> bool:
    return signed.key_id == key_id(key)


FINAL = {"completed", "voided", "rejected", "expired"}


def _node_claims_check(node: Node, ch: Clearinghouse) -> str:
    claims = t.node_claims
    checked = open_ = local = 0
    for row in node.conn.execute(select(claims).order_by(claims.c.claim_id)):
        if row.state not in FINAL:
            open_ += 1
            continue
        where = f"claim {row.claim_id}"
        theirs = ch.claims.get(row.claim_id)
        if theirs is None:
            if row.state in ("rejected", "expired"):
                local += 1  # refused or given up before the clearinghouse recorded it
                continue
            raise Bad(BadRecord(node.file, "claims", where,
                                 f"{row.state} here; the clearinghouse has no such claim"))
        creditor, debtor = ((node.node_id, row.counterparty) if row.role == "creditor"
                            else (row.counterparty, node.node_id))
        ours = (row.state, row.kind, creditor, debtor, row.minutes,
                row.posted_minutes if row.state == "completed" else None)
        city = (theirs.state, theirs.kind, theirs.creditor, theirs.debtor, theirs.minutes,
                theirs.posted_minutes if theirs.state == "completed" else None)
        if ours != city:
            raise Bad(BadRecord(node.file, "claims", where,
                                 f"{row.state} ({row.posted_minutes} of {row.minutes} min "
                                 f"posted) here; the clearinghouse has it {theirs.state} "
                                 f"({theirs.posted_minutes} of {theirs.minutes} min)"))
        checked += 1
    extra = f"; {open_} still open" if open_ else ""
    extra += f"; {local} ended before the clearinghouse recorded them" if local else ""
    return f"{plural(checked, 'final claim')} as the clearinghouse records them{extra}"


def node_checks(node: Node, ch: Clearinghouse) -> list[Check]:
    name = f"{node.district} {node.node_id}"
    return [run(f"{name} ledger", lambda: _ledger_check(node)),
            run(f"{name} anchors", lambda: _anchors_check(node, ch)),
            run(f"{name} claims", lambda: _node_claims_check(node, ch))]

