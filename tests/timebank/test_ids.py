"""A node id is six ASCII digits, for every part of the city alike."""

from __future__ import annotations

import pytest

from timebank.envelope import EnvelopeError, Reason, sign
from timebank.ids import is_node_id
from timebank.keys import SigningKey


@pytest.mark.parametrize("text", ["320115", "000000", "999999"])
def test_six_ascii_digits_are_a_node_id(text: str) -> None:
    assert is_node_id(text)


@pytest.mark.parametrize("text", ["", "32011", "3201150", " 320115", "320115\n", "32011a",
                                  "+32011", "３２０１１５", "٣٢٠١١٥", "32011²"])
def test_anything_else_is_not(text: str) -> None:
    assert not is_node_id(text)


def test_an_envelope_is_signed_only_by_a_node_id_or_a_named_signer() -> None:
    key = SigningKey(bytes(32))
    assert sign("test.kind", b"", "320115", key).signer == "320115"
    with pytest.raises(EnvelopeError) as caught:
        sign("test.kind", b"", "３２０１１５", key)
    assert caught.value.reason is Reason.MALFORMED
