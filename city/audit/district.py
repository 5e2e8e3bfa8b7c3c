"""A district's database: its hash chain and balances, the chain against the checkpoints
the clearinghouse's log records for it, its own anchor table against the log, every tree
head it holds against the log, and its claims against the clearinghouse's.

The chain is recomputed as the contract spells it (``timebank.chain`` over the account
codes of ``timebank.accounts``); whether each entry is one the ledger allows (postings
that sum to zero, ...) is the node domain's rule, ``node.domain.ledger.Entry``.

What a ledger must match is what the *log* records, never what the district's own tables
say it anchored: a district that rewrote entries, recomputed its chain and deleted its
``log_anchors`` rows would otherwise pass. Its anchor table is then compared with the log
as a second, separate finding (a row deleted, naming another leaf, or one too many).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select

from city.audit import tables as t
from city.audit.clearinghouse import Clearinghouse
from city.audit.frontier import Frontier
from city.audit.logscan import PAGE, LoggedCheckpoint
from city.audit.report import Bad, BadRecord, Check, plural, run
from node.domain import ledger
from runtime.errors import InvariantViolation
from timebank import anchors, chain, merkle, transparency
from timebank.accounts import Account, AccountCodeError, parse_account
from timebank.keys import key_id


@dataclass
class Node:
    node_id: str
    district: str
    conn: Connection
    file: str
    wanted: set[int] = field(default_factory=set)  # entry counts some checkpoint names
    count: int | None = None  # entries in the ledger, once read through
    # entry count -> (the chain's hash at it, the Merkle root of entries 1..count), at
    # every count in ``wanted`` that the ledger reaches, recomputed in one pass
    at: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.district} {self.node_id}"


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
    tree = Frontier()  # of the entry hashes: the ledger root at every count wanted
    node.at[0] = (prev, merkle.EMPTY_ROOT)

    def bad(table: str, entry: str, problem: str) -> None:
        nonlocal first
        if first is None:
            first = BadRecord(node.file, table, entry, problem)

    def chained(entry_hash: bytes) -> None:
        nonlocal prev
        prev = entry_hash
        tree.append(entry_hash)
        if count in node.wanted:
            node.at[count] = (entry_hash, tree.root())

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
            chained(bytes(row.hash))
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
        chained(recomputed)
    node.count = count
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


def _read_through(node: Node) -> int:
    """The ledger's entry count, if the ledger check read it to its end."""
    if node.count is None:
        raise Bad(BadRecord(node.file, "accounts", "-", "not checked: the ledger could not "
                                                        "be read (see the ledger check)"))
    return node.count


def _logged_check(node: Node, ch: Clearinghouse) -> str:
    """The ledger holds every checkpoint of it that the clearinghouse's log records
    (their signatures were checked as the log was read, ``LogScan``): at least as many
    entries, the chain's hash at each count its chain_head, the root its ledger_root.

    Checked in order of entry count, so when one fails every smaller count held, and the
    chain's hash at the last one that held fixes every entry up to it: the change lies
    after it."""
    logged = sorted(ch.scan.checkpoints.get(node.node_id, ()),
                    key=lambda c: (c.entry_count, c.index))
    if not logged:
        return "no checkpoint of this ledger in the clearinghouse's log yet"
    entries = _read_through(node)
    held = 0  # every entry up to this count is as anchored
    for cp in logged:
        n = cp.entry_count
        found = node.at.get(n)
        if n > entries:
            raise Bad(BadRecord(
                node.file, "entries", f"seq {entries + 1}..{n}",
                f"{node.name}'s ledger has {plural(entries, 'entry')}; its checkpoint at "
                f"log leaf {cp.index} anchored {n}: entries {entries + 1}..{n} are "
                f"missing"))
        if found is None:
            raise Bad(BadRecord(node.file, "entries", f"seq 1..{n}",
                                 f"{node.name}'s chain could not be recomputed up to entry "
                                 f"{n}, which its checkpoint at log leaf {cp.index} "
                                 f"anchored (see the ledger check)"))
        head, root = found
        if head != cp.chain_head:
            raise Bad(BadRecord(
                node.file, "entries", f"seq {held + 1}..{n}",
                f"{node.name}'s chain hash at entry {n} is not the chain_head of its "
                f"checkpoint at log leaf {cp.index}: entries {held + 1}..{n} were changed "
                f"after they were anchored"))
        if root != cp.ledger_root:
            raise Bad(BadRecord(
                node.file, "entries", f"seq 1..{n}",
                f"{node.name}'s Merkle root of entries 1..{n} is not the ledger_root of its "
                f"checkpoint at log leaf {cp.index}"))
        held = n
    last = logged[-1]
    return (f"matches the {plural(len(logged), 'checkpoint')} of it in the log, each signed "
            f"by the district's key of its time (latest: {plural(last.entry_count, 'entry')}"
            f", leaf {last.index})")


def _anchor_rows(conn: Connection, *columns: Any) -> Iterator[Any]:
    """The node's anchor rows in order of entry count, a page at a time."""
    anchors_t = t.log_anchors
    query = select(*columns) if columns else select(anchors_t)
    after = -1
    while True:
        rows = conn.execute(query.where(anchors_t.c.entry_count > after)
                            .order_by(anchors_t.c.entry_count).limit(PAGE)).all()
        yield from rows
        if len(rows) < PAGE:
            return
        after = int(rows[-1].entry_count)


def _anchors_check(node: Node, ch: Clearinghouse) -> str:
    """The district's own anchor table agrees with the log: a row for every checkpoint
    count the log records (none deleted), every row the log has recorded naming a leaf
    that is exactly this checkpoint (its envelope, its leaf, proven in the row's head),
    and none that the log does not have; each row also holds of the chain."""
    logged = ch.scan.checkpoints.get(node.node_id, [])
    by_index = {c.index: c for c in logged}
    leaves_at: dict[int, list[LoggedCheckpoint]] = {}
    for c in logged:
        leaves_at.setdefault(c.entry_count, []).append(c)
    unmet = sorted(leaves_at, reverse=True)  # logged counts no row has met yet; last first
    rows = proven = pending = 0
    last_count = 0
    entries = _read_through(node)

    def deleted_below(count: int | None) -> None:
        if unmet and (count is None or unmet[-1] < count):
            n = unmet[-1]
            raise Bad(BadRecord(node.file, "log_anchors", f"entry_count {n}",
                                 f"missing: the clearinghouse's log records {node.name}'s "
                                 f"checkpoint of {plural(n, 'entry')} at leaf "
                                 f"{leaves_at[n][0].index}; the district's anchor table has "
                                 f"no row for it (deleted?)"))

    for row in _anchor_rows(node.conn):
        count = int(row.entry_count)
        deleted_below(count)
        if unmet and unmet[-1] == count:
            unmet.pop()
        rows += 1
        last_count = count

        def bad(problem: str, entry: str = f"entry_count {count}") -> Bad:
            return Bad(BadRecord(node.file, "log_anchors", entry, problem))

        if count > entries:
            raise bad(f"anchors {count} entries; the ledger has {entries}")
        found = node.at.get(count)
        if found is None or bytes(row.chain_head) != found[0]:
            raise bad(f"chain_head is not the chain's hash at entry {count}")
        if bytes(row.ledger_root) != found[1]:
            raise bad(f"ledger_root is not the Merkle root of entries 1..{count}")
        if row.log_index is None:
            pending += 1  # sent, its receipt not back (or not yet logged)
            continue
        idx = int(row.log_index)
        cp = by_index.get(idx)
        if cp is None:
            past = f" (the log has {ch.scan.size} leaves)" if idx >= ch.scan.size else ""
            raise bad(f"names log leaf {idx}{past}, which is no checkpoint of {node.name} "
                      f"in the clearinghouse's log: the anchor table holds an anchor the "
                      f"log does not")
        if cp.entry_count != count:
            raise bad(f"names log leaf {idx}, {node.name}'s checkpoint of "
                      f"{plural(cp.entry_count, 'entry')}, not of {count}")
        entry = bytes(row.log_entry or b"")
        if (hashlib.sha256(bytes(row.checkpoint)).digest() != cp.envelope_sha256
                or hashlib.sha256(entry).digest() != cp.leaf_sha256):
            raise bad(f"its checkpoint or log_entry is not what log leaf {idx} records")
        try:
            th = transparency.check_head(str(row.tree_head or ""), ch.log_keys)
            transparency.check_included(entry, idx, th, anchors.proof_path(row.log_proof))
        except (transparency.LogError, ValueError) as e:
            raise bad(f"the inclusion proof does not hold: {e}") from None
        proven += 1
    deleted_below(None)
    if not rows:
        return "no anchors yet"
    waiting = f", {pending} not yet logged" if pending else ""
    return (f"{plural(rows, 'anchor')} of the chain hold (latest: "
            f"{plural(last_count, 'entry')}); {proven} proven in the log, which has no "
            f"checkpoint of this ledger without its row{waiting}")


def held_heads(conn: Connection) -> Iterator[tuple[str, str, str]]:
    """Every tree head a district's database holds, as (table, row, signed note): the last
    it verified and the last it cosigned as a witness (``meta``), and the head each
    anchor's inclusion proof is in."""
    meta = t.node_meta
    for key, value in conn.execute(select(meta.c.key, meta.c.value)
                                   .where(meta.c.key.in_(t.HELD_HEAD_KEYS))
                                   .order_by(meta.c.key)):
        yield "meta", str(key), str(value)
    anchors_t = t.log_anchors
    for row in _anchor_rows(conn, anchors_t.c.entry_count, anchors_t.c.tree_head):
        if row.tree_head is not None:
            yield "log_anchors", f"entry_count {row.entry_count}", str(row.tree_head)


def held_sizes(conn: Connection) -> set[int]:
    """The sizes of the heads a district holds, whose roots the log's one pass must keep
    (a head that does not parse is reported by ``_heads_check``)."""
    sizes: set[int] = set()
    for _, _, note in held_heads(conn):
        try:
            sizes.add(transparency.read_head(note).size)
        except transparency.LogError:
            continue
    return sizes


def _heads_check(node: Node, ch: Clearinghouse) -> str:
    """Every head the district holds is the audited log's: signed by the clearinghouse
    key, and at its size the root the log's leaves give. Another root at a size the log
    has is a split view, one head larger than the log a log that lost leaves (or another
    copy of it): either way two histories under one key, and both heads are printed."""
    count = 0
    for table, entry, note in held_heads(node.conn):

        def bad(problem: str, table: str = table, entry: str = entry) -> Bad:
            return Bad(BadRecord(node.file, table, entry, problem))

        try:
            head = transparency.check_head(note, ch.log_keys)
        except transparency.LogError as e:
            raise bad(f"{node.name} holds a tree head the clearinghouse key "
                      f"{key_id(ch.key)} did not sign: {e}") from None
        theirs = f"size {head.size}, root {head.root.hex()}"
        if head.size > ch.scan.size:
            raise bad(f"{node.name} holds a tree head signed by the clearinghouse "
                      f"({theirs}); the log audited has only {plural(ch.scan.size, 'leaf')} "
                      f"(size {ch.scan.size}, root {ch.scan.root().hex()}): the log lost "
                      f"leaves, or the district was shown another copy of it")
        ours = merkle.EMPTY_ROOT if head.size == 0 else ch.scan.roots.get(head.size)
        if ours is None:
            raise bad(f"the log's root at size {head.size} was not kept (the database "
                      f"changed during the audit?)")
        if ours != head.root:
            raise bad(f"split view: {node.name} holds a tree head signed by the "
                      f"clearinghouse ({theirs}); the log audited has "
                      f"(size {head.size}, root {ours.hex()})")
        districts = ch.scan.districts.get(head.size, 0)
        if head.districts is not None and head.districts != districts:
            raise bad(f"{node.name} holds a tree head of size {head.size} saying the city "
                      f"had {head.districts} districts; the log's admissions give "
                      f"{districts}")
        count += 1
    if count == 0:
        return "holds no tree head yet"
    return (f"{plural(count, 'tree head')} it holds (the last verified, the last cosigned, "
            f"its anchors') signed by the clearinghouse, each the log's root at its size")


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
    """A district's checks; its ledger is read once, keeping the chain's hash and root at
    every count the log's checkpoints or its own anchors name."""
    anchors_t = t.log_anchors
    node.wanted = {cp.entry_count for cp in ch.scan.checkpoints.get(node.node_id, ())}
    node.wanted.update(int(c) for c in node.conn.execute(select(anchors_t.c.entry_count))
                       .scalars())
    name = node.name
    return [run(f"{name} ledger", lambda: _ledger_check(node)),
            run(f"{name} ledger in the log", lambda: _logged_check(node, ch)),
            run(f"{name} anchors", lambda: _anchors_check(node, ch)),
            run(f"{name} tree heads", lambda: _heads_check(node, ch)),
            run(f"{name} claims", lambda: _node_claims_check(node, ch))]

