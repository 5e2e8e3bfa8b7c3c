"""The clearinghouse's database: its log rebuilt, every tree head and cosignature,
admissions, claims, receipts and positions."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from sqlalchemy import Connection, select

from city.audit import tables as t
from city.audit.logscan import PAGE, LogScan, claim_state, parse_signed
from city.audit.readonly import readonly_engine
from city.audit.report import Bad, BadRecord, Check, Report, plural, run
from city.audit.storedlog import StoredLog, StoredLogError
from clearinghouse.domain.claims import ClaimState as ChState
from timebank import checkpoint as notes
from timebank import merkle, transparency
from timebank.envelope import (
    CLEARINGHOUSE,
    EnvelopeError,
    Reason,
    decode,
    identity,
    verify,
)
from timebank.v1 import clearing_pb2 as pb


@dataclass
class Clearinghouse:
    conn: Connection
    file: str
    key: bytes
    city_key: bytes | None
    node_keys: dict[str, list[bytes]]  # admitted and retired keys, current first
    districts: dict[str, str]
    claims: dict[str, Any]
    scan: LogScan
    open_totals: dict[str, tuple[int, int]]  # node -> (open claims, open debit minutes)

    @property
    def log_keys(self) -> transparency.LogKeys:
        """Which key signs heads of which size: ``key``, then each rotation the city
        signed that the log records (ADR 0018; only with the city key to check them)."""
        chain = self.scan.chain
        return (chain.log_keys() if chain is not None and chain.clearinghouse is not None
                else transparency.LogKeys(self.key))


def _log_check(ch: Clearinghouse) -> str:
    log = StoredLog(ch.conn)
    try:
        size, root = log.rebuild()
    except StoredLogError as e:
        raise Bad(BadRecord(ch.file, e.table, f"idx {e.index}", str(e))) from None
    scan = ch.scan
    if scan.bad is not None:
        raise Bad(scan.bad)
    if (scan.size, scan.root()) != (size, root):
        raise Bad(BadRecord(ch.file, "log_leaves", f"size {size}",
                             "two reads of the log disagree"))
    for at in sorted(scan.sizes):
        if at > size:
            continue
        try:
            stored = log.root(at)
        except StoredLogError as e:
            raise Bad(BadRecord(ch.file, e.table, f"idx {e.index}", str(e))) from None
        if stored != scan.roots.get(at, merkle.EMPTY_ROOT):
            raise Bad(BadRecord(ch.file, "log_hashes", f"size {at}",
                                 "the stored subtree hashes give another root than the "
                                 "leaves at this size"))
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(scan.kinds.items()))
    return f"{plural(size, 'leaf')} rebuilt from their data, root {root.hex()[:16]}… ({kinds})"


def _tree_heads_check(ch: Clearinghouse) -> str:
    heads = t.tree_heads
    count = 0
    for row in ch.conn.execute(select(heads).order_by(heads.c.size)):
        where = f"size {row.size}"
        try:
            head = transparency.check_head(row.note, ch.log_keys)
        except transparency.LogError as e:
            raise Bad(BadRecord(ch.file, "tree_heads", where, str(e))) from None
        if head.size != row.size or head.root != bytes(row.root):
            raise Bad(BadRecord(ch.file, "tree_heads", where,
                                 f"the signed note states size {head.size}, root "
                                 f"{head.root.hex()[:16]}…, not the row's"))
        if row.size > ch.scan.size or ch.scan.roots.get(row.size, merkle.EMPTY_ROOT) != head.root:
            raise Bad(BadRecord(ch.file, "tree_heads", where,
                                 "the signed root is not the log's root at this size"))
        _check_roster_line(ch, head, where)
        count += 1
    if count == 0:
        return "no tree head published yet"
    return f"{plural(count, 'tree head')} signed by the clearinghouse, each the log's root"


def _check_roster_line(ch: Clearinghouse, head: transparency.Head, where: str) -> None:
    """A head names the latest city-signed roster logged before it, with its district
    count; before the first roster, the count is the log's admitted districts."""
    logged = ch.scan.rosters.get(head.size)
    if logged is None:
        if head.roster is not None:
            raise Bad(BadRecord(ch.file, "tree_heads", where,
                                f"the head names roster epoch {head.roster[0]}, but the log "
                                "holds no city-signed roster at this size"))
        admitted = ch.scan.districts.get(head.size, 0)
        if head.districts is not None and head.districts != admitted:
            raise Bad(BadRecord(ch.file, "tree_heads", where,
                                f"the head says the city had {head.districts} districts; "
                                f"the log's admissions give {admitted}"))
        return
    epoch, digest, count = logged
    if head.roster != (epoch, digest):
        named = "no roster" if head.roster is None else f"roster epoch {head.roster[0]}"
        raise Bad(BadRecord(ch.file, "tree_heads", where,
                            f"the head names {named}; the log's latest city-signed roster "
                            f"at this size is epoch {epoch}"))
    if head.districts != count:
        raise Bad(BadRecord(ch.file, "tree_heads", where,
                            f"the head says the city had {head.districts} districts; the "
                            f"roster it names (epoch {epoch}) lists {count}"))


def _cosignatures_check(ch: Clearinghouse) -> str:
    cosigs, heads = t.cosignatures, t.tree_heads
    rows = ch.conn.execute(select(cosigs.c.size, cosigs.c.witness, cosigs.c.line,
                                  cosigs.c.created_at, heads.c.note)
                           .join(heads, heads.c.size == cosigs.c.size, isouter=True)
                           .order_by(cosigs.c.size, cosigs.c.witness)).all()
    by_size: dict[int, int] = {}
    for size, witness, line, taken_at, note in rows:
        where = f"size {size}, witness {witness}"
        if note is None:
            raise Bad(BadRecord(ch.file, "cosignatures", where, "no tree head of this size"))
        name = transparency.witness_name(witness)
        full = note + line.rstrip("\n") + "\n"
        # Judged against the clearinghouse's clock when it took the line, as it did then.
        taken = int(taken_at.timestamp())
        if not any(_cosigned(full, name, key, taken) for key in ch.node_keys.get(witness, [])):
            raise Bad(BadRecord(ch.file, "cosignatures", where,
                                 f"the cosignature does not verify under {witness}'s key, "
                                 "or is dated after the clearinghouse took it (beyond "
                                 f"{notes.MAX_COSIGNATURE_SKEW} s of clock skew)"))
        by_size[size] = by_size.get(size, 0) + 1
    if not rows:
        return "no cosignatures yet"
    quorum = len(ch.node_keys) // 2 + 1
    best = max((s for s, n in by_size.items() if n >= quorum), default=None)
    latest = "none" if best is None else f"size {best}"
    return (f"{plural(len(rows), 'cosignature')} on {plural(len(by_size), 'head')} verify; "
            f"latest head cosigned by a quorum ({quorum}): {latest}")


def _cosigned(note: str, name: str, key: bytes, now: int) -> bool:
    try:
        notes.verify_cosignature(note, name, key, now=now)
    except notes.CheckpointError:
        return False
    return True


def _claims_check(ch: Clearinghouse) -> str:
    latest = ch.scan.latest
    for claim_id, row in ch.claims.items():
        found = latest.get(claim_id)
        if found is None:
            raise Bad(BadRecord(ch.file, "claims", f"claim {claim_id}",
                                 "no log leaf records this claim"))
        idx, leaf = found
        minutes = row.posted_minutes if row.state == ChState.COMPLETED else row.minutes
        wanted = (claim_state(leaf.state), leaf.minutes, leaf.creditor_node_id,
                  leaf.debtor_node_id,
                  "move" if leaf.claim_kind == pb.CLAIM_KIND_MOVE else "redemption")
        stored = (row.state, minutes, row.creditor, row.debtor, row.kind)
        if stored != wanted:
            raise Bad(BadRecord(ch.file, "claims", f"claim {claim_id}",
                                 f"row says {_claim_text(stored)}; its latest log leaf "
                                 f"{idx} says {_claim_text(wanted)}"))
    for claim_id, (idx, _) in latest.items():
        if claim_id not in ch.claims:
            raise Bad(BadRecord(ch.file, "claims", f"claim {claim_id}",
                                 f"missing: log leaf {idx} records it"))
    states = ", ".join(f"{s} {n}" for s, n in sorted(ch.scan.final_states().items()))
    return f"{plural(len(ch.claims), 'claim')} as their latest log leaf says ({states})"


def _claim_text(fields: tuple[Any, ...]) -> str:
    state, minutes, creditor, debtor, kind = fields
    return f"{kind} {state} {minutes} min {debtor}→{creditor}"


def _receipts_check(ch: Clearinghouse) -> str:
    receipts = t.receipts
    log = StoredLog(ch.conn)
    count = 0
    seen: dict[bytes, int] = {}  # identity -> the leaf its receipt names
    for row in ch.conn.execute(select(receipts).order_by(receipts.c.created_at)):
        key = bytes(row.envelope_sha256)
        where = f"receipt for envelope {key.hex()[:16]}…"
        try:
            signed = parse_signed(bytes(row.receipt))
            if signed.signer != CLEARINGHOUSE or signed.kind != "receipt":
                raise EnvelopeError(Reason.MALFORMED, "not a clearinghouse receipt")
            body = pb.Receipt.FromString(verify(signed, ch.log_keys.named(signed.key_id)))
        except (EnvelopeError, DecodeError, ValueError) as e:
            raise Bad(BadRecord(ch.file, "receipts", where,
                                 f"does not verify under the clearinghouse key: {e}")) from None
        if bytes(body.envelope_sha256) != key and not _legacy(body, key, log):
            raise Bad(BadRecord(ch.file, "receipts", where,
                                 "the signed receipt names another envelope"))
        if body.log_index >= ch.scan.size:
            raise Bad(BadRecord(ch.file, "receipts", where,
                                 f"names log leaf {body.log_index}, past the log's end"))
        data = log.leaf(body.log_index)
        if data is None:
            raise Bad(BadRecord(ch.file, "log_leaves", f"idx {body.log_index}",
                                 f"missing below the log's size (receipt for envelope "
                                 f"{key.hex()[:16]}… names it)"))
        try:
            leaf = pb.LogEntry.FromString(data)
        except DecodeError:
            raise Bad(BadRecord(ch.file, "log_leaves", f"idx {body.log_index}",
                                 "the leaf is not a timebank.v1.LogEntry")) from None
        if _identity(leaf.envelope) != key or leaf.node_id != row.signer:
            raise Bad(BadRecord(ch.file, "receipts", where,
                                 f"log leaf {body.log_index} records another envelope"))
        if key in seen:
            raise Bad(BadRecord(ch.file, "receipts", where,
                                 f"log leaves {seen[key]} and {body.log_index} record the "
                                 "same envelope: it was acted on twice"))
        seen[key] = body.log_index
        count += 1
    return (f"{plural(count, 'receipt')} signed by the clearinghouse, each recorded in its "
            "leaf, one for each envelope")


def _identity(data: bytes) -> bytes | None:
    """The identity of a recorded envelope (None if it is not one)."""
    try:
        return identity(decode(data))
    except EnvelopeError:
        return None


def _legacy(body: pb.Receipt, key: bytes, log: StoredLog) -> bool:
    """A receipt signed before receipts named the envelope's identity (clearinghouse
    migration 0005): it names the SHA-256 of the bytes its leaf recorded, and is kept
    under the identity of that envelope."""
    data = log.leaf(body.log_index) if body.log_index <= transparency.MAX_LOG_NUMBER else None
    if data is None:
        return False
    try:
        recorded = pb.LogEntry.FromString(data).envelope
    except DecodeError:
        return False
    return (bytes(body.envelope_sha256) == hashlib.sha256(recorded).digest()
            and _identity(recorded) == key)


def _positions_check(ch: Clearinghouse) -> str:
    positions = t.positions
    rows = {r.node_id: int(r.net_minutes) for r in ch.conn.execute(select(positions))}
    expected = ch.scan.positions()
    for node_id in sorted(set(rows) | set(expected)):
        if rows.get(node_id, 0) != expected.get(node_id, 0):
            raise Bad(BadRecord(ch.file, "positions", f"node {node_id}",
                                 f"net {rows.get(node_id, 0):+d} min, but the completed "
                                 f"claims in the log give {expected.get(node_id, 0):+d}"))
    if sum(rows.values()) != 0:
        raise Bad(BadRecord(ch.file, "positions", "all nodes",
                             f"positions sum to {sum(rows.values())}, not 0"))
    for row in ch.conn.execute(select(positions)):
        kept = (int(row.open_claims), int(row.open_debit_minutes))
        counted = ch.open_totals.get(row.node_id, (0, 0))
        if kept != counted:
            raise Bad(BadRecord(ch.file, "positions", f"node {row.node_id}",
                                 f"{kept[0]} open claims owing {kept[1]} min kept, but the "
                                 f"claims give {counted[0]} owing {counted[1]} min"))
    shown = ", ".join(f"{ch.districts.get(n, n)} {v:+d}" for n, v in sorted(rows.items()))
    return (f"{plural(len(ch.scan.completed), 'completed claim')} in the log give every "
            f"position; they sum to 0 ({shown})")


def _admissions_check(ch: Clearinghouse) -> str:
    admissions = t.admissions
    count = 0
    for row in ch.conn.execute(select(admissions).order_by(admissions.c.node_id)):
        where = f"node {row.node_id}"
        cert = bytes(row.certificate)
        try:
            signed = parse_signed(cert)
            body = signed.body if ch.city_key is None else verify(signed, ch.city_key)
            parsed = pb.AdmissionCertificate.FromString(body)
        except (EnvelopeError, DecodeError, ValueError) as e:
            raise Bad(BadRecord(ch.file, "admissions", where,
                                 f"the certificate does not verify under the city key: {e}")
                       ) from None
        if parsed.node_id != row.node_id or bytes(parsed.public_key) != bytes(row.public_key):
            raise Bad(BadRecord(ch.file, "admissions", where,
                                 "the row's node or key is not the certificate's"))
        if hashlib.sha256(cert).digest() not in ch.scan.admissions:
            raise Bad(BadRecord(ch.file, "admissions", where,
                                 "its certificate is not an admission leaf of the log"))
        count += 1
    signed_by = "the city root key" if ch.city_key is not None else "(no city key to verify)"
    return f"{plural(count, 'admission')} signed by {signed_by}, each an admission leaf"


def _keys_of(conn: Connection) -> tuple[dict[str, list[bytes]], dict[str, str]]:
    admissions, retired = t.admissions, t.retired_keys
    keys: dict[str, list[bytes]] = {}
    districts: dict[str, str] = {}
    for r in conn.execute(select(admissions)):
        keys[r.node_id] = [bytes(r.public_key)]
        districts[r.node_id] = r.district
    for r in conn.execute(select(retired)):
        keys.setdefault(r.node_id, []).append(bytes(r.public_key))
    return keys, districts


def open_clearinghouse(file: str, conn: Connection, key: bytes, city_key: bytes | None,
                       held_sizes: Iterable[int] = ()) -> Clearinghouse:
    """Read the clearinghouse's keys and claims and scan its log once, keeping the root
    at every size it signed a head for and at ``held_sizes`` (the sizes of heads the
    districts hold, which the audit compares with this log)."""
    node_keys, districts = _keys_of(conn)
    claims_t = t.clearinghouse_claims
    claims = {r.claim_id: r for r in conn.execute(select(claims_t))}
    open_totals: dict[str, tuple[int, int]] = {}
    for r in claims.values():
        if r.state in ("proposed", "accepted"):
            n, m = open_totals.get(r.creditor, (0, 0))
            open_totals[r.creditor] = (n + 1, m)
            n, m = open_totals.get(r.debtor, (0, 0))
            open_totals[r.debtor] = (n + 1, m + int(r.minutes))
    heads = t.tree_heads
    sizes = set(conn.execute(select(heads.c.size)).scalars()) | set(held_sizes)
    scan = LogScan(file, sizes=sizes, city_key=city_key, clearinghouse_key=key)
    leaves = t.log_leaves
    after = -1
    while True:
        rows = conn.execute(select(leaves.c.idx, leaves.c.data).where(leaves.c.idx > after)
                            .order_by(leaves.c.idx).limit(PAGE)).all()
        for idx, data in rows:
            scan.add(int(idx), bytes(data))
        if len(rows) < PAGE:
            break
        after = rows[-1][0]
    return Clearinghouse(conn, file, key, city_key, node_keys, districts, claims, scan,
                          open_totals)


def clearinghouse_checks(ch: Clearinghouse) -> list[Check]:
    return [
        run("clearinghouse log", lambda: _log_check(ch)),
        run("tree heads", lambda: _tree_heads_check(ch)),
        run("cosignatures", lambda: _cosignatures_check(ch)),
        run("admissions", lambda: _admissions_check(ch)),
        run("clearinghouse claims", lambda: _claims_check(ch)),
        run("receipts", lambda: _receipts_check(ch)),
        run("positions", lambda: _positions_check(ch)),
    ]


def audit_clearinghouse_database(url: str, clearinghouse_key: bytes,
                                 city_key: bytes | None = None) -> Report:
    """The clearinghouse's part of the audit, on its database alone (no district files):
    the log rebuilt, every head and cosignature, admissions, claims, receipts, positions."""
    engine = readonly_engine(url)
    try:
        with engine.connect() as conn:
            ch = open_clearinghouse(url, conn, clearinghouse_key, city_key)
            return Report(url, tuple(clearinghouse_checks(ch)))
    finally:
        engine.dispose()

