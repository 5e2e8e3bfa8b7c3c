"""The clearinghouse's configuration: ``SCHEMA`` declares every setting of
clearinghouse.toml once (``runtime.config``, ADR 0020); ``load_config`` reads and checks
it into a frozen ``ClearinghouseConfig``.

Tables: ``[clearinghouse]`` (where the data, database and keys are), ``[server]``
(listen, metrics_listen, max_message_bytes, workers), ``[log]`` (level, format),
``[limits]`` (the token bucket each signing node's Submit calls draw from) and ``[tls]``.
``TIMEBANK_<TABLE>_<KEY>`` overrides ``[table] key`` (e.g.
TIMEBANK_CLEARINGHOUSE_DATABASE_URL, TIMEBANK_SERVER_LISTEN,
TIMEBANK_LIMITS_SUBMITS_PER_SECOND), as for a node. Relative paths are taken from the
file's folder; a key file left at its default lives in the data directory. Unknown tables
or settings are refused; every error names the setting and where its value came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from runtime.config import (
    LOG,
    LOG_SETTINGS,
    SERVER,
    Schema,
    Setting,
    Settings,
    Table,
    Value,
    server_settings,
)
from runtime.errors import ConfigError
from runtime.tls import TLS, TLS_TABLE, ServerTls, TlsSettings, tls_settings

CONFIG_NAME = "clearinghouse.toml"
SECTION = "clearinghouse"
LIMITS = "limits"
DEFAULT_LISTEN = "127.0.0.1:7400"
DEFAULT_METRICS_LISTEN = "127.0.0.1:9400"
DEFAULT_CITY_KEY_FILE = "city-root.key"
DEFAULT_SIGNING_KEY_FILE = "clearinghouse.key"
#: Each open Subscribe holds a worker thread: workers bound the nodes subscribed at once.
DEFAULT_WORKERS = 32
#: Submit calls each signing node may make per second, and in one burst (token bucket).
DEFAULT_SUBMITS_PER_SECOND = 2000
DEFAULT_SUBMIT_BURST = 4000
MAX_SUBMITS_PER_SECOND = 1_000_000

SCHEMA = Schema("clearinghouse", "timebank clearinghouse init", (
    Table(SECTION, "清算中心：数据、数据库与密钥文件。",
          "The clearinghouse: where its data, database and key files are. Relative paths "
          "are taken from this file's folder."),
    SERVER, LOG,
    Table(LIMITS, "每个区节点提交的速率上限（令牌桶）。",
          "How fast each district's node may Submit (a token bucket); beyond it the "
          "clearinghouse answers RESOURCE_EXHAUSTED BUSY."),
    TLS,
), (
    Setting(SECTION, "data_dir", "", "清算中心的数据目录（SQLite 数据库、密钥），仅服务用户可写。",
            "The clearinghouse's data directory: the SQLite database (when database_url is "
            "empty) and, by default, its keys. Writable by the service user only.",
            required=True, path=True, rule_text="a path",
            example="/var/lib/timebank/clearinghouse"),
    Setting(SECTION, "database_url", "",
            "空：使用 data_dir 中的 SQLite；否则为 PostgreSQL 的 SQLAlchemy URL（多副本须用它）。",
            "Empty: SQLite inside data_dir. Otherwise an SQLAlchemy URL for PostgreSQL "
            "(needed for several replicas), e.g. "
            "postgresql+psycopg://timebank@db/tb_clearinghouse.", secret=True),
    Setting(SECTION, "city_key_file", DEFAULT_CITY_KEY_FILE,
            "城市根密钥（签署准入与撤销）；真实城市中由民政局离线保管，仅 admit/revoke 需要。",
            "The city root key's seed (mode 0600): it signs admissions and revocations. In "
            "a real city the bureau keeps it offline; only `admit` and `revoke` need it. "
            "Left at its default: in data_dir.", path=True, rule_text="a path"),
    Setting(SECTION, "signing_key_file", DEFAULT_SIGNING_KEY_FILE,
            "清算中心自身的 Ed25519 签名密钥（mode 0600）。",
            "The clearinghouse's own Ed25519 signing key (mode 0600). Left at its default: "
            "in data_dir.", path=True, rule_text="a path"),
    *server_settings(listen=DEFAULT_LISTEN, metrics_listen=DEFAULT_METRICS_LISTEN,
                     workers=DEFAULT_WORKERS, max_workers=1024, listen_example="0.0.0.0:7400"),
    *LOG_SETTINGS,
    Setting(LIMITS, "submits_per_second", DEFAULT_SUBMITS_PER_SECOND,
            "每个区节点每秒可提交的信封数。",
            "Envelopes each district's node may Submit per second.",
            low=1, high=MAX_SUBMITS_PER_SECOND),
    Setting(LIMITS, "submit_burst", DEFAULT_SUBMIT_BURST,
            "令牌桶容量（一次突发可提交数），不小于 submits_per_second。",
            "The bucket's size: envelopes one node may Submit in a burst; at least "
            "submits_per_second (when unset: at least one second's worth).",
            low=1, high=MAX_SUBMITS_PER_SECOND),
    *tls_settings(crl=True),
))


def sqlite_url(data_dir: Path) -> str:
    """The embedded default database: ``clearinghouse.sqlite3`` in the data directory."""
    return f"sqlite:///{(data_dir / 'clearinghouse.sqlite3').resolve()}"


@dataclass(frozen=True, slots=True)
class ClearinghouseConfig:
    data_dir: Path
    database_url: str
    city_key_file: Path  # the city root key's seed (mode 0600); offline in a real city
    signing_key_file: Path  # the clearinghouse's own Ed25519 seed (mode 0600)
    listen: str
    metrics_listen: str  # host:port for Prometheus /metrics; empty: none
    max_message_bytes: int
    workers: int
    log_level: str
    log_format: str
    submits_per_second: int
    submit_burst: int
    #: ``[tls]``: the city CA (every client must present a certificate it issued), the
    #: clearinghouse's certificate and key, the CA's CRL; or insecure (plaintext).
    tls: TlsSettings

    def server_tls(self) -> ServerTls | None:
        """Mutual TLS as ``[tls]`` says; None when insecure; ConfigError when unset."""
        return self.tls.server("clearinghouse", mutual=True)

    @property
    def effective_database_url(self) -> str:
        return self.database_url or sqlite_url(self.data_dir)


def read_settings(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """clearinghouse.toml's settings, each checked alone, with where each came from."""
    return SCHEMA.read(path, environ)


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> ClearinghouseConfig:
    """Read clearinghouse.toml (with environment overrides) and check it whole."""
    return config_of(read_settings(path, environ))


def check_ready(s: Settings) -> ClearinghouseConfig:
    """``config_of``, and what serving needs besides: TLS set (or insecure) and the
    files the settings name there (the city root key may be offline: not checked).
    ``timebank clearinghouse config check``."""
    cfg = config_of(s)
    cfg.server_tls()
    s.must_exist(SECTION, "data_dir", cfg.data_dir)
    s.must_exist(SECTION, "signing_key_file", cfg.signing_key_file)
    if not cfg.tls.insecure:
        for key in ("ca", "cert", "key", "crl"):
            s.must_exist(TLS_TABLE, key, getattr(cfg.tls, key))
    return cfg


def config_of(s: Settings) -> ClearinghouseConfig:
    """The clearinghouse's configuration from its settings, checked whole."""
    data_dir = s.path_of(SECTION, "data_dir")
    assert data_dir is not None

    def key_file(key: str) -> Path:
        # A key file named in the configuration is taken from its folder; a default one
        # lives in the data directory.
        found = s.path_of(SECTION, key, None if s.is_set(SECTION, key) else data_dir)
        if found is None:
            raise s.refuse(SECTION, key, "is a key file's path", "不能为空")
        return found

    per_second = s.number(LIMITS, "submits_per_second")
    burst = s.number(LIMITS, "submit_burst")
    if not s.is_set(LIMITS, "submit_burst"):
        burst = max(burst, per_second)
    if burst < per_second:
        raise s.refuse(LIMITS, "submit_burst", f"({burst}) must be at least "
                       f"submits_per_second ({per_second})")
    return ClearinghouseConfig(
        data_dir=data_dir,
        database_url=s.text(SECTION, "database_url"),
        city_key_file=key_file("city_key_file"),
        signing_key_file=key_file("signing_key_file"),
        listen=s.text("server", "listen"),
        metrics_listen=s.text("server", "metrics_listen"),
        max_message_bytes=s.number("server", "max_message_bytes"),
        workers=s.number("server", "workers"),
        log_level=s.text("log", "level"),
        log_format=s.text("log", "format"),
        submits_per_second=per_second,
        submit_burst=burst,
        tls=TlsSettings.of(s.table(TLS_TABLE), s.base),
    )


def render_config(database_url: str, listen: str = DEFAULT_LISTEN,
                  tls: TlsSettings | None = None,
                  metrics_listen: str = DEFAULT_METRICS_LISTEN) -> str:
    """The clearinghouse.toml that `timebank clearinghouse init` writes into its data
    directory: every setting, documented, with these values."""
    values: dict[tuple[str, str], Value] = {
        (SECTION, "data_dir"): ".", (SECTION, "database_url"): database_url,
        ("server", "listen"): listen, ("server", "metrics_listen"): metrics_listen,
        ("log", "format"): "json",
        **(tls or TlsSettings()).values(crl=True)}
    return SCHEMA.render(values, header=INIT_HEADER)


INIT_HEADER = """\
由 `timebank clearinghouse init` 写入。每项设置均可由环境变量 TIMEBANK_<表>_<键> 覆盖。
Written by `timebank clearinghouse init`. Every setting can be overridden by the
environment variable TIMEBANK_<TABLE>_<KEY> (e.g. TIMEBANK_CLEARINGHOUSE_DATABASE_URL,
TIMEBANK_SERVER_LISTEN); relative paths are taken from this file's folder.
`timebank clearinghouse config check -c FILE` checks it."""

EXAMPLE_HEADER = """\
市级清算中心的配置示例。复制到 /etc/timebank/clearinghouse.toml 后修改。
每项设置均可由环境变量 TIMEBANK_<表>_<键>（大写）覆盖，例如
  TIMEBANK_CLEARINGHOUSE_DATABASE_URL=postgresql+psycopg://timebank@db/tb_clearinghouse
  TIMEBANK_SERVER_LISTEN=0.0.0.0:7400
  TIMEBANK_LIMITS_SUBMITS_PER_SECOND=500

Example configuration of the city clearinghouse. Copy to
/etc/timebank/clearinghouse.toml and edit. Every setting can be overridden by the
environment variable TIMEBANK_<TABLE>_<KEY> in upper case, as above.
`timebank clearinghouse config check -c FILE` checks a file; `timebank clearinghouse
config show -c FILE` shows every effective setting and its source. Generated from the
settings' declaration (clearinghouse/config.py): `timebank clearinghouse config example`
prints it."""


def example() -> str:
    """deploy/clearinghouse.example.toml: every setting, documented, with example values."""
    return SCHEMA.render(header=EXAMPLE_HEADER, example=True)


__all__ = ["CONFIG_NAME", "DEFAULT_CITY_KEY_FILE", "DEFAULT_LISTEN", "DEFAULT_SIGNING_KEY_FILE",
           "DEFAULT_SUBMITS_PER_SECOND", "DEFAULT_SUBMIT_BURST", "DEFAULT_WORKERS", "LIMITS",
           "MAX_SUBMITS_PER_SECOND", "SCHEMA", "SECTION", "ClearinghouseConfig", "ConfigError",
           "check_ready", "config_of", "example", "load_config", "read_settings",
           "render_config", "sqlite_url"]
