"""A city's whole data directory: the clearinghouse's and every district's configuration,
keys and databases."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import Engine

from city.audit.clearinghouse import Clearinghouse, clearinghouse_checks, open_clearinghouse
from city.audit.district import Node, held_sizes, node_checks
from city.audit.readonly import label, readonly_engine
from city.audit.report import AuditError, Bad, BadRecord, Check, Report, plural, run
from clearinghouse import config as ch_config
from node import config as node_config
from runtime.keyfiles import KeyFileError, read_seed
from timebank.keys import public_key


def _load_key(path: Path, what: str) -> bytes:
    try:
        return public_key(read_seed(path))
    except (KeyFileError, OSError) as e:
        raise AuditError(f"cannot read the {what} key {path}: {e}") from None


def audit_data_dir(data_dir: Path, clearinghouse_key: bytes | None = None) -> Report:
    """Audit a city's data directory as the demo lays it out (``clearinghouse/`` and one
    folder per district); raises AuditError only when it cannot start."""
    root = data_dir.resolve()
    ch_toml = root / "clearinghouse" / "clearinghouse.toml"
    if not ch_toml.is_file():
        raise AuditError(f"{ch_toml} not found: is {data_dir} a city's data directory? "
                         "(for another layout: --config FILE for each configuration)")
    return audit_configs(ch_toml, sorted(root.glob("*/node.toml")), clearinghouse_key,
                         root=root, source=str(data_dir))


def split_configs(paths: Sequence[Path]) -> tuple[Path, list[Path]]:
    """The clearinghouse's configuration and the districts' among ``paths``, told apart
    by their tables (a node's has ``[node]``); exactly one clearinghouse."""
    found: list[Path] = []
    nodes: list[Path] = []
    for path in paths:
        try:
            with path.open("rb") as f:
                doc = tomllib.load(f)
        except OSError as e:
            raise AuditError(f"cannot read {path}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise AuditError(f"{path} is not TOML: {e}") from None
        (nodes if "node" in doc else found).append(path)
    if len(found) != 1:
        raise AuditError("give the clearinghouse's configuration once (clearinghouse.toml) "
                         "and each district's node.toml: --config FILE, repeated"
                         + (f"; these are not a node's: {', '.join(map(str, found))}"
                            if found else ""))
    return found[0], nodes


def audit_config_files(paths: Sequence[Path], clearinghouse_key: bytes | None = None,
                       ) -> Report:
    """Audit a city laid out anyhow, given its configuration files: the clearinghouse's
    and every district's (each names its database, SQLite or PostgreSQL, and its keys)."""
    ch_toml, node_tomls = split_configs(paths)
    return audit_configs(ch_toml, node_tomls, clearinghouse_key, root=Path.cwd(),
                         source=", ".join(str(p) for p in paths))


def audit_configs(ch_toml: Path, node_tomls: Sequence[Path],
                  clearinghouse_key: bytes | None = None, *, root: Path,
                  source: str) -> Report:
    """Audit the clearinghouse ``ch_toml`` configures and the districts ``node_tomls``
    do; file names in the report are relative to ``root`` where they can be."""
    try:
        cfg = ch_config.load_config(ch_toml)
        node_cfgs = [node_config.load_config(p) for p in node_tomls]
    except (ch_config.ConfigError, node_config.ConfigError) as e:
        raise AuditError(str(e)) from None
    if len({n.node_id for n in node_cfgs}) != len(node_cfgs):
        raise AuditError("two of the node configurations are of the same district")
    own_key = _load_key(cfg.signing_key_file, "clearinghouse")
    key = clearinghouse_key or own_key
    city_key = _load_key(cfg.city_key_file, "city root") if cfg.city_key_file.exists() else None
    checks: list[Check] = []
    engines: list[Engine] = []
    try:
        engines.append(readonly_engine(cfg.effective_database_url))
        node_engines = [readonly_engine(n.effective_database_url) for n in node_cfgs]
        engines += node_engines
        sizes: set[int] = set()  # of every head a district holds: the log's one pass
        for engine in node_engines:  # keeps its root at each, to compare
            with engine.connect() as nconn:
                sizes |= held_sizes(nconn)
        with engines[0].connect() as conn:
            ch = open_clearinghouse(label(cfg.effective_database_url, root), conn, key,
                                     city_key, sizes)
            checks.append(run("keys", lambda: _keys_check(ch, own_key, node_cfgs)))
            checks += clearinghouse_checks(ch)
            checks.append(run("anchored districts",
                              lambda: _anchored_check(ch, node_cfgs)))
            for ncfg, engine in zip(node_cfgs, node_engines, strict=True):
                with engine.connect() as nconn:
                    node = Node(ncfg.node_id, ncfg.district, nconn,
                                 label(ncfg.effective_database_url, root))
                    checks += node_checks(node, ch)
    finally:
        for engine in engines:
            engine.dispose()
    return Report(source, tuple(checks))


def _keys_check(ch: Clearinghouse, own_key: bytes,
                node_cfgs: list[node_config.NodeConfig]) -> str:
    if ch.key != own_key:
        raise Bad(BadRecord(ch.file, "-", "clearinghouse.key",
                             "the clearinghouse's key file is not the key given"))
    for ncfg in node_cfgs:
        trusted = ncfg.clearinghouse_public_key
        if trusted and trusted != ch.key.hex():
            raise Bad(BadRecord(f"{ncfg.node_id}/node.toml", "[clearinghouse]", "public_key",
                                 "this district trusts another clearinghouse key"))
        if ncfg.node_id not in ch.node_keys:
            raise Bad(BadRecord(ch.file, "admissions", f"node {ncfg.node_id}",
                                 "a district in the directory was never admitted"))
    return (f"clearinghouse key {ch.key.hex()[:16]}…, trusted by "
            f"{plural(len(node_cfgs), 'district')}")


def _anchored_check(ch: Clearinghouse, node_cfgs: list[node_config.NodeConfig]) -> str:
    """Every district whose checkpoints the log records has its database here: a ledger
    the log anchored cannot be checked, or be missing, unseen."""
    here = {n.node_id for n in node_cfgs}
    for node_id, logged in sorted(ch.scan.checkpoints.items()):
        if node_id not in here:
            last = max(logged, key=lambda c: (c.entry_count, c.index))
            name = f"{ch.districts.get(node_id, '')} {node_id}".strip()
            raise Bad(BadRecord(f"{node_id}/node.toml", "-", "missing",
                                 f"{name} anchored {plural(last.entry_count, 'entry')} in "
                                 f"the log (leaf {last.index}); its ledger is not in this "
                                 f"directory"))
    total = sum(len(v) for v in ch.scan.checkpoints.values())
    return (f"{plural(len(ch.scan.checkpoints), 'district')} anchored "
            f"{plural(total, 'checkpoint')} in the log; each one's ledger is here")
