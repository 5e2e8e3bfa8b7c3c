"""The Chinese guide's first hour, run as written: real processes, TLS from `timebank
pki`, every marked block in order, until a cross-district redemption completes.

What the test adds is environment only: a temporary folder to work in, free ports in
place of the documented ones, a password for the accounts the guide makes
(TIMEBANK_PASSWORD: the guide's ``--password`` asks a person for one), a folder for
the sessions, and a simulated clock every process reads (``--dev-clock`` with
TIMEBANK_DEV_CLOCK_ALLOWED=1), moved forward where the guide says time passes (the
publicity period). Each `serve` block runs in the background until the end; the
variables a block sets (the keys it read) reach the blocks after it, as in one terminal.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO

import pytest

from runtime import devclock, healthcheck
from runtime.tls import ClientTls
from tests.deploy.guide import GUIDES, Block, blocks, logical_lines

pytestmark = pytest.mark.slow

#: The most seconds a served process may take to say SERVING, an `until` block to
#: see its word (the node's link retries within seconds), and one block to run (a loaded
#: machine takes seconds to start each `timebank`).
READY_SECONDS = 60.0
UNTIL_SECONDS = 120.0
BLOCK_SECONDS = 600.0
_ADDRESS = re.compile(r"127\.0\.0\.1:(\d{2,5})\b")
_ASSIGNED = re.compile(r"^(?:export\s+)?([A-Z_][A-Z0-9_]*)=", re.M)
#: Environment that would make the processes read another configuration than the
#: guide's files say.
_CONFIG_ENV = ("TIMEBANK_NODE_", "TIMEBANK_SERVER_", "TIMEBANK_LOG_", "TIMEBANK_CLEARINGHOUSE_",
               "TIMEBANK_CA", "TIMEBANK_CERT", "TIMEBANK_KEY", "TIMEBANK_TOKEN",
               "TIMEBANK_INSECURE", "TIMEBANK_PKI_DIR")


#: Where the walk's ports are drawn from: below the kernel's ephemeral range, from which
#: outgoing connections and port-0 binds (every other test's servers) take theirs, so
#: nothing else on the machine takes one of them in the minutes between choosing and
#: serving.
_PORTS_FROM = 20000


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _free_ports(count: int) -> list[int]:
    """``count`` ports free now, outside the ephemeral range where it leaves room."""
    low = _ephemeral_low()
    pool = list(range(_PORTS_FROM, low)) if low - _PORTS_FROM >= 10 * count else []
    random.shuffle(pool)
    out: list[int] = []
    with ExitStack() as stack:
        for port in pool:
            if len(out) == count:
                break
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            out.append(port)
        while len(out) < count:  # no room below the range: any free port
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind(("127.0.0.1", 0))
            out.append(int(s.getsockname()[1]))
    return out


@dataclass
class Walk:
    """One run of a guide's marked blocks in ``root``."""

    root: Path
    steps: list[Block]
    ports: dict[str, str] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)
    served: list[tuple[subprocess.Popen[bytes], IO[bytes], Path]] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)

    @property
    def clock(self) -> Path:
        return self.root / "clock"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_CONFIG_ENV)}
        env.update(
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            HOME=str(self.root / "home"), XDG_STATE_HOME=str(self.root / "state"),
            TIMEBANK_PASSWORD="walkthrough-password-8x",
            TIMEBANK_DEV_CLOCK_ALLOWED="1", COLUMNS="120", PYTHONIOENCODING="utf-8",
            # metrics on a free port each (port 0), whichever scheme the service reads
            TIMEBANK_SERVER_METRICS_LISTEN="127.0.0.1:0",
            TIMEBANK_CLEARINGHOUSE_METRICS_LISTEN="127.0.0.1:0")
        env.update(self.variables)
        return env

    def local(self, text: str) -> str:
        """``text`` with every documented port replaced by this run's free port."""
        return _ADDRESS.sub(lambda m: f"127.0.0.1:{self.ports[m.group(1)]}", text)

    def plan_ports(self) -> None:
        documented = sorted({p for b in self.steps for p in _ADDRESS.findall(b.text + b.arg)})
        self.ports = dict(zip(documented, map(str, _free_ports(len(documented))), strict=True))

    # ------------------------------------------------------------------ steps

    def run(self, number: int, block: Block) -> str:
        if block.mark == "after":
            devclock.advance(self.clock, timedelta(seconds=int(block.arg)))
        if block.mark == "serve":
            self.serve(number, block)
            return ""
        if block.mark == "until":
            deadline = time.monotonic() + UNTIL_SECONDS
            while True:
                out = self.shell(number, block.text)
                if block.arg in out:
                    return out
                if time.monotonic() > deadline:
                    pytest.fail(f"step {number}: no {block.arg!r} after {UNTIL_SECONDS:g} s:"
                                f"\n{block.text}\n{out}\n{self.logs()}")
                time.sleep(0.5)
        return self.shell(number, block.text)

    def shell(self, number: int, text: str) -> str:
        names = sorted(set(_ASSIGNED.findall(text)))
        state = self.root / "variables.json"
        keep = ("python3 -c 'import json, os, sys; json.dump({n: os.environ.get(n, \"\") "
                "for n in sys.argv[2:]}, open(sys.argv[1], \"w\"))'")
        script = (f"set -euo pipefail\nset -a\n{self.local(text)}\n"
                  f"{keep} {state} {' '.join(names)}\n")
        done = subprocess.run(["bash", "-c", script], cwd=self.root, env=self.env(),
                              capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=BLOCK_SECONDS, check=False)
        out = done.stdout + done.stderr
        self.transcript.append(f"---- step {number}\n{text}\n{out}")
        if done.returncode != 0:
            pytest.fail(f"step {number} exited {done.returncode}:\n{text}\n{out}\n{self.logs()}")
        self.variables.update(json.loads(state.read_text(encoding="utf-8")))
        return out

    def serve(self, number: int, block: Block) -> None:
        (line,) = logical_lines(self.local(block.text))
        address = self.local(block.arg)
        env = self.env()
        if "clearinghouse serve" in line:  # where `clearinghouse init` wrote 7400
            env["TIMEBANK_SERVER_LISTEN"] = env["TIMEBANK_CLEARINGHOUSE_LISTEN"] = address
        log_path = self.root / f"serve-{number}.log"
        log = log_path.open("ab")
        process = subprocess.Popen(
            ["bash", "-c", f"{line} --dev-clock {self.clock}"], cwd=self.root, env=env,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        self.served.append((process, log, log_path))
        pki = self.root / "pki"
        tls = ClientTls(pki / "ca.pem", pki / "node-320115.pem", pki / "node-320115.key")
        deadline = time.monotonic() + READY_SECONDS
        while (why := healthcheck.check(address, tls, timeout=2)) is not None:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"step {number}: {line} is not serving ({why}):\n{self.logs()}")
            time.sleep(0.2)

    def logs(self) -> str:
        tails = []
        for _, log, path in self.served:
            log.flush()
            text = path.read_text(encoding="utf-8", errors="replace").splitlines()
            tails.append(f"== {path.name}\n" + "\n".join(text[-25:]))
        return "\n".join(tails)

    def stop(self) -> None:
        for process, _, _ in self.served:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process, log, _ in self.served:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            log.close()

    def json_of(self, *words: str) -> object:
        done = subprocess.run(["timebank", *map(self.local, words), "--json"], cwd=self.root,
                              env=self.env(), capture_output=True, text=True, check=True,
                              stdin=subprocess.DEVNULL, timeout=BLOCK_SECONDS)
        return json.loads(done.stdout)


@pytest.mark.timeout(1800)
def test_the_chinese_guide_reaches_a_cross_district_redemption(tmp_path: Path) -> None:
    steps = [b for b in blocks(GUIDES["zh"]) if b.mark is not None]
    assert [b.mark for b in steps].count("serve") == 3
    walk = Walk(tmp_path, steps)
    walk.plan_ports()
    (tmp_path / "home").mkdir()
    try:
        for number, block in enumerate(steps, 1):
            walk.run(number, block)
        # what the guide promised: the claim completed on both sides, the hours moved
        gulou, jiangning = "127.0.0.1:7444", "127.0.0.1:7443"
        for node in (gulou, jiangning):
            found = walk.json_of("node", "claims", "--node", node)
            assert isinstance(found, dict)
            (claim,) = found["claims"]
            assert (claim["kind"], claim["state"], claim["posted_minutes"]) == \
                ("redemption", "completed", 45), claim
        daughter = walk.json_of("node", "balance", "1", "--node", jiangning)
        assert isinstance(daughter, dict)
        assert (daughter["total_minutes"], daughter["held_minutes"]) == (45, 0)
    finally:
        walk.stop()
