"""A district node's id: the 6-digit administrative division code of its district
(``320115`` is 南京市江宁区).

The id names a node everywhere in the city: it signs envelopes under it, the
clearinghouse keys positions and queues by it, a person's home district is one, and the
offline verifier reads it in passbooks. All of them must agree on what an id looks like,
so the shape is checked by this one function and nowhere else.
"""

from __future__ import annotations

NODE_ID_DIGITS = 6


def is_node_id(text: object) -> bool:
    """Whether ``text`` is a node id: a string of exactly six ASCII digits (no sign, no
    spaces, no full-width or other Unicode digits)."""
    return (isinstance(text, str) and len(text) == NODE_ID_DIGITS and text.isascii()
            and text.isdigit())


__all__ = ["NODE_ID_DIGITS", "is_node_id"]
