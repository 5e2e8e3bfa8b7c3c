"""The node's configuration: a TOML file, each setting overridable by environment.

``TIMEBANK_<SECTION>_<KEY>`` overrides ``[section] key`` (e.g.
TIMEBANK_NODE_DATABASE_URL). Relative paths are taken from the file's folder. Unknown
tables or settings are refused (``runtime.config``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from runtime.config import Tables, is_host_port, is_target, read_settings, resolve_path, toml_string
from runtime.errors import ConfigError
from runtime.tls import (
    NO_TLS,
    TLS_SETTINGS,
    TLS_TABLE,
    ClientTls,
    ServerTls,
    TlsSettings,
    render_tls,
)

MAX_MESSAGE_BYTES_LIMIT = 4 * 1024 * 1024
#: The most peer districts a node compares tree heads with (each is called every round).
MAX_PEERS = 32
DEFAULT_PEER_CHECK_SECONDS = 15
#: How long a head the node verified may wait for a quorum's cosignatures before the
#: node raises the finality alarm: long enough for every witness to come round a few
#: times (they look every 2 s) and for a district restarting, short enough that a split
#: view is seen within minutes.
DEFAULT_FINALITY_SECONDS = 300
#: How often a node looks for a settlement statement (issue 16), by default.
DEFAULT_SETTLEMENT_SECONDS = 30
MAX_FINALITY_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node_id: str
    district: str
    data_dir: Path
    database_url: str
    policy_file: Path
    city_secret_file: Path
    signing_key_file: Path  # the node's Ed25519 seed (mode 0600): it signs to the clearinghouse
    listen: str = "127.0.0.1:7443"
    metrics_listen: str = ""
    max_message_bytes: int = 65536
    workers: int = 8
    log_level: str = "info"
    log_format: str = "json"
    #: The city clearinghouse (host:port) and its Ed25519 public key (64 hex characters).
    #: Empty address: the node runs alone, with no inter-district claims.
    clearinghouse_address: str = ""
    clearinghouse_public_key: str = ""
    #: A head this node verified must be covered by a head cosigned by a quorum of
    #: districts within this many seconds, or the node raises the finality alarm.
    finality_seconds: int = DEFAULT_FINALITY_SECONDS
    #: How often the node looks for a settlement statement to check, answer or post.
    settlement_seconds: int = DEFAULT_SETTLEMENT_SECONDS
    #: Other districts' nodes (host:port) whose tree heads this node compares with the
    #: log its clearinghouse shows it, every ``peer_check_seconds`` (split views).
    peer_nodes: tuple[str, ...] = ()
    peer_check_seconds: int = DEFAULT_PEER_CHECK_SECONDS
    #: The city root's Ed25519 public key (64 hex characters), which signs every
    #: admission and revocation. Required with a clearinghouse: the node checks what the
    #: clearinghouse relays against the keys the city certified, and learns the city's
    #: key from here alone, never from the clearinghouse.
    city_public_key: str = ""
    #: ``[tls]``: the city CA, the node's certificate (it serves with it and presents it
    #: to the clearinghouse) and key; or insecure (plaintext everywhere).
    tls: TlsSettings = NO_TLS

    def server_tls(self) -> ServerTls | None:
        """TLS as ``[tls]`` says (clients authenticate with tokens, not certificates);
        None when insecure; ConfigError when unset."""
        return self.tls.server(f"node {self.node_id}", mutual=False)

    def client_tls(self) -> ClientTls | None:
        """Mutual TLS towards the clearinghouse and the peer nodes; None when insecure."""
        return self.tls.client(f"node {self.node_id}")

    @property
    def federated(self) -> bool:
        return bool(self.clearinghouse_address)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'node.sqlite3').resolve()}"


_TABLES: Tables = {
    "node": {"node_id": str, "district": str, "data_dir": str, "database_url": str,
             "policy_file": str, "city_secret_file": str, "signing_key_file": str},
    "server": {"listen": str, "metrics_listen": str, "max_message_bytes": int, "workers": int},
    "log": {"level": str, "format": str},
    "clearinghouse": {"address": str, "public_key": str, "finality_seconds": int,
                      "settlement_seconds": int},
    "peers": {"nodes": list, "check_seconds": int},
    "city": {"public_key": str},
    TLS_TABLE: {k: v for k, v in TLS_SETTINGS.items() if k != "crl"},
}


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> NodeConfig:
    settings = read_settings(path, _TABLES, init="timebank node init", environ=environ)
    node, server, log, clearinghouse, peers, city, tls = (settings[t] for t in _TABLES)
    base = path.resolve().parent

    def need(key: str) -> str:
        value = node.get(key)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"the setting node.{key} is required")
        return value

    def path_of(key: str) -> Path:
        return resolve_path(base, need(key))

    def number(table: Mapping[str, object], key: str, default: int) -> int:
        value = table.get(key, default)
        assert isinstance(value, int)  # read_settings checked the type
        return value

    def texts(table: Mapping[str, object], key: str) -> tuple[str, ...]:
        value = table.get(key, [])
        assert isinstance(value, list)  # read_settings checked the type
        return tuple(str(item) for item in value)

    cfg = NodeConfig(
        node_id=need("node_id"),
        district=need("district"),
        data_dir=path_of("data_dir"),
        database_url=str(node.get("database_url", "")),
        policy_file=path_of("policy_file"),
        city_secret_file=path_of("city_secret_file"),
        signing_key_file=(path_of("signing_key_file") if node.get("signing_key_file")
                          else path_of("data_dir") / "node.key"),
        listen=str(server.get("listen", "127.0.0.1:7443")),
        metrics_listen=str(server.get("metrics_listen", "")),
        max_message_bytes=number(server, "max_message_bytes", 65536),
        workers=number(server, "workers", 8),
        log_level=str(log.get("level", "info")),
        log_format=str(log.get("format", "json")),
        clearinghouse_address=str(clearinghouse.get("address", "")),
        clearinghouse_public_key=str(clearinghouse.get("public_key", "")),
        finality_seconds=number(clearinghouse, "finality_seconds", DEFAULT_FINALITY_SECONDS),
        settlement_seconds=number(clearinghouse, "settlement_seconds",
                                  DEFAULT_SETTLEMENT_SECONDS),
        peer_nodes=texts(peers, "nodes"),
        peer_check_seconds=number(peers, "check_seconds", DEFAULT_PEER_CHECK_SECONDS),
        city_public_key=str(city.get("public_key", "")),
        tls=TlsSettings.of(tls, base),
    )
    if not 1024 <= cfg.max_message_bytes <= MAX_MESSAGE_BYTES_LIMIT:
        raise ConfigError(f"[server] max_message_bytes must be 1024..{MAX_MESSAGE_BYTES_LIMIT}")
    if not 1 <= cfg.workers <= 256:
        raise ConfigError("[server] workers must be 1..256")
    if cfg.log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError("[log] level is one of debug, info, warning, error")
    if cfg.log_format not in ("json", "console"):
        raise ConfigError("[log] format is json or console")
    if cfg.clearinghouse_address:
        if not is_target(cfg.clearinghouse_address):
            raise ConfigError("[clearinghouse] address is HOST:PORT, e.g. 127.0.0.1:7400, or "
                              "the replicas' ipv4:HOST:PORT,HOST:PORT or dns:///NAME:PORT")
        if not _is_key_hex(cfg.clearinghouse_public_key):
            raise ConfigError("[clearinghouse] public_key is the clearinghouse's Ed25519 "
                              "public key as 64 lowercase hex characters (`timebank "
                              "clearinghouse init` prints it)")
        if not cfg.city_public_key:
            raise ConfigError("[city] public_key is required with a clearinghouse: the city "
                              "root's Ed25519 public key, as `timebank clearinghouse init` "
                              "prints it, with which the node checks what the clearinghouse "
                              "relays")
    elif cfg.clearinghouse_public_key:
        raise ConfigError("[clearinghouse] public_key is set but address is not")
    if not 1 <= cfg.finality_seconds <= MAX_FINALITY_SECONDS:
        raise ConfigError(f"[clearinghouse] finality_seconds must be 1..{MAX_FINALITY_SECONDS}")
    if not 1 <= cfg.settlement_seconds <= 3600:
        raise ConfigError("[clearinghouse] settlement_seconds must be 1..3600")
    _check_peers(cfg)
    if cfg.city_public_key and not _is_key_hex(cfg.city_public_key):
        raise ConfigError("[city] public_key is the city root's Ed25519 public key as 64 "
                          "lowercase hex characters (`timebank clearinghouse init` prints it)")
    if cfg.city_public_key and cfg.city_public_key == cfg.clearinghouse_public_key:
        raise ConfigError("[city] public_key is the city root's key, not the "
                          "clearinghouse's: the two keys are different")
    return cfg


def _is_key_hex(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _check_peers(cfg: NodeConfig) -> None:
    if len(cfg.peer_nodes) > MAX_PEERS:
        raise ConfigError(f"[peers] nodes names at most {MAX_PEERS} districts' nodes")
    for address in cfg.peer_nodes:
        if not is_host_port(address):
            raise ConfigError(f"[peers] nodes are HOST:PORT addresses, not {address!r}")
    if len(set(cfg.peer_nodes)) != len(cfg.peer_nodes):
        raise ConfigError("[peers] nodes names a node twice")
    if cfg.listen in cfg.peer_nodes:
        raise ConfigError(f"[peers] nodes names this node itself ({cfg.listen})")
    if cfg.peer_nodes and not cfg.federated:
        raise ConfigError("[peers] nodes are compared through the clearinghouse's log: set "
                          "[clearinghouse] address too")
    if not 1 <= cfg.peer_check_seconds <= 3600:
        raise ConfigError("[peers] check_seconds must be 1..3600")


def render_config(node_id: str, district: str, database_url: str, listen: str,
                  metrics_listen: str = "", clearinghouse_address: str = "",
                  clearinghouse_public_key: str = "", city_public_key: str = "",
                  peer_nodes: tuple[str, ...] = (), tls: TlsSettings | None = None) -> str:
    """The node.toml that `timebank node init` writes into a data directory."""
    q = toml_string
    peers = ", ".join(q(p) for p in peer_nodes)
    return f"""# Written by `timebank node init`. See deploy/node.example.toml for every setting.
[node]
node_id = {q(node_id)}
district = {q(district)}
data_dir = "."
database_url = {q(database_url)}
policy_file = "policy.toml"
city_secret_file = "city-secret"
signing_key_file = "node.key"

[server]
listen = {q(listen)}
metrics_listen = {q(metrics_listen)}
max_message_bytes = 65536
workers = 8

[log]
level = "info"
format = "console"

# The city clearinghouse: leave address empty to run this district alone.
[clearinghouse]
address = {q(clearinghouse_address)}
public_key = {q(clearinghouse_public_key)}
# Seconds a tree head this node verified may wait for a quorum of districts to cosign
# it before the node raises the finality alarm (a split view, or witnesses down).
finality_seconds = {DEFAULT_FINALITY_SECONDS}
# Seconds between the node's looks for a settlement statement to check, countersign or
# dispute, and post once final.
settlement_seconds = {DEFAULT_SETTLEMENT_SECONDS}

# Other districts' nodes (HOST:PORT): their tree heads are compared with the log the
# clearinghouse shows this node, so that two views of it cannot go unnoticed.
[peers]
nodes = [{peers}]
check_seconds = {DEFAULT_PEER_CHECK_SECONDS}

# The city root's public key: what the city signs (admissions, revocations, rosters,
# the city policy) is checked with it. Required with a clearinghouse; taken from the
# bureau, never from the clearinghouse.
[city]
public_key = {q(city_public_key)}

{render_tls(tls or TlsSettings(), crl=False)}"""


__all__ = ["DEFAULT_FINALITY_SECONDS", "DEFAULT_PEER_CHECK_SECONDS", "MAX_MESSAGE_BYTES_LIMIT",
           "MAX_PEERS", "ConfigError", "NodeConfig", "load_config",
           "render_config"]
