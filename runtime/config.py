"""Reading a service's configuration: one TOML file, every setting overridable by an
environment variable (``TIMEBANK_<TABLE>_<KEY>`` overrides ``[table] key``, unless the
service names one prefix for all its tables).

``read_settings`` reads the tables a service knows and refuses, naming it, anything it
does not: a missing or unreadable file, an unknown table or setting (so a misspelt
setting never silently falls back to its default), a value of the wrong type. The
service then applies its defaults and its own checks; a ``ConfigError`` says which
setting is wrong and why.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path

from runtime.errors import ConfigError

#: A setting's type: text, a whole number, true or false, or a list of texts (in the
#: environment: the texts separated by commas; true/false as true, false, 1 or 0).
Kind = type[str] | type[int] | type[bool] | type[list]  # type: ignore[type-arg]
#: The settings of each table a service knows, by name.
Tables = Mapping[str, Mapping[str, Kind]]
Value = str | int | bool | list[str]

_KIND_NAMES: dict[Kind, str] = {str: "a string", int: "a whole number",
                                bool: "true or false", list: "a list of strings"}
_BOOLS = {"true": True, "1": True, "false": False, "0": False}


def _read_toml(path: Path, init: str) -> dict[str, object]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no configuration file at {path}; run `{init}`") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a directory, not a configuration file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None


def _typed(table: str, key: str, kind: Kind, value: object) -> Value:
    if kind is list:
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return list(value)
    elif kind is bool:
        if isinstance(value, bool):
            return value
    elif isinstance(value, kind) and not isinstance(value, bool):
        return value
    raise ConfigError(f"[{table}] {key} must be {_KIND_NAMES[kind]}")


def _from_env(table: str, key: str, kind: Kind, name: str, text: str) -> Value:
    if kind is str:
        return text
    if kind is list:
        return [item.strip() for item in text.split(",") if item.strip()]
    if kind is bool:
        found = _BOOLS.get(text.strip().lower())
        if found is None:
            raise ConfigError(f"[{table}] {key} must be true or false, not {text!r} "
                              f"(from {name})")
        return found
    try:
        return int(text.strip())
    except ValueError:
        raise ConfigError(f"[{table}] {key} must be {_KIND_NAMES[kind]}, not {text!r} "
                          f"(from {name})") from None


def read_settings(path: Path, tables: Tables, *, init: str,
                  environ: Mapping[str, str] | None = None,
                  env_prefix: str | None = None) -> dict[str, dict[str, Value]]:
    """Every setting of ``tables`` that is set, by table: from the file at ``path``,
    each overridden by the environment variable ``<env_prefix><KEY>`` (by default
    ``TIMEBANK_<TABLE>_<KEY>``) in ``environ`` (by default the process's). A missing file
    says to run ``init``."""
    environ = os.environ if environ is None else environ
    doc = _read_toml(path, init)
    unknown_tables = set(doc) - set(tables)
    if unknown_tables:
        raise ConfigError(
            f"{path}: unknown settings {', '.join(sorted(unknown_tables))}; settings live in "
            f"the {', '.join(f'[{t}]' for t in tables)} tables")
    out: dict[str, dict[str, Value]] = {}
    for table, fields in tables.items():
        found = doc.get(table, {})
        if not isinstance(found, dict):
            raise ConfigError(f"{path}: [{table}] must be a table")
        unknown = set(found) - set(fields)
        if unknown:
            raise ConfigError(f"{path}: unknown settings in [{table}]: "
                              f"{', '.join(sorted(unknown))} (known: {', '.join(fields)})")
        values: dict[str, Value] = {}
        for key, kind in fields.items():
            prefix = f"TIMEBANK_{table.upper()}_" if env_prefix is None else env_prefix
            name = f"{prefix}{key.upper()}"
            text = environ.get(name)
            if text is not None:
                values[key] = _from_env(table, key, kind, name, text)
            elif key in found:
                values[key] = _typed(table, key, kind, found[key])
        out[table] = values
    return out


def resolve_path(base: Path, raw: str) -> Path:
    """``raw`` (``~`` expanded) as an absolute path; a relative one is taken from ``base``."""
    path = Path(raw).expanduser()
    return path if path.is_absolute() else base / path


def is_host_port(address: str, *, any_host: bool = False, any_port: bool = False) -> bool:
    """Whether ``address`` is "host:port". ``any_host``: the host may be empty (every
    interface); ``any_port``: the port may be 0 (any free port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not (host or any_host) or not (port.isascii() and port.isdigit()):
        return False
    return (0 if any_port else 1) <= int(port) <= 65535


def is_target(address: str) -> bool:
    """Whether ``address`` is what a client may dial: "host:port", or a gRPC target
    naming several servers: a list ``ipv4:HOST:PORT,HOST:PORT`` (or ``ipv6:``) or a DNS
    name ``dns:///NAME:PORT`` that resolves to several (replicas behind one address)."""
    scheme, sep, rest = address.partition(":")
    if sep and scheme in ("ipv4", "ipv6"):
        return bool(rest) and all(is_host_port(one) for one in rest.split(","))
    if sep and scheme == "dns":
        return is_host_port(rest.removeprefix("//").partition("/")[2] or rest.lstrip("/"))
    return is_host_port(address)


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string, for the configuration files ``init`` writes."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


__all__ = ["Kind", "Tables", "Value", "is_host_port", "is_target",
           "read_settings", "resolve_path", "toml_string"]
