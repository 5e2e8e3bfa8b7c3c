"""Other protobuf encodings of the same ``timebank.v1.Envelope``: what anyone holding a
public signed envelope can make of it without touching what was signed.

``reencoded(canonical, rng)`` rewrites the envelope's fields at random: in another
order, a field written twice (an earlier value that a parser overwrites), a tag or a
length as a longer varint than needed, unknown fields of every wire type around them.
Every result parses to the same five fields; none is byte-equal to the canonical one.
"""

from __future__ import annotations

import random

Field = tuple[int, bytes]  # field number, value (every Envelope field is length-delimited)


def _varint(value: int, extra: int = 0) -> bytes:
    """``value`` as a varint, padded with ``extra`` continuation bytes (non-minimal)."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value == 0 and extra == 0:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)
        if value == 0:
            extra -= 1
            if extra == 0:
                out.append(0)
                return bytes(out)


def fields_of(data: bytes) -> list[Field]:
    """The (number, value) pairs of a canonical envelope (length-delimited fields only)."""
    out: list[Field] = []
    i = 0
    while i < len(data):
        tag = data[i]
        i += 1
        length, shift = 0, 0
        while True:
            byte = data[i]
            i += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        assert tag & 7 == 2, "an Envelope has only length-delimited fields"
        out.append((tag >> 3, data[i:i + length]))
        i += length
    return out


def _field(number: int, value: bytes, rng: random.Random) -> bytes:
    pad = rng.choice((0, 0, 1, 3))
    return (_varint(number << 3 | 2, rng.choice((0, 0, 1))) + _varint(len(value), pad)
            + value)


def _unknown(rng: random.Random) -> bytes:
    number = rng.randrange(6, 2**29)
    wire = rng.choice((0, 1, 2, 5))
    tag = _varint(number << 3 | wire)
    if wire == 0:
        return tag + _varint(rng.randrange(2**64))
    if wire == 1:
        return tag + rng.randbytes(8)
    if wire == 5:
        return tag + rng.randbytes(4)
    value = rng.randbytes(rng.randrange(0, 40))
    return tag + _varint(len(value)) + value


def _decoy(number: int, rng: random.Random) -> bytes:
    """A value a later occurrence of the same field overwrites (valid UTF-8 for the
    string fields, so that the message still parses)."""
    if number in (2, 5):
        return rng.randbytes(rng.randrange(0, 16))
    return rng.choice(("", "x", "claim.decide", "320106", "0" * 16)).encode()


def reencoded(canonical: bytes, rng: random.Random) -> bytes:
    """One random other encoding of the envelope ``canonical`` (see the module's doc)."""
    fields = fields_of(canonical)
    while True:
        order = fields[:]
        rng.shuffle(order)
        parts: list[bytes] = []
        for number, value in order:
            if rng.random() < 0.3:
                parts.append(_field(number, _decoy(number, rng), rng))
                if rng.random() < 0.5:
                    parts.append(_unknown(rng))
            parts.append(_field(number, value, rng))
            if rng.random() < 0.3:
                parts.append(_unknown(rng))
        if rng.random() < 0.5:
            parts.insert(rng.randrange(len(parts) + 1), _unknown(rng))
        data = b"".join(parts)
        if data != canonical:
            return data
