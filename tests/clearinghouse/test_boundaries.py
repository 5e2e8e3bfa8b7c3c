"""The package rules: the clearinghouse never imports the node (nor the node it), and
its domain rules import nothing that does I/O: no protobuf, no database, no gRPC."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOMAIN_MAY_IMPORT = ("__future__", "clearinghouse.domain", "collections", "dataclasses",
                     "datetime", "enum", "re", "runtime.errors", "timebank.ids", "timebank.minutes",
                     "typing")


def imports(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


def _under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_clearinghouse_and_node_never_import_each_other() -> None:
    for path, names in imports("clearinghouse").items():
        assert not [n for n in names if _under(n, "node")], path
    for path, names in imports("node").items():
        assert not [n for n in names if _under(n, "clearinghouse")], path


def test_the_domain_is_pure() -> None:
    found = imports("clearinghouse/domain")
    assert found
    for path, names in found.items():
        stray = [n for n in names if not any(_under(n, ok) for ok in DOMAIN_MAY_IMPORT)]
        assert not stray, f"{path} imports {stray}"
