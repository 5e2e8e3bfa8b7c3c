"""Everything the operator's guides name exists: each `timebank` command, subcommand and
option (checked against the real command tree the `timebank` executable runs), and each
``[table] key`` setting (checked against the services' configuration schemas). A guide
that names what the software does not have fails here, not in an operator's hands."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from clearinghouse import config as ch_config
from node import config as node_config
from tests.deploy.guide import GUIDES, blocks, commands, inline_commands, problem, settings
from tests.deploy.tools import DEPLOY


def _schema(module: object) -> Iterator[tuple[str, str]]:
    """A service's settings, from its schema (``SCHEMA.settings``) or, before the one
    configuration scheme, its tables (``_TABLES``)."""
    schema = getattr(module, "SCHEMA", None)
    if schema is not None:
        yield from ((s.table, s.key) for s in schema.settings)
    for table, keys in getattr(module, "_TABLES", {}).items():
        yield from ((table, key) for key in keys)


KNOWN_SETTINGS = {*_schema(node_config), *_schema(ch_config)}

def _named(lang: str) -> list[list[str]]:
    text = GUIDES[lang].read_text(encoding="utf-8")
    named = [c for b in blocks(GUIDES[lang]) if b.lang in ("sh", "") for c in commands(b.text)]
    return named + inline_commands(text)


@pytest.mark.parametrize("lang", sorted(GUIDES))
def test_every_command_and_option_the_guide_names_exists(lang: str) -> None:
    named = _named(lang)
    assert len(named) > 50, "the guide's commands were found"
    wrong = sorted({why for words in named if (why := problem(words)) is not None})
    assert not wrong, "\n".join(wrong)


def test_every_command_the_compose_set_up_runs_exists() -> None:
    script = (DEPLOY / "compose" / "setup.sh").read_text(encoding="utf-8")
    named = commands(script)
    assert len(named) >= 8
    wrong = sorted({why for words in named if (why := problem(words)) is not None})
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("lang", sorted(GUIDES))
def test_every_setting_the_guide_names_exists(lang: str) -> None:
    named = settings(GUIDES[lang].read_text(encoding="utf-8"))
    assert ("server", "listen") in named
    assert not named - KNOWN_SETTINGS, sorted(named - KNOWN_SETTINGS)


def test_the_check_catches_what_does_not_exist() -> None:
    assert problem(["node", "serve", "--config", "x"]) is None
    assert problem(["node", "--ca", "ca.pem", "order", "record", "1"]) is None
    assert problem(["node", "serve", "--konfig", "x"]) == \
        "`timebank node serve` has no option --konfig"
    assert problem(["node", "sreve"]) == "`timebank node` has no command 'sreve'"
    assert problem(["node", "order", "1"]) is not None
    assert ("tls", "nope") not in KNOWN_SETTINGS and ("tls", "ca") in KNOWN_SETTINGS


def test_both_guides_show_the_same_commands() -> None:
    """The English guide says what the Chinese one says, command for command."""
    zh, en = ([c for b in blocks(GUIDES[lang]) for c in commands(b.text)]
              for lang in ("zh", "en"))
    assert zh == en


def test_the_guides_cover_what_an_operator_does() -> None:
    for lang, path in GUIDES.items():
        flat = {" ".join(words[:2]) for words in _named(lang)} | \
            {" ".join(words[:3]) for words in _named(lang)}
        for needed in ("pki init", "clearinghouse init", "clearinghouse city-secret",
                       "clearinghouse policy init", "clearinghouse admit", "node init",
                       "node serve", "clearinghouse serve", "pki renew", "pki revoke",
                       "node backup", "node restore", "node migrate", "clearinghouse migrate",
                       "node status"):
            assert needed in flat, (lang, needed)
        assert "deploy/observability/" in path.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", sorted((DEPLOY / "kubernetes" / "base" / "config").glob("*.toml")),
                         ids=lambda p: p.name)
def test_the_kubernetes_configurations_name_only_real_settings(path: Path) -> None:
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    named = {(table, key) for table, keys in doc.items() for key in keys}
    assert not named - KNOWN_SETTINGS, sorted(named - KNOWN_SETTINGS)
