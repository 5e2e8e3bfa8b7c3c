"""The wire contract stays lint-clean and compatible with the last release.

``buf lint`` under the project's buf.yaml (STANDARD rules; the exceptions are comments
in the .proto files), and ``buf breaking`` against the image of the newest release of
the current protocol major (proto/releases/releases.toml). buf comes from the buf-bin
package of the test extra; a missing buf fails, never skips.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from timebank.protocol import PROTOCOL, Version

ROOT = Path(__file__).resolve().parent.parent
RELEASES = ROOT / "proto" / "releases"


def _buf() -> str:
    found = shutil.which("buf", path=str(Path(sys.executable).parent)) or shutil.which("buf")
    assert found, "buf is missing: pip install -e '.[test]' (the buf-bin package)"
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_buf(), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)


def _releases() -> list[tuple[tuple[int, ...], Version, Path]]:
    listed = tomllib.loads((RELEASES / "releases.toml").read_text(encoding="utf-8"))
    return sorted((tuple(int(p) for p in r["version"].split(".")),
                   Version.parse(r["protocol"]), RELEASES / r["image"])
                  for r in listed["release"])


def test_buf_lint_is_clean() -> None:
    done = _run("lint")
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_breaking_change_since_the_last_release_of_this_major() -> None:
    releases = _releases()
    assert releases, "proto/releases/releases.toml lists no release"
    for _, _protocol, image in releases:
        assert image.is_file(), f"{image} is listed but missing"
    newest = releases[-1][1]
    assert newest <= PROTOCOL, f"protocol {PROTOCOL} is older than released {newest}"
    same_major = [image for _, protocol, image in releases if protocol.major == PROTOCOL.major]
    if not same_major:  # a new major: it follows the last one, and nothing to compare with
        assert Version(newest.major + 1, 0) == PROTOCOL, (
            f"after protocol {newest} comes {newest.major}.x or {newest.major + 1}.0")
        return
    done = _run("breaking", "--against", str(same_major[-1].relative_to(ROOT)))
    assert done.returncode == 0, (
        "a breaking change of the contract against the last release: make it compatible, "
        "or raise timebank.protocol.MAJOR (docs/protocol.md)\n" + done.stdout + done.stderr)


def test_the_project_version_is_at_least_the_last_release() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    version = tuple(int(p) for p in project["project"]["version"].split("."))
    assert version >= _releases()[-1][0]


def test_buf_breaking_catches_a_removed_field(tmp_path: Path) -> None:
    """The check can fail: the contract with one field of Person removed is breaking."""
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(ROOT / "proto", tmp_path / "proto", ignore=shutil.ignore_patterns("releases"))
    node = tmp_path / "proto" / "timebank" / "v1" / "node.proto"
    text, removed = re.subn(r"\n  string phone = 10;\n", "\n", node.read_text(encoding="utf-8"))
    assert removed == 1
    node.write_text(text, encoding="utf-8")
    image = _releases()[-1][2]
    done = _run("breaking", str(tmp_path), "--against", str(image))
    assert done.returncode != 0 and "phone" in done.stdout + done.stderr
