"""A city's whole data directory: the clearinghouse's and every district's configuration,
keys and databases."""

from __future__ import annotations

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
    """Audit a city's data directory; raises AuditError only when it cannot start."""
    root = data_dir.resolve()
    ch_toml = root / "clearinghouse" / "clearinghouse.toml"
    if not ch_toml.is_file():
        raise AuditError(f"{ch_toml} not found: is {data_dir} a city's data directory?")
    try:
        cfg = ch_config.load_config(ch_toml)
        node_cfgs = [node_config.load_config(p) for p in sorted(root.glob("*/node.toml"))]
    except (ch_config.ConfigError, node_config.ConfigError) as e:
        raise AuditError(str(e)) from None
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
    return Report(str(data_dir), tuple(checks))


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
