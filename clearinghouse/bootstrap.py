"""Putting a clearinghouse together: data directory, keys, database → ClearinghouseApp.

``init_city`` is what the bureau runs once (``timebank clearinghouse init``); it is safe
to run again: files and keys that exist are kept, the schema is brought up to date, and
the keys recorded in the database must be the ones in the key files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from clearinghouse.config import (
    CONFIG_NAME,
    ClearinghouseConfig,
    ConfigError,
    load_config,
    render_config,
)
from clearinghouse.storage import migrate
from clearinghouse.storage.db import Database
from clearinghouse.storage.repo import Repo
from clearinghouse.usecases.app import ClearinghouseApp
from clearinghouse.usecases.citykeys import (
    META_CITY_KEY_ID,
    META_CITY_PUBLIC_KEY,
    META_CLEARINGHOUSE_KEY_ID,
    META_CLEARINGHOUSE_PUBLIC_KEY,
)
from clearinghouse.usecases.clock import Clock, SystemClock
from runtime import keyfiles
from timebank import keys


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A public key and its key id, as the bureau and the nodes see it."""

    key_id: str
    public_key: bytes


def ensure_key(path: Path) -> bool:
    """Create an Ed25519 key at ``path`` (mode 0600) unless one is there; return whether
    it was created. An existing key file is checked (size, permissions), never replaced."""
    try:
        if path.exists() or path.is_symlink():
            keyfiles.read_seed(path)
            return False
        keyfiles.write_seed(path, keys.generate())
    except keyfiles.KeyFileError as e:
        raise ConfigError(str(e)) from None
    return True


def read_key(path: Path) -> keys.SigningKey:
    try:
        return keyfiles.read_seed(path)
    except keyfiles.KeyFileError as e:
        raise ConfigError(str(e)) from None


def key_info(path: Path) -> KeyInfo:
    public = keys.public_key(read_key(path))
    return KeyInfo(keys.key_id(public), public)


def init_city(data_dir: Path, *, database_url: str = "") -> Path:
    """Create the clearinghouse's data directory (mode 0700), its configuration, the city
    root key and the clearinghouse key (mode 0600), and its migrated database, with both
    public keys recorded in it; return the path of clearinghouse.toml.

    Safe to run again on the same directory: existing files and keys are kept.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    config_path = data_dir / CONFIG_NAME
    if not config_path.exists():
        config_path.write_text(render_config(database_url), encoding="utf-8")
    config = load_config(config_path)
    if database_url and config.database_url != database_url:
        named = config.database_url or "the SQLite file in the data directory"
        raise ConfigError(f"{config_path} already names the database ({named}); edit it "
                          "rather than passing another --database-url")
    migrate_and_record(config)
    return config_path


def migrate_and_record(config: ClearinghouseConfig) -> None:
    """Bring the schema up to date; create the city root key and the clearinghouse key if
    this is a new clearinghouse, and record them (or check them) in the database.

    A key file missing for a database that already serves a key is refused rather than
    replaced: a new city root key would silently invalidate every admission.
    """
    db = Database(config.effective_database_url)
    try:
        migrate.upgrade(db.writer)
        with db.write() as conn:
            repo = Repo(conn)
            for label, path, pub_key, id_key in (
                ("city root", config.city_key_file, META_CITY_PUBLIC_KEY, META_CITY_KEY_ID),
                ("clearinghouse", config.signing_key_file, META_CLEARINGHOUSE_PUBLIC_KEY,
                 META_CLEARINGHOUSE_KEY_ID),
            ):
                recorded = repo.meta(pub_key)
                if recorded is not None and not (path.exists() or path.is_symlink()):
                    raise ConfigError(
                        f"the {label} key file {path} is missing, and the database serves "
                        f"key id {repo.meta(id_key)}; restore that key file (a new key would "
                        "not match what the nodes were given)")
                ensure_key(path)
                info = key_info(path)
                if recorded is None:
                    repo.set_meta(pub_key, info.public_key.hex())
                    repo.set_meta(id_key, info.key_id)
                elif recorded != info.public_key.hex():
                    raise ConfigError(
                        f"the database serves another {label} key than the one in {path} "
                        f"(key id {repo.meta(id_key)}, not {info.key_id}); restore the "
                        "right key file or give another database")
    finally:
        db.dispose()


def open_database(config: ClearinghouseConfig) -> Database:
    """The clearinghouse's database, refused unless its schema is current. The caller
    disposes it."""
    db = Database(config.effective_database_url)
    try:
        current, head = migrate.current_revision(db.writer), migrate.head_revision()
    except Exception:
        db.dispose()
        raise
    if current != head:
        db.dispose()
        raise ConfigError(
            f"the database schema is at {current or 'nothing'}, the software needs "
            f"{head}: run `timebank clearinghouse init` on its data directory first")
    return db


def open_app(config: ClearinghouseConfig, clock: Clock | None = None) -> ClearinghouseApp:
    """The clearinghouse's use-cases over its database (the caller disposes ``app.db``)."""
    return ClearinghouseApp(open_database(config), clock or SystemClock())


def _served_key(path: Path, app: ClearinghouseApp, meta_key: str,
                what: str) -> keys.SigningKey:
    """The key in ``path``, checked against the one the database records under
    ``meta_key``."""
    key = read_key(path)
    public = keys.public_key(key)
    with app.db.read() as conn:
        recorded = Repo(conn).meta(meta_key)
    if recorded != public.hex():
        raise ConfigError(
            f"{path} (key id {keys.key_id(public)}) is not the {what} this clearinghouse "
            "serves")
    return key


def city_key(config: ClearinghouseConfig, app: ClearinghouseApp) -> keys.SigningKey:
    """The city root key, checked against the one this clearinghouse's database serves."""
    return _served_key(config.city_key_file, app, META_CITY_PUBLIC_KEY, "city root key")


def signing_key(config: ClearinghouseConfig, app: ClearinghouseApp) -> keys.SigningKey:
    """The clearinghouse key, checked against the one its database serves."""
    return _served_key(config.signing_key_file, app, META_CLEARINGHOUSE_PUBLIC_KEY,
                       "clearinghouse key")
