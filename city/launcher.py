"""A whole city on this machine: one clearinghouse and its district nodes, each its own
process, each with its own SQLite file under one data directory (ADR 0005, "Process
model").

``layout`` creates (or finds again) the data directories, keys and ports, the city CA
and every certificate (``pki/``: the clearinghouse's, each node's, and an observer's for
whoever watches: tests, the demo, the monitor), admits every node and has the bureau
issue the city policy; every process serves TLS (the clearinghouse mutual TLS) unless
the city is laid out ``insecure``. ``CityLayout.channel`` is the one way a test or the
demo reaches a process; ``CityProcesses`` runs them as real
subprocesses that can be killed with SIGKILL and restarted. The 4-process demo, the crash
tests and the benchmark all start a city here, so a city is laid out one way only.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

import timebank
from city.pki.certs import SERVER, Subject
from city.pki.store import Authority
from clearinghouse import config as ch_config
from clearinghouse.bootstrap import city_key, init_city, key_info, open_app
from clearinghouse.bureau import issue_admission, issue_policy, publish_roster
from clearinghouse.domain.positions import DEFAULT_NET_DEBIT_LIMIT_MINUTES
from clearinghouse.usecases import admission, policies
from clearinghouse.usecases import claims as ch_claims
from node import config as node_config
from node.api.server import LINK_HEALTH_SERVICE
from node.bootstrap import init_data_dir, signing_identity
from node.cli.accounts import local_token
from node.cli.client import authorized, node_channel
from runtime import keyfiles
from runtime.server import channel_options
from runtime.tls import BUREAU, NODE, OBSERVER, ClientTls, TlsSettings, channel
from timebank import keys
from timebank.policy import DEFAULT_POLICY_TOML

HOST = "127.0.0.1"
CLEARINGHOUSE = "clearinghouse"
NODE_SERVICE = "timebank.v1.NodeService"
CLEARINGHOUSE_SERVICE = "timebank.v1.ClearinghouseService"
#: How long ``start_all`` waits, at most, for every node's link to come up.
LINK_READY_SECONDS = 15.0
DEV_CLOCK_ENV = "TIMEBANK_DEV_CLOCK_ALLOWED"
DEFAULT_READY_SECONDS = 30.0
DEFAULT_GRACE_SECONDS = 5.0
LOG_TAIL_LINES = 40
PKI = "pki"
#: The observer certificate the launcher's own clients (tests, the demo) present.
OBSERVER_NAME = "city"
#: The bureau operator certificate the demo's bureau console presents (it may close a
#: settlement period; ADR 0015).
BUREAU_OPERATOR = "demo-bureau"
#: Every process on this machine is reached at these names.
LOCAL_NAMES = (("localhost",), (HOST,))
#: In each node's data directory: its operator's session token (0600).
OPERATOR_TOKEN_FILE = "operator.token"
#: Environment overrides of the node's and the clearinghouse's configuration files; they
#: are dropped for the children so that the layout's files alone say where things are.
CONFIG_ENV_PREFIXES = tuple(dict.fromkeys(node_config.SCHEMA.env_prefixes()
                                          + ch_config.SCHEMA.env_prefixes()))


class LaunchError(RuntimeError):
    """The city cannot be laid out or a process did not come up; the message says why."""


@dataclass(frozen=True, slots=True)
class District:
    """A district: its 6-digit administrative division code and its name."""

    node_id: str
    name: str


DISTRICTS: tuple[District, ...] = (
    District("320115", "江宁区"),
    District("320106", "鼓楼区"),
    District("320113", "栖霞区"),
)


@dataclass(frozen=True, slots=True)
class NodeLayout:
    """One district node's place in the city: data directory, configuration, address."""

    district: District
    data_dir: Path
    config_file: Path
    address: str
    public_key: str  # the node's Ed25519 public key, hex, as admitted
    #: How a client reaches the node's API: TLS trusting the city CA (None: the city
    #: serves plaintext, --insecure).
    client_tls: ClientTls | None = None

    @property
    def node_id(self) -> str:
        return self.district.node_id

    # The city's one way in to a node's API (ADR 0016): its operator's session, minted on
    # the node's own database when the city was laid out.
    @property
    def operator_token(self) -> str:
        return (self.data_dir / OPERATOR_TOKEN_FILE).read_text(encoding="ascii").strip()

    def channel(self, token: str | None = None) -> grpc.Channel:
        """A channel to this node's API sending ``token`` (default: the operator's)."""
        return node_channel(self.address, self.client_tls,
                            self.operator_token if token is None else token)


@dataclass(frozen=True, slots=True)
class CityLayout:
    """Where everything of one city lives; what ``layout`` returns."""

    data_dir: Path
    clearinghouse_dir: Path
    clearinghouse_config: Path
    clearinghouse_address: str
    clearinghouse_public_key: str  # hex: what every node checks signatures with
    city_public_key: str  # hex: the city root key: every node checks the city's acts with it
    city_secret_file: Path
    clock_file: Path  # for `--dev-clock`; written by whoever moves the city's time
    logs_dir: Path
    nodes: tuple[NodeLayout, ...]
    #: The city CA's folder (``timebank pki``); None when the city is laid out insecure.
    pki_dir: Path | None = None
    #: More clearinghouse processes on the same (PostgreSQL) database: each its name
    #: (``clearinghouse-2``...), its configuration file and its address.
    replicas: tuple[tuple[str, Path, str], ...] = ()

    @property
    def clearinghouse_names(self) -> tuple[str, ...]:
        return (CLEARINGHOUSE, *(name for name, _, _ in self.replicas))

    @property
    def clearinghouse_target(self) -> str:
        """What the nodes dial: the one address, or every replica's as one gRPC target
        (``ipv4:HOST:PORT,HOST:PORT``), calls spread over those that answer."""
        return _target(self.clearinghouse_address, self.replicas)

    @property
    def insecure(self) -> bool:
        return self.pki_dir is None

    def client_tls(self, as_node: str | None = None, *,
                   bureau: bool = False) -> ClientTls | None:
        """How a client of this city's processes connects: trusting the city CA and
        presenting the observer certificate, ``as_node``'s certificate (to act as that
        district's node towards the clearinghouse) or, with ``bureau``, the bureau
        operator's; None when the city is insecure."""
        if self.pki_dir is None:
            return None
        ca = Authority(self.pki_dir)
        stem = (Subject(NODE, as_node, *LOCAL_NAMES) if as_node is not None
                else Subject(BUREAU, BUREAU_OPERATOR) if bureau
                else Subject(OBSERVER, OBSERVER_NAME)).file_stem
        return ClientTls(ca.ca_cert, ca.cert_file(stem), ca.key_file(stem))

    def client_env(self) -> dict[str, str]:
        """The environment a `timebank` tool run against this city needs to reach it as
        its observer (TIMEBANK_CA, TIMEBANK_CERT, TIMEBANK_KEY; TIMEBANK_INSECURE=1 when
        the city is insecure)."""
        tls = self.client_tls()
        if tls is None:
            return {"TIMEBANK_INSECURE": "1"}
        assert tls.cert is not None and tls.key is not None
        return {"TIMEBANK_CA": str(tls.ca), "TIMEBANK_CERT": str(tls.cert),
                "TIMEBANK_KEY": str(tls.key)}

    def channel(self, name: str, *, as_node: str | None = None,
                options: list[tuple[str, int]] | None = None) -> grpc.Channel:
        """A ready channel to the process ``name`` (``clearinghouse`` or a node id):
        TLS with the observer certificate, or ``as_node``'s (``client_tls``); to a node,
        every call carries its operator's session (``NodeLayout.channel``)."""
        if name not in self.clearinghouse_names and as_node is None:
            made = channel(self.address(name), self.client_tls(),
                           options=channel_options() if options is None else options)
            return authorized(made, self.node(name).operator_token)
        return channel(self.address(name), self.client_tls(as_node),
                       options=channel_options() if options is None else options)

    @property
    def names(self) -> tuple[str, ...]:
        """The process names: ``clearinghouse`` first, then the node ids."""
        return (*self.clearinghouse_names, *(n.node_id for n in self.nodes))

    def node(self, node_id: str) -> NodeLayout:
        for n in self.nodes:
            if n.node_id == node_id:
                return n
        raise KeyError(f"no node {node_id} in this city")

    def address(self, name: str) -> str:
        if name == CLEARINGHOUSE:
            return self.clearinghouse_address
        for replica, _, address in self.replicas:
            if name == replica:
                return address
        return self.node(name).address


# ------------------------------------------------------------------ layout


def _free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on the loopback now (held open together so the OS
    cannot hand the same one out twice)."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind((HOST, 0))
            ports.append(int(s.getsockname()[1]))
        return ports


def _port_source(base_port: int | None, count: int) -> Iterable[int]:
    return range(base_port, base_port + count) if base_port is not None else _free_ports(count)


def _ensure_city_secret(path: Path) -> bytes:
    """The one city secret every node shares (the same bytes in each node's copy)."""
    try:
        if not path.exists():
            keyfiles.write_city_secret(path, keyfiles.new_city_secret())
        return keyfiles.read_city_secret(path)
    except keyfiles.KeyFileError as e:
        raise LaunchError(str(e)) from None


def _layout_pki(pki_dir: Path, node_ids: Iterable[str]) -> Authority:
    """The city CA and every certificate the city's processes use, issued once each."""
    now = dt.datetime.now(dt.UTC)
    ca = (Authority(pki_dir) if (pki_dir / "ca.pem").exists()
          else Authority.init(pki_dir, "timebank city CA (local)", now))
    wanted = [Subject(SERVER, CLEARINGHOUSE, *LOCAL_NAMES), Subject(OBSERVER, OBSERVER_NAME),
              Subject(BUREAU, BUREAU_OPERATOR),
              *(Subject(NODE, n, *LOCAL_NAMES) for n in node_ids)]
    for subject in wanted:
        if not ca.cert_file(subject.file_stem).exists():
            ca.issue(subject, now)
    return ca


def _tls_of(ca: Authority | None, stem: str, *, crl: bool = False) -> TlsSettings:
    if ca is None:
        return TlsSettings(insecure=True)
    return TlsSettings(ca.ca_cert, ca.cert_file(stem), ca.key_file(stem),
                       ca.crl if crl else None)


def _check_tls(config_path: Path, found: TlsSettings, wanted: TlsSettings) -> None:
    if found != wanted:
        raise LaunchError(f"{config_path} names other TLS settings than this city's "
                          "(laid out with or without --insecure before?); remove the city's "
                          "directory to lay it out again")


def _layout_clearinghouse(ch_dir: Path, port: int, ca: Authority | None,
                          database_url: str = "") -> tuple[Path, str, str, str]:
    """Create or find the clearinghouse (on ``database_url``; empty: its SQLite file);
    return its config file, address, public key and the city root public key."""
    config_path = ch_dir / ch_config.CONFIG_NAME
    tls = _tls_of(ca, CLEARINGHOUSE, crl=True)
    if not config_path.exists():
        ch_dir.mkdir(parents=True, exist_ok=True)
        config_path.write_text(ch_config.render_config(database_url, f"{HOST}:{port}", tls,
                                                       metrics_listen=f"{HOST}:0"),
                               encoding="utf-8")
    init_city(ch_dir)  # keeps the file written above, makes keys and database
    config = ch_config.load_config(config_path)
    _check_tls(config_path, config.tls, tls)
    public = key_info(config.signing_key_file).public_key.hex()
    return config_path, config.listen, public, key_info(config.city_key_file).public_key.hex()


def _target(address: str, replicas: tuple[tuple[str, Path, str], ...]) -> str:
    if not replicas:
        return address
    return "ipv4:" + ",".join([address, *(a for _, _, a in replicas)])


def _layout_replicas(config_path: Path, ports: list[int]) -> tuple[tuple[str, Path, str], ...]:
    """A configuration file per further replica, beside the first's: the same file but
    for ``listen`` (a replica laid out before keeps its own). Every replica serves the
    same database with the same keys."""
    replicas = []
    for number, port in enumerate(ports, 2):
        path = config_path.with_name(f"replica-{number}.toml")
        if not path.exists():
            text = re.sub(r'(?m)^listen = .*$', f'listen = "{HOST}:{port}"',
                          config_path.read_text(encoding="utf-8"), count=1)
            path.write_text(text, encoding="utf-8")
        replicas.append((f"{CLEARINGHOUSE}-{number}", path, ch_config.load_config(path).listen))
    return tuple(replicas)


def _node_listen(data_dir: Path, district: District, port: int) -> str:
    """Where the district's node listens: as laid out before, or on ``port``."""
    existing = data_dir / district.node_id / "node.toml"
    return (node_config.load_config(existing).listen if existing.exists()
            else f"{HOST}:{port}")


def _layout_node(data_dir: Path, district: District, secret: bytes, listen: str,
                 ch_address: str, ch_public_key: str, city_public_key: str,
                 policy_text: str | None = None, peers: tuple[str, ...] = (),
                 ca: Authority | None = None) -> NodeLayout:
    node_dir = data_dir / district.node_id
    tls = _tls_of(ca, Subject(NODE, district.node_id, *LOCAL_NAMES).file_stem)
    # Every process of a city on one machine serves metrics on a port of its own
    # (the ``serving`` line says which: ``CityProcesses.metrics_address``).
    config_path = init_data_dir(node_dir, district.node_id, district.name, listen=listen,
                                metrics_listen=f"{HOST}:0",
                                city_secret=secret, clearinghouse_address=ch_address,
                                clearinghouse_public_key=ch_public_key,
                                city_public_key=city_public_key,
                                policy_text=policy_text, peer_nodes=peers, tls=tls)
    config = node_config.load_config(config_path)
    _check_tls(config_path, config.tls, tls)
    if config.city_secret_file.read_bytes() != secret:
        raise LaunchError(f"{config.city_secret_file} is not this city's secret")
    if (config.district, config.clearinghouse_address, config.clearinghouse_public_key,
            config.city_public_key) != (district.name, ch_address, ch_public_key,
                                        city_public_key):
        raise LaunchError(f"{config_path} names another district or clearinghouse than this "
                          "city's; remove the node's directory to lay it out again")
    _ensure_operator(config_path, node_dir / OPERATOR_TOKEN_FILE)
    return NodeLayout(district, node_dir, config_path, config.listen,
                      signing_identity(config)[1], None if ca is None else ClientTls(ca.ca_cert))


def _ensure_operator(config_path: Path, token_file: Path) -> None:
    """The node's operator account and a session for it, minted on its database (local
    access is the root of trust), kept in a file only this user can read."""
    if token_file.exists():
        return
    token = local_token(config_path)
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(token + "\n")


def _admit(ch_config_file: Path, nodes: Iterable[NodeLayout],
           net_debit_limit: int = DEFAULT_NET_DEBIT_LIMIT_MINUTES) -> None:
    """Admit each node as `timebank clearinghouse admit` does, and give a node whose net
    debit limit is 0 ``net_debit_limit`` minutes (as `timebank clearinghouse limit`
    does); an unchanged admission and a limit already set are left alone, so laying out
    again changes nothing."""
    config = ch_config.load_config(ch_config_file)
    app = open_app(config)
    try:
        root = city_key(config, app)
        for n in nodes:
            key = bytes.fromhex(n.public_key)
            old = app.query(admission.admission, n.node_id)
            if not (old is not None and not old.revoked and old.public_key == key
                    and old.district == n.district.name):
                serial = 1 if old is None else old.serial + 1
                certificate = issue_admission(root, n.node_id, n.district.name, key, serial,
                                              app.clock.now())
                app.execute(admission.admit, certificate, keys.public_key(root))
            if net_debit_limit and app.query(ch_claims.net_debit_limit, n.node_id) == 0:
                app.execute(ch_claims.set_net_debit_limit, n.node_id, net_debit_limit)
        publish_roster(app, root)
    finally:
        app.db.dispose()


def _issue_policy(ch_config_file: Path, text: str) -> None:
    """The bureau issues ``text`` as the city policy, in force now, as `timebank
    clearinghouse policy issue` does; a city that has a policy keeps it."""
    config = ch_config.load_config(ch_config_file)
    app = open_app(config)
    try:
        if app.query(policies.city_policies):
            return
        root = city_key(config, app)
        now = app.clock.now()
        app.execute(policies.issue, issue_policy(root, 1, text, now, now),
                    keys.public_key(root))
    finally:
        app.db.dispose()


def layout(data_dir: Path, districts: Iterable[District] = DISTRICTS, *,
           base_port: int | None = None,
           net_debit_limit: int = DEFAULT_NET_DEBIT_LIMIT_MINUTES,
           policy_text: str | None = None, insecure: bool = False,
           pki_dir: Path | None = None, clearinghouse_database: str = "",
           clearinghouse_replicas: int = 1) -> CityLayout:
    """Create (or find again) a city under ``data_dir``: the clearinghouse, one shared city
    secret, a node per district, every node admitted. Safe to run again: keys, secret and
    ports are kept. Ports are free ones on 127.0.0.1, or ``base_port`` (clearinghouse)
    and the ports after it (nodes, in order), chosen only when a directory is new.

    ``net_debit_limit`` (minutes) is given to every node whose limit is still 0 (a limit
    the bureau has set is kept; 0 leaves every limit as it is). ``policy_text`` is the
    policy TOML (default: the published one) the bureau issues as the city policy, in
    force at once, unless the city has one already, and every new node's local policy
    file; a node laid out before keeps its own file. Each new node's ``[peers] nodes``
    names every other district's node, so that every district compares its view of the
    log with the others'. ``insecure``: every process serves and calls plaintext (the
    bench's ``--insecure``); otherwise the city CA in ``pki_dir`` (default ``pki/`` in
    ``data_dir``; another city's, for two cities one CA trusts) issues every certificate.
    ``clearinghouse_database``: the clearinghouse's database URL when the city is new
    (empty: a SQLite file); ``clearinghouse_replicas`` clearinghouse processes serve it
    (more than one needs PostgreSQL), and every node dials them all as one target."""
    if not 1 <= clearinghouse_replicas <= 8:
        raise LaunchError("a city runs 1 to 8 clearinghouse replicas")
    if clearinghouse_replicas > 1 and not clearinghouse_database.startswith("postgresql"):
        raise LaunchError("clearinghouse replicas share one PostgreSQL database; name it")
    if isinstance(net_debit_limit, bool) or net_debit_limit < 0:
        raise LaunchError(f"a net debit limit is 0 or more minutes, not {net_debit_limit}")
    wanted = tuple(districts)
    if len({d.node_id for d in wanted}) != len(wanted):
        raise LaunchError("two districts share a node id")
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    logs_dir = data_dir / "logs"
    logs_dir.mkdir(exist_ok=True)
    ports = list(_port_source(base_port, clearinghouse_replicas + len(wanted)))
    ch_dir = data_dir / CLEARINGHOUSE
    ca = None if insecure else _layout_pki((pki_dir or data_dir / PKI).resolve(),
                                           (d.node_id for d in wanted))
    ch_file, ch_address, ch_public, city_public = _layout_clearinghouse(
        ch_dir, ports[0], ca, clearinghouse_database)
    replicas = _layout_replicas(ch_file, ports[1:clearinghouse_replicas])
    target = _target(ch_address, replicas)
    secret_file = data_dir / "city-secret"
    secret = _ensure_city_secret(secret_file)
    listens = {d.node_id: _node_listen(data_dir, d, port)
               for d, port in zip(wanted, ports[clearinghouse_replicas:], strict=True)}
    # Every node compares the log's heads with every other district's (split views).
    nodes = tuple(_layout_node(data_dir, d, secret, listens[d.node_id], target, ch_public,
                               city_public, policy_text, tuple(a for n, a in listens.items()
                                                  if n != d.node_id), ca)
                  for d in wanted)
    _admit(ch_file, nodes, net_debit_limit)
    _issue_policy(ch_file, DEFAULT_POLICY_TOML if policy_text is None else policy_text)
    return CityLayout(data_dir, ch_dir, ch_file, ch_address, ch_public, city_public,
                      secret_file, data_dir / "clock", logs_dir, nodes,
                      None if ca is None else ca.folder, replicas)


# ------------------------------------------------------------------ processes

#: Every process of a city on one machine serves its Prometheus endpoint on a free port
#: (the default ports would clash); its log's "serving" line says which.
METRICS_ENV = {"TIMEBANK_SERVER_METRICS_LISTEN": f"{HOST}:0"}
#: The port on a ``serving`` line, JSON (``"metrics_port": 9443``) or console
#: (``metrics_port=9443``), wherever the event stands on it.
_METRICS_PORT = re.compile(r"\bmetrics_port[\"=: ]+(\d+)")


def _child_env(dev_clock: bool, extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(CONFIG_ENV_PREFIXES)}
    env.update(METRICS_ENV)
    roots = [str(Path(__file__).resolve().parents[1]),
             str(Path(timebank.__file__).resolve().parents[1])]
    if env.get("PYTHONPATH"):
        roots.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(roots))  # runs without an install too
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    if dev_clock:
        env[DEV_CLOCK_ENV] = "1"
    env.update(extra)
    return env


def _tail(path: Path, offset: int, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(the log is empty)"


@dataclass(slots=True)
class _Running:
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    log_offset: int  # where this run's output starts in the log file


class CityProcesses:
    """Runs a laid-out city's processes: each in its own process group (so SIGKILL takes
    the whole process, as a crash would), output appended to ``logs/<name>.log``.

    ``dev_clock`` passes ``--dev-clock <layout.clock_file>`` and allows it in the
    environment. Leaving the ``with`` block stops everything.
    """

    def __init__(self, city: CityLayout, *, dev_clock: bool = False,
                 env: Mapping[str, str] | None = None) -> None:
        self.city = city
        self.dev_clock = dev_clock
        self._env = _child_env(dev_clock, env or {})
        self._running: dict[str, _Running] = {}

    @property
    def env(self) -> Mapping[str, str]:
        """The environment every process gets."""
        return self._env

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop_all()

    # -------------------------------------------------------------- naming

    def _check(self, name: str) -> None:
        if name not in self.city.names:
            raise KeyError(f"no process {name!r} in this city (known: "
                           f"{', '.join(self.city.names)})")

    def address(self, name: str) -> str:
        """The process's gRPC address, HOST:PORT."""
        self._check(name)
        return self.city.address(name)

    def log_file(self, name: str) -> Path:
        self._check(name)
        return self.city.logs_dir / f"{name}.log"

    def metrics_address(self, name: str) -> str | None:
        """Where the process serves Prometheus metrics, as its latest ``serving`` line
        says (a laid-out city's processes serve metrics on port 0 of their own; older
        layouts get it from ``METRICS_ENV``); None if it serves none."""
        text = self.log_file(name).read_text(encoding="utf-8", errors="replace")
        found = [m.group(1) for line in text.splitlines() if " serving" in line
                 and (m := _METRICS_PORT.search(line))]
        return f"{HOST}:{found[-1]}" if found and found[-1] != "0" else None

    def command(self, name: str) -> list[str]:
        """The command line that runs ``name``."""
        self._check(name)
        replicas = {replica: path for replica, path, _ in self.city.replicas}
        if name == CLEARINGHOUSE or name in replicas:
            argv = [sys.executable, "-m", "city", "clearinghouse", "serve", "--config",
                    str(replicas.get(name, self.city.clearinghouse_config))]
        else:
            argv = [sys.executable, "-m", "city", "node", "serve",
                    "--config", str(self.city.node(name).config_file)]
        if self.dev_clock:
            argv += ["--dev-clock", str(self.city.clock_file)]
        return argv

    def pid(self, name: str) -> int:
        """The running process's id (also its process group id)."""
        return self._get(name).process.pid

    def is_running(self, name: str) -> bool:
        run = self._running.get(name)
        return run is not None and run.process.poll() is None

    def _get(self, name: str) -> _Running:
        self._check(name)
        run = self._running.get(name)
        if run is None:
            raise LaunchError(f"{name} was not started")
        return run

    # -------------------------------------------------------------- lifecycle

    def start(self, name: str) -> None:
        """Spawn ``name``; it is serving once ``wait_ready`` returns."""
        if self.is_running(name):
            raise LaunchError(f"{name} is already running (pid {self.pid(name)})")
        self._reap(name)
        path = self.log_file(name)
        log = path.open("ab")
        offset = log.tell()
        log.write(f"---- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {name}\n".encode())
        log.flush()
        try:
            process = subprocess.Popen(
                self.command(name), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env=self._env, cwd=self.city.data_dir,
                start_new_session=True)
        except BaseException:
            log.close()
            raise
        self._running[name] = _Running(process, log, offset)

    def start_all(self, *, timeout: float | None = DEFAULT_READY_SECONDS) -> None:
        """Start the clearinghouse and every node at once; wait until all serve unless
        ``timeout`` is None."""
        for name in self.city.names:
            self.start(name)
        if timeout is not None:
            deadline = time.monotonic() + timeout
            for name in self.city.names:
                self.wait_ready(name, max(0.1, deadline - time.monotonic()))
            # the nodes started beside the clearinghouse: one whose first connection found
            # it not yet listening waits out gRPC's reconnect backoff, and would refuse
            # what needs the link (an enrolment asks the directory) until then
            linked = min(LINK_READY_SECONDS, max(0.1, deadline - time.monotonic()))
            until = time.monotonic() + linked
            for node in self.city.nodes:
                self.wait_ready(node.node_id, max(0.1, until - time.monotonic()),
                                service=LINK_HEALTH_SERVICE, required=False)

    def wait_ready(self, name: str, timeout: float = DEFAULT_READY_SECONDS, *,
                   service: str = "", required: bool = True) -> None:
        """Wait until the process's gRPC health service (by default its API's) says
        SERVING; raise LaunchError with the tail of its log if it exits or does not get
        there within ``timeout`` (unless not ``required``: then just return)."""
        run = self._get(name)
        service = service or (CLEARINGHOUSE_SERVICE if name in self.city.clearinghouse_names
                              else NODE_SERVICE)
        deadline = time.monotonic() + timeout
        with self.city.channel(name) as ready:
            stub = health_pb2_grpc.HealthStub(ready)
            while True:
                code = run.process.poll()
                if code is not None:
                    raise LaunchError(self._failure(name, f"exited with code {code}"))
                try:
                    answer = stub.Check(health_pb2.HealthCheckRequest(service=service),
                                        timeout=0.5)
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() >= deadline:
                    if not required:
                        return
                    raise LaunchError(self._failure(
                        name, f"is not serving on {self.address(name)} after {timeout:g} s"))
                time.sleep(0.1)

    def _failure(self, name: str, what: str) -> str:
        run = self._get(name)
        run.log.flush()
        tail = _tail(self.log_file(name), run.log_offset)
        return f"{name} {what}; the end of {self.log_file(name)}:\n{tail}"

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int | None:
        """Send ``sig`` to the process's whole group. After SIGKILL wait for it and return
        its exit code; after another signal return at once (None if it still runs)."""
        run = self._get(name)
        if run.process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(run.process.pid, sig)
            if sig == signal.SIGKILL:
                run.process.wait()
        return run.process.poll()

    def stop(self, name: str, grace: float = DEFAULT_GRACE_SECONDS) -> int | None:
        """SIGTERM, then SIGKILL if it has not stopped within ``grace`` seconds."""
        if name not in self._running:
            return None
        self.kill(name, signal.SIGTERM)
        try:
            self._running[name].process.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill(name, signal.SIGKILL)
        return self._reap(name)

    def restart(self, name: str, timeout: float | None = DEFAULT_READY_SECONDS) -> None:
        """Stop ``name`` if it runs, start it again, and wait until it serves (unless
        ``timeout`` is None)."""
        self.stop(name)
        self.start(name)
        if timeout is not None:
            self.wait_ready(name, timeout)

    def stop_all(self, grace: float = DEFAULT_GRACE_SECONDS) -> None:
        """SIGTERM to every process at once, SIGKILL to those left after ``grace``."""
        for name in list(self._running):
            self.kill(name, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for name in list(self._running):
            try:
                self._running[name].process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill(name, signal.SIGKILL)
            self._reap(name)

    def _reap(self, name: str) -> int | None:
        """Forget a finished process: make sure nothing of its group is left, close its
        log; return its exit code."""
        run = self._running.pop(name, None)
        if run is None:
            return None
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(run.process.pid, signal.SIGKILL)  # any grandchild it left behind
        code = run.process.wait()
        run.log.close()
        return code


#: How long a web console may take to answer its health page.
CONSOLE_START_SECONDS = 30


def end_process(process: subprocess.Popen[bytes], grace: float = 10.0) -> int:
    """Stop a child the launcher started beside the city (a console, a monitor): SIGTERM,
    then SIGKILL after ``grace`` seconds; its exit code."""
    process.terminate()
    try:
        return process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


@contextmanager
def console_serving(node_address: str, options: Sequence[str], log: Path
                    ) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`timebank console serve --node node_address OPTIONS…` on a free port of the
    loopback, its output in ``log``: its address once /healthz answers, and the process
    (stopped with SIGTERM when the block ends; its exit code is then read from it)."""
    [port] = _free_ports(1)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "city.cli", "console", "serve", "--node", node_address,
             "--listen", f"{HOST}:{port}", *options], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + CONSOLE_START_SECONDS
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise LaunchError(f"the web console for {node_address} did not start; "
                                      f"see {log}") from None
                time.sleep(0.1)
        yield url, process
    finally:
        end_process(process)
