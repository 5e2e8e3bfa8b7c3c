"""clearinghouse.toml: the [limits] table and metrics_listen, with environment overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from clearinghouse.config import ClearinghouseConfig, ConfigError, load_config

BASE = '[clearinghouse]\ndata_dir = "."\n'


def config(tmp_path: Path, text: str, env: dict[str, str] | None = None,
           ) -> ClearinghouseConfig:
    path = tmp_path / "clearinghouse.toml"
    path.write_text(BASE + text, encoding="utf-8")
    return load_config(path, env or {})


def test_defaults_and_settings(tmp_path: Path) -> None:
    plain = config(tmp_path, "")
    assert (plain.metrics_listen, plain.submits_per_second, plain.submit_burst) == (
        "127.0.0.1:9400", 2000, 4000)  # metrics on by default
    assert config(tmp_path, 'metrics_listen = ""\n').metrics_listen == ""  # "" turns them off
    set_ = config(tmp_path, 'metrics_listen = "127.0.0.1:9474"\n[limits]\n'
                            "submits_per_second = 5\nsubmit_burst = 10\n")
    assert (set_.metrics_listen, set_.submits_per_second, set_.submit_burst) == (
        "127.0.0.1:9474", 5, 10)
    env = config(tmp_path, "[limits]\nsubmits_per_second = 5\n",
                 {"TIMEBANK_CLEARINGHOUSE_SUBMITS_PER_SECOND": "7",
                  "TIMEBANK_CLEARINGHOUSE_METRICS_LISTEN": ":9474"})
    assert (env.metrics_listen, env.submits_per_second, env.submit_burst) == (":9474", 7, 4000)
    high = config(tmp_path, "[limits]\nsubmits_per_second = 9000\n")
    assert high.submit_burst == 9000  # an unset burst is at least one second's worth


@pytest.mark.parametrize(("text", "env", "says"), [
    ("[limits]\nsubmits_per_second = 0\n", {}, "submits_per_second must be a whole number"),
    ("[limits]\nsubmits_per_second = 1.5\n", {}, "submits_per_second must be a whole number"),
    ("[limits]\nsubmit_burst = true\n", {}, "submit_burst must be a whole number"),
    ("", {"TIMEBANK_CLEARINGHOUSE_SUBMIT_BURST": "lots"}, "submit_burst must be a whole"),
    ("[limits]\nsubmits_per_second = 10\nsubmit_burst = 5\n", {}, "must be at least"),
    ("[limits]\nsubmits_per_minute = 10\n", {}, "unknown settings in [limits]"),
    ("limits = 3\n", {}, "unknown settings in [clearinghouse]"),
    ('metrics_listen = "nowhere"\n', {}, "metrics_listen must be HOST:PORT"),
])
def test_bad_settings_are_refused_by_name(tmp_path: Path, text: str, env: dict[str, str],
                                          says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config(tmp_path, text, env)
    assert says in str(caught.value)
