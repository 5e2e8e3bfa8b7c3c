"""How the reports' CJK font (city/reports/fonts/) was made: a dev-time step, never run by
the reports themselves.

The reports (PDF, PNG and SVG charts) must show Chinese on a fresh machine that has only
what ``pip install`` brings, and nothing may be downloaded at run time, so the package
ships a font. It is WenQuanYi Micro Hei (文泉驿微米黑, Debian package fonts-wqy-microhei),
the Droid Sans Fallback hanzi with the Droid Sans Latin letters in one TrueType-outline
font, under the Apache License 2.0 (its authors offer Apache-2.0 or GPL-3+ with the font
exception; the project takes Apache-2.0, its own licence). Droid Sans Fallback alone has no
Latin letters or digits, so it would need a second font beside it.

The whole font is 5 MB and covers 34 600 code points; the reports need far fewer, so this
keeps printable ASCII and Latin-1, the punctuation and symbols the reports write, the CJK
punctuation and full-width forms, every GB2312 character (its 6 763 hanzi and its symbol
rows) and every hanzi written anywhere in this repository (district, street and service
point names in city/demo.py and elsewhere). A name with a hanzi outside GB2312 and outside
the repository would show as a missing glyph: add it to ``EXTRA`` and run this again.

Run on a machine with the Debian package installed::

    apt-get install -y fonts-wqy-microhei
    python scripts/subset_font.py

It rewrites city/reports/fonts/wqy-microhei-subset.ttf and the licence beside it, and
prints the font's size and glyph count.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from fontTools import subset
from fontTools.ttLib import TTFont

ROOT = Path(__file__).resolve().parent.parent
SOURCE = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
SOURCE_COPYRIGHT = Path("/usr/share/doc/fonts-wqy-microhei/copyright")
APACHE = Path("/usr/share/common-licenses/Apache-2.0")
OUT_DIR = ROOT / "city" / "reports" / "fonts"
OUT = OUT_DIR / "wqy-microhei-subset.ttf"
#: Hanzi to keep though neither GB2312 nor the repository has them (none yet).
EXTRA = ""
#: Where the repository's own hanzi are read from.
SCANNED = ("*.py", "*.md", "*.toml", "*.txt", "*.proto")
SKIPPED_DIRS = {".git", "node_modules", "__pycache__", ".mypy_cache", ".ruff_cache"}

RANGES = (
    (0x20, 0x7E),      # printable ASCII
    (0xA0, 0xFF),      # Latin-1: ¥ × · ° and the like
    (0x2010, 0x2027),  # dashes, quotes, bullet, ellipsis
    (0x2030, 0x203B),  # per mille, primes, ※
    (0x2190, 0x2193),  # arrows
    (0x2212, 0x2212),  # minus sign
    (0x2260, 0x2265),  # ≠ ≤ ≥
    (0x3000, 0x303F),  # CJK symbols and punctuation
    (0xFF01, 0xFF5E),  # full-width forms
    (0xFFE0, 0xFFE6),  # full-width ￥ and signs
)


def gb2312() -> set[int]:
    """Every character GB2312 encodes: symbol rows 0xA1-0xA9 and hanzi rows 0xB0-0xF7."""
    out: set[int] = set()
    for row in [*range(0xA1, 0xAA), *range(0xB0, 0xF8)]:
        for cell in range(0xA1, 0xFF):
            try:
                out.add(ord(bytes((row, cell)).decode("gb2312")))
            except UnicodeDecodeError:
                continue
    return out


def repository_hanzi() -> set[int]:
    """Every CJK ideograph written in the repository's text files."""
    out: set[int] = set()
    for pattern in SCANNED:
        for path in ROOT.rglob(pattern):
            if SKIPPED_DIRS & set(path.relative_to(ROOT).parts):
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            out.update(ord(ch) for ch in text if 0x3400 <= ord(ch) <= 0x9FFF)
    return out


def main() -> int:
    if not SOURCE.exists():
        print(f"{SOURCE} is missing: apt-get install -y fonts-wqy-microhei", file=sys.stderr)
        return 1
    wanted = gb2312() | repository_hanzi() | {ord(ch) for ch in EXTRA}
    for lo, hi in RANGES:
        wanted.update(range(lo, hi + 1))
    # 0: WenQuanYi Micro Hei (1 is its Mono cut); the source's own time stamp is kept, so
    # the same input makes the same bytes
    font = TTFont(SOURCE, fontNumber=0, recalcTimestamp=False)
    covered = set(font.getBestCmap())
    missing = sorted(c for c in wanted - covered if 0x3400 <= c <= 0x9FFF)
    if missing:
        print("the source font lacks: " + "".join(map(chr, missing)), file=sys.stderr)
    options = subset.Options()
    options.hinting = False  # matplotlib and PDF viewers scale outlines; hints add 2%
    options.desubroutinize = True
    options.name_IDs = ["*"]  # keep the copyright and licence records
    options.name_languages = ["*"]
    options.notdef_outline = True
    options.layout_features = []  # no vertical or localised forms: one glyph a character
    options.drop_tables += ["FFTM", "vhea", "vmtx"]  # horizontal text only
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=sorted(wanted & covered))
    subsetter.subset(font)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    font.save(OUT)
    shutil.copyfile(SOURCE_COPYRIGHT, OUT_DIR / "wqy-microhei-COPYRIGHT.txt")
    shutil.copyfile(APACHE, OUT_DIR / "wqy-microhei-LICENSE-Apache-2.0.txt")
    kept = TTFont(OUT)
    print(f"{OUT.relative_to(ROOT)}: {OUT.stat().st_size} bytes, "
          f"{len(kept.getBestCmap())} code points, {kept['maxp'].numGlyphs} glyphs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
