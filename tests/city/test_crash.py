"""The fault test of issue 4, with real processes: kill -9 any one process (the
clearinghouse, a debtor node, a creditor node) at random moments during a run of hundreds
of cross-district claims, and restart it. At the end every claim is in exactly one final
state on every node and at the clearinghouse, every hold is resolved, minutes are
conserved on every node and across the city, and no claim was applied twice.

The city is the launcher's (city/launcher.py): a clearinghouse and three district nodes,
each its own process with its own SQLite file, all on one dev clock. Everything is done
through gRPC, as staff would; a call cut off by a kill is sent again with the same
idempotency key. Every node is the creditor of some claims and the debtor of others.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest

from city.audit import audit_data_dir
from city.launcher import CityLayout, CityProcesses, layout
from clearinghouse.bootstrap import open_app
from clearinghouse.config import load_config as load_ch_config
from clearinghouse.usecases import claims as ch_claims
from runtime import devclock
from tests.city.workload import (
    FINAL,
    CityClient,
    Desk,
    Elder,
    Outcome,
    check_city,
    check_people,
    enrol_elder,
    key,
    list_claims,
    record_due,
    redeem,
    sent_everything,
    setup_desk,
    wait_claim,
    wait_quiet,
)
from timebank.v1 import node_pb2

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

JN, GL, QX = "320115", "320106", "320113"
NODES = [JN, GL, QX]
WAVES = 5
PER_WAVE = 40  # redemptions: 200 in all, in both directions between every two districts
ELDERS_PER_PAIR = 3
GRANT = 3000  # 50 h each: more than an elder's share of the run
MOVERS_PER_NODE = 2
WORKERS = 8
LIMIT = 10**9  # net debit limit: the run is about crashes, not limits
PUBLICITY = timedelta(days=8)  # past the 7-day publicity period


class Killer:
    """Kills -9 one process at a time at random moments and restarts it; every process
    is killed at least once (the first kills go round all of them, in random order)."""

    def __init__(self, procs: CityProcesses, rng: random.Random) -> None:
        self.procs, self.rng = procs, rng
        self.kills: list[tuple[str, float]] = []
        self._stop = threading.Event()
        self.went_round = threading.Event()  # every process has been killed once
        self._thread = threading.Thread(target=self._run, name="killer", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._started = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(120)
        assert not self._thread.is_alive()

    def _run(self) -> None:
        names = list(self.procs.city.names)
        first = self.rng.sample(names, len(names))
        try:
            while not self._stop.wait(self.rng.uniform(0.3, 2.0 if not first else 1.0)):
                victim = first.pop() if first else self.rng.choice(names)
                self.procs.kill(victim)
                self.kills.append((victim, round(time.monotonic() - self._started, 1)))
                time.sleep(self.rng.uniform(0.0, 1.0))  # down for a moment
                self.procs.restart(victim, timeout=60)
                if not first:
                    self.went_round.set()
        except BaseException as e:  # seen by the test
            self.error = e


def _city(tmp_path: Path) -> CityLayout:
    city = layout(tmp_path / "city")
    config = load_ch_config(city.clearinghouse_config)
    app = open_app(config)
    try:  # whatever layout gives: this run is about crashes, never about limits
        for n in city.nodes:
            app.execute(ch_claims.set_net_debit_limit, n.node_id, LIMIT)
    finally:
        app.db.dispose()
    return city


def _setup(client: CityClient) -> tuple[dict[str, Desk], list[Elder], list[Elder]]:
    desks = {n: setup_desk(client, n, volunteers=4) for n in NODES}
    elders = [enrol_elder(client, desks, home, [serving], GRANT)
              for home in NODES for serving in NODES if serving != home
              for _ in range(ELDERS_PER_PAIR)]
    # one poor elder per home: most of their redemptions are rejected (INSUFFICIENT_BALANCE)
    elders += [enrol_elder(client, desks, home, [NODES[(i + 2) % 3]], 45)
               for i, home in enumerate(NODES)]
    movers = [enrol_elder(client, desks, home, [NODES[(i + 1) % 3]], 600)
              for i, home in enumerate(NODES) for _ in range(MOVERS_PER_NODE)]
    # the directory must know every home before a claim names it
    assert sent_everything(client, NODES, 60)
    return desks, elders, movers


def _wave(client: CityClient, desks: dict[str, Desk], elders: list[Elder],
          rng: random.Random) -> list[Outcome]:
    jobs = []
    for _ in range(PER_WAVE):
        elder = rng.choice(elders)
        serving = next(n for n in elder.ids if n != elder.home)
        cancel = rng.choices(("", "early", "late"), (16, 1, 1))[0]
        jobs.append((desks[serving], elder, rng.choice(desks[serving].volunteers),
                     rng.choice((30, 45, 60, 90)), cancel))
    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(lambda j: redeem(client, *j), jobs))


def _moves(client: CityClient, movers: list[Elder], back: bool,
           ) -> list[tuple[Elder, str, str, str]]:
    """Start each mover's move (to the district where they are a visitor, or back home
    once moved); return (mover, claim id, debtor, creditor)."""
    started = []
    for m in movers:
        other = next(n for n in m.ids if n != m.home)
        if back and not m.moved:
            continue
        debtor, creditor = (other, m.home) if back else (m.home, other)
        claim = client.call(debtor, "MovePerson", node_pb2.MovePersonRequest(
            idempotency_key=key(), person_id=m.ids[debtor], to_node_id=creditor)).claim
        started.append((m, claim.claim_id, debtor, creditor))
    return started


def test_kill_9_during_hundreds_of_claims_loses_and_doubles_nothing(tmp_path: Path) -> None:
    seed = int(os.environ.get("TIMEBANK_CRASH_SEED", "20261125"))
    rng = random.Random(seed)
    city = _city(tmp_path)
    started = time.monotonic()
    with CityProcesses(city, dev_clock=True) as procs:
        procs.start_all(timeout=60)
        client = CityClient(city)
        try:
            desks, elders, movers = _setup(client)
            killer = Killer(procs, rng)
            killer.start()
            outcomes: list[Outcome] = []
            moves: list[tuple[str, str, str]] = []
            waves = 0
            # at least WAVES waves, and more until the killer has killed every process
            while waves < WAVES or not killer.went_round.is_set():
                w, waves = waves, waves + 1
                batch = _moves(client, movers, back=w == 3) if w in (0, 3) else []
                moves += [(c, d, cr) for _, c, d, cr in batch]
                outcomes += _wave(client, desks, elders, rng)
                for m, claim_id, debtor, _ in batch:  # taken in within a day: before the
                    state = wait_claim(client, debtor, claim_id, set(FINAL), 60)  # jump
                    m.moved = m.moved or state == "completed"
                devclock.advance(city.clock_file, PUBLICITY)
                for n in NODES:
                    record_due(client, n)
            killer.stop()
            assert killer.error is None, killer.error
            driven = time.monotonic() - started

            # quiescence: everything sent and applied; leftovers expire at their deadline
            if not wait_quiet(client, NODES, 60):
                devclock.advance(city.clock_file, timedelta(days=31))
                assert wait_quiet(client, NODES, 60), "the city did not settle"
            check_city(client, city, NODES)
            check_people(client, city, elders, movers)
            stats, state_of = _stats(client, outcomes, moves)
            print(f"\nseed {seed}: driven in {driven:.0f} s, {client.retries} retried calls; kills "
                  f"{Counter(v for v, _ in killer.kills)} at {killer.kills}; {stats}")
            assert {v for v, _ in killer.kills} == set(city.names)
            assert len(outcomes) == waves * PER_WAVE
            assert stats["completed"] >= len(outcomes) // 2, stats
            for o in outcomes:  # a cancelled order's claim is never paid
                assert not (o.cancel and state_of[o.claim_id] == "completed"), o
        finally:
            client.close()
    # every process stopped: the history the kills left behind checks out, offline
    report = audit_data_dir(city.data_dir)
    assert report.ok, report.first_bad


def _stats(client: CityClient, outcomes: list[Outcome],
           moves: list[tuple[str, str, str]]) -> tuple[dict[str, int], dict[str, str]]:
    by_claim: dict[str, str] = {}
    for n in NODES:
        for c in list_claims(client, n):
            by_claim[c.claim_id] = c.state
    counts = Counter(by_claim[o.claim_id] for o in outcomes)
    counts.update(f"move {by_claim[c]}" for c, _, _ in moves)
    counts["verified"] = sum(o.verified for o in outcomes)
    counts["cancelled"] = sum(o.cancel != "" for o in outcomes)
    return dict(counts), by_claim
