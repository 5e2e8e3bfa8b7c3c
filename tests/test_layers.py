"""The package and layer rules of ADR 0001 and ADR 0010, checked over the whole tree.

Imports may only point down: contract (``timebank``) ← runtime ← each service's domain ←
storage ← usecases ← api ← cli/wiring, and ``city`` on top of everything. The node and
the clearinghouse never import each other, so each can be read, tested and audited on
its own; the contract imports no service and no runtime, so anyone can verify the city
with it alone. A violation names the file, the import and the rule it breaks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("node", "clearinghouse")
FIRST_PARTY = ("timebank", "runtime", "node", "clearinghouse", "city", "web")
#: The web console talks to the services over their APIs, as the person logged in: it
#: has no back door into a database (issue 18), so it imports no service and no storage.
#: Of the city tools it may use the report renderers (pure: data in, files out), so a
#: report downloaded from the console is the one the command writes; not their gatherers.
WEB_MAY_NOT_IMPORT = ("node", "clearinghouse", "city", "sqlalchemy", "alembic", "psycopg",
                      "runtime.db", "runtime.statements", "runtime.migrate")
WEB_MAY_IMPORT = ("city.reports",)
WEB_MAY_NOT_IMPORT_AFTER_ALL = ("city.reports.gather", "city.reports.command")

#: What a domain module may import: pure standard-library modules, the contract's pure
#: modules, the runtime's error base and clock protocol, and its own service's domain.
PURE_STDLIB = frozenset({
    "__future__", "abc", "base64", "bisect", "collections", "dataclasses", "datetime",
    "decimal", "enum", "functools", "hashlib", "hmac", "itertools", "json", "math",
    "operator", "re", "secrets", "string", "tomllib", "typing", "unicodedata", "zoneinfo",
})
DOMAIN_MAY_IMPORT_RUNTIME = ("runtime.errors", "runtime.clock")
#: Libraries that do I/O or speak a wire format: no domain module imports them.
#: The report renderers (city/reports, but ``gather`` and ``command`` that read databases)
#: are pure functions from plain data to files: no service, database, gRPC or runtime.
REPORT_RENDERERS = "city/reports/"
REPORT_GATHERERS = ("city/reports/gather", "city/reports/command.py")
REPORTS_MAY_NOT_IMPORT = ("node", "clearinghouse", "runtime", "city.audit", "city.launcher",
                          "sqlalchemy", "alembic", "psycopg", "grpc", "structlog")
WIRE_AND_STORAGE = ("sqlalchemy", "alembic", "grpc", "grpc_status", "grpc_health",
                    "grpc_reflection", "google", "psycopg", "structlog", "timebank.v1")
#: What the contract (hand-written, not generated) may import besides the standard library.
CONTRACT_MAY_IMPORT = ("timebank", "nacl", "google.protobuf")
#: Standard-library modules that reach files, processes or the network: the contract runs
#: nothing (key files, for one, are ``runtime.keyfiles``).
CONTRACT_MAY_NOT_IMPORT = ("os", "pathlib", "stat", "shutil", "socket", "subprocess",
                           "tempfile", "fcntl", "signal", "sqlite3", "urllib", "http",
                           "logging", "io")


@dataclass(frozen=True)
class Import:
    path: str  # relative to the repository root
    name: str  # the module imported, absolute


def _under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a (possibly relative) ``from … import`` names."""
    if node.level == 0:
        return node.module or ""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(package: str) -> Iterator[Import]:
    for path in sorted((ROOT / package).rglob("*.py")):
        if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
            continue
        rel = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=rel)):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(rel, alias.name)
            elif isinstance(node, ast.ImportFrom):
                module = _resolve(path, node)
                yield Import(rel, module)
                # ``from pkg import sub`` imports the submodule pkg.sub when there is one
                for alias in node.names:
                    if _is_module(f"{module}.{alias.name}"):
                        yield Import(rel, f"{module}.{alias.name}")


def _is_module(name: str) -> bool:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _layer_of(path: str) -> str | None:
    parts = Path(path).parts
    return parts[1] if len(parts) > 2 and parts[0] in SERVICES else None


def _is_stdlib(name: str) -> bool:
    import sys

    return name.split(".")[0] in sys.stdlib_module_names


def violations() -> list[str]:
    found: list[str] = []

    def refuse(imp: Import, rule: str) -> None:
        found.append(f"{imp.path} imports {imp.name}: {rule}")

    for imp in imports_of("timebank"):
        if any(_under(imp.name, io) for io in CONTRACT_MAY_NOT_IMPORT):
            refuse(imp, "the contract does no I/O: it runs nothing")
        elif not (_is_stdlib(imp.name)
                  or any(_under(imp.name, ok) for ok in CONTRACT_MAY_IMPORT)):
            refuse(imp, "the contract imports only the standard library, PyNaCl and protobuf")

    for imp in imports_of("runtime"):
        if any(_under(imp.name, p) for p in ("node", "clearinghouse", "city", "web")):
            refuse(imp, "the runtime imports no service")

    for imp in imports_of("web"):
        allowed = any(_under(imp.name, ok) for ok in WEB_MAY_IMPORT) and not any(
            _under(imp.name, banned) for banned in WEB_MAY_NOT_IMPORT_AFTER_ALL)
        if not allowed and any(_under(imp.name, banned) for banned in WEB_MAY_NOT_IMPORT):
            refuse(imp, "the web console calls the services' APIs: it imports no service "
                        "and reaches no database")

    for imp in imports_of("city"):
        if imp.path.startswith(REPORT_RENDERERS) and \
                not imp.path.startswith(REPORT_GATHERERS) and \
                any(_under(imp.name, banned) for banned in REPORTS_MAY_NOT_IMPORT):
            refuse(imp, "a report renderer turns plain data into files: it reads no "
                        "database and imports no service (city.reports.gather does)")

    for service in SERVICES:
        other = next(s for s in SERVICES if s != service)
        for imp in imports_of(service):
            layer = _layer_of(imp.path)
            if _under(imp.name, other):
                refuse(imp, f"{service} never imports {other}")
            if _under(imp.name, "city") or _under(imp.name, "web"):
                refuse(imp, "a service never imports the city tools or the web console")
            if layer == "domain":
                allowed = (imp.name.split(".")[0] in PURE_STDLIB
                           or _under(imp.name, f"{service}.domain")
                           or any(_under(imp.name, r) for r in DOMAIN_MAY_IMPORT_RUNTIME)
                           or (_under(imp.name, "timebank")
                               and not _under(imp.name, "timebank.v1")))
                if not allowed:
                    refuse(imp, "a domain module is pure: no storage, wire format or I/O")
            elif layer == "storage":
                for upper in ("usecases", "api", "cli"):
                    if _under(imp.name, f"{service}.{upper}"):
                        refuse(imp, "storage does not import the layers above it")
                if any(_under(imp.name, w) for w in ("grpc", "structlog")):
                    refuse(imp, "storage speaks SQL, not gRPC")
            elif layer == "usecases":
                for banned in ("sqlalchemy", "alembic", "psycopg", "grpc",
                               f"{service}.api", f"{service}.cli"):
                    if _under(imp.name, banned):
                        refuse(imp, "a use-case runs no SQL and speaks no gRPC: "
                                    "it calls the storage layer's typed methods")
            elif layer in ("api", "link"):
                for banned in ("sqlalchemy", "alembic", "psycopg", f"{service}.storage",
                               f"{service}.cli"):
                    if _under(imp.name, banned):
                        refuse(imp, "the gRPC layers (api, link) translate messages and call "
                                    "use-cases; they do not reach into storage")
    return found


def test_the_layers_hold() -> None:
    found = violations()
    assert not found, "layering violations:\n" + "\n".join(found)


@pytest.mark.parametrize("package", FIRST_PARTY)
def test_every_package_is_scanned(package: str) -> None:
    """The rules above read real files: a package that moved would make them vacuous."""
    assert list(imports_of(package)), f"no imports found under {package}/"


def test_a_forbidden_import_is_found(tmp_path: Path) -> None:
    """The scanner sees relative imports and submodules named in ``from … import``."""
    module = ROOT / "node" / "domain" / "ledger.py"
    tree = ast.parse("from ..storage import repo\nfrom node import api\n")
    names = [_resolve(module, n) for n in tree.body if isinstance(n, ast.ImportFrom)]
    assert names == ["node.storage", "node"]
    assert _is_module("node.api") and not _is_module("node.no_such_thing")
