"""The compose city's one-shot set-up job (deploy/compose/setup.sh) run for real, without
a container engine: the folders its volumes would be are temporary ones, the database a
new one on the real PostgreSQL. It makes the CA and every certificate with `timebank
pki`, the clearinghouse on PostgreSQL, the city secret and policy, three nodes, and
admits each; run again it changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.deploy.guide import commands, problem
from tests.deploy.tools import DEPLOY
from tests.postgres import REQUIRE_POSTGRES, admin_engine, database_url

SETUP = DEPLOY / "compose" / "setup.sh"
DISTRICTS = ("320115", "320106", "320113")


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A new, empty PostgreSQL database (dropped afterwards)."""
    try:
        admin = admin_engine()
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as e:  # any failure means "no PostgreSQL here"
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL is required (TIMEBANK_REQUIRE_POSTGRES=1): {e}")
        pytest.skip("PostgreSQL is not reachable (set TIMEBANK_REQUIRE_POSTGRES=1 to fail)")
    name = f"deploy_setup_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield database_url(name)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _setup(root: Path, database: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMEBANK_")}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               PKI=str(root / "pki"), CITY=str(root / "city"),
               CH=str(root / "clearinghouse"), NODES=str(root / "nodes"),
               TIMEBANK_DATABASE_URL=database, TIMEBANK_NET_DEBIT_LIMIT="6000")
    return subprocess.run(["sh", str(SETUP)], cwd=root, env=env, capture_output=True,
                          text=True, check=False, timeout=600, stdin=subprocess.DEVNULL)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_set_up_job_makes_a_city_on_postgresql(tmp_path: Path, empty_database: str) -> None:
    missing = sorted({why for words in commands(SETUP.read_text(encoding="utf-8"))
                      if (why := problem(words)) is not None})
    assert not missing, "\n".join(missing)
    for folder in ("pki", "city", "clearinghouse", *(f"nodes/{d}" for d in DISTRICTS)):
        (tmp_path / folder).mkdir(parents=True)  # the volumes compose mounts
    first = _setup(tmp_path, empty_database)
    assert first.returncode == 0, first.stdout + first.stderr
    pki = tmp_path / "pki"
    for stem in ("ca", "clearinghouse", "observer-probe", *(f"node-{d}" for d in DISTRICTS)):
        assert (pki / f"{stem}.pem").exists() and (pki / f"{stem}.key").exists(), stem
    config = tmp_path / "clearinghouse" / "clearinghouse.toml"
    assert empty_database.rsplit("/", 1)[-1] in config.read_text(encoding="utf-8")
    again = _setup(tmp_path, empty_database)
    assert again.returncode == 0, again.stdout + again.stderr
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
                                 f"{os.environ['PATH']}"}
    listed = subprocess.run(["timebank", "clearinghouse", "positions", "-c", str(config),
                             "--json"], capture_output=True, text=True, check=True, env=env,
                            timeout=120, stdin=subprocess.DEVNULL)
    nodes = json.loads(listed.stdout)["nodes"]
    assert sorted((n["node_id"], n["net_debit_limit_minutes"]) for n in nodes) == \
        sorted((d, 6000) for d in DISTRICTS), listed.stdout
