"""The shipped font: present with its licence, small, and covering every character the
reports print (their own words, GB2312, the names in the repository)."""

from __future__ import annotations

from pathlib import Path

from city.reports.fonts import FONT, missing_glyphs

ROOT = Path(__file__).resolve().parents[3]


def test_the_font_ships_with_its_licence_and_stays_small() -> None:
    assert FONT.is_file() and FONT.stat().st_size < 4 * 1024 * 1024
    licence = FONT.parent / "wqy-microhei-LICENSE-Apache-2.0.txt"
    assert "Apache License" in licence.read_text(encoding="utf-8")
    assert "WenQuanYi" in (FONT.parent / "wqy-microhei-COPYRIGHT.txt").read_text(
        encoding="utf-8")


def test_every_character_the_reports_write_has_a_glyph() -> None:
    """The reports' own words, and every Chinese name in the demo and the tests' city
    (the demo's console marks such as ✓ are not the reports')."""
    own = "".join(p.read_text(encoding="utf-8")
                  for p in sorted((ROOT / "city" / "reports").rglob("*.py")))
    names = "".join(ch for p in (ROOT / "city" / "demo.py",
                                 ROOT / "tests" / "city" / "reports" / "sample.py")
                    for ch in p.read_text(encoding="utf-8") if ord(ch) >= 0x3000)
    assert missing_glyphs(own + names) == ""


def test_gb2312_is_covered_and_a_rarer_hanzi_is_not() -> None:
    gb2312 = "".join(bytes((row, cell)).decode("gb2312")
                     for row in range(0xB0, 0xF8) for cell in range(0xA1, 0xFF)
                     if (row, cell) < (0xD7, 0xFA) or row > 0xD7)
    assert len(gb2312) == 6763 and missing_glyphs(gb2312) == ""
    assert missing_glyphs("\u4e6b") == "\u4e6b"  # outside GB2312 and the repository
