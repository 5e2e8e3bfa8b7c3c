"""A node's data directory: created once, kept on re-init, and its signing key guarded."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from node.bootstrap import init_data_dir, signing_identity
from node.config import ConfigError, load_config


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
