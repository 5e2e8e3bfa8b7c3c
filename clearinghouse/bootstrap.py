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
from clearinghouse.usecases import citykeys
from clearinghouse.usecases.app import ClearinghouseApp
from clearinghouse.usecases.citykeys import (
    META_CITY_KEY_ID,
    META_CITY_PUBLIC_KEY,
    META_CLEARINGHOUSE_KEY_ID,
    META_CLEARINGHOUSE_PUBLIC_KEY,
)
from clearinghouse.usecases.clock import Clock, SystemClock
from runtime import keyfiles
from runtime.initfiles import all_or_nothing, new_paths, sqlite_files
from runtime.tls import TlsSettings
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


def init_city(data_dir: Path, *, database_url: str = "",
              tls: TlsSettings | None = None) -> Path:
    """Create the clearinghouse's data directory (mode 0700), its configuration, the city
    root key and the clearinghouse key (mode 0600), and its migrated database, with both
    public keys recorded in it; return the path of clearinghouse.toml.

    Safe to run again on the same directory: existing files and keys are kept. All or
    nothing: a failure on the way (e.g. the database refuses) removes every file this
    run created (``runtime.initfiles``), so a second run never "keeps" half a city.
    """
    config_path = data_dir / CONFIG_NAME
    with all_or_nothing((data_dir, config_path)) as created:
        data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(data_dir, 0o700)
        if not config_path.exists():
            config_path.write_text(render_config(database_url, tls=tls), encoding="utf-8")
        config = load_config(config_path)
        if database_url and config.database_url != database_url:
            named = config.database_url or "the SQLite file in the data directory"
            raise ConfigError(f"{config_path} already names the database ({named}); edit "
                              "it rather than passing another --database-url")
        created += new_paths((config.city_key_file, config.signing_key_file,
                              *sqlite_files(config.effective_database_url)))
        migrate_and_record(config)
    return config_path


def migrate_and_record(config: ClearinghouseConfig) -> None:
    """Bring the schema up to date; create the city root key and the clearinghouse key if
    this is a new clearinghouse, and record them (or check them) in the database.

    A clearinghouse key file missing for a database that already serves a key is refused
    rather than replaced. A city root key file missing for such a database is the root
    key living offline (ADR 0018): nothing is created; one present must be the root the
    city's chain names (the recorded one, or the one its last rotation named).
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
                present = path.exists() or path.is_symlink()
                if recorded is not None and not present and pub_key == META_CITY_PUBLIC_KEY:
                    continue  # the city root key lives offline
                if recorded is not None and not present:
                    raise ConfigError(
                        f"the {label} key file {path} is missing, and the database serves "
                        f"key id {repo.meta(id_key)}; restore that key file (a new key would "
                        "not match what the nodes were given)")
                ensure_key(path)
                info = key_info(path)
                if recorded is None:
                    repo.set_meta(pub_key, info.public_key.hex())
                    repo.set_meta(id_key, info.key_id)
                elif recorded != info.public_key.hex() and not (
                        pub_key == META_CITY_PUBLIC_KEY
                        and info.public_key == _current_root(repo, bytes.fromhex(recorded))):
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
        migrate.refuse_unless_current(db.writer, "timebank clearinghouse migrate -c FILE")
        db.refuse_unless_durable()
    except BaseException:
        db.dispose()
        raise
    return db


def open_app(config: ClearinghouseConfig, clock: Clock | None = None) -> ClearinghouseApp:
    """The clearinghouse's use-cases over its database (the caller disposes ``app.db``)."""
    return ClearinghouseApp(open_database(config), clock or SystemClock())


def city_key(config: ClearinghouseConfig, app: ClearinghouseApp) -> keys.SigningKey:
    """The city root key in its key file, refused unless it is the root key that signs
    the city's next act (the recorded one, or the one the last rotation named)."""
    key = read_key(config.city_key_file)
    public = keys.public_key(key)
    current = app.query(citykeys.chain).current_root
    if public != current:
        raise ConfigError(
            f"{config.city_key_file} (key id {keys.key_id(public)}) is not the city root key "
            f"this clearinghouse follows now (key id {keys.key_id(current)})")
    return key


def sibling_key_file(path: Path, public: bytes) -> Path:
    """Where a rotated-in clearinghouse key lives: beside the configured key file, named
    by its key id (``clearinghouse.key.<key id>``)."""
    return path.with_name(f"{path.name}.{keys.key_id(public)}")


def clearinghouse_keys(config: ClearinghouseConfig, app: ClearinghouseApp,
                       ) -> dict[bytes, keys.SigningKey]:
    """The clearinghouse's signing keys this machine holds, by public key: the configured
    key file, and each rotated-in key the city's chain names whose file is here (only
    keys of the chain: a key file nobody signed for is never used)."""
    log_keys = app.query(citykeys.chain).log_keys()
    found: dict[bytes, keys.SigningKey] = {}
    for public in log_keys.keys:
        for path in (config.signing_key_file, sibling_key_file(config.signing_key_file,
                                                               public)):
            if path.exists() or path.is_symlink():
                key = read_key(path)
                if keys.public_key(key) == public:
                    found[public] = key
    return found


def signing_key(config: ClearinghouseConfig, app: ClearinghouseApp) -> keys.SigningKey:
    """The clearinghouse key that signs the next tree head (the recorded one, or the one
    the city's last rotation named), refused if this machine does not hold it."""
    current = app.query(citykeys.current_clearinghouse_key)
    found = clearinghouse_keys(config, app).get(current)
    if found is None:
        raise ConfigError(
            f"the clearinghouse signs with key id {keys.key_id(current)}, and neither "
            f"{config.signing_key_file} nor "
            f"{sibling_key_file(config.signing_key_file, current)} holds it")
    return found


def origin_key(app: ClearinghouseApp) -> bytes | None:
    """The clearinghouse key this database was initialised with: the log's name comes
    from it for ever, whatever key signs now (None in a database without one)."""
    with app.db.read() as conn:
        recorded = Repo(conn).meta(META_CLEARINGHOUSE_PUBLIC_KEY)
    return None if recorded is None else bytes.fromhex(recorded)


def _current_root(repo: Repo, recorded: bytes) -> bytes:
    """The root key the city's chain names now, from the recorded one (ADR 0018)."""
    from clearinghouse.usecases import wire
    from timebank.citykeys import CityKeys, KeyChainError

    try:
        return CityKeys(recorded, [wire.from_bytes(e) for _, _, e in repo.key_acts()]
                        ).current_root
    except KeyChainError:
        return recorded
