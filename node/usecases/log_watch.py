"""What this node found wrong with the city's log (issue 14): fork evidence, and the
finality alarm.

The link's log watch compares the tree heads other districts hold with the log the
clearinghouse shows this node, and watches that what the node verified becomes final
(cosigned by a quorum of districts) in time. What it finds is kept here, in the node's
database, so that it outlives a restart, ``GetLogHeads`` serves it to anyone and
``timebank node check`` reports it with the node running or stopped.

Fork evidence is stored as the self-contained JSON of ``timebank.forks`` and checked
again when read (an edited value is reported, not trusted). At most ``MAX_FORKS`` are
kept: one fork seen round after round is stored once, since evidence that shares a
head with evidence already kept, and is no stronger, adds nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from node.usecases import tree_heads
from node.usecases.app import Tx
from timebank import forks, transparency

FORKS = "log.forks"
FINALITY = "log.finality_alarm"
#: The most fork evidence documents kept (each a few KiB).
MAX_FORKS = 8

FORK = "fork"
FINALITY_KIND = "finality"


@dataclass(frozen=True, slots=True)
class Fork:
    """Evidence found, and when (UNIX seconds)."""

    evidence: forks.Evidence
    found_at: int
    document: str  # the JSON as stored: what anyone re-checks


@dataclass(frozen=True, slots=True)
class FinalityAlarm:
    """A head of ``size`` leaves this node verified at ``since`` (UNIX seconds) was not
    covered by a head cosigned by a quorum within ``bound`` seconds; the latest final
    head the node knows has ``final_size`` leaves."""

    size: int
    final_size: int
    since: int
    bound: int

    def detail(self) -> str:
        return (f"the tree head of {self.size} leaves this node verified at "
                f"{_when(self.since)} is not covered by a head cosigned by a quorum of "
                f"districts after {self.bound} s (the latest final head has "
                f"{self.final_size} leaves): the clearinghouse may be showing this "
                f"district a history most districts do not see")


@dataclass(frozen=True, slots=True)
class Alarm:
    kind: str  # FORK or FINALITY_KIND
    detail: str
    since: int  # UNIX seconds


@dataclass(frozen=True, slots=True)
class LogStatus:
    """This node's view of the log: its heads and what it found wrong."""

    verified: transparency.Head | None
    cosigned: transparency.Head | None
    final: transparency.Head | None
    forks: tuple[Fork, ...]
    finality: FinalityAlarm | None
    problems: tuple[str, ...]  # stored values that no longer check out

    @property
    def alarms(self) -> tuple[Alarm, ...]:
        found = [Alarm(FORK, f"{f.evidence.summary()} [evidence {f.evidence.id}]",
                       f.found_at) for f in self.forks]
        if self.finality is not None:
            found.append(Alarm(FINALITY_KIND, self.finality.detail(), self.finality.since))
        found += [Alarm(FORK, p, 0) for p in self.problems]
        return tuple(found)

    @property
    def ok(self) -> bool:
        return not self.alarms


def _when(unix: int) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _stored(tx: Tx) -> list[dict[str, object]]:
    raw = tx.repo.meta.get(FORKS)
    if not raw:
        return []
    found = json.loads(raw)
    assert isinstance(found, list)
    return found


def record_fork(tx: Tx, evidence: forks.Evidence, found_at: int) -> bool:
    """Keep ``evidence`` (found at ``found_at``, UNIX seconds); whether it was new.

    Not kept: evidence of a fork already kept (one that shares a head with it and is at
    least as strong), and anything once ``MAX_FORKS`` are kept, except that conclusive
    evidence then replaces the oldest refutable one. ``forks.EvidenceError`` if the
    evidence is larger than ``forks.MAX_EVIDENCE_BYTES``."""
    kept = _stored(tx)
    texts = {_text(h.note) for h in evidence.heads}
    entries = [(item, _heads_of(item)) for item in kept]
    for item, heads in entries:
        if item.get("id") == evidence.id or (
                texts & heads and (item.get("strength") == forks.Strength.CONCLUSIVE
                                   or not evidence.conclusive)):
            return False
    evidence.dumps(found_at=found_at)  # refuses evidence larger than a document may be
    document: dict[str, object] = {"id": evidence.id, "strength": evidence.strength.value,
                "found_at": found_at, "evidence": evidence.to_json(found_at=found_at)}
    if len(kept) >= MAX_FORKS:
        weak = next((i for i, item in enumerate(kept)
                     if item.get("strength") != forks.Strength.CONCLUSIVE), None)
        if not evidence.conclusive or weak is None:
            return False
        del kept[weak]
    kept.append(document)
    tx.repo.meta.set(FORKS, json.dumps(kept, ensure_ascii=False))
    return True


def _text(note: str) -> str:
    return note[: note.rfind("\n\n") + 1]


def _heads_of(item: dict[str, object]) -> set[str]:
    evidence = item.get("evidence")
    heads = evidence.get("heads", []) if isinstance(evidence, dict) else []
    return {_text(h["note"]) for h in heads
            if isinstance(h, dict) and isinstance(h.get("note"), str)}


def set_finality(tx: Tx, alarm: FinalityAlarm | None) -> bool:
    """Store the finality alarm (None: clear it); whether that changed anything."""
    value = "" if alarm is None else json.dumps(
        {"size": alarm.size, "final_size": alarm.final_size, "since": alarm.since,
         "bound": alarm.bound})
    if (tx.repo.meta.get(FINALITY) or "") == value:
        return False
    tx.repo.meta.set(FINALITY, value)
    return True


def _finality(tx: Tx) -> FinalityAlarm | None:
    raw = tx.repo.meta.get(FINALITY)
    if not raw:
        return None
    found = json.loads(raw)
    return FinalityAlarm(int(found["size"]), int(found["final_size"]), int(found["since"]),
                         int(found["bound"]))


def status(tx: Tx, clearinghouse_key: bytes | transparency.LogKeys) -> LogStatus:
    """The heads this node holds and what it found wrong, each checked again under
    ``clearinghouse_key``."""
    problems: list[str] = []
    heads: list[transparency.Head | None] = []
    for load in (tree_heads.verified, tree_heads.cosigned, tree_heads.final):
        try:
            heads.append(load(tx, clearinghouse_key))
        except transparency.LogError as e:
            heads.append(None)
            problems.append(f"a tree head stored in this node's database does not check: {e}")
    found: list[Fork] = []
    for i, item in enumerate(_stored(tx)):
        try:
            evidence = forks.check(item.get("evidence"), clearinghouse_key)
        except forks.EvidenceError as e:
            problems.append(f"fork evidence {i + 1} stored in this node's database does not "
                            f"check: {e}")
            continue
        at = item.get("found_at")
        found.append(Fork(evidence, at if isinstance(at, int) else 0,
                          json.dumps(item.get("evidence"), ensure_ascii=False, indent=2)))
    return LogStatus(heads[0], heads[1], heads[2], tuple(found), _finality(tx),
                     tuple(problems))


__all__ = ["FINALITY", "FINALITY_KIND", "FORK", "FORKS", "MAX_FORKS", "Alarm", "FinalityAlarm",
           "Fork", "LogStatus", "record_fork", "set_finality", "status"]
