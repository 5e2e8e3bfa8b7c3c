"""Benchmark: the clearinghouse's transparency log (MerkleLog) on SQLite.

Grows a log in a migrated clearinghouse database in a temporary directory to 10^3,
10^4, ... leaves (``--max-size``, default 10^6), appending ~200-byte leaves (serialised
``LogEntry`` registrations with random envelope bytes) in batches of 1,000, one
transaction each, and publishing a signed tree head (C2SP checkpoint) after each batch,
as the serving clearinghouse does after every write. At each size: inclusion and
consistency proof times (mean over random indexes / old sizes, each in its own MerkleLog
so the size is read too, DB reads included) and sizes. At the end: ``rebuild_check``
over every leaf, and the auditor's whole clearinghouse audit
(``city.audit.audit_clearinghouse_database``: every leaf parsed and rehashed, every head
and its signature checked against the log, claims, receipts, positions). Prints lines,
then a JSON summary as the last line.

    python bench/log.py [--max-size 1000000] [--proofs 200] [--batch 1000]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from city.audit import audit_clearinghouse_database
from clearinghouse.config import sqlite_url
from clearinghouse.storage import migrate
from clearinghouse.storage.db import Database
from clearinghouse.storage.merkle_log import LeafRow, MerkleLog
from timebank import checkpoint, merkle, transparency
from timebank.v1 import clearing_pb2

TARGET_PROOF_MS = 5.0
TARGET_APPENDS_PER_S = 5_000
TARGET_REBUILD_S = 60.0
TARGET_REBUILD_AT = 1_000_000
KEY = SigningKey(b"bench clearinghouse key".ljust(32, b"."))
ORIGIN = transparency.clearinghouse_origin(bytes(KEY.verify_key))


def _entry(rng: random.Random, at: datetime) -> bytes:
    entry = clearing_pb2.LogEntry(kind="registration", node_id="320115",
                                  envelope=rng.randbytes(rng.randrange(150, 191)))
    entry.at.FromDatetime(at)
    return entry.SerializeToString(deterministic=True)


def grow(db: Database, rng: random.Random, start: int, end: int, batch: int) -> float:
    """Append leaves start..end in batches; return the seconds it took."""
    t0 = time.perf_counter()
    at = datetime.now(UTC)
    size = start
    while size < end:
        k = min(batch, end - size)
        entries = [LeafRow(_entry(rng, at), "registration", node_id="320115")
                   for _ in range(k)]
        with db.write() as conn:
            log = MerkleLog(conn)
            first = log.append(entries, at)
            new_size = log.size()
            root = log.root(new_size)
            note = checkpoint.sign_note(checkpoint.Checkpoint(ORIGIN, new_size, root).body(),
                                        ORIGIN, KEY)
            log.add_tree_head(new_size, root, note, at)
        assert first == size
        size += k
    return time.perf_counter() - t0


def measure_proofs(db: Database, rng: random.Random, size: int, n: int) -> dict[str, Any]:
    """Mean inclusion and consistency proof times at `size` (ms) and proof sizes."""
    with db.read() as conn:
        root = MerkleLog(conn).root(size)
        indexes = [rng.randrange(size) for _ in range(n)]
        olds = [rng.randrange(1, size + 1) for _ in range(n)]
        inc_ms, inc_len = [], []
        for index in indexes:
            t0 = time.perf_counter()
            proof = MerkleLog(conn).inclusion_proof(index, size)
            inc_ms.append((time.perf_counter() - t0) * 1e3)
            inc_len.append(len(proof))
        con_ms, con_len = [], []
        for old in olds:
            t0 = time.perf_counter()
            proof = MerkleLog(conn).consistency_proof(old, size)
            con_ms.append((time.perf_counter() - t0) * 1e3)
            con_len.append(len(proof))
        # the proofs are checked (outside the timings) by RFC 9162's verifiers
        log = MerkleLog(conn)
        for index in indexes[:20]:
            assert merkle.verify_inclusion(log.leaf(index), index, size,
                                           log.inclusion_proof(index, size), root)
        for old in olds[:20]:
            assert merkle.verify_consistency(old, size, log.root(old), root,
                                             log.consistency_proof(old, size))
    return {
        "size": size,
        "inclusion_ms": round(statistics.fmean(inc_ms), 3),
        "inclusion_p99_ms": round(sorted(inc_ms)[int(0.99 * (n - 1))], 3),
        "inclusion_hashes": round(statistics.fmean(inc_len), 1),
        "inclusion_bytes_max": max(inc_len) * merkle.HASH_SIZE,
        "consistency_ms": round(statistics.fmean(con_ms), 3),
        "consistency_p99_ms": round(sorted(con_ms)[int(0.99 * (n - 1))], 3),
        "consistency_hashes": round(statistics.fmean(con_len), 1),
        "consistency_bytes_max": max(con_len) * merkle.HASH_SIZE,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-size", type=int, default=1_000_000)
    parser.add_argument("--proofs", type=int, default=200)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=9162)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    sizes = [10 ** k for k in range(3, 10) if 10 ** k <= args.max_size] or [args.max_size]

    with tempfile.TemporaryDirectory(prefix="tb-log-bench-") as tmp:
        db = Database(sqlite_url(Path(tmp)))
        migrate.upgrade(db.writer)
        decades: list[dict[str, Any]] = []
        size = 0
        print(f"transparency log on SQLite, batches of {args.batch}, ~200-byte leaves")
        for target in sizes:
            seconds = grow(db, rng, size, target, args.batch)
            rate = (target - size) / seconds
            size = target
            row = {"appends_per_s": round(rate), **measure_proofs(db, rng, size, args.proofs)}
            decades.append(row)
            print(f"{size:>9} leaves: append {rate:9.0f} leaves/s | inclusion "
                  f"{row['inclusion_ms']:.3f} ms (p99 {row['inclusion_p99_ms']:.3f}), "
                  f"{row['inclusion_hashes']} hashes, ≤{row['inclusion_bytes_max']} B | "
                  f"consistency {row['consistency_ms']:.3f} ms "
                  f"(p99 {row['consistency_p99_ms']:.3f}), {row['consistency_hashes']} "
                  f"hashes, ≤{row['consistency_bytes_max']} B", flush=True)

        with db.read() as conn:
            t0 = time.perf_counter()
            audited = MerkleLog(conn).rebuild_check()
            rebuild_s = time.perf_counter() - t0
            assert audited == (size, MerkleLog(conn).root()), "the audit disagrees"
        db_mb = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 1e6
        url = str(db.writer.url)
        db.dispose()
        t0 = time.perf_counter()
        report = audit_clearinghouse_database(url, bytes(KEY.verify_key))
        audit_s = time.perf_counter() - t0
        assert report.ok, report.first_bad
    print(f"rebuild_check of {size} leaves: {rebuild_s:.1f} s "
          f"({size / rebuild_s:.0f} leaves/s); database {db_mb:.0f} MB")
    print(f"full clearinghouse audit of {size} leaves and {size // args.batch} signed heads: "
          f"{audit_s:.1f} s ({size / audit_s:.0f} leaves/s)")

    last = decades[-1]
    min_rate = min(d["appends_per_s"] for d in decades)
    # the rebuild target is for 10^6 leaves: scale a smaller run's time up linearly
    rebuild_at_target = rebuild_s * TARGET_REBUILD_AT / size
    audit_at_target = audit_s * TARGET_REBUILD_AT / size
    summary = {
        "bench": "log", "engine": "sqlite", "batch": args.batch, "max_size": size,
        "decades": decades,
        "rebuild_s": round(rebuild_s, 2), "audit_s": round(audit_s, 2),
        "db_mb": round(db_mb, 1),
        "targets": {"proof_ms": TARGET_PROOF_MS, "appends_per_s": TARGET_APPENDS_PER_S,
                    "rebuild_s_at_1e6": TARGET_REBUILD_S},
        "proofs_ok": max(last["inclusion_ms"], last["consistency_ms"]) < TARGET_PROOF_MS,
        "appends_ok": min_rate >= TARGET_APPENDS_PER_S,
        "rebuild_ok": rebuild_at_target < TARGET_REBUILD_S,
        "audit_ok": audit_at_target < TARGET_REBUILD_S,
        "measured_at_target_size": size >= TARGET_REBUILD_AT,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
