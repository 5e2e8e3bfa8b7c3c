"""The one font every report renders Chinese with: WenQuanYi Micro Hei (Apache-2.0),
subset to what reports write and shipped in the package (scripts/subset_font.py says how
it was made), so a fresh machine needs nothing but ``pip install`` and nothing is ever
downloaded or looked up among the system's fonts.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

FONT = Path(__file__).resolve().parent / "fonts" / "wqy-microhei-subset.ttf"
#: The family name inside the font file (matplotlib looks fonts up by it).
FAMILY = "WenQuanYi Micro Hei"


@cache
def _code_points(font: Path) -> frozenset[int]:
    from fontTools.ttLib import TTFont

    with TTFont(font, lazy=True) as f:
        return frozenset(f.getBestCmap())


def missing_glyphs(text: str, font: Path = FONT) -> str:
    """The characters of ``text`` the font has no glyph for (each once, in order):
    they would print as empty boxes, so a report names them instead of hiding them."""
    have = _code_points(font)
    out: dict[str, None] = {}
    for ch in text:
        if ord(ch) >= 0x20 and ord(ch) not in have:
            out.setdefault(ch, None)
    return "".join(out)
