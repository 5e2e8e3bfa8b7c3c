"""The publicity period (公示期) as the public sees it: names masked on the node.

A verified service is shown to the public for the city's publicity period before it is
recorded (社会监督: anyone may see it and raise a dispute). What the public sees names
no one: the people in it appear only by a masked name (``mask_name``), never by their
full name, ID number, phone or person id.

Pure: no storage, no gRPC.
"""

from __future__ import annotations

#: The longest name masked: the schema's name columns hold 64 characters. A longer
#: string (a bug elsewhere, or a name from outside) is cut there, never refused.
MAX_MASKED_CHARS = 64
MASK = "*"


def mask_name(name: str) -> str:
    """A name as the public may see it: at most its first letter, every other character
    an asterisk.

    One rule for every script. The first character is kept if it is a letter (in a
    Chinese name, the family name: 张三 → 张*, 欧阳娜娜 → 欧***; in a Latin one, the given
    name's initial: "Alice Smith" → "A**** *****"); spaces are kept, so a Latin name
    shows only how its words are split; everything else becomes ``*``. A first
    character that is not a letter ("<script>") is masked too, so nothing but one
    letter is ever revealed, and the result is plain text whatever the name held.
    A compound family name (欧阳) shows only its first character: the public page
    needs no more to tell two orders apart, and reveals less. The length shows (one
    asterisk a character). An empty name stays empty; the result is at most
    ``MAX_MASKED_CHARS`` characters.
    """
    name = name.strip()[:MAX_MASKED_CHARS]
    return "".join(
        c if i == 0 and c.isalpha() else " " if c.isspace() else MASK
        for i, c in enumerate(name))


__all__ = ["MASK", "MAX_MASKED_CHARS", "mask_name"]
