"""A whole city in one test process: a real clearinghouse gRPC server on 127.0.0.1 and
district nodes, each with its own SQLite database and its real clearing link (sender and
subscriber threads, Ed25519 keys). One manual clock drives them all.

The cross-process version, with kill -9, is in tests/city.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from city.pki.certs import SERVER
from city.pki.store import Authority
from clearinghouse.api.server import ExpirySweep, RunningServer, start_server
from clearinghouse.bureau import issue_admission, publish_roster
from clearinghouse.storage import migrate as ch_migrate
from clearinghouse.storage.db import Database as ChDatabase
from clearinghouse.usecases import admission
from clearinghouse.usecases import claims as ch_claims
from clearinghouse.usecases.app import ClearinghouseApp
from node.domain.clock import ManualClock
from node.domain.policy import DEFAULT_POLICY_TOML, load_policy
from node.link.clearing_link import ClearingLink
from node.storage.db import Database
from node.storage.repo import Repo
from node.usecases import claims
from node.usecases.app import NodeApp, NodeIdentity
from node.usecases.ledger import initialise
from runtime.tls import NODE, OBSERVER, ClientTls, channel
from tests.clearinghouse.conftest import ch_db_url, ch_pg_template, ch_pg_url  # noqa: F401
from tests.conftest import CITY_SECRET
from tests.pki import client_tls, issue, server_tls
from tests.sqlite import migrated_sqlite
from timebank.keys import public_key
from timebank.v1 import clearing_pb2, clearing_pb2_grpc

CITY_ROOT = SigningKey(b"federation-city-root-key".ljust(32, b"."))
CH_KEY = SigningKey(b"federation-clearinghouse-key".ljust(32, b"."))
DISTRICTS = {"320115": "江宁区", "320106": "鼓楼区", "320113": "栖霞区"}
LIMIT = 100_000


@dataclass
class District:
    node_id: str
    name: str
    app: NodeApp
    link: ClearingLink
    key: SigningKey


@dataclass
class City:
    ch: ClearinghouseApp
    server: RunningServer
    sweep: ExpirySweep
    clock: ManualClock
    nodes: dict[str, District] = field(default_factory=dict)
    #: How a test reads the clearinghouse: None for a plaintext city, else an observer's
    #: certificate of the city CA.
    observer: ClientTls | None = None

    def __getitem__(self, node_id: str) -> District:
        return self.nodes[node_id]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def positions(self) -> clearing_pb2.GetPositionsResponse:
        with channel(self.address, self.observer) as ch:
            stub = clearing_pb2_grpc.ClearinghouseServiceStub(ch)
            return stub.GetPositions(clearing_pb2.GetPositionsRequest(), timeout=5)

    def settle(self, timeout: float = 15.0) -> None:
        """Wait until every node has sent everything, applied everything queued for it
        (the clearinghouse's queues are drained) and asked the city directory about
        every order whose payer moved."""
        deadline = time.monotonic() + timeout

        def quiet() -> bool:
            return all(v.unsent_messages == 0 and v.awaiting_home == 0
                       for v in (d.app.query(claims.clearing_view)
                                 for d in self.nodes.values()))

        while time.monotonic() < deadline:
            if quiet() and all(self.ch.query(lambda tx, n=n: tx.repo.last_delivery_seq(n))
                               == d.app.query(claims.last_applied_seq)
                               for n, d in self.nodes.items()) and quiet():
                return
            time.sleep(0.02)
        raise AssertionError("the city did not settle: " + ", ".join(
            f"{n}: {d.app.query(claims.clearing_view)}" for n, d in self.nodes.items()))

    def wait_for(self, condition: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError("condition not met in time")
            time.sleep(0.02)


def _node_app(tmp: Path, node_id: str, clock: ManualClock,
              policy_toml: str = DEFAULT_POLICY_TOML) -> NodeApp:
    db = Database(migrated_sqlite(tmp / f"{node_id}.sqlite3"))
    policy = load_policy(policy_toml)
    node = NodeIdentity(node_id, DISTRICTS[node_id], CITY_SECRET, federated=True,
                        city_key=public_key(CITY_ROOT))
    with db.write() as conn:
        initialise(Repo(conn), node, policy.digest)
    return NodeApp(db, policy, clock, node)


@pytest.fixture
def city(tmp_path: Path) -> Iterator[City]:
    yield from make_city(tmp_path, f"sqlite:///{tmp_path / 'ch.sqlite3'}")


def make_city(tmp_path: Path, ch_url: str, *, local_policies: Mapping[str, str] | None = None,
              city_keyed: Collection[str] = (), ca: Authority | None = None,
              presents: Mapping[str, str] | None = None) -> Iterator[City]:
    """``local_policies``: a node's own policy file, by node id (default: the published
    one). ``city_keyed``: the nodes configured with the city public key, which fetch and
    run the city-signed policy. ``ca``: the city serves mutual TLS with certificates of
    this CA, each node's link presenting its own, or the one ``presents`` names for it
    (another district's certificate); None: plaintext."""
    clock = ManualClock()
    ch_file = Path(ch_url.removeprefix("sqlite:///"))
    if ch_url.startswith("sqlite:///") and not ch_file.exists():
        migrated_sqlite(ch_file, "clearinghouse")  # a copy: upgrading it finds nothing to do
    ch_db = ChDatabase(ch_url)
    ch_migrate.upgrade(ch_db.writer)
    ch = ClearinghouseApp(ch_db, clock)
    keys = {n: SigningKey(f"federation-node-{n}".encode().ljust(32, b".")) for n in DISTRICTS}
    for node_id, name in DISTRICTS.items():
        cert = issue_admission(CITY_ROOT, node_id, name, public_key(keys[node_id]), 1,
                               clock.now())
        ch.execute(admission.admit, cert, public_key(CITY_ROOT))
        ch.execute(ch_claims.set_net_debit_limit, node_id, LIMIT)
    publish_roster(ch, CITY_ROOT)
    leaves = {} if ca is None else {n: issue(ca, NODE, n) for n in DISTRICTS}
    server = start_server(ch, CH_KEY, "127.0.0.1:0", tls=None if ca is None else server_tls(
        ca, issue(ca, SERVER, "clearinghouse")))
    sweep = ExpirySweep(ch, interval=0.05)
    sweep.start()
    city = City(ch, server, sweep, clock, observer=None if ca is None else client_tls(
        ca, issue(ca, OBSERVER, "tests")))
    for node_id, name in DISTRICTS.items():
        app = _node_app(tmp_path, node_id, clock,
                        (local_policies or {}).get(node_id, DEFAULT_POLICY_TOML))
        link = ClearingLink(app, city.address, public_key(CH_KEY), keys[node_id],
                            city_public_key=(public_key(CITY_ROOT) if node_id in city_keyed
                                             else None),
                            tls=None if ca is None else client_tls(
                                ca, leaves[(presents or {}).get(node_id, node_id)]))
        link.start()
        city.nodes[node_id] = District(node_id, name, app, link, keys[node_id])
    for d in city.nodes.values():  # the city's acts, verified, before anything is claimed
        d.link.refresh_admissions()
    try:
        yield city
    finally:
        for d in city.nodes.values():
            d.link.stop()
        sweep.stop()
        server.stop(1)
        for d in city.nodes.values():
            d.app.db.dispose()
        ch_db.dispose()
