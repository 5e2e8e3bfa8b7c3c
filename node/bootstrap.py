"""Putting a node together: data directory, database, policy, secret → NodeApp."""

from __future__ import annotations

import os
from pathlib import Path

from node.config import CONFIG_NAME, DEFAULT_METRICS_LISTEN, NodeConfig, load_config, render_config
from node.domain.clock import Clock, SystemClock
from node.domain.identity import MIN_SECRET_BYTES
from node.domain.policy import DEFAULT_POLICY_TOML, Policy, PolicyError, load_policy
from node.storage import migrate
from node.storage.db import Database
from node.storage.repo import Repo
from node.usecases import admissions, policies
from node.usecases.app import NodeApp, NodeIdentity
from node.usecases.ledger import initialise
from runtime import keyfiles
from runtime.errors import ConfigError
from runtime.initfiles import all_or_nothing, new_paths, sqlite_files
from runtime.tls import TlsSettings
from timebank import keys
from timebank.citypolicy import PolicyActError


def read_secret(path: Path) -> bytes:
    """The city secret, refused unless private, readable and of a sane length
    (``runtime.keyfiles.read_city_secret``): a node never starts on a weak or exposed one."""
    try:
        return keyfiles.read_city_secret(path)
    except keyfiles.KeyFileError as e:
        raise ConfigError(str(e)) from None


def read_policy(path: Path) -> Policy:
    """The node's local policy file: run until a city-signed policy is in force."""
    try:
        return load_policy(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"the policy file {path} does not exist") from None
    except PolicyError as e:
        raise ConfigError(f"{path}: {e}") from None


def init_data_dir(data_dir: Path, node_id: str, district: str, *, database_url: str = "",
                  listen: str = "127.0.0.1:7443", metrics_listen: str = DEFAULT_METRICS_LISTEN,
                  policy_text: str | None = None,
                  city_secret: bytes | None = None, clearinghouse_address: str = "",
                  clearinghouse_public_key: str = "", city_public_key: str = "",
                  peer_nodes: tuple[str, ...] = (), tls: TlsSettings | None = None) -> Path:
    """Create a node's data directory, its database schema and genesis; return node.toml.

    Safe to run again on the same directory: existing files are kept. All or nothing:
    what it is given is checked before anything is written, and a failure on the way
    (e.g. the database refuses) removes every file this run created
    (``runtime.initfiles``), so that a second run never "keeps" a half-made node.
    """
    NodeIdentity(node_id, district, b"x" * MIN_SECRET_BYTES)  # validates the node id
    if not district.strip():
        raise ConfigError("the district needs a name")
    text = DEFAULT_POLICY_TOML if policy_text is None else policy_text
    try:
        load_policy(text)
    except PolicyError as e:
        raise ConfigError(f"the policy: {e}") from None
    config_path = data_dir / CONFIG_NAME
    policy_path = data_dir / "policy.toml"
    secret_path = data_dir / "city-secret"
    with all_or_nothing((data_dir, config_path, policy_path, secret_path)) as created:
        data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(data_dir, 0o700)
        if not config_path.exists():
            config_path.write_text(render_config(
                node_id, district, database_url, listen, metrics_listen=metrics_listen,
                clearinghouse_address=clearinghouse_address,
                clearinghouse_public_key=clearinghouse_public_key, peer_nodes=peer_nodes,
                city_public_key=city_public_key, tls=tls), encoding="utf-8")
        if not policy_path.exists():
            policy_path.write_text(text, encoding="utf-8")
        if not (secret_path.exists() or secret_path.is_symlink()):
            try:
                keyfiles.write_city_secret(secret_path, city_secret if city_secret is not None
                                           else keyfiles.new_city_secret())
            except keyfiles.KeyFileError as e:
                raise ConfigError(str(e)) from None
        config = load_config(config_path)
        if config.node_id != node_id:
            raise ConfigError(f"{config_path} is for node {config.node_id}, not {node_id}")
        created += new_paths((config.signing_key_file,
                              *sqlite_files(config.effective_database_url)))
        check_files(config)
        ensure_signing_key(config)
        migrate_and_initialise(config)
    return config_path


def check_files(config: NodeConfig) -> None:
    """Refuse, before anything is written, a node whose policy or city secret is missing
    or unusable: the next steps (its key, its database) would be made for nothing."""
    if not config.policy_file.exists():
        raise ConfigError(
            f"the policy file {config.policy_file} ([node] policy_file) does not exist: give "
            "the city's published policy with --policy FILE (the bureau's `timebank "
            "clearinghouse policy init` writes the default one), or put it there")
    read_policy(config.policy_file)
    if not (config.city_secret_file.exists() or config.city_secret_file.is_symlink()):
        raise ConfigError(
            f"the city secret {config.city_secret_file} ([node] city_secret_file) does not "
            "exist: give the one the bureau issued with --city-secret FILE (`timebank "
            "clearinghouse city-secret`), or put it there (mode 0600)")
    read_secret(config.city_secret_file)


def ensure_signing_key(config: NodeConfig) -> bool:
    """Create the node's Ed25519 signing key if it has none; return whether it was created.

    The bureau admits the node by its public key; the seed never leaves this file.
    """
    try:
        if config.signing_key_file.exists():
            keyfiles.read_seed(config.signing_key_file)  # refuses a damaged or exposed key file
            return False
        keyfiles.write_seed(config.signing_key_file, keys.generate())
    except keyfiles.KeyFileError as e:
        raise ConfigError(str(e)) from None
    return True


def signing_identity(config: NodeConfig) -> tuple[str, str]:
    """The node's key id and public key (hex), for the bureau's admission."""
    try:
        public = keys.public_key(keyfiles.read_seed(config.signing_key_file))
    except keyfiles.KeyFileError as e:
        raise ConfigError(str(e)) from None
    return keys.key_id(public), public.hex()


def migrate_and_initialise(config: NodeConfig) -> None:
    policy = read_policy(config.policy_file)
    node = NodeIdentity(config.node_id, config.district, read_secret(config.city_secret_file))
    db = Database(config.effective_database_url)
    try:
        migrate.upgrade(db.writer)
        with db.write() as conn:
            initialise(Repo(conn), node, policy.digest)
    finally:
        db.dispose()


def open_app(config: NodeConfig, clock: Clock | None = None) -> NodeApp:
    """Open a node for serving; refuse if its schema is not current or it is another node's."""
    policy = read_policy(config.policy_file)
    node = NodeIdentity(config.node_id, config.district, read_secret(config.city_secret_file),
                        federated=config.federated,
                        city_key=bytes.fromhex(config.city_public_key), logins=config.logins)
    db = Database(config.effective_database_url)
    try:
        migrate.refuse_unless_current(db.writer, "timebank node migrate --config FILE")
        db.refuse_unless_durable()
    except BaseException:
        db.dispose()
        raise
    with db.read() as conn:
        stored = Repo(conn).meta.get("node_id")
    if stored != config.node_id:
        db.dispose()
        raise ConfigError(f"the database belongs to node {stored}, not {config.node_id}")
    app = NodeApp(db, policy, clock or SystemClock(), node)
    try:
        load_city_policies(app, config)
    except BaseException:
        db.dispose()
        raise
    return app


def load_city_policies(app: NodeApp, config: NodeConfig) -> None:
    """Give ``app`` the city-signed policies its database holds, each verified again under
    the city public key in ``config`` (none without one: the node runs its local file).
    A stored policy that does not verify is refused: the key was changed, or the row."""
    if not config.city_public_key:
        return
    stored = app.query(policies.stored)
    try:
        acts = policies.verified(stored, app.query(admissions.chain))
    except PolicyActError as e:
        raise ConfigError(f"{e.message} under the city public key in the configuration "
                          f"({e.reason}); is [city] public_key the city's "
                          "root key?") from None
    app.set_city_policies(app.policies.with_city(acts))
