"""A person's name as the node keeps it: what enrolment takes and a correction may set.

One rule for both, so that a name corrected at the desk is a name enrolment would have
taken. A name is what is on the person's ID card (or a group's registration): mostly
two to four Chinese characters, an ethnic minority's name often longer, its parts joined
by a middle dot (阿依古丽·买买提); at most ``MAX_NAME_CHARS`` characters, which the
schema's name column holds. Any printed character is taken: a rare character (生僻字)
may be one of the newest CJK extensions, or one a civil-affairs system put in a
private-use code point, so neither an unassigned nor a private-use character is
refused. What is refused is what no printed name holds and what would make one name
look like another on a page: control characters (a tab or line break too), invisible
formatting characters (bidirectional overrides, zero-width joiners) and line or
paragraph separators.

Pure: no storage, no gRPC. A refusal says why, Chinese first, and never repeats the
name (refusals are logged; a name is personal data).
"""

from __future__ import annotations

import unicodedata

from runtime.errors import InvalidArgument

#: The longest name kept (the schema's name columns hold 64 characters).
MAX_NAME_CHARS = 64
#: Unicode categories no name may hold: control, format (invisible), line and
#: paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


def person_name(raw: str) -> str:
    """``raw`` stripped of surrounding white space, as a person's name; INVALID_ARGUMENT
    (``MISSING_NAME``, ``NAME_TOO_LONG``, ``MALFORMED_NAME``) when it is not one."""
    name = raw.strip()
    if not name:
        raise InvalidArgument("请填写姓名 (a name is required: it cannot be empty)",
                              "MISSING_NAME")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidArgument(f"姓名最多 {MAX_NAME_CHARS} 个字 (a name has at most "
                              f"{MAX_NAME_CHARS} characters, not {len(name)})",
                              "NAME_TOO_LONG")
    if any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in name):
        raise InvalidArgument("姓名不能含控制字符、换行或不可见的格式字符 (a name cannot hold "
                              "control characters, line breaks or invisible formatting "
                              "characters)", "MALFORMED_NAME")
    return name


__all__ = ["MAX_NAME_CHARS", "person_name"]
