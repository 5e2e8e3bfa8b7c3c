"""Every command's `--help` shows the configuration tables its help names.

typer reads help text as rich markup, where ``[server]`` and ``[clearinghouse]`` are
style tags: they vanished from `--help` ("its address ( listen)"). ``plain_help``
escapes them; this walks every command of `timebank` and reads its help page.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from city.cli import app

runner = CliRunner()
#: A table name as help text writes it, escaped or not: [server], [clearinghouse] ...
TABLE = re.compile(r"\\?\[([a-z][a-z_]*)\]")


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        if not sub.hidden:
            yield from _commands(sub, (*path, name))


def _tables(command: Any) -> set[str]:
    """The bracketed table names in a command's help and its shown options' help."""
    texts = [command.help or ""] + [p.help for p in command.params
                                    if getattr(p, "help", None) and not p.hidden]
    return {f"[{name}]" for text in texts for name in TABLE.findall(text)}


COMMANDS = [(path, _tables(c)) for path, c in _commands(typer.main.get_command(app))]


def test_the_walk_sees_the_commands_whose_tables_went_missing() -> None:
    found = dict(COMMANDS)
    assert {"[server]", "[clearinghouse]"} <= found[("node", "positions")]
    assert {"[clearinghouse]", "[tls]"} <= found[("node", "serve")]
    assert len(COMMANDS) > 50


@pytest.mark.parametrize(("path", "tables"), [c for c in COMMANDS if c[1]],
                         ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_help_shows_every_table_it_names(path: tuple[str, ...], tables: set[str]) -> None:
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    page = result.stdout
    missing = [t for t in sorted(tables) if t not in page]
    assert not missing, f"`timebank {' '.join(path)} --help` lost {missing}:\n{page}"
    assert "\\[" not in page  # the escape itself never shows
