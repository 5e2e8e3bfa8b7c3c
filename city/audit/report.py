"""What an audit finds: each check's outcome and the first bad record it met."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any


class AuditError(Exception):
    """The audit cannot start: a missing directory, an unreadable key, no answer."""


@dataclass(frozen=True, slots=True)
class BadRecord:
    """The first record a check found wrong."""

    file: str   # the database (relative to the data directory) or the address
    table: str
    entry: str  # which row: "seq 3", "idx 12", "claim 0190…", "node 320115"
    problem: str


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str  # what was checked (counts), or why it failed
    first_bad: BadRecord | None = None


@dataclass(frozen=True, slots=True)
class Report:
    source: str
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def first_bad(self) -> BadRecord | None:
        return next((c.first_bad for c in self.checks if not c.ok and c.first_bad), None)

    def summary(self) -> dict[str, Any]:
        return {"ok": self.ok, "source": self.source,
                "checks": [asdict(c) for c in self.checks],
                "first_bad": None if self.first_bad is None else asdict(self.first_bad)}


class Bad(Exception):
    """Raised inside a check at its first bad record."""

    def __init__(self, record: BadRecord) -> None:
        super().__init__(record.problem)
        self.record = record


def run(name: str, body: Callable[[], str]) -> Check:
    try:
        return Check(name, True, body())
    except Bad as e:
        return Check(name, False, e.record.problem, e.record)


def plural(n: int, word: str) -> str:
    many = {"entry": "entries", "leaf": "leaves"}.get(word, word + "s")
    return f"{n} {word}" if n == 1 else f"{n} {many}"

