"""Benchmark: recorded orders per second and balance queries per second on a node.

Runs through the use-case layer (the same code the gRPC API calls) on SQLite and,
when reachable, PostgreSQL. Prints a table and a JSON summary as the last line.

    python bench/node_ledger.py [--orders 3000] [--single 500] [--queries 20000] [--batch 200]

"recorded orders/s" is the node's recording sweep (record_due_orders, a batch per
transaction); one order per transaction is reported beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import create_engine, text

from node.domain.clock import ManualClock
from node.domain.identity import id_card_with_check_digit
from node.domain.orders import PaymentSource, PersonKind
from node.domain.policy import DEFAULT_POLICY_TOML, load_policy
from node.storage import migrate
from node.storage.db import Database
from node.storage.repo import Repo
from node.usecases import ledger, orders, people
from node.usecases.app import NodeApp, NodeIdentity
from node.usecases.views import Actor

PG_ADMIN = os.environ.get("TIMEBANK_BENCH_POSTGRES_URL",
                          "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def build_app(url: str, clock: ManualClock) -> NodeApp:
    policy = load_policy(DEFAULT_POLICY_TOML)
    node = NodeIdentity("320115", "江宁区", os.urandom(32))
    db = Database(url)
    migrate.upgrade(db.writer)
    with db.write() as conn:
        ledger.initialise(Repo(conn), node, policy.digest)
    return NodeApp(db, policy, clock, node)


def prepare(app: NodeApp, clock: ManualClock, n_orders: int, n_people: int) -> list[int]:
    """Enrol people and walk n_orders orders to verified, paid by the city grant."""
    elders, volunteers = [], []
    for i in range(n_people):
        card = id_card_with_check_digit(f"320115{1935 + i % 20}0101{i % 1000:03d}")
        elders.append(app.execute(people.enrol_person, PersonKind.INDIVIDUAL, f"老人{i}",
                                  card, "", True, 0).id)
        card = id_card_with_check_digit(f"320115{1970 + i % 20}0202{i % 1000:03d}")
        volunteers.append(app.execute(people.enrol_person, PersonKind.INDIVIDUAL,
                                      f"志愿者{i}", card, "", False, 0).id)
    for i in range(n_orders):
        elder, volunteer = elders[i % n_people], volunteers[(i * 7) % n_people]

        def arrive(tx, elder=elder, volunteer=volunteer):  # type: ignore[no-untyped-def]
            o = orders.request_order(tx, elder, "cleaning", 60, PaymentSource.CITY_GRANT, 0,
                                     Actor(staff_id=0, person_id=elder), "")
            orders.accept_order(tx, o.record.id, volunteer)
            orders.check_in(tx, o.record.id)  # never before the request
            return o.record.id

        def leave(tx, order_id, elder=elder):  # type: ignore[no-untyped-def]
            orders.check_out(tx, order_id)
            orders.verify_order(tx, order_id, Actor(person_id=elder), 5, "")

        order_id = app.execute(arrive)
        clock.advance(timedelta(minutes=50))
        app.execute(leave, order_id)
    clock.advance(timedelta(days=8))
    return elders + volunteers


def run(url: str, n_orders: int, n_single: int, n_queries: int,
        batch: int) -> dict[str, float]:
    clock = ManualClock()
    app = build_app(url, clock)
    t0 = time.perf_counter()
    person_ids = prepare(app, clock, n_orders + n_single, max(10, n_orders // 20))
    prep = time.perf_counter() - t0

    # One order per transaction: what a single RecordOrder call costs.
    due = app.query(lambda tx: tx.repo.orders.due_ids(tx.now, n_single))
    t0 = time.perf_counter()
    for order_id in due:
        app.execute(orders.record_order, order_id)
    single_s = time.perf_counter() - t0

    # The recording sweep: every due order, in batches (what the node's loop does).
    t0 = time.perf_counter()
    recorded = 0
    while done := app.execute(orders.record_due_orders, batch):
        recorded += len(done)
    batch_s = time.perf_counter() - t0
    assert recorded == n_orders, (recorded, n_orders)

    rng = random.Random(7)
    t0 = time.perf_counter()
    for _ in range(n_queries):
        app.query(ledger.balance, rng.choice(person_ids))
    query_s = time.perf_counter() - t0

    report = app.query(ledger.check_ledger)
    assert report.ok, report.problems
    app.db.dispose()
    return {
        "prepare_s": round(prep, 2),
        "recorded_orders": recorded,
        "record_batch": batch,
        "recorded_orders_per_s": round(recorded / batch_s, 1),
        "recorded_orders_per_s_one_per_transaction": round(len(due) / single_s, 1),
        "balance_queries": n_queries,
        "balance_queries_per_s": round(n_queries / query_s, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--orders", type=int, default=3000)
    ap.add_argument("--single", type=int, default=500)
    ap.add_argument("--queries", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--skip-postgres", action="store_true")
    args = ap.parse_args()
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'node.sqlite3'}"
        results["sqlite"] = run(url, args.orders, args.single, args.queries, args.batch)
        print("sqlite    ", results["sqlite"], flush=True)
    if not args.skip_postgres:
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        name = f"tb_bench_{uuid.uuid4().hex[:10]}"
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
            results["postgresql"] = run(url, args.orders, args.single, args.queries, args.batch)
            print("postgresql", results["postgresql"], flush=True)
        except Exception as e:
            results["postgresql"] = {"error": str(e).splitlines()[0]}
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    sqlite = results["sqlite"]
    assert isinstance(sqlite, dict)
    results["targets"] = {
        "sqlite_recorded_orders_per_s>=1000": sqlite["recorded_orders_per_s"] >= 1000,
        "sqlite_balance_queries_per_s>=5000": sqlite["balance_queries_per_s"] >= 5000,
    }
    results["cpu_count"] = os.cpu_count()
    print(json.dumps(results, ensure_ascii=False))


if __name__ == "__main__":
    main()
