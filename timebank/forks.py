"""Split views of the city's log (issue 14): whether two tree heads the clearinghouse
signed can both be true, and, when they cannot, evidence anyone can check again with
the clearinghouse's public key alone. Pure: no I/O, no clock.

A clearinghouse that holds its key can run two copies of its log and show each district
another history. Every view passes every check a reader makes on its own (ADR 0007), so
a split view is only seen by comparing heads that different readers hold. Two signed
heads of one log are *consistent* when the smaller tree is a prefix of the larger. When
they are not, ``compare`` returns ``Evidence`` of one of three kinds:

``same-size``
    Two heads of the same size with different roots. **Conclusive**: the key signed two
    trees of n leaves; one history has one tree of each size. Forging it needs the
    clearinghouse's key; explaining it away needs a SHA-256 collision.
``prefix``
    Heads of sizes m < n and an RFC 9162 consistency path that reproduces the larger
    head's root and folds to a root of its first m leaves that is not the smaller head's
    root. **Conclusive**, as strong as ``same-size``: a path that reproduces a root is
    made of that tree's own subtree hashes (or of a SHA-256 collision), so the larger
    tree's prefix of m leaves is not the smaller tree. Whoever supplied the path does
    not need to be trusted: it is checked, not believed.
``unproven``
    Heads of sizes m < n and no proof that one extends the other: the clearinghouse,
    asked for one, gave a path that does not verify, or none at all (its log is smaller
    than a head it signed). **Refutable**: it shows the clearinghouse failed to prove
    consistency when asked, not that no proof exists, so it is void the moment anyone
    shows a consistency path that verifies. Honest clearinghouses answer such requests;
    a monitor keeps asking, and the evidence becomes ``prefix`` once the log it asks
    has grown past the larger head.

Cosignatures on either note are kept (they show which districts witnessed which side)
but prove nothing here: only the clearinghouse's signature is checked.

Evidence is a JSON document (``to_json``, ``FORMAT``) holding both signed notes and the
path; ``check`` recomputes the verdict from them and the key given, and believes none
of the other fields (sizes, where each head was seen, the summary).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from timebank import merkle, transparency
from timebank.transparency import Head, LogError

__all__ = [
    "FORMAT",
    "MAX_EVIDENCE_BYTES",
    "Evidence",
    "EvidenceError",
    "Kind",
    "Strength",
    "check",
    "compare",
    "load",
    "prefix_root_from_inclusion",
]

FORMAT = "timebank-fork-evidence/v1"
#: The largest evidence document read or written, in UTF-8 bytes: two notes with their
#: cosignatures (a few KiB each) and a path of at most 64 hashes fit many times over.
MAX_EVIDENCE_BYTES = 128 * 1024
#: The most hashes a path may carry (a tree of 2**63 leaves needs fewer).
MAX_PATH = 130
#: The longest note about where a head was seen, in characters.
MAX_SEEN_CHARS = 200


class Kind(StrEnum):
    """What shows the two heads cannot both be true."""

    SAME_SIZE = "same-size"
    PREFIX = "prefix"
    UNPROVEN = "unproven"


class Strength(StrEnum):
    """How far the evidence goes: a proof, or a challenge a valid proof would answer."""

    CONCLUSIVE = "conclusive"
    REFUTABLE = "refutable"


class EvidenceError(ValueError):
    """A document is not evidence of a fork: malformed, about another log, a head not
    signed by the clearinghouse, or heads that are consistent after all."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True, slots=True)
class Evidence:
    """Two heads the clearinghouse signed that cannot both be true, and why.

    ``heads`` are ordered by (size, root); ``seen`` says where each came from (for
    people; never checked). ``path`` is the consistency proof from the smaller size to
    the larger that the clearinghouse gave (None: it gave none); ``prefix_root`` the
    root of the larger tree's first ``heads[0].size`` leaves that the path proves
    (``prefix`` evidence only)."""

    kind: Kind
    heads: tuple[Head, Head]
    path: tuple[bytes, ...] | None = None
    prefix_root: bytes | None = None
    seen: tuple[str, str] = ("", "")

    @property
    def strength(self) -> Strength:
        return Strength.REFUTABLE if self.kind is Kind.UNPROVEN else Strength.CONCLUSIVE

    @property
    def conclusive(self) -> bool:
        return self.strength is Strength.CONCLUSIVE

    @property
    def id(self) -> str:
        """Names the fork, not the document: the same two heads (their signed texts)
        and kind give the same id wherever they were found, so a fork is stored once."""
        digest = hashlib.sha256()
        for part in (FORMAT, self.kind.value, *(_text(h.note) for h in self.heads)):
            digest.update(part.encode("utf-8") + b"\x00")
        return digest.hexdigest()[:20]

    def summary(self) -> str:
        """One line for an operator."""
        small, large = self.heads
        if self.kind is Kind.SAME_SIZE:
            return (f"two different tree heads of {small.size} leaves, both signed by the "
                    f"clearinghouse: its log was forked (conclusive)")
        if self.kind is Kind.PREFIX:
            return (f"the signed head of {large.size} leaves does not extend the signed head "
                    f"of {small.size}: its first {small.size} leaves have another root, as "
                    f"its consistency path proves (conclusive)")
        how = ("gave none" if self.path is None else "gave one that does not verify")
        return (f"no proof that the signed head of {large.size} leaves extends the signed "
                f"head of {small.size}: asked for one, the clearinghouse {how} (refutable "
                f"by a consistency proof that verifies)")

    def to_json(self, *, found_at: int = 0) -> dict[str, Any]:
        """The evidence as a JSON-ready document (``FORMAT``); ``found_at``: when it was
        found (UNIX seconds; not checked)."""
        doc: dict[str, Any] = {
            "format": FORMAT,
            "kind": self.kind.value,
            "strength": self.strength.value,
            "summary": self.summary(),
            "heads": [{"size": h.size, "root": _b64(h.root), "seen": s[:MAX_SEEN_CHARS],
                       "note": h.note} for h, s in zip(self.heads, self.seen, strict=True)],
            "consistency": None,
            "found_at": found_at,
        }
        if self.path is not None or self.prefix_root is not None:
            doc["consistency"] = {
                "old_size": self.heads[0].size, "new_size": self.heads[1].size,
                "path": [_b64(p) for p in self.path or ()],
                "prefix_root": None if self.prefix_root is None else _b64(self.prefix_root)}
        return doc

    def dumps(self, *, found_at: int = 0) -> str:
        """``to_json`` as text, as evidence files hold it."""
        text = json.dumps(self.to_json(found_at=found_at), ensure_ascii=False, indent=2) + "\n"
        if len(text.encode("utf-8")) > MAX_EVIDENCE_BYTES:
            raise EvidenceError(f"the evidence is larger than {MAX_EVIDENCE_BYTES} bytes")
        return text


def _text(note: str) -> str:
    """A signed note's text without its signature lines (cosignatures come and go)."""
    return note[: note.rfind("\n\n") + 1] if "\n\n" in note else note


def _ordered(a: tuple[Head, str], b: tuple[Head, str]) -> tuple[tuple[Head, str], ...]:
    return tuple(sorted((a, b), key=lambda hs: (hs[0].size, hs[0].root)))


def compare(clearinghouse_key: bytes | transparency.LogKeys, first: str, second: str,
            consistency: Sequence[bytes] | None = None, *,
            prefix_root: bytes | None = None,
            seen: tuple[str, str] = ("", "")) -> Evidence | None:
    """Whether the signed heads ``first`` and ``second`` can both be true: None if they
    can (one tree is a prefix of the other), else the ``Evidence`` that they cannot.

    ``consistency`` is the path the clearinghouse gave from the smaller size to the
    larger, or None if it gave none when asked (call this only after asking: with
    sizes that differ, no proof is itself refutable evidence). ``prefix_root`` is a root
    of the larger tree's first leaves from elsewhere (``prefix_root_from_inclusion``),
    for a path from a power-of-two size, which does not carry it; it is checked, not
    believed. ``seen`` says where each head came from. Raises ``LogError`` if a note is
    not a head the clearinghouse signed for its log: that is no fork, just not a head."""
    (small, seen_small), (large, seen_large) = _ordered(
        (transparency.check_head(first, clearinghouse_key), seen[0]),
        (transparency.check_head(second, clearinghouse_key), seen[1]))
    heads, where = (small, large), (seen_small, seen_large)
    if small.size == large.size:
        if small.root == large.root:
            return None
        return Evidence(Kind.SAME_SIZE, heads, seen=where)
    path = None if consistency is None else tuple(consistency)
    if path is not None and merkle.verify_consistency(small.size, large.size, small.root,
                                                      large.root, path):
        return None
    if path is not None:
        implied = merkle.consistency_old_root(small.size, large.size, large.root, path)
        for candidate in (implied, prefix_root):
            if (candidate is not None and candidate != small.root
                    and merkle.verify_consistency(small.size, large.size, candidate,
                                                  large.root, path)):
                return Evidence(Kind.PREFIX, heads, path, candidate, where)
    return Evidence(Kind.UNPROVEN, heads, path, None, where)


def prefix_root_from_inclusion(size: int, larger_size: int,
                               inclusion: Sequence[bytes]) -> bytes | None:
    """The root of the first ``size`` leaves (a power of two) of a tree of
    ``larger_size``, read from the inclusion path of leaf ``size`` in it: that path
    passes the subtree of the first ``size`` leaves. Unchecked here; ``compare``
    checks it against a consistency path that reproduces the larger root."""
    if not 0 < size < larger_size or size & (size - 1):
        return None
    try:
        ranges = merkle.inclusion_path_ranges(size, larger_size)
    except ValueError:
        return None
    path = list(inclusion)
    if len(path) != len(ranges) or (0, size) not in ranges:
        return None
    found = path[ranges.index((0, size))]
    return found if isinstance(found, bytes) and len(found) == merkle.HASH_SIZE else None


# ------------------------------------------------------------------ checking a document


def load(text: str | bytes) -> Any:
    """The JSON of an evidence file; EvidenceError if it is not (bounded) JSON."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    if len(raw) > MAX_EVIDENCE_BYTES:
        raise EvidenceError(f"an evidence file is at most {MAX_EVIDENCE_BYTES} bytes")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise EvidenceError(f"the evidence is not UTF-8 JSON: {e}") from None


def _field(doc: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = doc.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise EvidenceError(f"the evidence's {where} is missing or not a {kind.__name__}")
    return value


def _hash(text: object, where: str) -> bytes:
    if not isinstance(text, str):
        raise EvidenceError(f"the evidence's {where} is not base64 text")
    try:
        value = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise EvidenceError(f"the evidence's {where} is not base64") from None
    if len(value) != merkle.HASH_SIZE:
        raise EvidenceError(f"the evidence's {where} is not a {merkle.HASH_SIZE}-byte hash")
    return value


def check(doc: Any, clearinghouse_key: bytes | transparency.LogKeys) -> Evidence:
    """The evidence a document (``to_json``, or ``load`` of a file) holds, recomputed
    from its two signed notes, its path and ``clearinghouse_key`` alone. Raises
    ``EvidenceError`` if it shows no fork, or not the fork it says (a document that
    calls itself conclusive and is only refutable is refused)."""
    if not isinstance(doc, Mapping):
        raise EvidenceError("the evidence is not a JSON object")
    if doc.get("format") != FORMAT:
        raise EvidenceError(f"the evidence's format is not {FORMAT!r}")
    try:
        claimed = Kind(_field(doc, "kind", str, "kind"))
    except ValueError:
        raise EvidenceError(f"the evidence's kind is not one of "
                            f"{', '.join(k.value for k in Kind)}") from None
    heads = _field(doc, "heads", list, "heads")
    if len(heads) != 2 or not all(isinstance(h, Mapping) for h in heads):
        raise EvidenceError("the evidence holds two heads")
    notes = [_field(h, "note", str, f"head {i + 1}'s note") for i, h in enumerate(heads)]
    seen = tuple(str(h.get("seen", ""))[:MAX_SEEN_CHARS] for h in heads)
    path: list[bytes] | None = None
    prefix_root = None
    proof = doc.get("consistency")
    if proof is not None:
        if not isinstance(proof, Mapping):
            raise EvidenceError("the evidence's consistency is not an object")
        items = _field(proof, "path", list, "consistency path")
        if len(items) > MAX_PATH:
            raise EvidenceError(f"a consistency path has at most {MAX_PATH} hashes")
        path = [_hash(p, f"consistency path hash {i + 1}") for i, p in enumerate(items)]
        if proof.get("prefix_root") is not None:
            prefix_root = _hash(proof["prefix_root"], "prefix root")
    try:
        found = compare(clearinghouse_key, notes[0], notes[1], path,
                        prefix_root=prefix_root, seen=(seen[0], seen[1]))
    except LogError as e:
        raise EvidenceError(f"a head in the evidence is not the clearinghouse's: {e}") from None
    if found is None:
        raise EvidenceError("the two heads are consistent: one extends the other, no fork")
    if found.kind is not claimed:
        raise EvidenceError(f"the evidence says {claimed.value}, but what it holds shows "
                            f"{found.kind.value} ({found.strength.value})")
    return found
