"""Names as the public supervision page (社会监督) shows them: one letter at most."""

from __future__ import annotations

import pytest

from node.domain.publicity import MAX_MASKED_CHARS, mask_name


@pytest.mark.parametrize(("name", "masked"), [
    ("张三", "张*"),
    ("王建国", "王**"),
    ("欧阳娜娜", "欧***"),
    ("Alice Smith", "A**** *****"),
    ("Zhāng Guìlán", "Z**** ******"),
    ("阿依古丽·买买提", "阿*******"),
    ("𠮷田", "𠮷*"),
    ("  李四 ", "李*"),
    ("", ""),
])
def test_only_the_first_letter_of_a_name_shows(name: str, masked: str) -> None:
    assert mask_name(name) == masked


def test_markup_in_a_name_is_masked_without_complaint() -> None:
    name = "<script>alert('王')</script>"
    masked = mask_name(name)
    assert masked == "*" * len(name)  # not even the "<" shows: it is not a letter
    assert mask_name("王<b>五</b>") == "王********"


def test_a_masked_name_reveals_at_most_one_letter_and_is_bounded() -> None:
    for name in ("张三丰", "Mary Ann O'Neil", "x" * 1000, "李 四"):
        masked = mask_name(name)
        assert sum(c not in "* " for c in masked) <= 1
        assert len(masked) <= MAX_MASKED_CHARS
    assert mask_name("x" * 1000) == "x" + "*" * (MAX_MASKED_CHARS - 1)
