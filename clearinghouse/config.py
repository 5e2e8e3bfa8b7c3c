"""The clearinghouse's configuration: a TOML file, each setting overridable by environment.

``clearinghouse.toml`` has two tables. ``[clearinghouse]``: where the data, database and
keys are, ``listen`` and ``metrics_listen`` (default 127.0.0.1:9400; empty: no
Prometheus endpoint). ``[limits]``
(optional): ``submits_per_second`` and ``submit_burst``, the token bucket each signing
node's Submit calls draw from. ``[tls]``: ``ca``, ``cert``, ``key``, ``crl`` and
``insecure`` (``runtime.tls.TlsSettings``; serving requires TLS unless insecure).
``TIMEBANK_CLEARINGHOUSE_<KEY>`` overrides ``key`` of any table (e.g.
TIMEBANK_CLEARINGHOUSE_DATABASE_URL, TIMEBANK_CLEARINGHOUSE_SUBMITS_PER_SECOND).
Relative paths are taken from the file's folder. Unknown tables or settings are
refused, so a misspelt setting never silently falls back to its default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from runtime.config import Tables, is_host_port, read_settings, resolve_path, toml_string
from runtime.errors import ConfigError
from runtime.tls import NO_TLS, TLS_SETTINGS, TLS_TABLE, ServerTls, TlsSettings, render_tls

CONFIG_NAME = "clearinghouse.toml"
SECTION = "clearinghouse"
DEFAULT_LISTEN = "127.0.0.1:7400"
#: Where the clearinghouse serves Prometheus metrics unless ``metrics_listen`` says
#: otherwise ("" turns the endpoint off).
DEFAULT_METRICS_LISTEN = "127.0.0.1:9400"
DEFAULT_CITY_KEY_FILE = "city-root.key"
DEFAULT_SIGNING_KEY_FILE = "clearinghouse.key"
LIMITS = "limits"
#: Submit calls each signing node may make per second, and in one burst (token bucket).
DEFAULT_SUBMITS_PER_SECOND = 2000
DEFAULT_SUBMIT_BURST = 4000
MAX_SUBMITS_PER_SECOND = 1_000_000
_TABLES: Tables = {
    SECTION: dict.fromkeys(("data_dir", "database_url", "listen", "metrics_listen",
                            "city_key_file", "signing_key_file"), str),
    LIMITS: {"submits_per_second": int, "submit_burst": int},
    TLS_TABLE: TLS_SETTINGS,
}


def sqlite_url(data_dir: Path) -> str:
    """The embedded default database: ``clearinghouse.sqlite3`` in the data directory."""
    return f"sqlite:///{(data_dir / 'clearinghouse.sqlite3').resolve()}"


@dataclass(frozen=True, slots=True)
class ClearinghouseConfig:
    data_dir: Path
    database_url: str
    city_key_file: Path  # the city root key's seed (mode 0600); offline in a real city
    signing_key_file: Path  # the clearinghouse's own Ed25519 seed (mode 0600)
    listen: str = DEFAULT_LISTEN
    metrics_listen: str = DEFAULT_METRICS_LISTEN  # Prometheus /metrics; "": none
    submits_per_second: int = DEFAULT_SUBMITS_PER_SECOND
    submit_burst: int = DEFAULT_SUBMIT_BURST
    #: ``[tls]``: the city CA (every client must present a certificate it issued), the
    #: clearinghouse's certificate and key, the CA's CRL; or insecure (plaintext).
    tls: TlsSettings = NO_TLS

    def server_tls(self) -> ServerTls | None:
        """Mutual TLS as ``[tls]`` says; None when insecure; ConfigError when unset."""
        return self.tls.server("clearinghouse", mutual=True)

    @property
    def effective_database_url(self) -> str:
        return self.database_url or sqlite_url(self.data_dir)


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> ClearinghouseConfig:
    """Read ``clearinghouse.toml`` (with environment overrides); ConfigError says what is wrong."""
    settings = read_settings(path, _TABLES, init="timebank clearinghouse init",
                             environ=environ, env_prefix="TIMEBANK_CLEARINGHOUSE_")
    values = {key: str(value) for key, value in settings[SECTION].items()}
    limits = _limits(settings[LIMITS])
    base = path.resolve().parent
    raw_dir = values.get("data_dir")
    if not raw_dir:
        raise ConfigError(f"the setting [{SECTION}] data_dir is required")
    data_dir = resolve_path(base, raw_dir)
    listen = values.get("listen") or DEFAULT_LISTEN
    if not is_host_port(listen):
        raise ConfigError(f"[{SECTION}] listen must be HOST:PORT, not {listen!r}")
    metrics_listen = values.get("metrics_listen", DEFAULT_METRICS_LISTEN)
    if metrics_listen and not is_host_port(metrics_listen, any_host=True, any_port=True):
        raise ConfigError(f"[{SECTION}] metrics_listen must be HOST:PORT (or empty for no "
                          f"metrics endpoint), not {metrics_listen!r}")

    def key_file(key: str, default: str) -> Path:
        # A key file named in the configuration is taken from its folder; a default one
        # lives in the data directory.
        return resolve_path(base if key in values else data_dir, values.get(key) or default)

    return ClearinghouseConfig(
        data_dir=data_dir,
        database_url=values.get("database_url", ""),
        city_key_file=key_file("city_key_file", DEFAULT_CITY_KEY_FILE),
        signing_key_file=key_file("signing_key_file", DEFAULT_SIGNING_KEY_FILE),
        listen=listen,
        metrics_listen=metrics_listen,
        submits_per_second=limits["submits_per_second"],
        submit_burst=limits["submit_burst"],
        tls=TlsSettings.of(settings[TLS_TABLE], base),
    )


def _limits(found: Mapping[str, object]) -> dict[str, int]:
    """``[limits]``, checked: an unset burst is at least one second's worth."""
    out = {"submits_per_second": DEFAULT_SUBMITS_PER_SECOND,
           "submit_burst": DEFAULT_SUBMIT_BURST}
    for key in out:
        value = found.get(key, out[key])
        if not isinstance(value, int) or not 1 <= value <= MAX_SUBMITS_PER_SECOND:
            raise ConfigError(f"[{LIMITS}] {key} must be a whole number from 1 to "
                              f"{MAX_SUBMITS_PER_SECOND}, not {value!r}")
        out[key] = value
    if "submit_burst" not in found:
        out["submit_burst"] = max(out["submit_burst"], out["submits_per_second"])
    if out["submit_burst"] < out["submits_per_second"]:
        raise ConfigError(f"[{LIMITS}] submit_burst ({out['submit_burst']}) must be at least "
                          f"submits_per_second ({out['submits_per_second']})")
    return out


def render_config(database_url: str, listen: str = DEFAULT_LISTEN,
                  tls: TlsSettings | None = None,
                  metrics_listen: str = DEFAULT_METRICS_LISTEN) -> str:
    """The clearinghouse.toml that `timebank clearinghouse init` writes into its data directory."""
    q = toml_string
    return f"""# Written by `timebank clearinghouse init`.
# Each setting can be overridden by TIMEBANK_CLEARINGHOUSE_<KEY>; relative paths are
# taken from this file's folder.
[{SECTION}]
data_dir = "."
database_url = {q(database_url)}
listen = {q(listen)}
# The city root key signs admissions and revocations. In a real city it is kept
# offline by the bureau; only `admit` and `revoke` need it.
city_key_file = {q(DEFAULT_CITY_KEY_FILE)}
signing_key_file = {q(DEFAULT_SIGNING_KEY_FILE)}
# host:port for Prometheus metrics (/metrics); "" turns them off.
metrics_listen = {q(metrics_listen)}

[{LIMITS}]
# Each district node may Submit this many envelopes per second (a token bucket that
# holds submit_burst); beyond it the clearinghouse answers RESOURCE_EXHAUSTED BUSY.
submits_per_second = {DEFAULT_SUBMITS_PER_SECOND}
submit_burst = {DEFAULT_SUBMIT_BURST}

{render_tls(tls or TlsSettings(), crl=True)}"""


__all__ = ["CONFIG_NAME", "DEFAULT_CITY_KEY_FILE", "DEFAULT_LISTEN", "DEFAULT_SIGNING_KEY_FILE",
           "DEFAULT_SUBMITS_PER_SECOND", "DEFAULT_SUBMIT_BURST", "LIMITS",
           "MAX_SUBMITS_PER_SECOND", "SECTION", "ClearinghouseConfig", "ConfigError",
           "load_config", "render_config", "sqlite_url"]
