"""The operator's guides read as data: their code blocks, the walkthrough's marks, and
every `timebank ...` command and `[table] key` setting they name.

A block the walkthrough runs is preceded by an HTML comment (invisible when rendered):
``<!-- walkthrough -->`` runs it; ``<!-- walkthrough: serve HOST:PORT -->`` starts its one
command in the background and waits until HOST:PORT serves; ``<!-- walkthrough: after
90m -->`` (``m``, ``h`` or ``d``) first moves the city's clock forward that far;
``<!-- walkthrough: until WORD -->`` runs it again until its output contains WORD.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from city.cli import app
from tests.deploy.tools import DEPLOY

GUIDES = {"zh": DEPLOY / "guide" / "zh.md", "en": DEPLOY / "guide" / "en.md"}
_FENCE = re.compile(r"^```([a-z]*)\n(.*?)^```$", re.S | re.M)
_MARK = re.compile(r"<!-- walkthrough(?::\s*(.*?))?\s*-->\s*$")
_SETTING = re.compile(r"\[([a-z_]+)\] ([a-z_]+)")
_SPLIT = re.compile(r"\$\(|\(|\)|&&|\|\||;|\|")
_REDIRECT = re.compile(r"\s\d?>|\s<")
_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")
_UNITS = {"m": 60, "h": 3600, "d": 86400}
ROOT_COMMAND = typer.main.get_command(app)
Command = Any  # typer's own click: a command has .params, a group also .commands


@dataclass(frozen=True, slots=True)
class Block:
    lang: str
    text: str
    #: The walkthrough's mark before it ("run", "serve", "after", "until"), or None.
    mark: str | None = None
    #: serve: the address; after: seconds; until: the word.
    arg: str = ""


def blocks(path: Path) -> list[Block]:
    """Every fenced code block of a guide, with the walkthrough mark just before it."""
    text = path.read_text(encoding="utf-8")
    found = []
    for m in _FENCE.finditer(text):
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = _MARK.search(before)
        kind, arg = None, ""
        if mark is not None:
            words = (mark.group(1) or "").split(maxsplit=1)
            kind = words[0] if words else "run"
            arg = words[1] if len(words) > 1 else ""
            assert kind in ("run", "serve", "after", "until"), before
            if kind == "after":
                assert re.fullmatch(r"\d+[mhd]", arg), before
                arg = str(int(arg[:-1]) * _UNITS[arg[-1]])
        found.append(Block(m.group(1), m.group(2), kind, arg))
    return found


def logical_lines(text: str) -> list[str]:
    """Shell lines with their backslash continuations joined."""
    return [line.strip() for line in text.replace("\\\n", " ").splitlines() if line.strip()]


def commands(text: str) -> list[list[str]]:
    """Every `timebank ...` command in shell ``text``, as its words after `timebank`:
    each simple command (cut at ``$(``, ``(``, ``&&``, ``||``, ``;``, ``|``) whose
    program, after ``VAR=value`` words and ``sudo -u USER``, is `timebank`; redirections
    and comments dropped."""
    out = []
    for line in logical_lines(text):
        for part in _SPLIT.split(line):
            try:
                words = shlex.split(_REDIRECT.split(part)[0], comments=True)
            except ValueError:  # an unbalanced quote: the part holds no command
                continue
            while words and _ASSIGNMENT.match(words[0]):
                words = words[1:]
            if words[:2] == ["sudo", "-u"]:
                words = words[3:]
            if words and words[0].rsplit("/", 1)[-1] == "timebank":
                out.append(words[1:])
    return out


def inline_commands(text: str) -> list[list[str]]:
    """Commands named in the prose, in single backticks: `timebank ...`."""
    prose = _FENCE.sub("", text)
    return [c for found in re.findall(r"`(timebank [^`]+)`", prose.replace("\n", " "))
            for c in commands(found)]


def settings(text: str) -> set[tuple[str, str]]:
    """Every ``[table] key`` the guide names, in prose or code."""
    return set(_SETTING.findall(text)) - {("table", "key")}  # the scheme's own words


def problem(words: list[str]) -> str | None:
    """Why ``timebank WORDS`` would not parse as far as names go (None: it would): each
    subcommand exists, and each option exists on the command or group it follows."""
    command: Command = ROOT_COMMAND
    path = ["timebank"]
    takes_value = False
    for word in words:
        if takes_value:  # the value of the option before it
            takes_value = False
        elif word.startswith("-"):
            name = word.split("=", 1)[0]
            options = {o: p for p in command.params for o in (*p.opts, *p.secondary_opts)}
            if name not in options:
                return f"`{' '.join(path)}` has no option {name}"
            takes_value = "=" not in word and not options[name].is_flag
        elif hasattr(command, "commands"):
            sub = command.commands.get(word)
            if sub is None:
                return f"`{' '.join(path)}` has no command {word!r}"
            command, path = sub, [*path, word]
    return None


__all__ = [
    "GUIDES",
    "Block",
    "blocks",
    "commands",
    "inline_commands",
    "logical_lines",
    "problem",
    "settings",
]
