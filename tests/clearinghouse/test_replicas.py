"""Two clearinghouse replicas on one PostgreSQL, behind one address (issue 17, ADR 0021).

A city of real processes: two ``timebank clearinghouse serve`` processes on one
PostgreSQL database and three district nodes, each dialling both replicas as one gRPC
target (``ipv4:A,B``, round robin). Redemptions and moves run between every two
districts at once; in the middle of the load one replica is stopped while it holds the
write lock inside a transaction (SIGSTOP, its PostgreSQL session seen holding the lock
row, then SIGKILL) and is never started again. The survivor takes over.

At the end: every claim is in one final state at both parties and the clearinghouse,
each claim's states were logged once, ledgers sum to zero and every balance is what its
completed claims leave; the log is one history (every leaf hash recomputed, and every
tree head a node held during the run is the log's root at its size and consistent with
every later one); and the city's offline audit passes.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.pool import NullPool

from city.audit import audit_data_dir
from city.audit.district import held_heads
from city.launcher import CLEARINGHOUSE, CityLayout, CityProcesses, layout
from clearinghouse.storage.merkle_log import MerkleLog
from clearinghouse.storage.schema import LogLeaf
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
    node_database,
    record_due,
    redeem,
    sent_everything,
    setup_desk,
    wait_claim,
    wait_quiet,
)
from timebank import merkle, transparency
from timebank.v1 import clearing_pb2, node_pb2

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

JN, GL, QX = "320115", "320106", "320113"
NODES = [JN, GL, QX]
VICTIM, SURVIVOR = CLEARINGHOUSE, f"{CLEARINGHOUSE}-2"
WAVES = 3
PER_WAVE = 30
ELDERS_PER_PAIR = 2
GRANT = 3000
LIMIT = 10**9
WORKERS = 8
PUBLICITY = timedelta(days=8)
PG_PORT = 5432


def _pg_client_ports(pid: int) -> set[int]:
    """The local ports of the process's TCP connections to PostgreSQL (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == PG_PORT:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def _holds_write_lock(url: str, ports: set[int]) -> bool:
    """Whether a session from one of ``ports`` holds the write lock row's table lock
    (taken by ``SELECT ... FOR UPDATE`` and kept until its transaction ends)."""
    if not ports:
        return False
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return bool(conn.execute(text(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.relation = 'write_lock'::regclass AND l.granted "
                "AND a.client_port = ANY(:ports)"), {"ports": sorted(ports)}).scalar_one())
    finally:
        engine.dispose()


class MidAppendKill:
    """Once the victim has served writes, stop it (SIGSTOP) at random moments until it is
    caught inside a write transaction holding the lock, then SIGKILL it there."""

    def __init__(self, procs: CityProcesses, url: str, rng: random.Random) -> None:
        self.procs, self.url, self.rng = procs, url, rng
        self.done = threading.Event()
        self.tries = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mid-append-kill", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join(120)
        assert not self._thread.is_alive()

    def _run(self) -> None:
        try:
            pid = self.procs.pid(VICTIM)
            while not self.done.is_set() and self.tries < 2000:
                time.sleep(self.rng.uniform(0.0, 0.05))
                os.kill(pid, signal.SIGSTOP)
                self.tries += 1
                if _holds_write_lock(self.url, _pg_client_ports(pid)):
                    self.procs.kill(VICTIM)  # SIGKILL while stopped in its transaction
                    self.done.set()
                    return
                os.kill(pid, signal.SIGCONT)
        except BaseException as e:  # seen by the test
            self.error = e


class HeadSampler:
    """Reads the tree heads every node holds (the last it verified and cosigned), over
    and over while the city runs: the heads the districts saw, from both replicas."""

    def __init__(self, city: CityLayout) -> None:
        self.engines = [create_engine(f"sqlite:///{node_database(city, n)}",
                                      poolclass=NullPool) for n in NODES]
        self.heads: dict[int, set[bytes]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heads", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        self.sample()
        for engine in self.engines:
            engine.dispose()

    def sample(self) -> None:
        for engine in self.engines:
            with engine.connect() as conn:
                for _, _, note in held_heads(conn):
                    head = transparency.read_head(note)
                    self.heads.setdefault(head.size, set()).add(head.root)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.sample()


def _setup(client: CityClient) -> tuple[dict[str, Desk], list[Elder], list[Elder]]:
    desks = {n: setup_desk(client, n, volunteers=4) for n in NODES}
    elders = [enrol_elder(client, desks, home, [serving], GRANT)
              for home in NODES for serving in NODES if serving != home
              for _ in range(ELDERS_PER_PAIR)]
    movers = [enrol_elder(client, desks, home, [NODES[(i + 1) % 3]], 600)
              for i, home in enumerate(NODES) for _ in range(2)]
    assert sent_everything(client, NODES, 60)
    return desks, elders, movers


def _wave(client: CityClient, desks: dict[str, Desk], elders: list[Elder], movers: list[Elder],
          rng: random.Random, back: bool) -> tuple[list[Outcome], list[str]]:
    """PER_WAVE redemptions between every two districts and every mover's move (there,
    or back home), all at once."""
    jobs = []
    for _ in range(PER_WAVE):
        elder = rng.choice(elders)
        serving = next(n for n in elder.ids if n != elder.home)
        jobs.append((desks[serving], elder, rng.choice(desks[serving].volunteers),
                     rng.choice((30, 45, 60, 90)), ""))

    def move(m: Elder) -> tuple[Elder, str, str]:
        other = next(n for n in m.ids if n != m.home)
        debtor, creditor = (other, m.home) if back else (m.home, other)
        claim = client.call(debtor, "MovePerson", node_pb2.MovePersonRequest(
            idempotency_key=key(), person_id=m.ids[debtor], to_node_id=creditor))
        return m, claim.claim.claim_id, debtor

    with ThreadPoolExecutor(WORKERS) as pool:
        moving = [pool.submit(move, m) for m in movers if m.moved == back]
        outcomes = list(pool.map(lambda j: redeem(client, *j), jobs))
        started = [f.result() for f in moving]
    for m, claim_id, debtor in started:
        state = wait_claim(client, debtor, claim_id, set(FINAL), 60)
        m.moved = state == "completed" if not back else state != "completed"
    return outcomes, [c for _, c, _ in started]


def _check_log(url: str, heads: dict[int, set[bytes]]) -> int:
    """The log is one history: every leaf's stored hash is its data's, the root
    recomputed from the leaves alone is the stored tree's, every head a node held is
    the log's root at its size, each consistent with the next; each claim's states
    were logged once. Returns the log's size."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            log = MerkleLog(conn)
            size, rebuilt = log.rebuild_check()  # every leaf hash checked on the way
            assert size == log.size() and rebuilt == log.root()
            for held_size, roots in heads.items():
                assert roots == {log.root(held_size)}, (held_size, "split view")
            sizes = sorted(heads)
            assert len(sizes) >= 3, sizes
            for old, new in itertools.pairwise(sizes):
                proof = log.consistency_proof(old, new)
                assert merkle.verify_consistency(old, new, log.root(old), log.root(new), proof)
            leaves = conn.execute(select(LogLeaf.data).where(
                LogLeaf.kind.in_(("claim", "expiry"))).order_by(LogLeaf.idx)).scalars()
            states: Counter[tuple[str, int]] = Counter()
            for data in leaves:
                entry = clearing_pb2.LogEntry.FromString(data)
                states[entry.claim_id, entry.state] += 1
            twice = [k for k, n in states.items() if n > 1]
            assert not twice, twice[:5]
            return size
    finally:
        engine.dispose()


def test_two_replicas_one_history_and_a_kill_mid_append_loses_nothing(
        tmp_path: Path, ch_pg_url: str) -> None:
    rng = random.Random(int(os.environ.get("TIMEBANK_REPLICA_SEED", "20261206")))
    city = layout(tmp_path / "city", clearinghouse_database=ch_pg_url,
                  clearinghouse_replicas=2, net_debit_limit=LIMIT)
    assert city.clearinghouse_names == (VICTIM, SURVIVOR)
    with CityProcesses(city, dev_clock=True) as procs:
        procs.start_all(timeout=60)
        client = CityClient(city)
        sampler = HeadSampler(city)
        try:
            desks, elders, movers = _setup(client)
            sampler.start()
            outcomes: list[Outcome] = []
            moves: list[str] = []
            killer = MidAppendKill(procs, ch_pg_url, rng)
            for wave in range(WAVES):
                if wave == 1:
                    killer.start()  # during this wave's load
                done, moved = _wave(client, desks, elders, movers, rng, back=wave % 2 == 1)
                outcomes += done
                moves += moved
                if wave == 1:
                    killer.join()
                    assert killer.error is None, killer.error
                    assert killer.done.is_set(), f"never caught in a write ({killer.tries})"
                    assert not procs.is_running(VICTIM)
                devclock.advance(city.clock_file, PUBLICITY)
                for n in NODES:
                    record_due(client, n)
            assert wait_quiet(client, NODES, 90), "the city did not settle"
            sampler.stop()
            # both replicas served writes before the kill
            for name in (VICTIM, SURVIVOR):
                assert "SubmitBatch" in procs.log_file(name).read_text(encoding="utf-8")
            check_city(client, city, NODES)
            check_people(client, city, elders, movers)
            size = _check_log(ch_pg_url, sampler.heads)
            states = Counter(client.call(o.serving, "GetClaim", node_pb2.GetClaimRequest(
                claim_id=o.claim_id)).claim.state for o in outcomes)
            print(f"\nkill after {killer.tries} stops; log size {size}; "
                  f"{len(sampler.heads)} heads seen; redemptions {dict(states)}; "
                  f"{len(moves)} moves; {client.retries} calls retried")
            assert len(outcomes) == WAVES * PER_WAVE
            assert states["completed"] >= len(outcomes) // 2, states
            assert len(moves) == WAVES * len(movers)  # each went, came back, went again
        finally:
            client.close()
    report = audit_data_dir(city.data_dir)
    assert report.ok, report.first_bad
