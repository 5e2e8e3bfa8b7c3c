"""The split view of issue 14, with real processes: two copies of the clearinghouse, one
key, two histories, and every way the city now notices.

The launcher's city (a clearinghouse and three district nodes, each its own process with
its own SQLite file; every node configured with the other two as peers) grows a shared
history that every district witnesses. Then the clearinghouse is stopped, its database
and key directory are copied into a second clearinghouse process (copy B) on another
port, and the first one (copy A) is started again. 江宁区 stays on A; 鼓楼区 and 栖霞区
are reconfigured to B. Both copies take more writes: more on A than on B.

What must follow:

- each copy, on its own, still passes the remote audit (what was found on main);
- the minority (江宁区 on A) never reaches finality: A has no quorum-cosigned head past
  the split, and 江宁区 raises the finality alarm; the majority's heads become final on B;
- the nodes' own comparison finds the fork: `timebank node check` exits 1 naming it,
  and the evidence it writes out re-checks with the clearinghouse's key alone
  (conclusive on 江宁区's side, whose log is the larger);
- `timebank monitor check` (city key, clearinghouse key, addresses only) exits 0 before
  the split and 1 after it, keeps both checkpoints in its evidence files, and a
  following monitor alerts;
- `timebank audit --clearinghouse A --node …` fails, naming the district and the fork.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from city.launcher import CLEARINGHOUSE, CityLayout, CityProcesses, layout
from clearinghouse.bootstrap import key_info
from clearinghouse.config import load_config as load_ch_config
from runtime.tls import ClientTls
from runtime.tls import channel as tls_channel
from tests.city.workload import CityClient, enrol_elder, sent_everything, setup_desk
from timebank import forks, transparency
from timebank.v1 import clearing_pb2, clearing_pb2_grpc, node_pb2, node_pb2_grpc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

JN, GL, QX = "320115", "320106", "320113"
NODES = (JN, GL, QX)
FINALITY_SECONDS = 4
ROOT = Path(__file__).resolve().parents[2]


def timebank(env: dict[str, str], *args: str,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real `timebank` command line (``python -m city``)."""
    return subprocess.run([sys.executable, "-m", "city", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, encoding="utf-8", timeout=timeout,
                          check=False)


def wait(what: str, condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not in {timeout:g} s: {what}")
        time.sleep(0.2)


#: The city's TLS, for the channels these helpers open by address (copy B has no name).
TLS: list[ClientTls | None] = []


def _channel(address: str) -> grpc.Channel:
    return tls_channel(address, TLS[-1])


def tree_head(address: str, *, cosigned: bool = False) -> int:
    with _channel(address) as channel:
        stub = clearing_pb2_grpc.ClearinghouseServiceStub(channel)
        try:
            return int(stub.GetTreeHead(clearing_pb2.GetTreeHeadRequest(cosigned=cosigned),
                                        timeout=5).head.size)
        except grpc.RpcError:
            return -1


def log_heads(address: str) -> node_pb2.GetLogHeadsResponse:
    with _channel(address) as channel:
        heads: node_pb2.GetLogHeadsResponse = node_pb2_grpc.NodeServiceStub(channel).GetLogHeads(
            node_pb2.GetLogHeadsRequest(), timeout=5)
        return heads


def alarm_kinds(address: str) -> set[str]:
    try:
        return {a.kind for a in log_heads(address).alarms}
    except grpc.RpcError:
        return set()


class Collected:
    """A process's stdout and stderr as they come, read by threads (no pipe fills)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.out: list[str] = []
        self.err: list[str] = []
        self.threads = [threading.Thread(target=self._read, args=(stream, into), daemon=True)
                        for stream, into in ((process.stdout, self.out),
                                             (process.stderr, self.err))]
        for thread in self.threads:
            thread.start()

    @staticmethod
    def _read(stream: IO[str] | None, into: list[str]) -> None:
        assert stream is not None
        for line in stream:  # each line as soon as it is written
            into.append(line)

    def has(self, *words: str, running: subprocess.Popen[str]) -> bool:
        """Whether stderr holds every word so far; fails if the process ended first."""
        err = "".join(self.err)
        if all(w in err for w in words):
            return True
        assert running.poll() is None, ("".join(self.out), err)
        return False

    def finish(self) -> tuple[str, str]:
        """(stdout, stderr) in full, once the process has exited."""
        for thread in self.threads:
            thread.join(timeout=30)
        return "".join(self.out), "".join(self.err)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def verified_size(address: str) -> int:
    note = log_heads(address).verified
    return transparency.read_head(note).size if note else 0


def replace_line(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, (path, old)
    path.write_text(text.replace(old, new), encoding="utf-8")


@contextmanager
def clearinghouse_copy(city: CityLayout, procs: CityProcesses, where: Path) -> Iterator[str]:
    """Copy B: the stopped clearinghouse's directory (database and keys) copied to
    ``where``, served by its own process on another port. Copy A is started again."""
    procs.stop(CLEARINGHOUSE)
    shutil.copytree(city.clearinghouse_dir, where)
    address = f"127.0.0.1:{free_port()}"
    replace_line(where / "clearinghouse.toml", f'listen = "{city.clearinghouse_address}"',
                 f'listen = "{address}"')
    procs.start(CLEARINGHOUSE)
    procs.wait_ready(CLEARINGHOUSE)
    log = (city.logs_dir / "clearinghouse-copy-b.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "city", "clearinghouse", "serve", "--config",
         str(where / "clearinghouse.toml")], stdin=subprocess.DEVNULL, stdout=log,
        stderr=subprocess.STDOUT, env=dict(procs.env), cwd=city.data_dir, start_new_session=True)
    try:
        with _channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)

            def serving() -> bool:
                assert process.poll() is None, "copy B exited"
                try:
                    return bool(health.Check(health_pb2.HealthCheckRequest(
                        service="timebank.v1.ClearinghouseService"), timeout=0.5).status
                        == health_pb2.HealthCheckResponse.SERVING)
                except grpc.RpcError:
                    return False

            wait("copy B serving", serving, 30)
        yield address
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def _configure(city: CityLayout) -> None:
    """Compare heads every second; a head not final after FINALITY_SECONDS is an alarm."""
    for n in city.nodes:
        replace_line(n.config_file, "check_seconds = 15", "check_seconds = 1")
        replace_line(n.config_file, "finality_seconds = 300",
                     f"finality_seconds = {FINALITY_SECONDS}")


def test_a_split_view_is_detected_and_proven(tmp_path: Path) -> None:
    city = layout(tmp_path / "city")
    TLS.append(city.client_tls())
    _configure(city)
    ch_config = load_ch_config(city.clearinghouse_config)
    ch_key = city.clearinghouse_public_key
    city_key = key_info(ch_config.city_key_file).public_key.hex()
    addresses = {n.node_id: n.address for n in city.nodes}
    for n in city.nodes:  # the launcher made every node a peer of the others
        peers = ", ".join(json.dumps(a) for m, a in addresses.items() if m != n.node_id)
        assert f"nodes = [{peers}]" in n.config_file.read_text(encoding="utf-8")
    monitor_dir = tmp_path / "monitor"
    monitor = ["monitor", "check", "--clearinghouse", city.clearinghouse_address,
               "--clearinghouse-key", ch_key, "--city-key", city_key,
               "--data-dir", str(monitor_dir), "--finality-seconds", "2",
               *(a for n in NODES for a in ("--node", addresses[n]))]
    nodes = [a for n in NODES for a in ("--node", addresses[n])]

    with CityProcesses(city) as procs:
        procs.start_all(timeout=60)
        env = {**procs.env, **city.client_env()}
        client = CityClient(city)
        try:
            # ---- a shared history, witnessed by every district
            desks = {n: setup_desk(client, n, volunteers=2) for n in NODES}
            enrol_elder(client, desks, JN, [GL], 600)
            assert sent_everything(client, list(NODES), 60)
            wait("the latest head final", lambda: 0 < tree_head(city.clearinghouse_address)
                 == tree_head(city.clearinghouse_address, cosigned=True))
            shared = tree_head(city.clearinghouse_address)
            wait("every district verified the shared history",
                 lambda: all(verified_size(addresses[n]) == shared for n in NODES))
            before = timebank(env, *monitor, "--json")
            assert before.returncode == 0, before.stdout + before.stderr
            assert json.loads(before.stdout.splitlines()[-1])["heads_checked"] >= 3
            for n in NODES:
                assert not alarm_kinds(addresses[n]), n

            # ---- the split: copy B of the clearinghouse; 鼓楼区 and 栖霞区 move to it
            with clearinghouse_copy(city, procs, tmp_path / "clearinghouse-copy-b") as copy_b:
                for n in (GL, QX):
                    procs.stop(n)
                    replace_line(city.node(n).config_file,
                                 f'address = "{city.clearinghouse_address}"',
                                 f'address = "{copy_b}"')
                    procs.start(n)
                    procs.wait_ready(n)
                # both copies take writes, different ones: more on A
                for _ in range(3):
                    enrol_elder(client, desks, JN, [], 600)
                enrol_elder(client, desks, GL, [], 600)
                assert sent_everything(client, list(NODES), 60)
                a_size, b_size = tree_head(city.clearinghouse_address), tree_head(copy_b)
                assert a_size > b_size > shared, (a_size, b_size, shared)

                # ---- each copy on its own passes the remote audit, as on main
                for address in (city.clearinghouse_address, copy_b):
                    alone = timebank(env, "audit", "--clearinghouse", address,
                                     "--clearinghouse-key", ch_key)
                    assert alone.returncode == 0, alone.stdout + alone.stderr

                # ---- the majority's heads become final on B; the minority's never on A
                wait("B's latest head final", lambda: tree_head(copy_b, cosigned=True)
                     == tree_head(copy_b))
                assert tree_head(city.clearinghouse_address, cosigned=True) <= shared
                wait("江宁区's finality alarm", lambda: "finality" in alarm_kinds(addresses[JN]),
                     FINALITY_SECONDS + 30)
                assert tree_head(city.clearinghouse_address, cosigned=True) <= shared
                wait("鼓楼区 without a finality alarm",
                     lambda: "finality" not in alarm_kinds(addresses[GL]))

                # ---- the nodes' comparison: every district holds fork evidence
                wait("every district sees the fork",
                     lambda: all("fork" in alarm_kinds(addresses[n]) for n in NODES))
                evidence_dir = tmp_path / "node-evidence"
                jn = timebank(env, "node", "--token", city.node(JN).operator_token, "check",
                              "--node", addresses[JN],
                              "--evidence-dir", str(evidence_dir))
                assert jn.returncode == 1, jn.stdout + jn.stderr
                assert "fork:" in jn.stdout and "finality:" in jn.stdout, jn.stdout
                gl = timebank(env, "node", "check", "--config", str(city.node(GL).config_file),
                              "--json")
                assert gl.returncode == 1, gl.stdout + gl.stderr
                gl_log = json.loads(gl.stdout)["log"]
                assert not gl_log["ok"] and {a["kind"] for a in gl_log["alarms"]} == {"fork"}
                files = sorted(evidence_dir.glob("fork-*.json"))
                assert files
                checked = [forks.check(forks.load(f.read_bytes()), bytes.fromhex(ch_key))
                           for f in files]
                assert any(e.conclusive for e in checked), [e.summary() for e in checked]
                for f in files:
                    again = timebank(env, "monitor", "check-evidence", str(f),
                                     "--clearinghouse-key", ch_key)
                    assert again.returncode == 0, again.stdout + again.stderr
                conclusive = next(f for f, e in zip(files, checked, strict=True) if e.conclusive)
                proof = timebank(env, "monitor", "check-evidence", str(conclusive),
                                 "--clearinghouse-key", ch_key, "--conclusive")
                assert proof.returncode == 0 and "conclusive" in proof.stdout, proof.stdout
                wrong_key = timebank(env, "monitor", "check-evidence", str(conclusive),
                                     "--clearinghouse-key", city_key)
                assert wrong_key.returncode == 1, wrong_key.stdout + wrong_key.stderr

                # ---- the outside monitor: both checkpoints kept, exit 1
                after = timebank(env, *monitor, "--json")
                assert after.returncode == 1, after.stdout + after.stderr
                summary = json.loads(after.stdout.splitlines()[-1])
                kinds = {f["kind"] for f in summary["findings"] if f["alarm"]}
                assert {"fork", "finality"} <= kinds, summary
                kept = sorted((monitor_dir / "evidence").glob("fork-*.json"))
                assert kept
                docs = [forks.check(forks.load(f.read_bytes()), bytes.fromhex(ch_key))
                        for f in kept]
                conclusive_docs = [e for e in docs if e.conclusive]
                assert conclusive_docs, [e.summary() for e in docs]
                # both checkpoints: 鼓楼区's head on B, and A's latest it is not a prefix of
                assert any({h.size for h in e.heads} == {b_size, a_size}
                           for e in conclusive_docs), [e.summary() for e in docs]
                assert all(len(e.heads) == 2 and e.heads[0].note != e.heads[1].note
                           for e in docs)

                # ---- a following monitor alerts on stderr
                follow = subprocess.Popen(
                    [sys.executable, "-m", "city", *monitor, "--follow", "--interval", "1"],
                    env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    text=True, encoding="utf-8")
                streams = Collected(follow)
                try:  # until it has said both, while it runs on
                    wait("the following monitor's alarms", lambda: streams.has(
                        "ALARM fork", "ALARM finality: the head of", running=follow), 60)
                finally:
                    follow.send_signal(signal.SIGTERM)
                    follow.wait(timeout=30)
                out, err = streams.finish()
                assert "ALARM fork" in err, (out, err)
                # its own finality bound, counted from when the one-shot run first saw it
                assert "ALARM finality: the head of" in err, (out, err)

                # ---- the remote audit with the districts' addresses fails, naming it
                audit = timebank(env, "audit", "--clearinghouse", city.clearinghouse_address,
                                 "--clearinghouse-key", ch_key, *nodes)
                assert audit.returncode == 1, audit.stdout + audit.stderr
                assert "district heads" in audit.stdout and "fork" in audit.stderr, audit
                assert any(addresses[n] in audit.stderr for n in (GL, QX)), audit.stderr
        finally:
            client.close()
