"""The outside monitor's status file: what its latest round found, for whoever shows it.

The monitor (``timebank monitor check``) keeps ``status.json`` in its directory and
rewrites it after every round; the bureau's console reads it to say on its page whether
the city's outside check found anything wrong (ADR 0023, "Who can lie"). The console may
not import the monitor, and the monitor should not care who reads it, so the format is
defined here, once, for both: ``to_json`` writes it, ``parse`` reads it. Pure: bytes in,
bytes out, no file and no clock (the reader decides when a status is too old to trust).

A status is small and bounded: at most ``MAX_FINDINGS`` findings (alarms first; how many
were left out is said), each detail at most ``MAX_DETAIL_CHARS`` printable characters, an
evidence file named by its bare name, and the whole document at most ``MAX_BYTES``.
``parse`` refuses anything else, whole, with a ``StatusError`` that says why: a reader
never shows half a status.

    {"format": "timebank-monitor-status/v1", "checked_at": "2026-12-07T04:00:00Z",
     "log_size": 120, "final_size": 118, "districts": 3, "heads_checked": 9,
     "findings": [{"kind": "anchors", "alarm": true, "detail": "…", "evidence": ""}],
     "omitted": 0}
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "ANCHORS",
    "FILE_NAME",
    "FINALITY",
    "FORK",
    "FORMAT",
    "MAX_BYTES",
    "MAX_DETAIL_CHARS",
    "MAX_FINDINGS",
    "Finding",
    "MonitorStatus",
    "StatusError",
    "bounded",
    "parse",
    "to_json",
]

FORMAT = "timebank-monitor-status/v1"
#: The status file's name in the monitor's directory.
FILE_NAME = "status.json"
#: The largest status read or written, in UTF-8 bytes. ``MAX_FINDINGS`` findings of
#: ``MAX_DETAIL_CHARS`` characters of at most 4 bytes each, and their evidence names,
#: fit: ``to_json`` never writes what ``parse`` would refuse.
MAX_BYTES = 256 * 1024
MAX_FINDINGS = 100
MAX_DETAIL_CHARS = 500
#: The largest count a status holds (log sizes are int64 on the wire).
MAX_COUNT = 2**63 - 1
#: The most districts a status may say answered.
MAX_DISTRICTS = 10_000

#: The kinds of finding a reader explains in its own words; any other kind is shown by
#: its detail. (The monitor names more: ``city.monitor.watch``.)
FORK = "fork"  # two heads the clearinghouse signed cannot both be true: a split view
ANCHORS = "anchors"  # a district's checkpoint anchors fewer entries than before
FINALITY = "finality"  # a head not cosigned by a quorum of districts in time

_KIND = re.compile(r"[a-z][a-z0-9-]{0,31}")
#: An evidence file's bare name (``fork-<id>.json``): no folder, nothing hidden.
_EVIDENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: When a round ran: UTC, to the second, as ``to_json`` writes it and nothing else.
_WHEN = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
_KEYS = frozenset({"format", "checked_at", "log_size", "final_size", "districts",
                   "heads_checked", "findings", "omitted"})
_FINDING_KEYS = frozenset({"kind", "alarm", "detail", "evidence"})


class StatusError(ValueError):
    """A monitor status is malformed, too large, or holds what a status may not."""


def _clean(text: str, limit: int) -> str:
    """``text`` as one printable line of at most ``limit`` characters (what does not
    fit ends in "…")."""
    line = "".join(c if c.isprintable() else " " for c in text).strip()
    return line if len(line) <= limit else line[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a round found: ``alarm`` (something is wrong) or a warning (something
    could not be checked); ``evidence`` names the evidence file of a fork, "" none."""

    kind: str
    alarm: bool
    detail: str
    evidence: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not _KIND.fullmatch(self.kind):
            raise StatusError("a finding's kind is 1 to 32 of a-z, 0-9 and '-'")
        if not isinstance(self.alarm, bool):
            raise StatusError("a finding's alarm is true or false")
        if not isinstance(self.detail, str) or not 0 < len(self.detail) <= MAX_DETAIL_CHARS \
                or not self.detail.isprintable():
            raise StatusError(f"a finding's detail is 1 to {MAX_DETAIL_CHARS} printable "
                              "characters")
        if not isinstance(self.evidence, str) or (
                self.evidence and not _EVIDENCE.fullmatch(self.evidence)):
            raise StatusError("a finding's evidence is a file's bare name (at most 128 of "
                              "A-Z, a-z, 0-9, '.', '_' and '-')")

    @classmethod
    def of(cls, kind: str, alarm: bool, detail: str, evidence: str = "") -> Finding:
        """A finding from what a monitor says: its detail made one printable line and cut
        to ``MAX_DETAIL_CHARS``."""
        return cls(kind, alarm, _clean(detail, MAX_DETAIL_CHARS) or kind, evidence)


@dataclass(frozen=True, slots=True)
class MonitorStatus:
    """What a monitor's round found: when it ran (UTC, to the second), the size of the
    clearinghouse's log it verified and of the latest head a quorum cosigned, how many
    districts answered and how many of their heads it compared, its findings (alarms
    first) and how many findings it left out."""

    checked_at: datetime
    log_size: int
    final_size: int
    districts: int
    heads_checked: int
    findings: tuple[Finding, ...] = ()
    omitted: int = 0

    def __post_init__(self) -> None:
        when = self.checked_at
        if not isinstance(when, datetime) or when.utcoffset() != timedelta(0) \
                or when.microsecond:
            raise StatusError("a status's time is a UTC time to the second")
        for name, top in (("log_size", MAX_COUNT), ("final_size", MAX_COUNT),
                          ("districts", MAX_DISTRICTS), ("heads_checked", MAX_COUNT),
                          ("omitted", MAX_COUNT)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
                raise StatusError(f"a status's {name} is a whole number from 0 to {top}")
        if not isinstance(self.findings, tuple) or len(self.findings) > MAX_FINDINGS or \
                not all(isinstance(f, Finding) for f in self.findings):
            raise StatusError(f"a status holds at most {MAX_FINDINGS} findings")

    @property
    def alarms(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.alarm)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if not f.alarm)

    @property
    def ok(self) -> bool:
        """Nothing wrong was found (warnings aside)."""
        return not self.alarms


def bounded(checked_at: datetime, findings: Iterable[Finding], *, log_size: int,
            final_size: int, districts: int, heads_checked: int) -> MonitorStatus:
    """A status of any number of findings: alarms first, at most ``MAX_FINDINGS`` of
    them, the rest counted in ``omitted``."""
    ordered = sorted(findings, key=lambda f: not f.alarm)  # stable: alarms, then warnings
    return MonitorStatus(checked_at.replace(microsecond=0), log_size,
                         final_size, districts, heads_checked,
                         tuple(ordered[:MAX_FINDINGS]), max(0, len(ordered) - MAX_FINDINGS))


def to_json(status: MonitorStatus) -> bytes:
    """The status file's bytes (UTF-8 JSON), which ``parse`` reads back equal."""
    doc = {"format": FORMAT,
           "checked_at": status.checked_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "log_size": status.log_size, "final_size": status.final_size,
           "districts": status.districts, "heads_checked": status.heads_checked,
           "findings": [{"kind": f.kind, "alarm": f.alarm, "detail": f.detail,
                         "evidence": f.evidence} for f in status.findings],
           "omitted": status.omitted}
    data = (json.dumps(doc, ensure_ascii=False, indent=1) + "\n").encode("utf-8")
    assert len(data) <= MAX_BYTES, "the bounds of a status keep it under MAX_BYTES"
    return data


def _object(value: Any, keys: frozenset[str], what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise StatusError(f"{what} is not a JSON object")
    if set(value) != keys:
        missing, extra = sorted(keys - set(value)), sorted(set(value) - keys)
        raise StatusError(f"{what} " + "; ".join(
            part for part in (f"lacks {', '.join(missing)}" if missing else "",
                              f"has unknown {', '.join(e[:32] for e in extra[:5])}"
                              if extra else "") if part))
    return value


def _time(value: Any) -> datetime:
    if not isinstance(value, str) or not _WHEN.fullmatch(value):
        raise StatusError("the status's checked_at is not a UTC time like "
                          "2026-12-07T04:00:00Z")
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise StatusError(f"the status's checked_at {value!r} is not a date and time") from None


def parse(data: bytes) -> MonitorStatus:
    """The status ``data`` holds, or ``StatusError`` saying why it is none: more than
    ``MAX_BYTES``, not UTF-8 JSON, another format, a field missing, unknown or out of
    its bounds, more than ``MAX_FINDINGS`` findings, a time that is not UTC."""
    if len(data) > MAX_BYTES:
        raise StatusError(f"a monitor status is at most {MAX_BYTES} bytes")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise StatusError(f"the status is not UTF-8 JSON: {e}") from None
    if isinstance(doc, dict) and doc.get("format") != FORMAT:
        raise StatusError(f"the status's format is not {FORMAT!r}")
    top = _object(doc, _KEYS, "the status")
    found = top["findings"]
    if not isinstance(found, list):
        raise StatusError("the status's findings are not a list")
    if len(found) > MAX_FINDINGS:
        raise StatusError(f"a status holds at most {MAX_FINDINGS} findings, not {len(found)}")
    findings = []
    for i, item in enumerate(found):
        f = _object(item, _FINDING_KEYS, f"finding {i + 1}")
        try:
            findings.append(Finding(f["kind"], f["alarm"], f["detail"], f["evidence"]))
        except StatusError as e:
            raise StatusError(f"finding {i + 1}: {e}") from None
    return MonitorStatus(_time(top["checked_at"]), top["log_size"], top["final_size"],
                         top["districts"], top["heads_checked"], tuple(findings),
                         top["omitted"])
