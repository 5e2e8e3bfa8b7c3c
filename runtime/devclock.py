"""A development clock that several processes share through one small file.

The city demo and the fault tests run the clearinghouse and each node as its own process
(ADR 0005, "Process model"), and must pass a 7-day publicity period or a claim's deadline
without sleeping. Every process reads the same clock file with :class:`FileClock`; a
controller moves all of them forward at once with :func:`advance`.

The file holds the offset from real time as a whole number of seconds in ASCII decimal,
never negative (``604800`` is 7 days; surrounding whitespace is ignored). Whole seconds
rather than an ISO-8601 duration: exact, written by ``echo``, read without a parser.
A missing file means an offset of 0. Write the file with :func:`advance`, or as a
temporary file renamed over it: readers notice a change by its stat identity (inode,
size, times), so an in-place rewrite of the same size may go unnoticed for a moment.

Simulated time is refused unless ``TIMEBANK_DEV_CLOCK_ALLOWED=1`` is set, so that a real
clearinghouse or node never runs on it by mistake. POSIX only (``fcntl``).
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

ALLOW_ENV = "TIMEBANK_DEV_CLOCK_ALLOWED"
#: Far beyond any demo, and far from ``datetime.max``.
MAX_OFFSET = timedelta(days=100 * 366)
_MAX_FILE_BYTES = 64
_SECONDS = re.compile(rb"[0-9]{1,12}")
_ONE_SECOND = timedelta(seconds=1)

#: What identifies one version of the file: device, inode, size, mtime_ns, ctime_ns.
_Key = tuple[int, int, int, int, int]


class DevClockError(ValueError):
    """The dev clock cannot be used: not allowed here, or its file is unreadable."""


def check_allowed(environ: Mapping[str, str] | None = None) -> None:
    """Refuse simulated time unless the environment says this is a demo or a test."""
    environ = os.environ if environ is None else environ
    if environ.get(ALLOW_ENV) != "1":
        raise DevClockError(
            f"a simulated clock is for demos and tests only; set {ALLOW_ENV}=1 to use "
            "--dev-clock")


def _key(st: os.stat_result) -> _Key:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _parse(raw: bytes, path: Path) -> timedelta:
    text = raw.strip()
    if len(raw) > _MAX_FILE_BYTES or not _SECONDS.fullmatch(text):
        shown = raw[:_MAX_FILE_BYTES].decode("utf-8", "replace")
        raise DevClockError(
            f"the dev clock file {path} must hold the offset as a whole, non-negative "
            f"number of seconds (e.g. 604800 for 7 days), not {shown!r}")
    offset = timedelta(seconds=int(text))
    if offset > MAX_OFFSET:
        raise DevClockError(f"the dev clock file {path} holds an offset of {offset}, more "
                            f"than the {MAX_OFFSET.days} days a dev clock allows")
    return offset


def _read(path: Path) -> tuple[_Key, timedelta]:
    """The file's identity and offset, from one open file (so both are of one version)."""
    with open(path, "rb") as f:
        key = _key(os.fstat(f.fileno()))
        raw = f.read(_MAX_FILE_BYTES + 1)
    return key, _parse(raw, path)


def read_offset(path: Path | str) -> timedelta:
    """The offset the clock file holds now (0 when there is none); DevClockError if bad."""
    try:
        return _read(Path(path))[1]
    except FileNotFoundError:
        return timedelta(0)
    except OSError as e:
        raise DevClockError(f"cannot read the dev clock file {path}: {e.strerror or e}"
                            ) from None


class FileClock:
    """Real UTC time plus the offset in a clock file, never going backwards.

    ``now()`` runs on every transaction, so it costs one ``stat`` unless the file
    changed. A file that turns unreadable or malformed after construction is ignored
    (the last good offset stays); a file that disappears means offset 0 again, and the
    clock then stands still until real time catches up. Thread-safe.
    """

    def __init__(self, path: Path | str, *, environ: Mapping[str, str] | None = None) -> None:
        """Raises DevClockError (a ValueError) if not allowed, or if the file is bad now."""
        check_allowed(environ)
        self.path = Path(path)
        self._lock = threading.Lock()
        self._seen: _Key | None = None  # the file version last read, good or bad
        self._offset = timedelta(0)
        self._last: datetime | None = None
        with self._lock:
            self._refresh(strict=True)

    def _refresh(self, *, strict: bool) -> None:
        try:
            key = _key(os.stat(self.path))
        except FileNotFoundError:
            self._seen, self._offset = None, timedelta(0)
            return
        except OSError as e:
            if strict:
                raise DevClockError(
                    f"cannot read the dev clock file {self.path}: {e.strerror or e}") from None
            return
        if key == self._seen:
            return
        try:
            key, offset = _read(self.path)
        except DevClockError:
            if strict:
                raise
            self._seen = key  # malformed: keep the last good offset, don't re-read it
            return
        except OSError as e:  # replaced or removed meanwhile: try again next time
            if strict:
                raise DevClockError(
                    f"cannot read the dev clock file {self.path}: {e.strerror or e}") from None
            return
        self._seen, self._offset = key, offset

    def offset(self) -> timedelta:
        """The offset in force now."""
        with self._lock:
            self._refresh(strict=False)
            return self._offset

    def now(self) -> datetime:
        """Real time plus the offset, timezone-aware UTC, never before a time returned."""
        with self._lock:
            self._refresh(strict=False)
            found = datetime.now(UTC) + self._offset
            if self._last is not None and found < self._last:
                found = self._last
            self._last = found
            return found


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path``:
    a reader sees the old file or the new one, never half of one."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def advance(path: Path | str, delta: timedelta) -> timedelta:
    """Move the clock file forward by ``delta`` (whole seconds); return the new offset.

    Controllers take an exclusive ``flock`` on ``PATH.lock`` for the read-add-write, so
    two advancing at once lose no update. Creates the file if it is missing.
    """
    if delta < timedelta(0):
        raise ValueError(f"a dev clock only moves forward; cannot advance by {delta}")
    if delta % _ONE_SECOND:
        raise ValueError(f"a dev clock moves by whole seconds; cannot advance by {delta}")
    path = Path(path)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        offset = read_offset(path) + delta
        if offset > MAX_OFFSET:
            raise DevClockError(f"advancing {path} by {delta} would pass the "
                                f"{MAX_OFFSET.days} days a dev clock allows")
        _replace(path, f"{offset // _ONE_SECOND}\n")
    finally:
        os.close(fd)  # releases the lock
    return offset
