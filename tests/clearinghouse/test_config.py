"""clearinghouse.toml (ADR 0020): its tables, TIMEBANK_<TABLE>_<KEY> overrides as for a
node, every mistake named with its source, `clearinghouse config show|check`, and the
example file generated from the declaration."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from city.cli import app
from clearinghouse.bootstrap import init_city
from clearinghouse.config import SCHEMA, ClearinghouseConfig, ConfigError, example, load_config

ROOT = Path(__file__).resolve().parents[2]
BASE = '[clearinghouse]\ndata_dir = "."\n'
runner = CliRunner()


def config(tmp_path: Path, text: str, env: dict[str, str] | None = None,
           ) -> ClearinghouseConfig:
    path = tmp_path / "clearinghouse.toml"
    path.write_text(BASE + text, encoding="utf-8")
    return load_config(path, env or {})


def test_defaults(tmp_path: Path) -> None:
    plain = config(tmp_path, "")
    assert (plain.listen, plain.metrics_listen, plain.max_message_bytes, plain.workers,
            plain.log_level, plain.log_format, plain.submits_per_second,
            plain.submit_burst) == ("127.0.0.1:7400", "127.0.0.1:9400", 65536, 32, "info",
                                    "json", 2000, 4000)
    assert plain.signing_key_file == tmp_path / "clearinghouse.key"  # in the data directory
    assert plain.city_key_file == tmp_path / "city-root.key"
    assert plain.effective_database_url.endswith("/clearinghouse.sqlite3")


def test_the_file_and_the_environment(tmp_path: Path) -> None:
    set_ = config(tmp_path, '[server]\nlisten = "0.0.0.0:7401"\nmetrics_listen = ""\n'
                            'workers = 64\n[log]\nformat = "console"\n'
                            "[limits]\nsubmits_per_second = 5\nsubmit_burst = 10\n")
    assert (set_.listen, set_.metrics_listen, set_.workers, set_.log_format,
            set_.submits_per_second, set_.submit_burst) == ("0.0.0.0:7401", "", 64, "console",
                                                            5, 10)
    env = config(tmp_path, "[limits]\nsubmits_per_second = 5\n",
                 {"TIMEBANK_LIMITS_SUBMITS_PER_SECOND": "7",
                  "TIMEBANK_SERVER_METRICS_LISTEN": ":9474",
                  "TIMEBANK_SERVER_LISTEN": "0.0.0.0:7402",
                  "TIMEBANK_CLEARINGHOUSE_DATABASE_URL": "postgresql://x/y",
                  "TIMEBANK_CLEARINGHOUSE_SIGNING_KEY_FILE": "keys/ch.key",
                  "TIMEBANK_LOG_LEVEL": "debug"})
    assert (env.metrics_listen, env.listen, env.submits_per_second, env.submit_burst,
            env.effective_database_url, env.log_level) == (
        ":9474", "0.0.0.0:7402", 7, 4000, "postgresql://x/y", "debug")
    assert env.signing_key_file == tmp_path / "keys" / "ch.key"  # named: from the file's folder
    high = config(tmp_path, "[limits]\nsubmits_per_second = 9000\n")
    assert high.submit_burst == 9000  # an unset burst is at least one second's worth


@pytest.mark.parametrize(("text", "env", "says"), [
    ("[limits]\nsubmits_per_second = 0\n", {}, "[limits] submits_per_second must be a whole "
                                                "number from 1 to 1000000, not 0; from "),
    ("[limits]\nsubmits_per_second = 1.5\n", {}, "submits_per_second must be a whole number"),
    ("[limits]\nsubmit_burst = true\n", {}, "submit_burst must be a whole number"),
    ("", {"TIMEBANK_LIMITS_SUBMIT_BURST": "lots"},
     "submit_burst must be a whole number from 1 to 1000000, not 'lots'; from environment "
     "variable TIMEBANK_LIMITS_SUBMIT_BURST"),
    ("[limits]\nsubmits_per_second = 10\nsubmit_burst = 5\n", {},
     "[limits] submit_burst (5) must be at least submits_per_second (10)"),
    ("[limits]\nsubmits_per_minute = 10\n", {}, "unknown setting [limits] submits_per_minute"),
    ('listen = "127.0.0.1:7400"\n', {}, "unknown setting [clearinghouse] listen"),  # moved
    ("[sever]\n", {}, "unknown table [sever]"),
    ('[server]\nmetrics_listen = "nowhere"\n', {},
     "[server] metrics_listen must be HOST:PORT (or empty: no metrics endpoint)"),
    ("", {"TIMEBANK_SERVER_LISTEN": "7400"}, "[server] listen must be HOST:PORT"),
    ("[server]\nworkers = 0\n", {}, "[server] workers must be a whole number from 1 to 1024"),
    ("[server]\nmax_message_bytes = 10\n", {}, "[server] max_message_bytes must be a whole"),
    ('[log]\nformat = "xml"\n', {}, "[log] format must be one of json, console"),
    ("", {"TIMEBANK_TLS_INSECURE": "maybe"}, "[tls] insecure must be true or false"),
])
def test_bad_settings_are_refused_by_name(tmp_path: Path, text: str, env: dict[str, str],
                                          says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config(tmp_path, text, env)
    assert says in str(caught.value)


def test_a_missing_file_or_data_dir_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="run `timebank clearinghouse init`"):
        load_config(tmp_path / "nowhere.toml", {})
    (tmp_path / "c.toml").write_text("[limits]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[clearinghouse\] data_dir is required"):
        load_config(tmp_path / "c.toml", {})


def test_the_committed_example_is_the_generated_one_and_documents_every_setting() -> None:
    committed = (ROOT / "deploy" / "clearinghouse.example.toml").read_text(encoding="utf-8")
    assert committed == example(), ("deploy/clearinghouse.example.toml is stale: "
                                    "`timebank clearinghouse config example > "
                                    "deploy/clearinghouse.example.toml`")
    doc = tomllib.loads(committed)
    for s in SCHEMA.settings:
        assert s.key in doc[s.table], s.name
        assert s.env in committed and f"# {s.zh}" in committed, s.name
    assert set(doc) == {t.name for t in SCHEMA.tables}


def test_init_writes_every_setting_and_config_show_and_check_read_it(tmp_path: Path) -> None:
    path = init_city(tmp_path / "ch")
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    assert {(t, k) for t in doc for k in doc[t]} == {(s.table, s.key) for s in SCHEMA.settings}
    assert doc["server"]["metrics_listen"] == "127.0.0.1:9400"  # on by default
    shown = runner.invoke(app, ["clearinghouse", "config", "show", "-c", str(path), "--json"],
                          env={"TIMEBANK_SERVER_WORKERS": "3",
                               "TIMEBANK_CLEARINGHOUSE_DATABASE_URL":
                               "postgresql+psycopg://tb:hunter2@db/ch"})
    assert shown.exit_code == 0, shown.output
    rows = {(r["table"], r["key"]): r for r in json.loads(shown.output)["settings"]}
    assert rows[("server", "workers")] == {
        "table": "server", "key": "workers", "env": "TIMEBANK_SERVER_WORKERS", "value": 3,
        "source": "env", "from": "TIMEBANK_SERVER_WORKERS"}
    assert (rows[("limits", "submit_burst")]["source"],
            rows[("limits", "submit_burst")]["from"]) == ("file", str(path))
    assert "hunter2" not in shown.output  # a password in a URL is never shown
    ok = runner.invoke(app, ["clearinghouse", "config", "check", "-c", str(path)],
                       env={"TIMEBANK_CLEARINGHOUSE_LISTEN": "0.0.0.0:7400",
                            "TIMEBANK_TLS_INSECURE": "true"})
    assert ok.exit_code == 0, ok.output
    assert "TIMEBANK_CLEARINGHOUSE_LISTEN names no setting" in ok.output
    assert "did you mean TIMEBANK_SERVER_LISTEN?" in ok.output
    no_tls = runner.invoke(app, ["clearinghouse", "config", "check", "-c", str(path), "--json"])
    assert no_tls.exit_code == 1
    assert json.loads(no_tls.output)["error"].startswith("clearinghouse 未配置 TLS")
    bad = runner.invoke(app, ["clearinghouse", "config", "check", "-c", str(path)],
                        env={"TIMEBANK_LIMITS_SUBMIT_BURST": "-1"})
    assert bad.exit_code == 1 and "Traceback" not in bad.output
    assert "[limits] submit_burst must be a whole number" in bad.output
    assert "TIMEBANK_LIMITS_SUBMIT_BURST" in bad.output
