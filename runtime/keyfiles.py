"""Key and secret files: a signing key's 32-byte seed, or the city secret, on disk, one
file per key, mode 0600, or a mounted secret (a Kubernetes secret volume is a symlink to a
read-only file).

A file appears whole or not at all, is never overwritten, and is refused when anyone
but its owner could read or change it: a seed is the whole private key, and the city
secret is what keeps every PersonRef from being recomputed from an ID number. Every key
or secret the project reads goes through ``_read_private`` (the one permission check),
and every file written goes through ``_write_private`` (``write_file`` for the files of
the city's CA: keys, certificates, and the CRL, which a renewal replaces in one rename).

**The city secret** (the PersonRef HMAC key, ADR 0018) is ``CITY_SECRET_BYTES`` random
bytes written raw (not hex, no newline) by ``timebank clearinghouse city-secret``; a
node accepts ``MIN_SECRET_BYTES`` to ``MAX_SECRET_BYTES`` raw bytes, the same bytes in
every node's copy (compare ``secret_fingerprint`` across districts, never the secret).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
from pathlib import Path

from timebank.keys import SEED_LEN, SigningKey

PathLike = str | os.PathLike[str]

#: The city secret the bureau generates: 32 random bytes (256 bits), raw.
CITY_SECRET_BYTES = 32
#: The shortest city secret a node accepts: an HMAC key shorter than the hash's 32
#: bytes weakens every PersonRef.
MIN_SECRET_BYTES = 32
#: The longest: a secret is a key, not a document; longer is a wrong file.
MAX_SECRET_BYTES = 1024


class KeyFileError(Exception):
    """A key file cannot be written or read safely; the message says what to do."""


def _write_private(path: PathLike, data: bytes, what: str, *, mode: int = 0o600,
                   replace: bool = False) -> None:
    """Store ``data`` in a new file with ``mode`` (0600 for anything private).

    The file appears whole or not at all: the bytes are written and synced under a
    temporary name in the same directory, then hard-linked to ``path``, which fails if
    ``path`` already exists (an existing file is never overwritten), or, with
    ``replace`` (a renewed certificate), renamed over it in one step.
    """
    target = Path(path)
    directory = target.parent
    exists = (f"{what} {target} 已存在，不会覆盖 / {target} already exists; refusing to "
              f"overwrite a {_EN[what]}")
    if not replace and (target.exists() or target.is_symlink()):
        raise KeyFileError(exists)
    if not directory.is_dir():
        raise KeyFileError(f"{what}的目录 {directory} 不存在 / {directory} is not a directory; "
                           f"create it before writing {target}")
    tmp = directory / f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        try:
            os.fchmod(fd, mode)  # whatever the umask
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)
            except FileExistsError:
                raise KeyFileError(exists) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(directory)


def write_file(path: PathLike, data: bytes, *, mode: int, replace: bool = False) -> None:
    """Any file the city's CA writes (keys 0600, certificates and the CRL 0644), whole or
    not at all, never over an existing one unless ``replace`` (a renewal)."""
    _write_private(path, data, "文件", mode=mode, replace=replace)


_EN = {"文件": "file", "密钥文件": "key file", "城市密钥 (city secret) 文件": "city secret file",
       "私钥文件": "private key file"}

#: The largest private file ``read_private_file`` reads (a PEM key is a few KiB).
MAX_PRIVATE_FILE_BYTES = 64 * 1024


def _read_private(path: PathLike, what: str, limit: int) -> bytes:
    """The bytes of a key or secret file (at most ``limit`` + 1 read), once it is checked
    to be a regular file that no group or other user can read or write. A symlink is
    followed and its target checked (Kubernetes secret volumes are symlinks; mount them
    with ``defaultMode: 0400``)."""
    target = Path(path)
    en = _EN[what]
    try:
        fd = os.open(target, os.O_RDONLY)  # symlinks followed: secret mounts use them
    except FileNotFoundError:
        raise KeyFileError(f"{what} {target} 不存在 / {target} does not exist; no "
                           f"{en} there") from None
    except PermissionError:
        raise KeyFileError(f"{what} {target} 当前用户无法读取 / {target} cannot be read by "
                           "this user") from None
    except OSError as e:
        raise KeyFileError(f"{what} {target} 无法打开 / {target} cannot be opened as a "
                           f"{en}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{what} {target} 不是普通文件 / {target} is not a regular "
                               f"file; a {en} is a file")
        mode = stat.S_IMODE(st.st_mode)
        for bits, verb, zh in ((0o044, "readable", "可读"), (0o033, "writable", "可写")):
            if mode & bits:
                raise KeyFileError(
                    f"{what} {target} 其他用户{zh}（权限 {mode:04o}），拒绝使用；请执行 "
                    f"chmod 600 {target} 并考虑更换 / {target} is {verb} by other users "
                    f"(mode {mode:04o}); run chmod 600 {target} and consider replacing "
                    "the key")
        data = b""
        while len(data) <= limit:
            try:
                chunk = os.read(fd, limit + 1 - len(data))
            except OSError as e:
                raise KeyFileError(f"{what} {target} 无法读取 / {target} cannot be read: "
                                   f"{e.strerror}") from None
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    return data


def write_seed(path: PathLike, key: SigningKey) -> None:
    """Store the key's 32-byte seed in a new file readable only by its owner (mode 0600),
    whole or not at all, never over an existing file."""
    seed = bytes(key)
    if len(seed) != SEED_LEN:  # pragma: no cover - PyNaCl guarantees this
        raise KeyFileError("a signing key seed must be 32 bytes")
    _write_private(path, seed, "密钥文件")


def read_seed(path: PathLike) -> SigningKey:
    """Load a signing key from a seed file written by :func:`write_seed` (or a secret mount).

    Refuses anything but a regular file of exactly 32 bytes that no group or other user
    can read or write.
    """
    data = _read_private(path, "密钥文件", SEED_LEN)
    if len(data) != SEED_LEN:
        size = f"more than {SEED_LEN}" if len(data) > SEED_LEN else str(len(data))
        raise KeyFileError(
            f"密钥文件 {path} 长度不对，应为 {SEED_LEN} 字节 / {path} holds {size} bytes; a "
            f"key file holds exactly {SEED_LEN} raw bytes (the Ed25519 seed, not hex or "
            "base64)")
    return SigningKey(data)


def read_private_file(path: PathLike, limit: int = MAX_PRIVATE_FILE_BYTES) -> bytes:
    """The bytes of any other private file (a TLS private key in PEM, say), through the
    same check as every key and secret: a private regular file of at most ``limit``
    bytes, refused when another user can read or write it."""
    data = _read_private(path, "私钥文件", limit)
    if len(data) > limit:
        raise KeyFileError(f"私钥文件 {path} 过大 / {path} holds more than {limit} bytes")
    return data


def new_city_secret() -> bytes:
    """A fresh city secret: ``CITY_SECRET_BYTES`` bytes from the OS's random source."""
    return secrets.token_bytes(CITY_SECRET_BYTES)


def write_city_secret(path: PathLike, secret: bytes) -> None:
    """Store the city secret raw in a new file (mode 0600), never over an existing one."""
    check_city_secret(secret, str(path))
    _write_private(path, secret, "城市密钥 (city secret) 文件")


def read_city_secret(path: PathLike) -> bytes:
    """The city secret in ``path``: a private regular file (as :func:`read_seed` checks)
    of ``MIN_SECRET_BYTES`` to ``MAX_SECRET_BYTES`` raw bytes."""
    data = _read_private(path, "城市密钥 (city secret) 文件", MAX_SECRET_BYTES)
    check_city_secret(data, str(path))
    return data


def check_city_secret(secret: bytes, where: str) -> None:
    """Refuse a secret too short, too long, or that is plainly not random bytes: a hex
    or text rendering would still work as a key, but a copy made from it differs by a
    trailing newline from the one in another district, and their PersonRefs split."""
    if len(secret) < MIN_SECRET_BYTES:
        raise KeyFileError(
            f"城市密钥 {where} 太短（{len(secret)} 字节，至少 {MIN_SECRET_BYTES} 字节）/ the "
            f"city secret in {where} is shorter than {MIN_SECRET_BYTES} bytes "
            f"({len(secret)}); use the file `timebank clearinghouse city-secret` wrote")
    if len(secret) > MAX_SECRET_BYTES:
        raise KeyFileError(
            f"城市密钥 {where} 太长（超过 {MAX_SECRET_BYTES} 字节），不是城市密钥文件 / "
            f"{where} holds more than {MAX_SECRET_BYTES} bytes: not a city secret file")
    if len(set(secret)) < 8:
        raise KeyFileError(
            f"城市密钥 {where} 不是随机字节 / the city secret in {where} repeats a few byte "
            "values: it is not random; use `timebank clearinghouse city-secret`")


def secret_fingerprint(secret: bytes) -> str:
    """16 hex characters that tell two copies of the city secret apart without showing
    it (SHA-256 under a label of its own, so it is no PersonRef of anything)."""
    return hashlib.sha256(b"timebank city secret fingerprint\0" + secret).hexdigest()[:16]


def _fsync_dir(directory: Path) -> None:
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - some platforms cannot open directories
        return
    try:
        os.fsync(dfd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(dfd)


__all__ = [
    "CITY_SECRET_BYTES",
    "MAX_PRIVATE_FILE_BYTES",
    "MAX_SECRET_BYTES",
    "MIN_SECRET_BYTES",
    "KeyFileError",
    "check_city_secret",
    "new_city_secret",
    "read_city_secret",
    "read_private_file",
    "read_seed",
    "secret_fingerprint",
    "write_city_secret",
    "write_file",
    "write_seed",
]
