"""Benchmark: closing a settlement period of 10^6 completed claims across 12 districts.

Fills a migrated clearinghouse database (SQLite in a temporary directory, or the
PostgreSQL ``--database-url`` names, which it empties) with Nanjing's 12 districts
admitted and on a city roster, ``--claims`` completed redemptions between them with
random ids and minutes (bulk SQL: the set-up is not what is measured), running
positions that match them, a short log whose head a quorum of districts cosigned, and
each claim's completing leaf within it. Then a fresh process closes the period up to
the log's size with the real use-case (``clearinghouse.usecases.settlement.close``: the
UPDATE that marks the claims, the claims streamed back by id into
``timebank.settlement.compute``, the statement signed and logged, the positions reset)
in one transaction, and reports its wall time and its peak resident memory (the whole
process: interpreter and libraries included). Prints lines, then a JSON summary as the
last line.

    python bench/settlement.py [--claims 1000000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey
from sqlalchemy import text

from clearinghouse.bureau import publish_roster
from clearinghouse.config import sqlite_url
from clearinghouse.storage import migrate
from clearinghouse.storage.db import Database
from clearinghouse.usecases import admission, log, settlement
from clearinghouse.usecases.app import ClearinghouseApp, Tx
from clearinghouse.usecases.clock import ManualClock
from timebank import checkpoint, transparency
from timebank.envelope import CITY, CLEARINGHOUSE, Signed, sign
from timebank.keys import public_key
from timebank.v1 import clearing_pb2

TARGET_SECONDS = 60.0
TARGET_PEAK_MB = 500.0
CITY_KEY = SigningKey(b"bench city root key".ljust(32, b"."))
CH_KEY = SigningKey(b"bench clearinghouse key".ljust(32, b"."))
ORIGIN = transparency.clearinghouse_origin(public_key(CH_KEY))
#: Nanjing's 12 districts.
DISTRICTS = {"320102": "玄武区", "320104": "秦淮区", "320105": "建邺区", "320106": "鼓楼区",
             "320111": "浦口区", "320113": "栖霞区", "320114": "雨花台区", "320115": "江宁区",
             "320116": "六合区", "320117": "溧水区", "320118": "高淳区", "320112": "江北新区"}
#: Log leaves the claims' completing leaves fall among (the log itself is not measured).
LOG_LEAVES = 2_000
START = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)


def _node_key(node_id: str) -> SigningKey:
    return SigningKey(f"bench node {node_id}".encode().ljust(32, b"."))


def _certificate(node_id: str) -> Signed:
    body = clearing_pb2.AdmissionCertificate(node_id=node_id, district=DISTRICTS[node_id],
                                             public_key=public_key(_node_key(node_id)),
                                             serial=1)
    return sign("admission", body.SerializeToString(), CITY, CITY_KEY)


def _publish(tx: Tx) -> None:
    log.publish_head(tx, lambda t: checkpoint.sign_note(t, ORIGIN, CH_KEY), ORIGIN)


def _city(app: ClearinghouseApp) -> None:
    """Admissions, roster, a log of ``LOG_LEAVES`` leaves, a head cosigned by 7 of 12."""
    app.after_write = _publish
    for node_id in sorted(DISTRICTS):
        app.execute(admission.admit, _certificate(node_id), public_key(CITY_KEY))
    publish_roster(app, CITY_KEY)

    def grow(tx: Tx) -> None:
        size = log.log_of(tx).size()
        for i in range(size, LOG_LEAVES):
            log.record_limit(tx, sorted(DISTRICTS)[i % 12], 100_000)

    app.execute(grow)

    def cosign(tx: Tx) -> None:
        found = log.log_of(tx).latest_tree_head()
        assert found is not None
        size, _, note = found
        body = checkpoint.SignedNote.parse(note).text
        at = int(tx.now.timestamp())
        for node_id in sorted(DISTRICTS)[:7]:
            line = checkpoint.cosign(body, transparency.witness_name(node_id),
                                     _node_key(node_id), at)
            log.log_of(tx).add_cosignature(size, node_id, line.rstrip("\n"), at, tx.now)

    app.execute(cosign)


def _claims(first: int, count: int, rng: random.Random, net: dict[str, int],
            ) -> list[tuple[Any, ...]]:
    """Rows of completed redemptions ``first`` .. ``first + count``, moving ``net``.
    Ids grow with ``first`` as time-ordered UUIDv7 ids do (random below)."""
    nodes = sorted(DISTRICTS)
    rows: list[tuple[Any, ...]] = []
    at = START.replace(tzinfo=None)
    later = (START + timedelta(days=7)).replace(tzinfo=None)
    for i in range(first, first + count):
        creditor, debtor = rng.sample(nodes, 2)
        minutes = rng.randrange(15, 241)
        net[creditor] += minutes
        net[debtor] -= minutes
        rows.append((str(uuid.UUID(int=(i << 80) | rng.getrandbits(80))), "redemption",
                     creditor, debtor, f"{i:064x}", minutes, minutes, "completed", None,
                     at, later, at, b"p", None, None, i % LOG_LEAVES, None))
    return rows


_COLUMNS = ("claim_id, kind, creditor, debtor, payer_ref, minutes, posted_minutes, state, "
            "reason, created_at, expires_at, updated_at, proposal, decision, finish, "
            "completed_index, settled_serial")
CHUNK = 100_000


def fill(url: str, count: int, seed: int) -> float:
    """Set the database up; returns the seconds it took."""
    t0 = time.perf_counter()
    db = Database(url)
    postgres = url.startswith("postgresql")
    if postgres:
        with db.writer.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    migrate.upgrade(db.writer)
    app = ClearinghouseApp(db, ManualClock(START))
    _city(app)
    rng = random.Random(seed)
    net = dict.fromkeys(DISTRICTS, 0)
    raw = db.writer.raw_connection()
    try:
        cur = raw.cursor()
        if not postgres:
            cur.execute("PRAGMA cache_size = -262144")  # the set-up only: 256 MB
        for first in range(0, count, CHUNK):
            rows = _claims(first, min(CHUNK, count - first), rng, net)
            if postgres:
                with cur.copy(f"COPY claims ({_COLUMNS}) FROM STDIN") as copy:  # type: ignore[attr-defined]
                    for row in rows:
                        copy.write_row(row)
            else:
                cur.executemany(f"INSERT INTO claims ({_COLUMNS}) VALUES "
                                f"({', '.join('?' * 17)})", rows)
        for node_id, minutes in net.items():
            cur.execute("UPDATE positions SET net_minutes = "
                        + ("%s WHERE node_id = %s" if postgres else "? WHERE node_id = ?"),
                        (minutes, node_id))
        raw.commit()
        if postgres:
            cur.execute("ANALYZE")
            raw.commit()
    finally:
        raw.close()
    db.dispose()
    return time.perf_counter() - t0


def _peak_kb() -> int:
    """This process's peak resident memory. Linux's ``ru_maxrss`` survives ``exec``
    (a child would report its parent's peak, the set-up's); ``VmHWM`` is this program's
    own."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def close_only(url: str) -> dict[str, Any]:
    """In this (fresh) process: close the period with the real use-case."""
    db = Database(url)
    app = ClearinghouseApp(db, ManualClock(START + timedelta(days=40)))
    app.after_write = _publish
    size = app.query(lambda tx: log.log_of(tx).size())
    t0 = time.perf_counter()
    closed = app.execute(settlement.close, lambda k, b: sign(k, b, CLEARINGHOUSE, CH_KEY),
                         up_to=size, label="bench")
    seconds = time.perf_counter() - t0
    db.dispose()
    peak_kb = _peak_kb()
    sheet = closed.statement.sheet
    return {"seconds": round(seconds, 2), "peak_mb": round(peak_kb / 1024, 1),
            "claims": sheet.claims, "districts": len(sheet.lines),
            "transfers": len(sheet.transfers), "gross": sheet.netting.gross}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--database-url", default="",
                        help="a PostgreSQL database to use (emptied first); default: "
                             "SQLite in a temporary directory")
    parser.add_argument("--close-only", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.close_only:
        print(json.dumps(close_only(args.close_only)))
        return
    with tempfile.TemporaryDirectory(prefix="tb-bench-settlement-") as tmp:
        url = args.database_url or sqlite_url(Path(tmp))
        engine = "postgresql" if url.startswith("postgresql") else "sqlite"
        print(f"filling {engine} with {args.claims:,} completed claims across "
              f"{len(DISTRICTS)} districts ...", flush=True)
        setup = fill(url, args.claims, args.seed)
        print(f"  set-up {setup:.1f} s (bulk SQL; not measured)", flush=True)
        done = subprocess.run([sys.executable, __file__, "--close-only", url],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"closing failed:\n{done.stderr}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
    ok = result["seconds"] < TARGET_SECONDS and result["peak_mb"] < TARGET_PEAK_MB
    print(f"closed a period of {result['claims']:,} claims across {result['districts']} "
          f"districts in {result['seconds']:.1f} s, peak memory {result['peak_mb']:.0f} MB "
          f"(targets: < {TARGET_SECONDS:.0f} s, < {TARGET_PEAK_MB:.0f} MB: "
          f"{'met' if ok else 'NOT met'}); {result['gross']} gross obligations netted to "
          f"{result['transfers']} transfers")
    print(json.dumps({"bench": "settlement", "engine": engine, **result,
                      "setup_seconds": round(setup, 1), "target_seconds": TARGET_SECONDS,
                      "target_peak_mb": TARGET_PEAK_MB, "met": ok}))


if __name__ == "__main__":
    main()
