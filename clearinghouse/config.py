"""The clearinghouse's configuration: a TOML file, each setting overridable by environment.

``clearinghouse.toml`` has two tables. ``[clearinghouse]``: where the data, database and
keys are, ``listen`` and ``metrics_listen`` (empty: no Prometheus endpoint). ``[limits]``
(optional): ``submits_per_second`` and ``submit_burst``, the token bucket each signing
node's Submit calls draw from. ``TIMEBANK_CLEARINGHOUSE_<KEY>`` overrides ``key`` of
either table (e.g. TIMEBANK_CLEARINGHOUSE_DATABASE_URL,
TIMEBANK_CLEARINGHOUSE_SUBMITS_PER_SECOND). Relative paths are taken from the file's
folder. Unknown tables or settings are refused, so a misspelt setting never silently
falls back to its default.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CONFIG_NAME = "clearinghouse.toml"
SECTION = "clearinghouse"
DEFAULT_LISTEN = "127.0.0.1:7400"
DEFAULT_CITY_KEY_FILE = "city-root.key"
DEFAULT_SIGNING_KEY_FILE = "clearinghouse.key"
_FIELDS = ("data_dir", "database_url", "listen", "metrics_listen", "city_key_file",
           "signing_key_file")
LIMITS = "limits"
_LIMIT_FIELDS = ("submits_per_second", "submit_burst")
#: Submit calls each signing node may make per second, and in one burst (token bucket).
DEFAULT_SUBMITS_PER_SECOND = 2000
DEFAULT_SUBMIT_BURST = 4000
MAX_SUBMITS_PER_SECOND = 1_000_000


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the setting."""


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
    metrics_listen: str = ""  # host:port for Prometheus /metrics; empty: none
    submits_per_second: int = DEFAULT_SUBMITS_PER_SECOND
    submit_burst: int = DEFAULT_SUBMIT_BURST

    @property
    def effective_database_url(self) -> str:
        return self.database_url or sqlite_url(self.data_dir)


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> ClearinghouseConfig:
    """Read ``clearinghouse.toml`` (with environment overrides); ConfigError says what is wrong."""
    environ = os.environ if environ is None else environ
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"no configuration file at {path}; run `timebank clearinghouse init`") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a directory; give the clearinghouse.toml in it") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    unknown_tables = set(doc) - {SECTION, LIMITS}
    if unknown_tables:
        raise ConfigError(f"{path}: unknown settings {', '.join(sorted(unknown_tables))}; "
                          f"settings live in the [{SECTION}] and [{LIMITS}] tables")
    table = doc.get(SECTION, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{SECTION}] must be a table")
    unknown = set(table) - set(_FIELDS)
    if unknown:
        raise ConfigError(f"{path}: unknown settings in [{SECTION}]: "
                          f"{', '.join(sorted(unknown))} (known: {', '.join(_FIELDS)})")
    values: dict[str, str] = {}
    for key in _FIELDS:
        value: object = table.get(key)
        env = environ.get(f"TIMEBANK_CLEARINGHOUSE_{key.upper()}")
        if env is not None:
            value = env
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"[{SECTION}] {key} must be a string")
        if value is not None:
            values[key] = value
    limits = _limits(path, doc.get(LIMITS, {}), environ)
    base = path.resolve().parent

    def path_of(key: str, default: str | None = None) -> Path:
        raw = values.get(key) or default
        if not raw:
            raise ConfigError(f"the setting [{SECTION}] {key} is required")
        p = Path(raw).expanduser()
        return p if p.is_absolute() else base / p

    data_dir = path_of("data_dir")
    listen = values.get("listen") or DEFAULT_LISTEN
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"[{SECTION}] listen must be HOST:PORT, not {listen!r}")

    def key_file(key: str, default: str) -> Path:
        raw = Path(values.get(key) or default).expanduser()
        return raw if raw.is_absolute() else (base / raw if key in values else data_dir / raw)

    return ClearinghouseConfig(
        data_dir=data_dir,
        database_url=values.get("database_url", ""),
        city_key_file=key_file("city_key_file", DEFAULT_CITY_KEY_FILE),
        signing_key_file=key_file("signing_key_file", DEFAULT_SIGNING_KEY_FILE),
        listen=listen,
        metrics_listen=_metrics_listen(values.get("metrics_listen", "")),
        submits_per_second=limits["submits_per_second"],
        submit_burst=limits["submit_burst"],
    )


def _metrics_listen(listen: str) -> str:
    if not listen:
        return ""
    _host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"[{SECTION}] metrics_listen must be HOST:PORT (or empty for no "
                          f"metrics endpoint), not {listen!r}")
    return listen


def _limits(path: Path, table: object, environ: Mapping[str, str]) -> dict[str, int]:
    """``[limits]``: whole numbers, checked; an environment override wins."""
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{LIMITS}] must be a table")
    unknown = set(table) - set(_LIMIT_FIELDS)
    if unknown:
        raise ConfigError(f"{path}: unknown settings in [{LIMITS}]: "
                          f"{', '.join(sorted(unknown))} (known: {', '.join(_LIMIT_FIELDS)})")
    out = {"submits_per_second": DEFAULT_SUBMITS_PER_SECOND,
           "submit_burst": DEFAULT_SUBMIT_BURST}
    for key in _LIMIT_FIELDS:
        value: object = table.get(key, out[key])
        env = environ.get(f"TIMEBANK_CLEARINGHOUSE_{key.upper()}")
        if env is not None:
            value = int(env.strip()) if env.strip().isdigit() else env
        if isinstance(value, bool) or not isinstance(value, int) or not (
                1 <= value <= MAX_SUBMITS_PER_SECOND):
            raise ConfigError(f"[{LIMITS}] {key} must be a whole number from 1 to "
                              f"{MAX_SUBMITS_PER_SECOND}, not {value!r}")
        out[key] = value
    if "submit_burst" not in table and environ.get("TIMEBANK_CLEARINGHOUSE_SUBMIT_BURST") is None:
        out["submit_burst"] = max(out["submit_burst"], out["submits_per_second"])
    if out["submit_burst"] < out["submits_per_second"]:
        raise ConfigError(f"[{LIMITS}] submit_burst ({out['submit_burst']}) must be at least "
                          f"submits_per_second ({out['submits_per_second']})")
    return out


def render_config(database_url: str, listen: str = DEFAULT_LISTEN) -> str:
    """The clearinghouse.toml that `timebank clearinghouse init` writes into its data directory."""
    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

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
# host:port for Prometheus metrics (/metrics), e.g. "127.0.0.1:9474"; empty: none.
metrics_listen = ""

[{LIMITS}]
# Each district node may Submit this many envelopes per second (a token bucket that
# holds submit_burst); beyond it the clearinghouse answers RESOURCE_EXHAUSTED BUSY.
submits_per_second = {DEFAULT_SUBMITS_PER_SECOND}
submit_burst = {DEFAULT_SUBMIT_BURST}
"""
