"""A recorder killed with SIGKILL leaves each recorded order whole or untouched, never half.

The parent prepares verified orders past their publicity period (paid by the city grant,
own hours, a relative's hours and the donation pool) through the use-case layer. A real
child process (``crash_recorder.py``) opens the node on the same SQLite file or PostgreSQL
database and records them in small batches; the parent kills it at a random moment after
it has started and before it is done, audits the ledger, and starts it again. In the end
everything is recorded exactly once and every minute is accounted for.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from node.domain.clock import ManualClock
from node.domain.orders import PaymentSource, round_to_unit
from node.domain.policy import Relation, load_policy
from node.storage.db import Database
from node.storage.repo import Repo
from node.usecases import ledger, orders
from node.usecases.app import NodeApp, NodeIdentity, Tx
from node.usecases.views import Actor
from tests.conftest import CITY_SECRET, DISTRICT, NODE_ID
from tests.helpers import consent, earn, enrol, ledger_problems, link, policy_toml, staff

SCRIPT = Path(__file__).with_name("crash_recorder.py")
ROOT = Path(__file__).resolve().parents[3]
N_ORDERS = 240
SETUP_ENTRIES = 7 + 3 + 8  # services that gave the children and donors hours, donations, grants
KILLS = 5
#: A 10-hour cap, so that busy volunteers overflow into the pool while being recorded.
POLICY = policy_toml(cap_hours=10, donation_priority_reserve_hours=0)

Holds = dict[int, list[tuple[str, int]]]  # order id -> [(account code, minutes)] in hold order


@dataclass
class Prepared:
    order_ids: list[int]
    holds: Holds  # the active holds of every order before any recording
    balances: dict[str, int]  # every account's balance before any recording
    child_now: str


def _open(url: str, clock: ManualClock) -> NodeApp:
    policy = load_policy(POLICY)
    node = NodeIdentity(NODE_ID, DISTRICT, CITY_SECRET)
    db = Database(url)
    with db.write() as conn:
        ledger.initialise(Repo(conn), node, policy.digest)
    return NodeApp(db, policy, clock, node)


def prepare(app: NodeApp, clock: ManualClock) -> Prepared:
    sid = staff(app)
    priority = [enrol(app, f"老人{i}", 1930 + i, priority=True).id for i in range(8)]
    volunteers = [enrol(app, f"志愿者{i}", 1975 + i).id for i in range(8)]
    elders = [enrol(app, f"长者{i}", 1950 + i).id for i in range(4)]
    children = [enrol(app, f"子女{i}", 1980 + i).id for i in range(4)]
    for elder, child in zip(elders, children, strict=True):
        link(app, elder, child, Relation.CHILD, sid)
        consent(app, child, elder, Actor(staff_id=sid))
        earn(app, clock, child, 600, priority[0])
    for donor in volunteers[:3]:
        earn(app, clock, donor, 600, priority[1])
        app.execute(ledger.donate, donor, 600)
    for elder in priority:
        app.execute(ledger.grant, elder, 600, sid, "低保独居")

    specs = []
    for k in range(N_ORDERS):
        planned = 15 * (1 + k % 3)
        measured = max(10, planned + 5 * (k % 7) - 10)
        kind = k % 5
        if kind == 3:
            recipient, source, payer = elders[k % 4], PaymentSource.RELATIVE, children[k % 4]
        else:
            source = {0: PaymentSource.CITY_GRANT, 1: PaymentSource.CITY_GRANT,
                      2: PaymentSource.OWN, 4: PaymentSource.DONATION_POOL}[kind]
            recipient, payer = priority[k % 8], 0
        specs.append((recipient, source, payer, volunteers[(k * 3) % 8], planned, measured))

    span = max(measured for *_, measured in specs)

    def check_in(tx: Tx, batch: list[tuple[int, PaymentSource, int, int, int, int]],
                 ) -> list[int]:
        """Many orders per transaction, through the same use-cases the API calls."""
        made = []
        for recipient, source, payer, volunteer, planned, _ in batch:
            o = orders.request_order(tx, recipient, "cleaning", planned, source, payer,
                                     Actor(staff_id=sid), "")
            orders.accept_order(tx, o.record.id, volunteer)
            orders.check_in(tx, o.record.id)
            made.append(o.record.id)
        return made

    def check_out_and_verify(tx: Tx, made: list[int], measured: list[int]) -> None:
        """``span`` minutes after the check-ins: each service ``measured`` long."""
        for order_id, minutes in zip(made, measured, strict=True):
            orders.check_out(tx, order_id, tx.now - timedelta(minutes=span - minutes))
            orders.verify_order(tx, order_id, Actor(staff_id=sid), 5, "")

    ids: list[int] = []
    for start in range(0, N_ORDERS, 60):
        batch = specs[start:start + 60]
        made = app.execute(check_in, batch)
        clock.advance(timedelta(minutes=span))
        app.execute(check_out_and_verify, made, [spec[-1] for spec in batch])
        ids += made
    holds, _ = _holds(app, ids)
    assert sorted(holds) == ids and all(holds.values())
    return Prepared(ids, holds, _balances(app),
                    (clock.now() + timedelta(days=app.policy.publicity_days, hours=1)).isoformat())


def _balances(app: NodeApp) -> dict[str, int]:
    with app.db.read() as conn:
        return {c: int(b) for c, b in conn.execute(text("SELECT code, balance FROM accounts"))}


def _holds(app: NodeApp, ids: list[int]) -> tuple[Holds, dict[int, set[str]]]:
    """Active holds per order, and the states of all its holds."""
    active: Holds = {i: [] for i in ids}
    states: dict[int, set[str]] = defaultdict(set)
    with app.db.read() as conn:
        for order_id, code, minutes, state in conn.execute(text(
                "SELECT h.order_id, a.code, h.minutes, h.state FROM holds h "
                "JOIN accounts a ON a.id = h.account_id ORDER BY h.id")):
            states[order_id].add(state)
            if state == "active":
                active[order_id].append((code, int(minutes)))
    return active, states


def expected_postings(order: dict[str, int | str], holds: list[tuple[str, int]],
                      volunteer_code: str) -> dict[str, int]:
    """What the single service entry of a recorded order must post, from its own record."""
    banked, to_pool, charged = (int(order["banked_minutes"]),
                                int(order["excess_to_pool_minutes"]),
                                int(order["charged_minutes"]))
    parts = [(f"issuance/{volunteer_code.rsplit('/', 1)[1]}", -(banked + to_pool)),
             (volunteer_code, banked), ("donation_pool", to_pool)]
    left = charged
    for code, minutes in holds:
        take = min(left, minutes)
        left -= take
        parts.append((code, -take))
    parts.append(("consumption", charged))
    out: dict[str, int] = defaultdict(int)
    for code, minutes in parts:
        out[code] += minutes
    return {c: m for c, m in out.items() if m}


def audit(app: NodeApp, prepared: Prepared) -> dict[str, dict[str, int]]:
    """Assert nothing is half-recorded; return each recorded order's postings."""
    problems = ledger_problems(app)
    assert not problems, problems
    active, hold_states = _holds(app, prepared.order_ids)
    with app.db.read() as conn:
        rows = {r["id"]: r for r in conn.execute(text(
            "SELECT o.id, o.state, o.measured_minutes, o.recorded_minutes, o.banked_minutes, "
            "o.excess_to_pool_minutes, o.unbanked_minutes, o.charged_minutes, "
            "(SELECT a.code FROM accounts a JOIN people p ON p.id = a.person_id "
            " WHERE p.id = o.volunteer_id AND a.origin = 'individual') AS volunteer_code, "
            "(SELECT COUNT(*) FROM order_events ev WHERE ev.order_id = o.id "
            " AND ev.to_state = 'recorded') AS recorded_events FROM orders o")).mappings()}
        entries: dict[int, list[int]] = defaultdict(list)
        for seq, order_id in conn.execute(text(
                "SELECT seq, order_id FROM entries WHERE kind = 'service'")):
            entries[int(order_id)].append(int(seq))
        postings: dict[int, dict[str, int]] = defaultdict(dict)
        for seq, code, minutes in conn.execute(text(
                "SELECT p.seq, a.code, p.minutes FROM postings p "
                "JOIN accounts a ON a.id = p.account_id")):
            postings[int(seq)][code] = int(minutes)
    recorded: dict[str, dict[str, int]] = {}
    for order_id in prepared.order_ids:
        o, holds = rows[order_id], prepared.holds[order_id]
        if o["state"] == "verified":  # untouched: still held, nothing posted
            assert order_id not in entries, f"order {order_id} is verified but has an entry"
            assert hold_states[order_id] == {"active"}, (order_id, hold_states[order_id])
            assert active[order_id] == holds
            assert o["recorded_minutes"] == o["charged_minutes"] == 0
            assert o["recorded_events"] == 0
            continue
        assert o["state"] == "recorded", (order_id, o["state"])
        assert len(entries[order_id]) == 1, f"order {order_id}: entries {entries[order_id]}"
        assert hold_states[order_id] == {"posted"}, (order_id, hold_states[order_id])
        assert o["recorded_events"] == 1
        assert o["recorded_minutes"] == round_to_unit(int(o["measured_minutes"]), 15)
        assert o["banked_minutes"] + o["excess_to_pool_minutes"] + o["unbanked_minutes"] == (
            o["recorded_minutes"])
        assert o["charged_minutes"] == min(o["recorded_minutes"], sum(m for _, m in holds))
        got = postings[entries[order_id][0]]
        assert got == expected_postings(dict(o), holds, str(o["volunteer_code"])), order_id
        recorded[str(order_id)] = got
    return recorded


def run_child(prepared: Prepared, url: str, policy_file: Path, mode: str, batch: int,
              kill_after: int | None, rng: random.Random) -> tuple[int, bool]:
    """Start the recorder; kill it after ``kill_after`` committed batches (None: let it
    finish). Returns (batches it reported, whether it said it was done)."""
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), url, NODE_ID, CITY_SECRET.hex(), str(policy_file),
         prepared.child_now, mode, str(batch)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    assert proc.stdout is not None
    reported, done, deadline = 0, False, time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if not ready:
                continue
            line = proc.stdout.readline()
            if not line or line.startswith("done"):
                done = bool(line)
                break
            if line.startswith("recorded"):
                reported += 1
                if kill_after is not None and reported >= kill_after:
                    time.sleep(rng.uniform(0, 0.004))  # land anywhere in the next batch
                    os.kill(proc.pid, signal.SIGKILL)
                    break
        else:
            pytest.fail("the recorder did not make progress within 30 s")
    finally:
        if proc.poll() is None and kill_after is None:
            proc.wait(timeout=30)
        elif proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        stderr = proc.stderr.read() if proc.stderr else ""
        proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    if kill_after is None:
        assert proc.returncode == 0, stderr
    else:
        assert proc.returncode == -signal.SIGKILL or done, (proc.returncode, stderr)
    return reported, done


def test_a_killed_recorder_leaves_whole_transactions(
        db_factory: Callable[[], tuple[str, Callable[[], None]]], tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    print(f"\ncrash test seed {seed}")
    url, release = db_factory()
    clock = ManualClock()
    app = _open(url, clock)
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(POLICY, encoding="utf-8")
    try:
        prepared = prepare(app, clock)
        assert audit(app, prepared) == {}
        kills, recorded = 0, 0
        for attempt in range(KILLS):
            mode = "due" if attempt % 2 == 0 else "single"
            batch = rng.choice([1, 2, 3, 5])
            reported, done = run_child(prepared, url, policy_file, mode, batch,
                                       rng.randint(1, 6), rng)
            kills += not done
            recorded_now = len(audit(app, prepared))
            assert recorded_now >= recorded  # what was committed stays committed
            assert recorded_now >= reported if mode == "single" else True
            recorded = recorded_now
            print(f"kill {attempt + 1}: {mode} x{batch}, {reported} batches reported, "
                  f"{recorded} of {N_ORDERS} recorded")
            if done:
                break
        assert kills >= 3, "the recorder should have been killed mid-way several times"
        assert 0 < recorded < N_ORDERS

        # finish the job, and account for every minute
        _, done = run_child(prepared, url, policy_file, "due", 50, None, rng)
        assert done
        final = audit(app, prepared)
        assert len(final) == N_ORDERS
        moved: dict[str, int] = defaultdict(int)
        for posted in final.values():
            for code, minutes in posted.items():
                moved[code] += minutes
        after = _balances(app)
        for code in set(after) | set(prepared.balances) | set(moved):
            assert after.get(code, 0) == prepared.balances.get(code, 0) + moved[code], code
        report = app.query(ledger.check_ledger)
        assert report.ok and report.transactions == SETUP_ENTRIES + N_ORDERS
        assert sum(after.values()) == 0
    finally:
        app.db.dispose()
        release()
