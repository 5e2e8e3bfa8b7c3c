"""A node's data directory: created once, kept on re-init, and its signing key guarded."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import structlog

from node.bootstrap import init_data_dir, open_app, signing_identity
from node.config import ConfigError, load_config, render_config
from tests.node.storage.test_migrations import empty_url  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parents[2]


def test_init_creates_a_private_signing_key_and_keeps_it(tmp_path: Path) -> None:
    config_path = init_data_dir(tmp_path / "gulou", "320106", "鼓楼区")
    config = load_config(config_path)
    assert config.signing_key_file == tmp_path / "gulou" / "node.key"
    assert stat.S_IMODE(config.signing_key_file.stat().st_mode) == 0o600
    first = signing_identity(config)
    assert len(first[0]) == 16 and len(bytes.fromhex(first[1])) == 32
    init_data_dir(tmp_path / "gulou", "320106", "鼓楼区")  # again: nothing replaced
    assert signing_identity(load_config(config_path)) == first


def test_an_exposed_signing_key_is_refused(tmp_path: Path) -> None:
    config_path = init_data_dir(tmp_path / "gulou", "320106", "鼓楼区")
    key = load_config(config_path).signing_key_file
    os.chmod(key, 0o644)
    with pytest.raises(ConfigError, match="readable by other users"):
        init_data_dir(tmp_path / "gulou", "320106", "鼓楼区")
    with pytest.raises(ConfigError, match="readable by other users"):
        signing_identity(load_config(config_path))


CH_HEX, CITY_HEX = "ab" * 32, "cd" * 32


def test_a_federated_node_knows_the_city_key_from_its_own_configuration(
        tmp_path: Path) -> None:
    config_path = init_data_dir(tmp_path / "gulou", "320106", "鼓楼区",
                                clearinghouse_address="127.0.0.1:7400",
                                clearinghouse_public_key=CH_HEX, city_public_key=CITY_HEX)
    config = load_config(config_path)
    assert (config.city_public_key, config.clearinghouse_public_key) == (CITY_HEX, CH_HEX)
    app = open_app(config)
    try:
        assert app.node.city_key == bytes.fromhex(CITY_HEX) and app.node.federated
    finally:
        app.db.dispose()


@pytest.mark.parametrize(("city", "problem"), [
    ("", "public_key is required with a clearinghouse"),
    ("CD" * 32, "64 lowercase hex"),
    ("cd" * 31, "64 lowercase hex"),
    (CH_HEX, "not the clearinghouse's"),
])
def test_a_federated_node_without_a_good_city_key_does_not_start(
        tmp_path: Path, city: str, problem: str) -> None:
    path = tmp_path / "node.toml"
    path.write_text(render_config("320106", "鼓楼区", "", "127.0.0.1:7443",
                                  clearinghouse_address="127.0.0.1:7400",
                                  clearinghouse_public_key=CH_HEX, city_public_key=city),
                    encoding="utf-8")
    with pytest.raises(ConfigError, match=problem):
        load_config(path)
    # the environment can give it, as every setting
    load_config(path, environ={"TIMEBANK_CITY_PUBLIC_KEY": CITY_HEX})


@pytest.mark.parametrize("empty_url", ["postgres"], indirect=True)
def test_a_node_on_a_postgresql_that_may_lose_commits_does_not_start(
        empty_url: str, tmp_path: Path) -> None:  # noqa: F811 - the fixture
    """A district told "recorded" must not lose it to a power cut: `node serve` on a
    database whose commits need not reach the disk exits 1 and names the setting."""
    config_path = init_data_dir(tmp_path / "gulou", "320106", "鼓楼区",
                                database_url=empty_url)
    open_app(load_config(config_path)).db.dispose()  # as set up: durable, it opens
    text = config_path.read_text(encoding="utf-8")
    assert text.count(empty_url) == 1
    config_path.write_text(text.replace(
        empty_url, f"{empty_url}?options=-c%20synchronous_commit%3Doff"), encoding="utf-8")
    refused = subprocess.run(
        [sys.executable, "-m", "city", "node", "serve", "--config", str(config_path),
         "--insecure"], capture_output=True, text=True, encoding="utf-8", cwd=ROOT,
        timeout=120)
    assert refused.returncode == 1, refused.stdout
    assert "synchronous_commit=off" in refused.stderr and "服务不启动" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_start_check_that_fails_is_tried_again_not_dropped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node that started without reading the city's log checks when its link comes up;
    a check that fails (here: its key file made readable by others meanwhile) is logged
    and made again later, and the checker outlives it."""
    from node.api import server

    config_path = init_data_dir(tmp_path / "gulou", "320106", "鼓楼区",
                                clearinghouse_address="127.0.0.1:9",
                                clearinghouse_public_key=CH_HEX, city_public_key=CITY_HEX)
    config = load_config(config_path)
    app = open_app(config)
    stop = threading.Event()
    later = server._StartCheckLater(app, config, stop)
    monkeypatch.setattr(server, "LOG_CHECK_RETRY_SECONDS", 0.05)
    os.chmod(config.signing_key_file, 0o644)
    checker = threading.Thread(target=later.run, daemon=True)
    try:
        with structlog.testing.capture_logs() as logs:
            checker.start()
            later.link_state(True)
            deadline = time.monotonic() + 30
            while (sum("failed; it is tried again" in e["event"] for e in logs) < 2
                   and time.monotonic() < deadline):
                time.sleep(0.05)
            assert sum("failed; it is tried again" in e["event"] for e in logs) >= 2, logs
            assert checker.is_alive() and later.refusal is None and not stop.is_set()
    finally:
        stop.set()
        later.wake()
        checker.join(10)
        app.db.dispose()
    assert not checker.is_alive()
