"""The offline tools verify with the contract, not with a service's insides: the passbook
verifier and the audit import no service's storage, use cases or commands (they read a database as
data, through city/audit/tables.py), and the contract imports no service at all."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OFFLINE = ["city/statement.py", *sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "city" / "audit").glob("*.py"))]
FORBIDDEN = ("node.storage", "node.usecases", "node.cli", "clearinghouse.storage",
             "clearinghouse.usecases")
SERVICES = ("node", "clearinghouse", "city", "runtime")


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the file: for ``from a import b``,
    both ``a`` and ``a.b`` (b may be a module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _under(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


@pytest.mark.parametrize("path", OFFLINE)
def test_the_offline_tools_import_no_service_storage_or_use_case(path: str) -> None:
    stray = sorted(n for n in imported(ROOT / path) if _under(n, FORBIDDEN))
    assert not stray, f"{path} imports {stray}"


def test_the_rule_sees_what_it_forbids() -> None:
    found = imported(ROOT / "node" / "usecases" / "statement.py")
    assert "node.domain.ledger" in found and "timebank.passbook.FORMAT" in found
    assert _under("node.storage.repo.account_from_code", FORBIDDEN)
    assert not _under("node.storagex", FORBIDDEN) and len(OFFLINE) > 5


def test_the_contract_imports_no_service() -> None:
    for path in sorted((ROOT / "timebank").rglob("*.py")):
        stray = sorted(n for n in imported(path) if _under(n, SERVICES))
        assert not stray, f"{path.relative_to(ROOT)} imports {stray}"
