"""The node's configuration: ``SCHEMA`` declares every setting of node.toml once
(``runtime.config``, ADR 0020); ``load_config`` reads and checks it into a frozen
``NodeConfig``.

``TIMEBANK_<TABLE>_<KEY>`` overrides ``[table] key`` (e.g. TIMEBANK_NODE_DATABASE_URL,
TIMEBANK_SERVER_LISTEN). Relative paths are taken from the file's folder. Unknown tables
or settings are refused; every error names the setting and where its value came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from node.domain.access import LoginRules
from runtime.config import (
    LOG,
    LOG_SETTINGS,
    SERVER,
    Schema,
    Setting,
    Settings,
    Table,
    Value,
    is_host_port,
    is_key_hex,
    is_target,
    server_settings,
)
from runtime.errors import ConfigError
from runtime.tls import TLS, TLS_TABLE, ClientTls, ServerTls, TlsSettings, tls_settings
from timebank.ids import is_node_id

CONFIG_NAME = "node.toml"
#: The most peer districts a node compares tree heads with (each is called every round).
MAX_PEERS = 32
#: How long a head the node verified may wait for a quorum's cosignatures before the
#: node raises the finality alarm: long enough for every witness to come round a few
#: times (they look every 2 s) and for a district restarting, short enough that a split
#: view is seen within minutes.
DEFAULT_FINALITY_SECONDS = 300
#: How often a node looks for a settlement statement (issue 16), by default.
DEFAULT_SETTLEMENT_SECONDS = 30
DEFAULT_PEER_CHECK_SECONDS = 15
MAX_FINALITY_SECONDS = 7 * 24 * 3600
DEFAULT_LISTEN = "127.0.0.1:7443"
DEFAULT_METRICS_LISTEN = "127.0.0.1:9443"
_LOGINS = LoginRules()
_KEY_HEX = "an Ed25519 public key as 64 lowercase hex characters"


def _path(key: str, zh: str, en: str, example: str, *, required: bool = True) -> Setting:
    return Setting("node", key, "", zh, en, path=True, required=required,
                   rule_text="a path", example=example)


SCHEMA = Schema("node", "timebank node init", (
    Table("node", "本区节点：身份、数据与密钥文件。",
          "This district's node: who it is, where its data and key files are. Relative "
          "paths are taken from this file's folder."),
    SERVER, LOG,
    Table("auth", "登录与会话。", "Logins and sessions of the node's API (ADR 0016)."),
    Table("clearinghouse", "市级清算中心（由民政局运行）。",
          "The city clearinghouse run by the civil-affairs bureau."),
    Table("peers", "其他区的节点：比对其树头，发现分裂视图。",
          "Other districts' nodes: their tree heads are compared with the log the "
          "clearinghouse shows this node, so that two views of it cannot go unnoticed."),
    Table("city", "城市根密钥。", "The city root key."),
    TLS,
), (
    Setting("node", "node_id", "", "本区的 6 位行政区划代码，即节点在全市的编号。",
            "The district's 6-digit administrative division code: the node's id in the "
            "city.", required=True, rule=is_node_id, rule_text="6 digits, e.g. 320115",
            example="320115"),
    Setting("node", "district", "", "区名，用于显示与日志。",
            "The district's name, for display and logs.", required=True, example="江宁区"),
    _path("data_dir", "节点自身文件的目录（SQLite 数据库、签名密钥），仅服务用户可写。",
          "The node's own files: the SQLite database (when database_url is empty) and its "
          "signing key. Writable by the service user only.", "/var/lib/timebank/node"),
    Setting("node", "database_url", "",
            "空：使用 data_dir 中的 SQLite；否则为 PostgreSQL 的 SQLAlchemy URL。",
            "Empty: SQLite inside data_dir. Otherwise an SQLAlchemy URL for PostgreSQL, "
            "e.g. postgresql+psycopg://timebank@db/timebank_320115.", secret=True),
    _path("policy_file", "民政局发布的城市政策文件；城市签署的政策生效后以其为准。",
          "The city policy as the bureau published it; once the node holds a policy the "
          "city signed ([city] public_key), the signed policy rules.",
          "/etc/timebank/policy.toml"),
    _path("city_secret_file", "民政局发放的城市密钥（用于生成 PersonRef），mode 0600。",
          "The city secret the bureau issues (it keys PersonRefs), mode 0600, owned by "
          "the service user.", "/etc/timebank/city-secret"),
    _path("signing_key_file",
          "节点的 Ed25519 签名密钥（`timebank node init` 生成）；空：data_dir 中的 node.key。",
          "The node's Ed25519 signing key (a 32-byte seed, mode 0600) made by `timebank "
          "node init`; the bureau admits the node by its public key. Empty: node.key in "
          "data_dir.", "/var/lib/timebank/node/node.key", required=False),
    *server_settings(listen=DEFAULT_LISTEN, metrics_listen=DEFAULT_METRICS_LISTEN,
                     workers=8, max_workers=256),
    *LOG_SETTINGS,
    Setting("auth", "session_hours", _LOGINS.session_hours,
            "登录会话的有效时长（小时）。", "Hours a login session lasts.", low=1, high=720),
    Setting("auth", "code_minutes", _LOGINS.code_minutes,
            "一次性验证码的有效时长（分钟），且仅可使用一次。",
            "Minutes a one-time login code lasts (and it works once).", low=1, high=1440),
    Setting("auth", "max_failures", _LOGINS.max_failures,
            "连续登录失败达此次数即锁定账户。",
            "Failed logins in a row that lock the account.", low=1, high=100),
    Setting("auth", "lock_minutes", _LOGINS.lock_minutes, "账户锁定时长（分钟）。",
            "Minutes a locked account stays locked (the right password is refused "
            "meanwhile).", low=1, high=1440),
    Setting("auth", "address_max_failures", _LOGINS.address_max_failures,
            "同一客户端地址在时间窗内登录失败达此次数即被拒绝。",
            "Failed logins from one client address, within address_window_minutes, after "
            "which that address is refused until the window passes.", low=1, high=10_000),
    Setting("auth", "address_window_minutes", _LOGINS.address_window_minutes,
            "上述时间窗（分钟）。", "The window of address_max_failures, in minutes.",
            low=1, high=1440),
    Setting("clearinghouse", "address", "",
            "市级清算中心地址（主机:端口；多个副本：ipv4:主机:端口,主机:端口 或 "
            "dns:///名称:端口）；留空则本区单独运行（无跨区通兑）。",
            "The clearinghouse's HOST:PORT; for replicas ipv4:HOST:PORT,HOST:PORT or "
            "dns:///NAME:PORT. Empty: this district runs alone (no inter-district "
            "redemptions or moves).", rule=is_target,
            rule_text="HOST:PORT, e.g. 127.0.0.1:7400, or the replicas' "
                      "ipv4:HOST:PORT,HOST:PORT or dns:///NAME:PORT",
            example="clearing.example.gov.cn:7400"),
    Setting("clearinghouse", "public_key", "",
            "清算中心的 Ed25519 公钥（64 位十六进制，`timebank clearinghouse init` 输出）。",
            "The clearinghouse's Ed25519 public key (64 hex characters, as `timebank "
            "clearinghouse init` prints it): the node checks its signature on every "
            "receipt and delivery.", rule=is_key_hex, rule_text=_KEY_HEX, example="0" * 64),
    Setting("clearinghouse", "finality_seconds", DEFAULT_FINALITY_SECONDS,
            "本节点核验的树头须在此秒数内得到多数区的联署，否则发出终局告警。",
            "Seconds a tree head this node verified may wait to be cosigned by a quorum of "
            "districts before the node raises the finality alarm (a split view, or "
            "witnesses down).", low=1, high=MAX_FINALITY_SECONDS),
    Setting("clearinghouse", "settlement_seconds", DEFAULT_SETTLEMENT_SECONDS,
            "查看下一份结算单的间隔（秒）：核对、联署或提出异议，终局后入账。",
            "Seconds between the node's looks for the next settlement statement: it checks "
            "its line, countersigns or disputes it, and posts it once final.",
            low=1, high=3600),
    Setting("peers", "nodes", (), f"其他区节点的 gRPC 地址（最多 {MAX_PEERS} 个）。",
            f"The other districts' nodes (HOST:PORT), at most {MAX_PEERS}; a tree head "
            "one holds that is not of the log this node is shown is kept as evidence of a "
            "fork.", high=MAX_PEERS, rule=is_host_port, rule_text="HOST:PORT",
            example=("10.0.0.6:7443", "10.0.0.7:7443")),
    Setting("peers", "check_seconds", DEFAULT_PEER_CHECK_SECONDS, "比对树头的间隔（秒）。",
            "Seconds between two rounds of comparing tree heads with the peers.",
            low=1, high=3600),
    Setting("city", "public_key", "",
            "城市根公钥（64 位十六进制）：有清算中心时必填，向民政局索取，勿取自清算中心。",
            "The city root's Ed25519 public key (64 hex characters), as `timebank "
            "clearinghouse init` prints it; required with a clearinghouse. Every admission, "
            "revocation, roster and city policy is checked with it. Take it from the "
            "bureau, never from the clearinghouse.", rule=is_key_hex, rule_text=_KEY_HEX,
            example="1" * 64),
    *tls_settings(crl=False),
))


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node_id: str
    district: str
    data_dir: Path
    database_url: str
    policy_file: Path
    city_secret_file: Path
    signing_key_file: Path  # the node's Ed25519 seed (mode 0600): it signs to the clearinghouse
    listen: str
    metrics_listen: str  # empty: no Prometheus endpoint
    max_message_bytes: int
    workers: int
    log_level: str
    log_format: str
    #: ``[auth]``: session and code lifetimes, locking after failed logins.
    logins: LoginRules
    #: The city clearinghouse (host:port) and its Ed25519 public key (64 hex characters).
    #: Empty address: the node runs alone, with no inter-district claims.
    clearinghouse_address: str
    clearinghouse_public_key: str
    #: A head this node verified must be covered by a head cosigned by a quorum of
    #: districts within this many seconds, or the node raises the finality alarm.
    finality_seconds: int
    #: How often the node looks for a settlement statement to check, answer or post.
    settlement_seconds: int
    #: Other districts' nodes (host:port) whose tree heads this node compares with the
    #: log its clearinghouse shows it, every ``peer_check_seconds`` (split views).
    peer_nodes: tuple[str, ...]
    peer_check_seconds: int
    #: The city root's Ed25519 public key (64 hex characters), which signs every
    #: admission and revocation. Required with a clearinghouse: the node checks what the
    #: clearinghouse relays against the keys the city certified, and learns the city's
    #: key from here alone, never from the clearinghouse.
    city_public_key: str
    #: ``[tls]``: the city CA, the node's certificate (it serves with it and presents it
    #: to the clearinghouse) and key; or insecure (plaintext everywhere).
    tls: TlsSettings

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


def read_settings(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """node.toml's settings, each checked alone, with where each came from."""
    return SCHEMA.read(path, environ)


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> NodeConfig:
    """Read node.toml (with environment overrides) and check it whole."""
    return config_of(read_settings(path, environ))


def check_ready(s: Settings) -> NodeConfig:
    """``config_of``, and what serving needs besides: TLS set (or insecure) and the
    files the settings name there (``timebank node config check``)."""
    cfg = config_of(s)
    cfg.server_tls()
    if cfg.federated:
        cfg.client_tls()
    for key in ("data_dir", "policy_file", "city_secret_file"):
        s.must_exist("node", key, s.path_of("node", key))
    s.must_exist("node", "signing_key_file", cfg.signing_key_file)
    if not cfg.tls.insecure:
        for key in ("ca", "cert", "key"):
            s.must_exist(TLS_TABLE, key, getattr(cfg.tls, key))
    return cfg


def config_of(s: Settings) -> NodeConfig:
    """The node's configuration from its settings, checked whole."""
    data_dir = s.path_of("node", "data_dir")
    policy_file = s.path_of("node", "policy_file")
    city_secret_file = s.path_of("node", "city_secret_file")
    assert data_dir is not None and policy_file is not None and city_secret_file is not None
    cfg = NodeConfig(
        node_id=s.text("node", "node_id"),
        district=s.text("node", "district"),
        data_dir=data_dir,
        database_url=s.text("node", "database_url"),
        policy_file=policy_file,
        city_secret_file=city_secret_file,
        signing_key_file=s.path_of("node", "signing_key_file") or data_dir / "node.key",
        listen=s.text("server", "listen"),
        metrics_listen=s.text("server", "metrics_listen"),
        max_message_bytes=s.number("server", "max_message_bytes"),
        workers=s.number("server", "workers"),
        log_level=s.text("log", "level"),
        log_format=s.text("log", "format"),
        logins=LoginRules(**{key: s.number("auth", key) for key in s.table("auth")}),
        clearinghouse_address=s.text("clearinghouse", "address"),
        clearinghouse_public_key=s.text("clearinghouse", "public_key"),
        finality_seconds=s.number("clearinghouse", "finality_seconds"),
        settlement_seconds=s.number("clearinghouse", "settlement_seconds"),
        peer_nodes=s.texts("peers", "nodes"),
        peer_check_seconds=s.number("peers", "check_seconds"),
        city_public_key=s.text("city", "public_key"),
        tls=TlsSettings.of(s.table(TLS_TABLE), s.base),
    )
    _check(s, cfg)
    return cfg


def _check(s: Settings, cfg: NodeConfig) -> None:
    """What involves more than one setting."""
    if cfg.federated:
        if not cfg.clearinghouse_public_key:
            raise s.refuse("clearinghouse", "public_key",
                           "is required with [clearinghouse] address: the clearinghouse's "
                           "public key, as `timebank clearinghouse init` prints it", "必须设置")
        if not cfg.city_public_key:
            raise s.refuse("city", "public_key",
                           "is required with a clearinghouse: the city root's public key, "
                           "as `timebank clearinghouse init` prints it, with which the node "
                           "checks what the clearinghouse relays", "必须设置")
    elif cfg.clearinghouse_public_key:
        raise s.refuse("clearinghouse", "public_key", "is set but [clearinghouse] address "
                       "is not")
    if cfg.city_public_key and cfg.city_public_key == cfg.clearinghouse_public_key:
        raise s.refuse("city", "public_key", "is the city root's key, not the "
                       "clearinghouse's: the two keys are different")
    if len(set(cfg.peer_nodes)) != len(cfg.peer_nodes):
        raise s.refuse("peers", "nodes", "names a node twice")
    if cfg.listen in cfg.peer_nodes:
        raise s.refuse("peers", "nodes", f"names this node itself ({cfg.listen})")
    if cfg.peer_nodes and not cfg.federated:
        raise s.refuse("peers", "nodes", "are compared through the clearinghouse's log: "
                       "set [clearinghouse] address too")


def render_config(node_id: str, district: str, database_url: str, listen: str,
                  metrics_listen: str = DEFAULT_METRICS_LISTEN,
                  clearinghouse_address: str = "",
                  clearinghouse_public_key: str = "", city_public_key: str = "",
                  peer_nodes: tuple[str, ...] = (), tls: TlsSettings | None = None) -> str:
    """The node.toml that `timebank node init` writes into a data directory: every
    setting, documented, with these values (the key files beside it)."""
    values: dict[tuple[str, str], Value] = {
        ("node", "node_id"): node_id, ("node", "district"): district,
        ("node", "data_dir"): ".", ("node", "database_url"): database_url,
        ("node", "policy_file"): "policy.toml", ("node", "city_secret_file"): "city-secret",
        ("node", "signing_key_file"): "node.key",
        ("server", "listen"): listen, ("server", "metrics_listen"): metrics_listen,
        ("log", "format"): "json",
        ("clearinghouse", "address"): clearinghouse_address,
        ("clearinghouse", "public_key"): clearinghouse_public_key,
        ("peers", "nodes"): peer_nodes, ("city", "public_key"): city_public_key,
        **(tls or TlsSettings()).values(crl=False)}
    return SCHEMA.render(values, header=INIT_HEADER)


INIT_HEADER = """\
由 `timebank node init` 写入。每项设置均可由环境变量 TIMEBANK_<表>_<键> 覆盖。
Written by `timebank node init`. Every setting can be overridden by the environment
variable TIMEBANK_<TABLE>_<KEY> (e.g. TIMEBANK_SERVER_LISTEN); relative paths are taken
from this file's folder. `timebank node config check --config FILE` checks it."""

EXAMPLE_HEADER = """\
区时间银行节点的配置示例。复制到 /etc/timebank/node.toml 后修改。
每项设置均可由环境变量 TIMEBANK_<表>_<键>（大写）覆盖，例如
  TIMEBANK_NODE_DATABASE_URL=postgresql+psycopg://timebank@db/timebank_320115
  TIMEBANK_SERVER_LISTEN=10.0.0.5:7443
  TIMEBANK_LOG_LEVEL=debug

Example configuration of a district time-bank node. Copy to /etc/timebank/node.toml and
edit. Every setting can be overridden by the environment variable TIMEBANK_<TABLE>_<KEY>
in upper case, as above. `timebank node config check --config FILE` checks a file;
`timebank node config show --config FILE` shows every effective setting and its source.
Generated from the settings' declaration (node/config.py): `timebank node config
example` prints it."""


def example() -> str:
    """deploy/node.example.toml: every setting, documented, with example values."""
    return SCHEMA.render(header=EXAMPLE_HEADER, example=True)


__all__ = ["CONFIG_NAME", "DEFAULT_FINALITY_SECONDS", "DEFAULT_PEER_CHECK_SECONDS",
           "DEFAULT_SETTLEMENT_SECONDS", "MAX_PEERS", "SCHEMA", "ConfigError", "NodeConfig",
           "check_ready", "config_of", "example", "load_config", "read_settings",
           "render_config"]
