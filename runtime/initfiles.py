"""All or nothing for the ``init`` commands: a failed init leaves no file behind.

An ``init`` writes several files (configuration, keys, a policy, a secret, a SQLite
database). Written one by one, a failure halfway (a missing policy, a database that
refuses the connection) would leave some of them, and the next run would report them as
"kept", as if a good init had made them. ``all_or_nothing`` notes which of the paths an
init may create do not exist yet, and removes exactly those if the init fails: never a
file that was there before.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

#: The files SQLite may make beside a database file.
_SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def sqlite_files(url: str) -> tuple[Path, ...]:
    """The files of the SQLite database at ``url`` (none for another database)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        return ()
    db = Path(url[len(prefix):].split("?", 1)[0])
    return tuple(db.with_name(db.name + suffix) for suffix in _SQLITE_SUFFIXES)


def new_paths(paths: Iterable[Path]) -> list[Path]:
    """Those of ``paths`` that do not exist now (and their missing parent directories),
    parents before what they hold."""
    found: list[Path] = []
    for path in paths:
        missing = []
        for p in (path, *path.parents):
            if _exists(p):
                break
            missing.append(p)
        for p in reversed(missing):
            if p not in found:
                found.append(p)
    return found


def remove_new(created: list[Path]) -> None:
    """Remove what ``new_paths`` listed and now exists: files, and directories with
    everything in them (they did not exist before, so all they hold is new)."""
    for path in reversed(created):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif _exists(path):
            path.unlink(missing_ok=True)


@contextmanager
def all_or_nothing(paths: Iterable[Path]) -> Iterator[list[Path]]:
    """Run an init that may create ``paths``; if it raises, remove those of them that did
    not exist before, then re-raise. Yields the list of new paths, to which the init may
    add more it learns of on the way (e.g. the database file its configuration names)."""
    created = new_paths(paths)
    try:
        yield created
    except BaseException:
        remove_new(created)
        raise


__all__ = ["all_or_nothing", "new_paths", "remove_new", "sqlite_files"]
