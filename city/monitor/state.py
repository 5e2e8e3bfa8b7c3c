"""What a monitor remembers between rounds and runs, in its own directory: the last head
of the clearinghouse's log it verified, the log's leaves read so far (as the O(log n)
frontier of perfect subtrees, so each run reads only new leaves), each district's
anchors and heads, the heads waiting to become final, and the evidence files.

``state.json`` is rewritten whole on every round (write, then rename), so a monitor
killed in the middle finds the previous round's state. Evidence files are named by the
fork (``timebank.forks.Evidence.id``) and never rewritten; at most ``max_files`` are
kept, and a full directory is reported, not silently cleaned.

``status.json`` (``timebank.monitorstatus``) says what the latest round found, for
whoever shows it (the bureau's console): rewritten after every round, atomically (a
temporary file in the same directory, flushed to disk, then renamed over it), so a
reader finds the previous status or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from timebank import forks, merkle, monitorstatus

STATE_FILE = "state.json"
STATUS_FILE = monitorstatus.FILE_NAME
EVIDENCE_DIR = "evidence"
FORMAT = "timebank-monitor-state/v1"
#: Heads remembered while they wait to become final (the oldest is always kept).
MAX_PENDING = 64
#: Anchors that went backwards, remembered to report again every round (the first ones).
MAX_REWRITES = 64
DEFAULT_MAX_EVIDENCE = 100


class StateError(Exception):
    """The monitor's directory cannot be used: unreadable state, another city's."""


@dataclass
class Frontier:
    """RFC 9162 roots of a log read leaf by leaf: the perfect subtrees (level, hash)
    not yet paired, O(log n) of them."""

    stack: list[tuple[int, bytes]] = field(default_factory=list)
    size: int = 0

    def add(self, data: bytes) -> None:
        h, level = merkle.leaf_hash(data), 0
        while self.stack and self.stack[-1][0] == level:
            h = merkle.node_hash(self.stack.pop()[1], h)
            level += 1
        self.stack.append((level, h))
        self.size += 1

    def root(self) -> bytes:
        if not self.stack:
            return merkle.EMPTY_ROOT
        acc = self.stack[-1][1]
        for _, left in reversed(self.stack[:-1]):
            acc = merkle.node_hash(left, acc)
        return acc


@dataclass
class State:
    """Everything a round carries to the next."""

    clearinghouse_key: str = ""
    head: str | None = None  # the last head of the log verified (a signed note)
    frontier: Frontier = field(default_factory=Frontier)
    anchors: dict[str, int] = field(default_factory=dict)  # node id -> entry count
    keys: dict[str, list[str]] = field(default_factory=dict)  # node id -> admitted keys
    districts: dict[str, dict[str, Any]] = field(default_factory=dict)  # address -> last seen
    pending: list[tuple[int, int]] = field(default_factory=list)  # (size, first seen)
    final_size: int = 0
    #: Anchors found going backwards in the log (finding key -> detail): facts of the
    #: log, so every later round reports them again, as a monitor reading it afresh would.
    rewrites: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "clearinghouse_key": self.clearinghouse_key,
                "head": self.head, "leaves": self.frontier.size,
                "frontier": [[level, h.hex()] for level, h in self.frontier.stack],
                "anchors": self.anchors, "keys": self.keys, "districts": self.districts,
                "pending": [list(p) for p in self.pending], "final_size": self.final_size,
                "rewrites": self.rewrites}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> State:
        if doc.get("format") != FORMAT:
            raise StateError(f"the state is not {FORMAT}")
        frontier = Frontier([(int(level), bytes.fromhex(h)) for level, h in doc["frontier"]],
                            int(doc["leaves"]))
        return cls(str(doc["clearinghouse_key"]), doc.get("head"), frontier,
                   {str(k): int(v) for k, v in doc["anchors"].items()},
                   {str(k): [str(x) for x in v] for k, v in doc["keys"].items()},
                   dict(doc["districts"]),
                   [(int(s), int(t)) for s, t in doc["pending"]][-MAX_PENDING:],
                   int(doc["final_size"]),
                   {str(k): str(v) for k, v in list(doc.get("rewrites", {}).items())
                    [:MAX_REWRITES]})


class Directory:
    """The monitor's directory: ``state.json`` and ``evidence/``."""

    def __init__(self, path: Path, *, max_evidence: int = DEFAULT_MAX_EVIDENCE) -> None:
        if max_evidence < 1:
            raise StateError("keep room for at least one evidence file")
        self.path = path
        self.evidence_dir = path / EVIDENCE_DIR
        self.max_evidence = max_evidence

    def load(self, clearinghouse_key: bytes) -> State:
        file = self.path / STATE_FILE
        if not file.exists():
            return State(clearinghouse_key.hex())
        try:
            state = State.from_json(json.loads(file.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise StateError(f"{file} cannot be read ({e}); move it away to start "
                             "afresh") from None
        if state.clearinghouse_key != clearinghouse_key.hex():
            raise StateError(f"{self.path} watches the clearinghouse with key "
                             f"{state.clearinghouse_key[:16]}…, not this one")
        return state

    def save(self, state: State) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        file = self.path / STATE_FILE
        temporary = file.with_suffix(".tmp")
        temporary.write_text(json.dumps(state.to_json(), ensure_ascii=False, indent=1),
                             encoding="utf-8")
        os.replace(temporary, file)

    def report(self, status: monitorstatus.MonitorStatus) -> Path:
        """Replace ``status.json`` with ``status``, atomically; its path."""
        file = self.path / STATUS_FILE
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(prefix=".status-", suffix=".tmp", dir=self.path)
            try:
                with os.fdopen(handle, "wb") as out:
                    out.write(monitorstatus.to_json(status))
                    out.flush()
                    os.fsync(out.fileno())
                os.chmod(name, 0o644)  # public facts, for a console run by another user
                os.replace(name, file)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(name)
                raise
            if hasattr(os, "O_DIRECTORY"):  # the rename itself, on disk (POSIX)
                folder = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(folder)
                finally:
                    os.close(folder)
        except OSError as e:
            raise StateError(f"cannot write {file}: {e.strerror or e}") from None
        return file

    def keep(self, evidence: forks.Evidence, found_at: int) -> tuple[Path | None, bool]:
        """Write the evidence file unless one for this fork exists: (its path, whether
        it is new). (None, False) when the directory holds ``max_evidence`` files."""
        self.evidence_dir.mkdir(parents=True, exist_ok=True)
        path = self.evidence_dir / f"fork-{evidence.id}.json"
        if path.exists():
            return path, False
        if len(list(self.evidence_dir.glob("fork-*.json"))) >= self.max_evidence:
            return None, False
        temporary = path.with_suffix(".tmp")
        temporary.write_text(evidence.dumps(found_at=found_at), encoding="utf-8")
        os.replace(temporary, path)
        return path, True


__all__ = ["DEFAULT_MAX_EVIDENCE", "EVIDENCE_DIR", "MAX_PENDING", "MAX_REWRITES", "STATE_FILE",
           "STATUS_FILE", "Directory", "Frontier", "State", "StateError"]
