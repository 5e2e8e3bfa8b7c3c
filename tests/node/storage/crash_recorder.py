"""Child process of test_crash_recording: records due orders in small batches until killed.

    python crash_recorder.py URL NODE_ID SECRET_HEX POLICY_FILE NOW_ISO MODE BATCH

MODE "due" records with record_due_orders(BATCH); "single" records the due orders one
transaction each with record_order. Prints "recorded N" after every committed
transaction (flushed), "done" when nothing is left, and then exits.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

from node.domain.clock import ManualClock
from node.domain.policy import load_policy
from node.storage.db import Database
from node.usecases import orders
from node.usecases.app import NodeApp, NodeIdentity, Tx


def due(tx: Tx, limit: int) -> list[int]:
    return tx.repo.orders.due_ids(tx.now, limit)


def main(argv: list[str]) -> int:
    url, node_id, secret_hex, policy_file, now_iso, mode, batch = argv
    policy = load_policy(Path(policy_file).read_text(encoding="utf-8"))
    app = NodeApp(Database(url), policy, ManualClock(datetime.fromisoformat(now_iso)),
                  NodeIdentity(node_id, "江宁区", bytes.fromhex(secret_hex)))
    limit = int(batch)
    print("started", flush=True)
    while True:
        if mode == "due":
            n = len(app.execute(orders.record_due_orders, limit))
            if n:
                print(f"recorded {n}", flush=True)
        else:
            ids = app.query(due, limit)
            for order_id in ids:
                app.execute(orders.record_order, order_id)
                print("recorded 1", flush=True)
            n = len(ids)
        if not n:
            print("done", flush=True)
            app.db.dispose()
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
