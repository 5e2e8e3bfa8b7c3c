"""The node's configuration file: the peers it compares tree heads with and the
finality bound (issue 14), read from the file and from the environment, and refused
with a message naming the setting when wrong."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from city.cli import app
from node.bootstrap import init_data_dir
from node.config import (
    DEFAULT_FINALITY_SECONDS,
    DEFAULT_SETTLEMENT_SECONDS,
    MAX_PEERS,
    SCHEMA,
    ConfigError,
    example,
    load_config,
)
from node.domain.access import LoginRules

KEY = "ab" * 32
ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


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


# ------------------------------------------------------------------ one scheme (ADR 0020)


def test_defaults_and_the_auth_table(tmp_path: Path) -> None:
    path = _node(tmp_path)
    config = load_config(path, {})
    assert (config.listen, config.metrics_listen, config.max_message_bytes, config.workers,
            config.log_level) == ("127.0.0.1:7443", "127.0.0.1:9443", 65536, 8, "info")
    assert config.logins == LoginRules()  # the hard-coded values before [auth] existed
    assert (config.logins.session_hours, config.logins.code_minutes,
            config.logins.max_failures, config.logins.lock_minutes) == (12, 15, 5, 15)
    _with(path, "session_hours = 12", "session_hours = 2")
    tuned = load_config(path, {"TIMEBANK_AUTH_MAX_FAILURES": "3",
                               "TIMEBANK_AUTH_ADDRESS_WINDOW_MINUTES": "30"})
    assert tuned.logins == LoginRules(session_hours=2, max_failures=3,
                                      address_window_minutes=30)


@pytest.mark.parametrize(("env", "says"), [
    ({"TIMEBANK_SERVER_WORKERS": "eight"},
     "[server] workers must be a whole number from 1 to 256, not 'eight'; from environment "
     "variable TIMEBANK_SERVER_WORKERS"),
    ({"TIMEBANK_AUTH_SESSION_HOURS": "0"}, "[auth] session_hours must be a whole number"),
    ({"TIMEBANK_AUTH_LOCK_MINUTES": "100000"}, "[auth] lock_minutes must be a whole number"),
    ({"TIMEBANK_NODE_NODE_ID": "32011"}, "[node] node_id must be 6 digits"),
    ({"TIMEBANK_CLEARINGHOUSE_PUBLIC_KEY": "AB" * 32},
     "[clearinghouse] public_key must be an Ed25519 public key as 64 lowercase hex"),
    ({"TIMEBANK_CITY_PUBLIC_KEY": ""},
     "[city] public_key 必须设置 ([city] public_key is required with a clearinghouse"),
    ({"TIMEBANK_CITY_PUBLIC_KEY": KEY}, "[city] public_key is the city root's key, not the "
                                        "clearinghouse's"),
    ({"TIMEBANK_LOG_LEVEL": "verbose"}, "[log] level must be one of debug, info, warning"),
])
def test_bad_values_name_the_setting_and_the_variable(tmp_path: Path, env: dict[str, str],
                                                      says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_node(tmp_path), env)
    assert says in str(caught.value)


def test_unknown_tables_and_keys_and_a_missing_file_are_refused(tmp_path: Path) -> None:
    path = _node(tmp_path)
    with pytest.raises(ConfigError, match=r"unknown setting \[auth\] session_hour;"):
        load_config(_with(path, "session_hours = 12", "session_hour = 12"), {})
    with pytest.raises(ConfigError, match=r"unknown table \[authentication\]"):
        load_config(_with(path, "[auth]", "[authentication]"), {})
    with pytest.raises(ConfigError, match=r"no configuration file at .*run `timebank node init`"):
        load_config(tmp_path / "nowhere.toml", {})


def test_the_committed_example_is_the_generated_one_and_documents_every_setting() -> None:
    committed = (ROOT / "deploy" / "node.example.toml").read_text(encoding="utf-8")
    assert committed == example(), ("deploy/node.example.toml is stale: `timebank node "
                                    "config example > deploy/node.example.toml`")
    doc = tomllib.loads(committed)
    for s in SCHEMA.settings:
        assert s.key in doc[s.table], s.name
        assert s.env in committed and f"# {s.zh}" in committed, s.name
    assert set(doc) == {t.name for t in SCHEMA.tables}


def test_config_show_and_check(tmp_path: Path) -> None:
    path = _node(tmp_path)
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    assert {(t, k) for t in doc for k in doc[t]} == {(s.table, s.key) for s in SCHEMA.settings}
    shown = runner.invoke(app, ["node", "config", "show", "--config", str(path)],
                          env={"TIMEBANK_SERVER_WORKERS": "3", "COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert "workers = 3  # 环境变量 env TIMEBANK_SERVER_WORKERS" in lines
    assert "node_id = \"320115\"  # 文件 file" in lines
    insecure = {"TIMEBANK_TLS_INSECURE": "true"}
    ok = runner.invoke(app, ["node", "config", "check", "--config", str(path), "--json"],
                       env=insecure)
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output) == {"file": str(path), "valid": True, "warnings": []}
    (path.parent / "policy.toml").unlink()
    gone = runner.invoke(app, ["node", "config", "check", "--config", str(path)], env=insecure)
    assert gone.exit_code == 1 and "Traceback" not in gone.output
    assert "[node] policy_file names" in gone.output and "which does not exist" in gone.output
    bad = runner.invoke(app, ["node", "config", "check", "-c", str(path), "--json"],
                        env={**insecure, "TIMEBANK_PEERS_CHECK_SECONDS": "0"})
    assert bad.exit_code == 1
    assert "TIMEBANK_PEERS_CHECK_SECONDS" in json.loads(bad.output)["error"]
