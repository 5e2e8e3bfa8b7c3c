"""Shared fixtures: every storage test runs on SQLite and on a real PostgreSQL.

PostgreSQL tests make their own database (from a migrated template) and drop it.
With TIMEBANK_REQUIRE_POSTGRES=1 (as in CI) an unreachable PostgreSQL fails the
run instead of skipping those tests.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher, Type
from hypothesis import settings
from sqlalchemy import create_engine, text

from node.domain.clock import ManualClock
from node.domain.policy import DEFAULT_POLICY_TOML, load_policy
from node.storage import migrate
from node.storage.db import Database
from node.storage.repo import Repo
from node.usecases import logins
from node.usecases.app import NodeApp, NodeIdentity
from node.usecases.ledger import initialise
from tests.pki import city_ca, tls_pair  # noqa: F401 - fixtures every package uses
from tests.postgres import admin_engine, database_url, fresh_database, migrated_template
from tests.sqlite import migrated_sqlite

#: Rich renders to the terminal's width; tests read what it printed, so they all see one
#: width, whatever terminal (or pytest-xdist worker) they run in.
os.environ["COLUMNS"] = "120"
#: Metrics are on by default at fixed ports (node 9443, clearinghouse 9400): every server
#: a test starts, in this process or a child, takes a free port instead, so that tests
#: running side by side never fight over one.
os.environ.setdefault("TIMEBANK_SERVER_METRICS_LISTEN", "127.0.0.1:0")


def _one_bytecode_cache_per_run() -> None:
    """Compile each module once per test run, not once per process.

    CI runs with PYTHONDONTWRITEBYTECODE=1 (.ci/run), so that nothing is written into
    the checkout or the virtualenv. Then every process the tests start (each `timebank`
    command and server, each xdist worker) compiled the project, and every library it
    imports that has no .pyc, from source again: ~0.1 to 0.2 s of CPU a command.
    Instead, bytecode goes to one temporary folder (PYTHONPYCACHEPREFIX), made here in
    the first pytest process and inherited by the workers and every process they start;
    it is removed when that process exits. Nothing is written elsewhere, and without
    PYTHONDONTWRITEBYTECODE, Python's own caching is left as it is.
    """
    if not os.environ.get("PYTHONDONTWRITEBYTECODE") or os.environ.get("PYTHONPYCACHEPREFIX"):
        return
    cache = tempfile.mkdtemp(prefix="timebank-tests-bytecode-")
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    os.environ["PYTHONPYCACHEPREFIX"] = cache
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    sys.pycache_prefix = cache
    sys.dont_write_bytecode = False


_one_bytecode_cache_per_run()

#: Property tests have no wall-clock deadline: on a shared 2-core machine an example's
#: time says nothing about the code, and speed is measured in bench/, not in tests.
settings.register_profile("timebank", deadline=None)
settings.load_profile("timebank")

#: argon2id at its smallest cost, for the tests' own process only. Production's
#: ``node.usecases.logins.HASHER`` (OWASP minimum, ~20 ms a hash) is left as defined:
#: ``PRODUCTION_HASHER`` is it, tests/node/usecases/test_logins.py checks its parameters,
#: and every `timebank` process a test starts hashes with it. In-process, the tests make
#: ~1000 hashes a run (logins, sessions, codes): ~20 s of CPU at the production cost.
TEST_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, type=Type.ID)
PRODUCTION_HASHER = logins.HASHER


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every xdist worker starts on the modules with a test marked ``slow``.

    xdist's ``--dist worksteal`` (pyproject.toml) hands each worker an equal run of the
    collected tests, in order, and a worker that runs out takes the far end of another's.
    Dealing the slow modules out to the starts of those runs means the run ends on short
    tests: a minute-long test started last keeps one worker busy while the other has
    nothing left to take. A module's tests stay together and in order (module fixtures),
    and so do the other tests.
    """
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    slow_paths = {item.path for item in items if item.get_closest_marker("slow")}
    modules: dict[Path, list[pytest.Item]] = {}
    for item in items:
        if item.path in slow_paths:
            modules.setdefault(item.path, []).append(item)
    heads: list[list[pytest.Item]] = [[] for _ in range(workers)]
    for module in modules.values():  # each to the worker with the fewest slow tests yet
        min(heads, key=lambda head: sum(1 for i in head if i.get_closest_marker("slow"))
            ).extend(module)
    rest = [item for item in items if item.path not in slow_paths]
    ordered: list[pytest.Item] = []
    remaining = len(items)
    for n, head in enumerate(heads):
        share = remaining // (workers - n)  # as worksteal splits the tests at the start
        remaining -= share
        taken = max(0, share - len(head))
        ordered += head + rest[:taken]
        del rest[:taken]
    items[:] = ordered + rest


@pytest.fixture(autouse=True, scope="session")
def cheap_password_hashes() -> Iterator[None]:
    """Hash passwords and codes with ``TEST_HASHER`` in this process (see above)."""
    logins.HASHER = TEST_HASHER
    yield
    logins.HASHER = PRODUCTION_HASHER


CITY_SECRET = b"test-city-secret-0123456789abcdef-0123"
NODE_ID, DISTRICT = "320115", "江宁区"





@pytest.fixture(scope="session")
def pg_template() -> Iterator[str | None]:
    """A migrated node template database, or None when PostgreSQL is not reachable."""
    yield from migrated_template("tb_tpl", migrate.upgrade)


@pytest.fixture
def pg_url(pg_template: str | None) -> Iterator[str]:
    """A fresh, migrated node PostgreSQL database for one test."""
    yield from fresh_database(pg_template, "tb")


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database URL, once per storage engine."""
    if request.param == "sqlite":
        return migrated_sqlite(tmp_path / "node.sqlite3")
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def node_app(db_url: str, clock: ManualClock) -> Iterator[NodeApp]:
    """A freshly initialised node (江宁区 320115) with the default policy and a manual clock."""
    yield from make_node_app(db_url, clock)


def make_node_app(db_url: str, clock: ManualClock, policy_toml: str = DEFAULT_POLICY_TOML,
                  ) -> Iterator[NodeApp]:
    policy = load_policy(policy_toml)
    node = NodeIdentity(NODE_ID, DISTRICT, CITY_SECRET)
    db = Database(db_url)
    with db.write() as conn:
        initialise(Repo(conn), node, policy.digest)
    app = NodeApp(db, policy, clock, node)
    yield app
    db.dispose()


@pytest.fixture
def policy_app(db_url: str, clock: ManualClock) -> Iterator[Callable[[str], NodeApp]]:
    """Open a node on this test's database with a policy of the test's choosing (once)."""
    opened: list[Iterator[NodeApp]] = []

    def open_with(policy_toml: str) -> NodeApp:
        assert not opened, "one node per test database"
        gen = make_node_app(db_url, clock, policy_toml)
        opened.append(gen)
        return next(gen)

    yield open_with
    for gen in opened:
        next(gen, None)  # disposes the engines


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file to copy: a fresh database costs a file copy, not a migration."""
    path = tmp_path_factory.mktemp("sqlite-template") / "node.sqlite3"
    migrated_sqlite(path)
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def db_factory(request: pytest.FixtureRequest, tmp_path: Path,
               sqlite_template: Path) -> Iterator[Callable[[], tuple[str, Callable[[], None]]]]:
    """Many fresh migrated databases of one engine: ``url, release = db_factory()``.

    For hypothesis state machines, which need an empty database per example. SQLite:
    a copy of a migrated file. PostgreSQL: a database made from the session template;
    a released one is emptied (DELETE, ~10 ms, where CREATE DATABASE takes ~0.4 s) and
    handed out again, so ids keep counting up across examples. All are dropped at teardown.
    """
    counter = itertools.count()
    if request.param == "sqlite":
        def make() -> tuple[str, Callable[[], None]]:
            path = tmp_path / f"node-{next(counter)}.sqlite3"
            shutil.copyfile(sqlite_template, path)

            def release() -> None:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)

            return f"sqlite:///{path}", release

        yield make
        return

    template = request.getfixturevalue("pg_template")
    if template is None:
        pytest.skip("PostgreSQL is not reachable (set TIMEBANK_REQUIRE_POSTGRES=1 to fail)")
    from node.storage.schema import Base

    admin = admin_engine()
    created: list[str] = []
    free: list[str] = []
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]

    def make_pg() -> tuple[str, Callable[[], None]]:
        if free:
            name = free.pop()
        else:
            name = f"tb_{uuid.uuid4().hex[:16]}"
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
            created.append(name)

        def release() -> None:
            engine = create_engine(database_url(name))
            try:
                with engine.begin() as conn:
                    for table in tables:
                        conn.execute(text(f"DELETE FROM {table}"))
            finally:
                engine.dispose()
            free.append(name)

        return database_url(name), release

    yield make_pg
    with admin.connect() as conn:
        for name in created:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()

