"""The protocol version as text: MAJOR.MINOR, bounded, and which versions talk."""

from __future__ import annotations

import pytest

from runtime.protocol import check, mismatch
from timebank.protocol import HEADER, PROTOCOL, Version


def test_versions_read_and_print_as_major_dot_minor() -> None:
    assert Version.parse("1.0") == Version(1, 0)
    assert str(Version(12, 3)) == "12.3"
    assert Version.parse(str(PROTOCOL)) == PROTOCOL


@pytest.mark.parametrize("text", ["", "1", "1.", ".1", "01.0", "1.00", "1.0.0", "-1.0",
                                  "1.0 ", "a.b", "999999.0", "1" * 40])
def test_anything_else_is_not_a_version(text: str) -> None:
    with pytest.raises(ValueError):
        Version.parse(text)


def test_the_same_major_talks_whatever_the_minor() -> None:
    assert Version(1, 0).talks_to(Version(1, 7))
    assert not Version(1, 0).talks_to(Version(2, 0))
    assert check(Version(1, 0), [(HEADER, "1.9")]) is None
    assert check(Version(1, 0), []) is None  # unversioned tools are served
    assert check(Version(1, 0), [(HEADER, "1.0"), (HEADER, "1.0")]) is not None


def test_the_refusal_names_both_versions_and_who_upgrades() -> None:
    newer = mismatch(Version(2, 1), Version(1, 4))
    assert newer.reason == "PROTOCOL_MISMATCH" and newer.status == "FAILED_PRECONDITION"
    assert "2.1" in newer.message and "1.4" in newer.message
    assert "调用方须升级" in newer.message and "the caller must upgrade" in newer.message
    older = mismatch(Version(1, 4), Version(2, 0))
    assert "本服务须升级" in older.message and "this server must be upgraded" in older.message
