"""The monitor's status file (``timebank.monitorstatus``): what ``to_json`` writes,
``parse`` reads back equal; anything else is refused whole, saying why."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from timebank import monitorstatus as ms
from timebank.monitorstatus import Finding, MonitorStatus, StatusError

AT = datetime(2026, 12, 7, 4, 0, 0, tzinfo=UTC)


def _status(**changes: Any) -> MonitorStatus:
    fields: dict[str, Any] = {
        "checked_at": AT, "log_size": 120, "final_size": 118, "districts": 3,
        "heads_checked": 9,
        "findings": (Finding(ms.ANCHORS, True, "district 320106 anchored 4 ledger entries "
                                               "at log leaf 80, after 9 before"),
                     Finding(ms.FORK, True, "鼓楼区 holds a head not of the log",
                             "fork-0123456789abcdef0123.json"),
                     Finding("unreachable", False, "the district node at 10.0.0.3:7443 did "
                                                   "not answer (UNAVAILABLE)"))}
    fields.update(changes)
    return MonitorStatus(**fields)


def _doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(ms.to_json(_status()))
    doc.update(changes)
    return doc


def _refused(doc: Any, why: str) -> None:
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()  # \u escapes too
    with pytest.raises(StatusError, match=why):
        ms.parse(data)


def test_what_is_written_reads_back_equal() -> None:
    status = _status(omitted=7)
    data = ms.to_json(status)
    assert ms.parse(data) == status
    doc = json.loads(data)
    assert doc["format"] == ms.FORMAT == "timebank-monitor-status/v1"
    assert doc["checked_at"] == "2026-12-07T04:00:00Z"
    assert "鼓楼区" in data.decode("utf-8")  # UTF-8, not escapes
    assert [f.kind for f in status.alarms] == [ms.ANCHORS, ms.FORK] and not status.ok
    assert [f.kind for f in status.warnings] == ["unreachable"]
    empty = _status(findings=())
    assert ms.parse(ms.to_json(empty)) == empty and empty.ok


def test_bounded_puts_alarms_first_cuts_long_details_and_counts_what_it_left_out() -> None:
    many = [Finding.of("unreachable", False, f"node {i} did not answer") for i in range(150)]
    many.insert(120, Finding.of(ms.FORK, True, "a fork\nwith\x00control characters " * 40,
                                "fork-1.json"))
    status = ms.bounded(datetime(2026, 12, 7, 12, 0, 0, 999_999,
                                 tzinfo=timezone(timedelta(0))), many,
                        log_size=5, final_size=5, districts=3, heads_checked=3)
    assert len(status.findings) == ms.MAX_FINDINGS and status.omitted == 51
    fork = status.findings[0]
    assert fork.kind == ms.FORK and fork.alarm and fork.evidence == "fork-1.json"
    assert len(fork.detail) == ms.MAX_DETAIL_CHARS and fork.detail.endswith("…")
    assert fork.detail.isprintable() and fork.detail.startswith("a fork with")
    assert status.checked_at.microsecond == 0
    assert ms.parse(ms.to_json(status)) == status


def test_the_largest_status_fits_the_bound() -> None:
    worst = "𝄞" * ms.MAX_DETAIL_CHARS  # four bytes each in UTF-8
    status = _status(findings=tuple(Finding("x" * 32, True, worst, "f" * 128)
                                    for _ in range(ms.MAX_FINDINGS)))
    data = ms.to_json(status)
    assert len(data) <= ms.MAX_BYTES and ms.parse(data) == status


@pytest.mark.parametrize(("data", "why"), [
    (b"{", "not UTF-8 JSON"),
    (b"\xff\xfe{}", "not UTF-8 JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "not UTF-8 JSON"),  # too deep, yet small enough
    (b"[]", "not a JSON object"),
    (b"null", "not a JSON object"),
    (b" " * (ms.MAX_BYTES + 1), "at most 262144 bytes"),
])
def test_what_is_not_a_status_is_refused(data: bytes, why: str) -> None:
    _refused(data, why)


def test_another_format_is_refused() -> None:
    _refused(_doc(format="timebank-monitor-status/v2"), "format is not")
    _refused({k: v for k, v in _doc().items() if k != "format"}, "format is not")
    _refused(_doc(format="timebank-fork-evidence/v1"), "format is not")


def test_missing_and_unknown_fields_are_refused() -> None:
    _refused({k: v for k, v in _doc().items() if k != "districts"}, "lacks districts")
    _refused(_doc(verdict="all well"), "has unknown verdict")
    finding = {"kind": "fork", "alarm": True, "detail": "x", "evidence": "", "more": 1}
    _refused(_doc(findings=[finding]), "finding 1 has unknown more")
    _refused(_doc(findings=["fork"]), "finding 1 is not a JSON object")


def test_too_many_findings_are_refused() -> None:
    one = {"kind": "fork", "alarm": True, "detail": "x", "evidence": ""}
    assert len(ms.parse(json.dumps(_doc(findings=[one] * 100)).encode()).findings) == 100
    _refused(_doc(findings=[one] * 101), "at most 100 findings, not 101")
    _refused(_doc(findings={"kind": "fork"}), "findings are not a list")


@pytest.mark.parametrize(("when", "why"), [
    ("2026-12-07T12:00:00+08:00", "not a UTC time"),  # not UTC
    ("2026-12-07T04:00:00", "not a UTC time"),  # no zone
    ("2026-12-07T04:00:00.5Z", "not a UTC time"),
    ("yesterday", "not a UTC time"),
    ("2026-13-40T04:00:00Z", "not a date and time"),
    ("0000-01-01T00:00:00Z", "not a date and time"),
    (1_800_000_000, "not a UTC time"),
    (None, "not a UTC time"),
])
def test_bad_times_are_refused(when: Any, why: str) -> None:
    _refused(_doc(checked_at=when), why)


@pytest.mark.parametrize(("field", "value"), [
    ("log_size", -1), ("log_size", 2**63), ("log_size", "120"), ("log_size", 1.5),
    ("final_size", True), ("districts", 10_001), ("heads_checked", None), ("omitted", -3),
])
def test_counts_out_of_bounds_are_refused(field: str, value: Any) -> None:
    _refused(_doc(**{field: value}), f"{field} is a whole number")


@pytest.mark.parametrize(("finding", "why"), [
    ({"kind": "Fork"}, "kind is 1 to 32"),
    ({"kind": ""}, "kind is 1 to 32"),
    ({"kind": "k" * 33}, "kind is 1 to 32"),
    ({"alarm": "yes"}, "alarm is true or false"),
    ({"alarm": 1}, "alarm is true or false"),
    ({"detail": ""}, "detail is 1 to 500"),
    ({"detail": "x" * 501}, "detail is 1 to 500"),
    ({"detail": "two\nlines"}, "printable"),
    ({"detail": "\ud800"}, "printable"),
    ({"evidence": "../state.json"}, "bare name"),
    ({"evidence": "evidence/fork-1.json"}, "bare name"),
    ({"evidence": ".hidden"}, "bare name"),
    ({"evidence": "f" * 129}, "bare name"),
    ({"evidence": 7}, "bare name"),
])
def test_a_finding_out_of_bounds_is_refused(finding: dict[str, Any], why: str) -> None:
    one = {"kind": "fork", "alarm": True, "detail": "x", "evidence": "", **finding}
    _refused(_doc(findings=[one]), f"finding 1: .*{why}")


def test_a_status_cannot_be_made_out_of_bounds() -> None:
    with pytest.raises(StatusError, match="UTC time"):
        _status(checked_at=datetime(2026, 12, 7, 4))  # naive
    with pytest.raises(StatusError, match="UTC time"):
        _status(checked_at=AT.astimezone(timezone(timedelta(hours=8))))
    with pytest.raises(StatusError, match="UTC time"):
        _status(checked_at=AT.replace(microsecond=5))
    with pytest.raises(StatusError, match="at most 100 findings"):
        _status(findings=(Finding("fork", True, "x"),) * 101)
    with pytest.raises(StatusError, match="printable"):
        Finding("fork", True, "tab\there")
    assert Finding.of("fork", True, "tab\there").detail == "tab here"
    assert Finding.of("fork", True, "\n").detail == "fork"  # never empty
