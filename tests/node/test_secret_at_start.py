"""A node refuses, at start and at `node init --city-secret`, a city secret or signing key
that is too short, unreadable or open to other users: a real `timebank` process, one
clean line, Chinese first, nothing created."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def timebank(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "city", *args], capture_output=True,
                          text=True, encoding="utf-8", timeout=60, cwd=ROOT,
                          env={**os.environ, "TIMEBANK_SERVER_LISTEN": "127.0.0.1:0",
                               "TIMEBANK_SERVER_METRICS_LISTEN": ""})


def one_line(result: subprocess.CompletedProcess[str], *said: str) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for text in said:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def bureau_secret(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bureau") / "city-secret"
    made = timebank("clearinghouse", "city-secret", "--out", str(out))
    assert made.returncode == 0, made.stderr
    assert len(out.read_bytes()) == 32 and (out.stat().st_mode & 0o777) == 0o600
    return out


def _init(data: Path, secret: Path) -> subprocess.CompletedProcess[str]:
    return timebank("node", "init", "--data-dir", str(data), "--node-id", "320115",
                    "--district", "江宁区", "--city-secret", str(secret))


def test_node_init_takes_the_bureau_secret_and_shows_its_fingerprint(
        tmp_path: Path, bureau_secret: Path) -> None:
    from runtime.keyfiles import secret_fingerprint

    result = _init(tmp_path / "node", bureau_secret)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "node" / "city-secret").read_bytes() == bureau_secret.read_bytes()
    assert secret_fingerprint(bureau_secret.read_bytes()) in result.stdout


def test_the_bureau_never_overwrites_a_secret(bureau_secret: Path) -> None:
    before = bureau_secret.read_bytes()
    one_line(timebank("clearinghouse", "city-secret", "--out", str(bureau_secret)),
             "已存在", "refusing to overwrite")
    assert bureau_secret.read_bytes() == before


@pytest.mark.parametrize(("size", "mode", "said"), [
    (32, 0o644, "readable by other users"),
    (32, 0o660, "readable by other users"),
    (16, 0o600, "shorter than 32 bytes"),
])
def test_node_init_refuses_a_bad_secret_and_creates_nothing(
        tmp_path: Path, size: int, mode: int, said: str) -> None:
    secret = tmp_path / "city-secret"
    secret.write_bytes(os.urandom(size))
    secret.chmod(mode)
    line = one_line(_init(tmp_path / "node", secret), said)
    assert line.startswith("error: 城市密钥")
    assert not (tmp_path / "node").exists()


def _serve(config: Path) -> subprocess.CompletedProcess[str]:
    # Plaintext is incidental here (the refusal comes before anything listens); without
    # --insecure the missing [tls] settings would be refused first.
    return timebank("node", "serve", "--config", str(config), "--insecure")


@pytest.mark.parametrize(("damage", "said"), [
    ("chmod 644", "readable by other users"),
    ("chmod 602", "writable by other users"),
    ("short", "shorter than 32 bytes"),
    ("missing", "does not exist"),
    ("directory", "not a regular file"),
])
def test_node_serve_refuses_a_bad_city_secret(tmp_path: Path, bureau_secret: Path,
                                              damage: str, said: str) -> None:
    assert _init(tmp_path / "node", bureau_secret).returncode == 0
    secret = tmp_path / "node" / "city-secret"
    if damage.startswith("chmod"):
        secret.chmod(int(damage.split()[1], 8))
    elif damage == "short":
        secret.unlink()
        secret.write_bytes(os.urandom(20))
        secret.chmod(0o600)
    elif damage == "missing":
        secret.unlink()
    else:
        secret.unlink()
        secret.mkdir(mode=0o700)
    line = one_line(_serve(tmp_path / "node" / "node.toml"), said)
    assert "城市密钥" in line.split("/")[0]


def test_node_serve_refuses_a_signing_key_others_can_read(tmp_path: Path,
                                                         bureau_secret: Path) -> None:
    assert _init(tmp_path / "node", bureau_secret).returncode == 0
    (tmp_path / "node" / "node.key").chmod(0o640)
    one_line(_serve(tmp_path / "node" / "node.toml"), "密钥文件", "readable by other users")
