"""A `timebank node` command that talks gRPC starts without the database layers.

Every such command is a new process (a script, a service point, the tests), and
importing SQLAlchemy, the schema and the use-cases would cost it about half a second of
CPU: node/cli imports them inside the commands that open the node's database.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("sqlalchemy", "argon2", "node.storage", "node.usecases", "alembic")


@pytest.mark.parametrize("argv", [["node", "claims"], ["node", "person", "show"],
                                  ["node", "balance"]])
def test_a_grpc_command_imports_no_database_layer(argv: list[str]) -> None:
    probe = (
        "import sys\n"
        "from city.cli import build\n"
        "from typer.main import get_command\n"
        f"get_command(build({argv!r}))\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r} "
        f"or m.startswith({HEAVY!r})))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
