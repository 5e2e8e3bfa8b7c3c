"""Whether Chinese in a rendered image is real glyphs or tofu.

A renderer without a CJK font draws every hanzi as one and the same box (the font's
.notdef glyph) or nothing at all. So: crop where several distinct hanzi (or labels of
as many hanzi) were drawn; each crop must have ink, and no two may look alike. A real
font fails neither; tofu fails one or the other."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageChops

Box = tuple[int, int, int, int]  # left, top, right, bottom in pixels


def ink(crop: Image.Image) -> int:
    """How many pixels of a crop are dark."""
    gray = crop.convert("L")
    return sum(1 for v in gray.tobytes() if v < 128)


def difference(a: Image.Image, b: Image.Image) -> float:
    """The share of pixels that differ between two crops scaled to one size."""
    size = (32, 32)
    x = a.convert("L").resize(size).point(lambda v: 255 if v > 160 else 0)
    y = b.convert("L").resize(size).point(lambda v: 255 if v > 160 else 0)
    diff = ImageChops.difference(x, y)
    return sum(1 for v in diff.tobytes() if v) / (size[0] * size[1])


def problems(image: Image.Image, boxes: Sequence[tuple[str, Box]]) -> list[str]:
    """What makes the drawn ``(text, box)`` pairs look like tofu; empty if none."""
    found: list[str] = []
    crops = [(text, image.crop(box)) for text, box in boxes]
    for text, crop in crops:
        if ink(crop) < 8:
            found.append(f"{text!r} left no ink")
    for i, (t1, c1) in enumerate(crops):
        for t2, c2 in crops[i + 1:]:
            if difference(c1, c2) < 0.05:
                found.append(f"{t1!r} and {t2!r} render alike")
    return found
