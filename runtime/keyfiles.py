"""Key files: a signing key's 32-byte seed on disk, one file per key, mode 0600, or a
mounted secret (a Kubernetes secret volume is a symlink to a read-only file).

A file appears whole or not at all, is never overwritten, and is refused when anyone
but its owner could read or change it: a seed is the whole private key. The same two
pieces serve every private file (``read_private``: TLS keys, ``runtime.tls``) and every
file the city's CA writes (``write_file``: keys, certificates, the CRL, which a renewal
replaces in one rename).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from timebank.keys import SEED_LEN, SigningKey

PathLike = str | os.PathLike[str]


class KeyFileError(Exception):
    """A key file cannot be written or read safely; the message says what to do."""


def write_seed(path: PathLike, key: SigningKey) -> None:
    """Store the key's 32-byte seed in a new file readable only by its owner (mode 0600).

    The file appears whole or not at all (``write_file``); an existing key is never
    overwritten.
    """
    seed = bytes(key)
    if len(seed) != SEED_LEN:  # pragma: no cover - PyNaCl guarantees this
        raise KeyFileError("a signing key seed must be 32 bytes")
    write_file(path, seed, mode=0o600)


def write_file(path: PathLike, data: bytes, *, mode: int, replace: bool = False) -> None:
    """Write ``data`` to ``path`` with ``mode`` (0600 for anything private), whole or not
    at all: written and synced under a temporary name in the same directory, then
    hard-linked to ``path``, which fails if ``path`` already exists, or, with
    ``replace`` (a renewed certificate), renamed over it in one step.
    """
    target = Path(path)
    directory = target.parent
    if not replace and (target.exists() or target.is_symlink()):
        raise KeyFileError(f"{target} already exists; refusing to overwrite it")
    if not directory.is_dir():
        raise KeyFileError(f"{directory} is not a directory; create it before writing {target}")
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
                raise KeyFileError(f"{target} already exists; refusing to overwrite it") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(directory)


def read_seed(path: PathLike) -> SigningKey:
    """Load a signing key from a seed file written by :func:`write_seed` (or a secret mount).

    Refuses what ``read_private`` refuses, and anything but exactly 32 bytes.
    """
    target = Path(path)
    data = read_private(target, SEED_LEN + 1, what="a 32-byte seed")
    if len(data) != SEED_LEN:
        size = f"more than {SEED_LEN}" if len(data) > SEED_LEN else str(len(data))
        raise KeyFileError(
            f"{target} holds {size} bytes; a key file holds exactly {SEED_LEN} raw bytes "
            f"(the Ed25519 seed, not hex or base64)"
        )
    return SigningKey(data)


def read_private(path: PathLike, limit: int, *, what: str = "a private key") -> bytes:
    """The first ``limit`` bytes of a private file (a key, a secret).

    Refuses anything but a regular file that no group or other user can read or write
    (a symlink is followed and its target checked, as Kubernetes secret volumes are
    symlinks; mount them with ``defaultMode: 0400``).
    """
    target = Path(path)
    try:
        fd = os.open(target, os.O_RDONLY)  # symlinks followed: secret mounts use them
    except FileNotFoundError:
        raise KeyFileError(f"{target} does not exist; no key file there") from None
    except PermissionError:
        raise KeyFileError(f"{target} cannot be read by this user") from None
    except OSError as e:
        raise KeyFileError(f"{target} cannot be opened as a key file: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{target} is not a regular file; a key file holds {what}")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o044:
            raise KeyFileError(
                f"{target} is readable by other users (mode {mode:04o}); "
                f"run chmod 600 {target} and consider replacing the key"
            )
        if mode & 0o033:
            raise KeyFileError(
                f"{target} is writable by other users (mode {mode:04o}); "
                f"run chmod 600 {target} and consider replacing the key"
            )
        data = b""
        while len(data) < limit:
            chunk = os.read(fd, limit - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    return data


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


__all__ = ["KeyFileError", "read_private", "read_seed", "write_file", "write_seed"]
