"""One configuration scheme for both services (ADR 0020): a TOML file, each setting
overridable by the environment variable ``TIMEBANK_<TABLE>_<KEY>``.

A service declares its settings once, as a ``Schema`` of ``Setting`` s: table, key,
default (whose type is the setting's type), bounds or rule, and a short description in
Chinese and English. From that one declaration come the reading and checking of a file
(``Schema.read``), the documented example file and the file ``init`` writes
(``Schema.render``), and what ``config show`` prints (``Settings.sources``).

``Schema.read`` refuses, naming the setting and where its value came from (the file or
the environment variable): a missing or unreadable file, an unknown table or setting (so
a misspelt setting never silently falls back to its default), a value of the wrong
type, out of bounds, or not of the form its rule asks. The environment is shared (one
host may run both services and the ``timebank`` tools, whose options read TIMEBANK_CA,
TIMEBANK_NODE_ADDRESS ...), so a variable that names no setting is not refused; it is
listed in ``Settings.ignored_env`` for ``config check`` to warn about. The service then
builds its frozen configuration from the typed values and checks what involves more
than one setting (``Settings.refuse`` names them the same way).
"""

from __future__ import annotations

import os
import textwrap
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from runtime.errors import ConfigError

#: A setting's value: a text, a whole number, true or false, or a list of texts (in the
#: environment: the texts separated by commas; true/false as true, false, 1 or 0).
Value = str | int | bool | tuple[str, ...]
#: (table, key)
Name = tuple[str, str]

ENV_PREFIX = "TIMEBANK_"
FILE, ENV, DEFAULT = "file", "env", "default"
#: How long a text setting may be, and a list's item (bounded input).
MAX_TEXT_CHARS = 4096
_BOOLS = {"true": True, "1": True, "false": False, "0": False}
_WIDTH = 88


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting, declared once. Its type is its default's. ``low``/``high`` bound a
    whole number (required) or a list's length; ``choices`` or ``rule`` (with
    ``rule_text``, what a good value is) check a text or each item of a list; an empty
    text is "not set" and passes them, unless ``required``. ``path``: relative values
    are taken from the file's folder. ``secret``: never shown (a password in a URL)."""

    table: str
    key: str
    default: Value
    zh: str
    en: str
    low: int | None = None
    high: int | None = None
    choices: tuple[str, ...] = ()
    rule: Callable[[str], bool] | None = field(default=None, compare=False)
    rule_text: str = ""
    required: bool = False
    path: bool = False
    secret: bool = False
    #: What the example file shows, when it is not the default.
    example: Value | None = None

    def __post_init__(self) -> None:
        for part in (self.table, self.key):
            if not (part.isascii() and part.replace("_", "").isalnum() and part.islower()):
                raise ValueError(f"setting names are lower_snake ASCII: {self.name}")
        if isinstance(self.default, int) and not isinstance(self.default, bool) and (
                self.low is None or self.high is None):
            raise ValueError(f"{self.name}: a whole number needs bounds")
        if isinstance(self.default, tuple) and self.high is None:
            raise ValueError(f"{self.name}: a list needs a length bound")
        if not (self.zh and self.en):
            raise ValueError(f"{self.name}: describe it in Chinese and English")
        if self.problem(self.default) is not None and not self.required:
            raise ValueError(f"{self.name}: the default {self.default!r} is not valid")

    @property
    def name(self) -> str:
        return f"[{self.table}] {self.key}"

    @property
    def env(self) -> str:
        return f"{ENV_PREFIX}{self.table.upper()}_{self.key.upper()}"

    @property
    def kind(self) -> type:
        return type(self.default)

    def must(self) -> str:
        """What a good value is, in words."""
        if self.kind is bool:
            return "true or false"
        if self.kind is int:
            return f"a whole number from {self.low} to {self.high}"
        what = f"one of {', '.join(self.choices)}" if self.choices else self.rule_text or "text"
        if self.kind is tuple:
            return f"a list of at most {self.high} texts, each {what}"
        return what

    def _text_problem(self, text: str) -> bool:
        if len(text) > MAX_TEXT_CHARS:
            return True
        if not text:
            return False
        if self.choices and text not in self.choices:
            return True
        return self.rule is not None and not self.rule(text)

    def problem(self, value: Value) -> str | None:
        """Why ``value`` (of the right type) is not good; None if it is."""
        if self.required and value in ("", ()):
            return "required"
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            assert self.low is not None and self.high is not None
            return None if self.low <= value <= self.high else self.must()
        if isinstance(value, tuple):
            assert self.high is not None
            if len(value) > self.high or any(not item or self._text_problem(item)
                                             for item in value):
                return self.must()
            return None
        return self.must() if self._text_problem(value) else None


@dataclass(frozen=True, slots=True)
class Table:
    """A table of a service's file, described for its example file."""

    name: str
    zh: str
    en: str


@dataclass(frozen=True, slots=True)
class Source:
    """Where a setting's value came from: ``kind`` is file, env or default; ``name`` the
    file's path or the variable's name."""

    kind: str
    name: str = ""

    def __str__(self) -> str:
        if self.kind == FILE:
            return self.name
        if self.kind == ENV:
            return f"environment variable {self.name}"
        return "the default"


def _typed(setting: Setting, raw: object) -> Value | None:
    """``raw`` from a TOML file as the setting's type; None if it is of another type."""
    kind = setting.kind
    if kind is bool:
        return raw if isinstance(raw, bool) else None
    if kind is int:
        return raw if isinstance(raw, int) and not isinstance(raw, bool) else None
    if kind is tuple:
        if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
            return tuple(raw)
        return None
    return raw if isinstance(raw, str) else None


def _parsed(setting: Setting, text: str) -> Value | None:
    """``text`` from the environment as the setting's type; None if it is not one."""
    kind = setting.kind
    if kind is str:
        return text
    if kind is tuple:
        return tuple(item.strip() for item in text.split(",") if item.strip())
    if kind is bool:
        return _BOOLS.get(text.strip().lower())
    try:
        return int(text.strip()) if text.isascii() else None
    except ValueError:
        return None


def _shown(setting: Setting, raw: object) -> str:
    if setting.secret:
        return "(hidden)"
    text = repr(raw)
    return text if len(text) <= 80 else text[:77] + "..."


def _refusal(setting: Setting, source: Source, path: Path, raw: object,
             why: str) -> ConfigError:
    if why == "required":
        return ConfigError(f"配置项 {setting.name} 必须设置 ({setting.name} is required: set "
                           f"it in {path} or by {setting.env})")
    return ConfigError(f"配置项 {setting.name} 无效 ({setting.name} must be {why}, not "
                       f"{_shown(setting, raw)}; from {source})")


def _read_toml(path: Path, init: str) -> dict[str, object]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"找不到配置文件 (no configuration file at {path}; run `{init}` or "
                          f"name the file with --config)") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a directory, not a configuration file") from None
    except PermissionError:
        raise ConfigError(f"无法读取配置文件 (cannot read {path}: permission denied)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of a schema as read: its typed value and where it came from."""

    schema: Schema
    path: Path
    values: Mapping[Name, Value]
    sources: Mapping[Name, Source]
    #: TIMEBANK_<TABLE>_* variables of this service's tables that name no setting.
    ignored_env: tuple[str, ...] = ()

    @property
    def base(self) -> Path:
        """The folder relative paths are taken from: the file's."""
        return self.path.resolve().parent

    def _get(self, table: str, key: str, kind: type) -> Value:
        value = self.values[(table, key)]
        if type(value) is not kind:
            raise TypeError(f"[{table}] {key} is {type(value).__name__}, not {kind.__name__}")
        return value

    def text(self, table: str, key: str) -> str:
        value = self._get(table, key, str)
        assert isinstance(value, str)
        return value

    def number(self, table: str, key: str) -> int:
        value = self._get(table, key, int)
        assert isinstance(value, int)
        return value

    def flag(self, table: str, key: str) -> bool:
        return self._get(table, key, bool) is True

    def texts(self, table: str, key: str) -> tuple[str, ...]:
        value = self._get(table, key, tuple)
        assert isinstance(value, tuple)
        return value

    def path_of(self, table: str, key: str, base: Path | None = None) -> Path | None:
        """A path setting, absolute (relative: from ``base``, by default the file's
        folder); None when it is empty."""
        raw = self.text(table, key)
        return resolve_path(self.base if base is None else base, raw) if raw else None

    def is_set(self, table: str, key: str) -> bool:
        """Whether the file or the environment gave the setting (not its default)."""
        return self.sources[(table, key)].kind != DEFAULT

    def table(self, table: str) -> dict[str, Value]:
        return {key: value for (t, key), value in self.values.items() if t == table}

    def must_exist(self, table: str, key: str, path: Path | None) -> None:
        """ConfigError naming ``[table] key`` if ``path`` (what it names) is not there."""
        if path is not None and not os.path.lexists(path):
            raise self.refuse(table, key, f"names {path}, which does not exist",
                              "所指文件不存在")

    def refuse(self, table: str, key: str, en: str, zh: str = "") -> ConfigError:
        """An error about the setting ``[table] key``, saying where its value came from
        (for checks that involve more than one setting, made by the service)."""
        setting = self.schema.setting(table, key)
        source = self.sources[(table, key)]
        where = "the default" if source.kind == DEFAULT else str(source)
        return ConfigError(f"配置项 {setting.name} {zh or '无效'} ({setting.name} {en}; "
                           f"from {where})")


@dataclass(frozen=True, slots=True)
class Schema:
    """The settings a service knows, each declared once (see the module)."""

    service: str
    init: str
    tables: tuple[Table, ...]
    settings: tuple[Setting, ...]

    def __post_init__(self) -> None:
        names = {t.name for t in self.tables}
        seen: set[str] = set()
        for s in self.settings:
            if s.table not in names:
                raise ValueError(f"{s.name}: the table [{s.table}] is not declared")
            if s.env in seen:
                raise ValueError(f"{s.name} is declared twice (or clashes with another "
                                 "setting's environment variable)")
            seen.add(s.env)

    def setting(self, table: str, key: str) -> Setting:
        for s in self.settings:
            if (s.table, s.key) == (table, key):
                return s
        raise KeyError(f"[{table}] {key}")

    def in_table(self, table: str) -> Iterator[Setting]:
        return (s for s in self.settings if s.table == table)

    def read(self, path: Path, environ: Mapping[str, str] | None = None) -> Settings:
        """Every setting's value: from the environment variable ``Setting.env`` in
        ``environ`` (by default the process's), else from the file at ``path``, else its
        default; each checked (see the module). A missing file says to run ``init``."""
        environ = os.environ if environ is None else environ
        doc = _read_toml(path, self.init)
        tables = [t.name for t in self.tables]
        for table, found in doc.items():
            if table not in tables:
                raise ConfigError(
                    f"{path}: 未知的配置表 [{table}] (unknown table [{table}]; the "
                    f"{self.service}'s settings live in {', '.join(f'[{t}]' for t in tables)})")
            if not isinstance(found, dict):
                raise ConfigError(f"{path}: [{table}] must be a table")
            known = [s.key for s in self.in_table(table)]
            for key in found:
                if key not in known:
                    raise ConfigError(
                        f"{path}: 未知的配置项 [{table}] {key} (unknown setting [{table}] "
                        f"{key}; known in [{table}]: {', '.join(known)})")
        values: dict[Name, Value] = {}
        sources: dict[Name, Source] = {}
        for s in self.settings:
            section = doc.get(s.table, {})
            assert isinstance(section, dict)
            text = environ.get(s.env)
            value: Value | None
            raw: object
            if text is not None:
                source, raw = Source(ENV, s.env), text
                value = _parsed(s, text)
            elif s.key in section:
                source, raw = Source(FILE, str(path)), section[s.key]
                value = _typed(s, raw)
            else:
                source, raw, value = Source(DEFAULT), s.default, s.default
            why = s.must() if value is None else s.problem(value)
            if why is not None or value is None:
                raise _refusal(s, source, path, raw, why or s.must())
            values[(s.table, s.key)] = value
            sources[(s.table, s.key)] = source
        known_env = {s.env for s in self.settings}
        prefixes = tuple(f"{ENV_PREFIX}{t.upper()}_" for t in tables)
        ignored = tuple(sorted(name for name in environ
                               if name.startswith(prefixes) and name not in known_env))
        return Settings(self, path, MappingProxyType(values), MappingProxyType(sources),
                        ignored)

    def env_prefixes(self) -> tuple[str, ...]:
        """The prefixes of every variable that may override this service's settings."""
        return tuple(f"{ENV_PREFIX}{t.name.upper()}_" for t in self.tables)

    def render(self, values: Mapping[Name, Value] | None = None, *, header: str,
               example: bool = False) -> str:
        """A documented TOML file of every setting: ``values`` where given, else (with
        ``example``) each setting's example, else its default."""
        values = values or {}
        unknown = set(values) - {(s.table, s.key) for s in self.settings}
        if unknown:
            raise KeyError(f"no such settings: {sorted(unknown)}")
        out = [f"# {line}" if line else "#" for line in header.splitlines()]
        for table in self.tables:
            out += ["", *_comment(table.zh, table.en), f"[{table.name}]"]
            for s in self.in_table(table.name):
                value = values.get((s.table, s.key))
                if value is None:
                    value = s.example if example and s.example is not None else s.default
                note = f"{s.env}; default {toml_value(s.default) if s.default != '' else 'empty'}"
                out += [*_comment(s.zh, f"{s.en} ({note})"), f"{s.key} = {toml_value(value)}"]
        return "\n".join(out) + "\n"


def _comment(zh: str, en: str) -> list[str]:
    lines = [zh]  # one line: Chinese has no spaces to wrap at
    lines += textwrap.wrap(en, width=_WIDTH - 2, break_long_words=False,
                           break_on_hyphens=False)
    return [f"# {line}" for line in lines]


def toml_value(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(toml_string(item) for item in value) + "]"
    return toml_string(value)


# ------------------------------------------------------------------ shared tables and rules


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


def is_key_hex(text: str) -> bool:
    """Whether ``text`` is an Ed25519 public key as 64 lowercase hex characters."""
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


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


SERVER = Table("server", "gRPC 服务：监听地址、指标端点、消息大小与线程数。",
               "Serving: the gRPC address, the Prometheus endpoint, message size and threads.")
LOG = Table("log", "日志。", "Logs.")
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "console")


def server_settings(*, listen: str, metrics_listen: str, workers: int, max_workers: int,
                    listen_example: str = "") -> tuple[Setting, ...]:
    """The ``[server]`` table both services have."""
    return (
        Setting("server", "listen", listen,
                "gRPC 服务监听地址（主机:端口），以 [tls] 中的证书提供 TLS。",
                "HOST:PORT the gRPC API listens on, serving TLS with the certificate in "
                "[tls]. Port 0: any free port.",
                rule=lambda a: is_host_port(a, any_port=True),
                rule_text="HOST:PORT, e.g. 127.0.0.1:7443",
                example=listen_example or None),
        Setting("server", "metrics_listen", metrics_listen,
                "Prometheus 指标端点（/metrics）的地址；空字符串表示关闭。",
                "HOST:PORT of the Prometheus endpoint (/metrics); an empty string turns it "
                "off. Port 0: any free port.",
                rule=lambda a: is_host_port(a, any_host=True, any_port=True),
                rule_text="HOST:PORT (or empty: no metrics endpoint)"),
        Setting("server", "max_message_bytes", 65536, "接受的最大 gRPC 消息（字节）。",
                "The largest gRPC request accepted, in bytes.",
                low=1024, high=MAX_MESSAGE_BYTES),
        Setting("server", "workers", workers, "处理 gRPC 调用的线程数。",
                "Threads serving gRPC calls.", low=1, high=max_workers),
    )


LOG_SETTINGS = (
    Setting("log", "level", "info", "日志级别：debug、info、warning 或 error。",
            "One of debug, info, warning, error.", choices=LOG_LEVELS),
    Setting("log", "format", "json",
            "json（每行一个 JSON 对象，供 journald 或日志收集）或 console（供终端阅读）。",
            "json (one JSON object a line, for journald or a log shipper) or console (for "
            "a terminal).", choices=LOG_FORMATS),
)


__all__ = ["DEFAULT", "ENV", "FILE", "LOG", "LOG_SETTINGS", "SERVER", "Schema", "Setting",
           "Settings", "Source", "Table", "Value", "is_host_port", "is_key_hex", "is_target",
           "resolve_path", "server_settings", "toml_string", "toml_value"]
