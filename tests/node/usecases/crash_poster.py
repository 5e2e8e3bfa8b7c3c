"""Child process of test_settlement_crash: a district node's process posting a final
settlement statement, which the test kills with SIGKILL.

    python crash_poster.py URL SECRET_HEX LISTED_JSON MODE

LISTED_JSON: the claims the statement lists for this district. MODE "inside": post,
print "posted, not committed" (flushed) and wait inside the open transaction; "after":
post, commit, print "committed" and wait; "run": post, print the outcome and exit.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from node.domain.clock import SystemClock
from node.domain.policy import DEFAULT_POLICY_TOML, load_policy
from node.storage.db import Database
from node.usecases import settlement
from node.usecases.app import NodeApp, NodeIdentity, Tx
from timebank.settlement import SettledClaim


def main(argv: list[str]) -> int:
    url, secret_hex, listed_file, mode = argv
    listed = [SettledClaim(**c) for c in json.loads(Path(listed_file).read_text())]
    app = NodeApp(Database(url), load_policy(DEFAULT_POLICY_TOML), SystemClock(),
                  NodeIdentity("320115", "江宁区", bytes.fromhex(secret_hex)))

    def post_and_wait(tx: Tx) -> settlement.Posted:
        posted = settlement.post(tx, 1, 1, listed)
        print(f"posted, not committed {posted.ledger_seq}", flush=True)
        time.sleep(60)  # killed here, inside the transaction
        return posted

    if mode == "inside":
        app.execute(post_and_wait)
        return 1
    posted = app.execute(settlement.post, 1, 1, listed)
    print(("committed" if mode == "after" else "done")
          + f" {posted.ledger_seq} {posted.already}", flush=True)
    if mode == "after":
        time.sleep(60)  # killed here, after the commit
    app.db.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
