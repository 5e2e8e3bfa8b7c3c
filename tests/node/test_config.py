"""The node's configuration file: the peers it compares tree heads with and the
finality bound (issue 14), read from the file and from the environment, and refused
with a message naming the setting when wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.bootstrap import init_data_dir
from node.config import (
    DEFAULT_FINALITY_SECONDS,
    DEFAULT_SETTLEMENT_SECONDS,
    MAX_PEERS,
    ConfigError,
    load_config,
)

KEY = "ab" * 32


def _node(tmp_path: Path, peers: tuple[str, ...] = ()) -> Path:
    return init_data_dir(tmp_path / "node", "320115", "江宁区", listen="127.0.0.1:7443",
                         clearinghouse_address="127.0.0.1:7400", clearinghouse_public_key=KEY,
                         city_public_key="cd" * 32, peer_nodes=peers)


def test_init_writes_the_peers_and_the_defaults(tmp_path: Path) -> None:
    config = load_config(_node(tmp_path, ("127.0.0.1:7444", "127.0.0.1:7445")))
    assert config.peer_nodes == ("127.0.0.1:7444", "127.0.0.1:7445")
    assert config.finality_seconds == DEFAULT_FINALITY_SECONDS
    assert config.peer_check_seconds == 15
    assert config.settlement_seconds == DEFAULT_SETTLEMENT_SECONDS
    alone = load_config(_node(tmp_path / "alone"))
    assert alone.peer_nodes == ()


def test_the_environment_overrides_the_peers(tmp_path: Path) -> None:
    path = _node(tmp_path, ("127.0.0.1:7444",))
    config = load_config(path, {"TIMEBANK_PEERS_NODES": "10.0.0.2:7443, 10.0.0.3:7443,",
                                "TIMEBANK_CLEARINGHOUSE_FINALITY_SECONDS": "60"})
    assert config.peer_nodes == ("10.0.0.2:7443", "10.0.0.3:7443")
    assert config.finality_seconds == 60


def _with(path: Path, old: str, new: str) -> Path:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")
    return path


@pytest.mark.parametrize(("old", "new", "match"), [
    ("nodes = []", 'nodes = "127.0.0.1:7444"', r"\[peers\] nodes must be a list"),
    ("nodes = []", "nodes = [7444]", r"\[peers\] nodes must be a list"),
    ("nodes = []", 'nodes = ["nowhere"]', "HOST:PORT"),
    ("nodes = []", 'nodes = ["127.0.0.1:7444", "127.0.0.1:7444"]', "twice"),
    ("nodes = []", 'nodes = ["127.0.0.1:7443"]', "itself"),
    ("nodes = []", "nodes = [" + ", ".join(f'"127.0.0.1:{8000 + i}"'
                                           for i in range(MAX_PEERS + 1)) + "]", "at most"),
    ("check_seconds = 15", "check_seconds = 0", "check_seconds"),
    (f"finality_seconds = {DEFAULT_FINALITY_SECONDS}", "finality_seconds = 0",
     "finality_seconds"),
    (f"settlement_seconds = {DEFAULT_SETTLEMENT_SECONDS}", "settlement_seconds = 0",
     "settlement_seconds"),
])
def test_bad_peer_settings_are_refused(tmp_path: Path, old: str, new: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(_with(_node(tmp_path), old, new))


def test_peers_need_a_clearinghouse(tmp_path: Path) -> None:
    path = init_data_dir(tmp_path / "alone", "320115", "江宁区")
    with pytest.raises(ConfigError, match="clearinghouse"):
        load_config(_with(path, "nodes = []", 'nodes = ["127.0.0.1:7444"]'))


def test_tls_settings_from_the_file_and_the_environment(tmp_path: Path) -> None:
    """``[tls]``: written by init (paths as given), relative paths taken from the file's
    folder, each overridden by TIMEBANK_TLS_<KEY>; serving needs them unless insecure."""
    from runtime.tls import ClientTls, ServerTls, TlsSettings

    ca, cert, key = (tmp_path / n for n in ("ca.pem", "node.pem", "node.key"))
    path = init_data_dir(tmp_path / "node", "320115", "江宁区",
                         tls=TlsSettings(ca, cert, key))
    config = load_config(path)
    assert config.server_tls() == ServerTls(cert, key)  # no client certificates asked
    assert config.client_tls() == ClientTls(ca, cert, key)
    _with(path, f'cert = "{cert}"', 'cert = "tls/mine.pem"')
    assert load_config(path).tls.cert == path.parent / "tls" / "mine.pem"
    insecure = load_config(path, {"TIMEBANK_TLS_INSECURE": "true"})
    assert insecure.server_tls() is None and insecure.client_tls() is None
    with pytest.raises(ConfigError, match=r"\[tls\] insecure must be true or false"):
        load_config(path, {"TIMEBANK_TLS_INSECURE": "yes"})
    _with(path, "insecure = false", 'insecure = "false"')
    with pytest.raises(ConfigError, match=r"\[tls\] insecure must be true or false"):
        load_config(path)
    bare = load_config(_node(tmp_path / "bare"))
    with pytest.raises(ConfigError, match=r"^node 320115 未配置 TLS"):
        bare.server_tls()
    with pytest.raises(ConfigError, match=r"\[tls\] ca, cert, key must be set"):
        bare.client_tls()
