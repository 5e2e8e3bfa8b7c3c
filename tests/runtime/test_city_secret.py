"""The city secret file: what the bureau writes, and every way a node refuses one."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from runtime import keyfiles


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, data)
    os.close(fd)
    path.chmod(mode)
    return path


def test_the_bureau_secret_is_32_raw_random_bytes_private_and_never_overwritten(
        tmp_path: Path) -> None:
    path = tmp_path / "city-secret"
    secret = keyfiles.new_city_secret()
    keyfiles.write_city_secret(path, secret)
    assert path.read_bytes() == secret and len(secret) == keyfiles.CITY_SECRET_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keyfiles.read_city_secret(path) == secret
    with pytest.raises(keyfiles.KeyFileError, match="already exists"):
        keyfiles.write_city_secret(path, keyfiles.new_city_secret())
    assert path.read_bytes() == secret
    assert [p.name for p in tmp_path.iterdir()] == ["city-secret"]
    assert keyfiles.new_city_secret() != secret


def test_the_fingerprint_tells_copies_apart_without_being_the_secret() -> None:
    a, b = keyfiles.new_city_secret(), keyfiles.new_city_secret()
    assert keyfiles.secret_fingerprint(a) == keyfiles.secret_fingerprint(bytes(a))
    assert keyfiles.secret_fingerprint(a) != keyfiles.secret_fingerprint(b)
    assert a.hex()[:16] != keyfiles.secret_fingerprint(a)


@pytest.mark.parametrize(("size", "said"), [
    (0, "太短"), (31, "shorter than 32 bytes"), (1025, "more than 1024 bytes"),
    (-64, "not random"),
])
def test_a_malformed_secret_is_refused(tmp_path: Path, size: int, said: str) -> None:
    data = os.urandom(size) if size >= 0 else b"0" * -size
    path = _write(tmp_path / "city-secret", data)
    with pytest.raises(keyfiles.KeyFileError, match=said) as e:
        keyfiles.read_city_secret(path)
    assert str(e.value).startswith("城市密钥")  # Chinese first
    with pytest.raises(keyfiles.KeyFileError):
        keyfiles.write_city_secret(tmp_path / "other", data)
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize(("mode", "said"), [(0o644, "readable by other users"),
                                            (0o640, "readable by other users"),
                                            (0o604, "readable by other users"),
                                            (0o620, "writable by other users"),
                                            (0o602, "writable by other users")])
def test_a_secret_others_can_read_or_change_is_refused(tmp_path: Path, mode: int,
                                                       said: str) -> None:
    path = _write(tmp_path / "city-secret", os.urandom(32), mode)
    with pytest.raises(keyfiles.KeyFileError, match=said) as e:
        keyfiles.read_city_secret(path)
    assert "其他用户" in str(e.value) and "chmod 600" in str(e.value)


def test_an_unreadable_secret_is_refused(tmp_path: Path) -> None:
    with pytest.raises(keyfiles.KeyFileError, match=r"不存在.*does not exist"):
        keyfiles.read_city_secret(tmp_path / "missing")
    (tmp_path / "dir").mkdir(mode=0o700)
    with pytest.raises(keyfiles.KeyFileError, match="not a regular file"):
        keyfiles.read_city_secret(tmp_path / "dir")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(keyfiles.KeyFileError, match="does not exist"):
        keyfiles.read_city_secret(tmp_path / "dangling")


def test_any_other_private_file_goes_through_the_same_check(tmp_path: Path) -> None:
    """What a TLS private key (PEM) is read with: private, bounded, or refused."""
    pem = _write(tmp_path / "server.key", b"-----BEGIN PRIVATE KEY-----\n...\n")
    assert keyfiles.read_private_file(pem).startswith(b"-----BEGIN")
    pem.chmod(0o640)
    with pytest.raises(keyfiles.KeyFileError, match=r"私钥文件.*readable by other users"):
        keyfiles.read_private_file(pem)
    big = _write(tmp_path / "big.key", b"x" * 100)
    with pytest.raises(keyfiles.KeyFileError, match="more than 64 bytes"):
        keyfiles.read_private_file(big, limit=64)
