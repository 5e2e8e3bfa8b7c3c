"""Key files: 0600, exactly 32 bytes, never overwritten; key ids."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from runtime import keyfiles
from timebank import keys

SEED = bytes(range(32))


def test_key_id_is_first_8_bytes_of_sha256_in_hex() -> None:
    pub = keys.public_key(keys.SigningKey(SEED))
    assert keys.key_id(pub) == hashlib.sha256(pub).digest()[:8].hex()
    assert keys.key_id(pub) == "56475aa75463474c"
    assert len(keys.key_id(keys.public_key(keys.generate()))) == keys.KEY_ID_HEX_LEN


@pytest.mark.parametrize("bad", [b"", b"\x00" * 31, b"\x00" * 33])
def test_key_id_refuses_wrong_length(bad: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        keys.key_id(bad)


def test_generate_gives_distinct_keys() -> None:
    assert bytes(keys.generate()) != bytes(keys.generate())


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    key = keys.generate()
    keyfiles.write_seed(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == bytes(key)
    assert bytes(keyfiles.read_seed(path)) == bytes(key)
    assert [p.name for p in tmp_path.iterdir()] == ["node.key"]  # no temporary left


def test_write_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        keyfiles.write_seed(tmp_path / "k", keys.generate())
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600


def test_write_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    first = keys.generate()
    keyfiles.write_seed(path, first)
    with pytest.raises(keyfiles.KeyFileError, match="already exists; refusing to overwrite"):
        keyfiles.write_seed(path, keys.generate())
    assert path.read_bytes() == bytes(first)
    assert [p.name for p in tmp_path.iterdir()] == ["node.key"]


def test_write_refuses_a_dangling_symlink(tmp_path: Path) -> None:
    (tmp_path / "node.key").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(keyfiles.KeyFileError, match="already exists"):
        keyfiles.write_seed(tmp_path / "node.key", keys.generate())
    assert not (tmp_path / "elsewhere").exists()


def test_write_into_missing_directory_is_clear(tmp_path: Path) -> None:
    with pytest.raises(keyfiles.KeyFileError, match="is not a directory"):
        keyfiles.write_seed(tmp_path / "nope" / "node.key", keys.generate())


def test_read_refuses_world_readable(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    keyfiles.write_seed(path, keys.generate())
    path.chmod(0o644)
    with pytest.raises(keyfiles.KeyFileError) as e:
        keyfiles.read_seed(path)
    assert str(e.value) == (
        f"密钥文件 {path} 其他用户可读（权限 0644），拒绝使用；"
        f"请执行 chmod 600 {path} 并考虑更换 / "
        f"{path} is readable by other users (mode 0644); "
        f"run chmod 600 {path} and consider replacing the key"
    )


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o610])
def test_read_refuses_any_group_or_other_access(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "node.key"
    keyfiles.write_seed(path, keys.generate())
    path.chmod(mode)
    with pytest.raises(keyfiles.KeyFileError, match=r"by other users.*chmod 600"):
        keyfiles.read_seed(path)


def test_read_accepts_0400(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    key = keys.generate()
    keyfiles.write_seed(path, key)
    path.chmod(0o400)
    assert bytes(keyfiles.read_seed(path)) == bytes(key)


@pytest.mark.parametrize(
    ("content", "said"),
    [(b"", "holds 0 bytes"), (b"\x01" * 31, "holds 31 bytes"),
     (b"\x01" * 33, "holds more than 32 bytes"), (b"ab" * 32, "holds more than 32 bytes")],
)
def test_read_refuses_wrong_length(tmp_path: Path, content: bytes, said: str) -> None:
    path = tmp_path / "node.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, content)
    os.close(fd)
    with pytest.raises(keyfiles.KeyFileError, match=said + r".*exactly 32 raw bytes"):
        keyfiles.read_seed(path)


def test_read_missing_file_is_clear(tmp_path: Path) -> None:
    with pytest.raises(keyfiles.KeyFileError, match="does not exist"):
        keyfiles.read_seed(tmp_path / "node.key")


def test_read_refuses_a_directory(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir(mode=0o700)
    with pytest.raises(keyfiles.KeyFileError, match="not a regular file"):
        keyfiles.read_seed(tmp_path / "d")


def test_read_follows_a_symlink_and_checks_its_target(tmp_path: Path) -> None:
    """Secret volumes (Kubernetes) present keys as symlinks to the real file."""
    key = keys.generate()
    keyfiles.write_seed(tmp_path / "real.key", key)
    (tmp_path / "link.key").symlink_to(tmp_path / "real.key")
    assert bytes(keyfiles.read_seed(tmp_path / "link.key")) == bytes(key)
    (tmp_path / "real.key").chmod(0o644)
    with pytest.raises(keyfiles.KeyFileError, match=r"link\.key is readable by other users"):
        keyfiles.read_seed(tmp_path / "link.key")
