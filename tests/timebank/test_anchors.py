"""Anchor proof paths: stored as their hashes joined, split back exactly, anything else
refused."""

from __future__ import annotations

import pytest

from timebank import merkle
from timebank.anchors import MAX_PATH_HASHES, proof_path, stored_path


def test_a_stored_path_splits_back_into_its_hashes() -> None:
    leaves = [bytes([i]) * 7 for i in range(11)]
    path = merkle.inclusion_proof(leaves, 6)
    stored = stored_path(path)
    assert len(stored) == len(path) * merkle.HASH_SIZE
    assert proof_path(stored) == path
    assert merkle.verify_inclusion(leaves[6], 6, 11, proof_path(stored), merkle.root(leaves))
    assert proof_path(None) == [] and stored_path([]) == b""


def test_what_is_not_a_path_is_refused() -> None:
    with pytest.raises(ValueError, match="whole number of SHA-256 hashes"):
        proof_path(b"\x00" * 33)
    with pytest.raises(ValueError, match=f"at most {MAX_PATH_HASHES} hashes"):
        proof_path(b"\x00" * 32 * (MAX_PATH_HASHES + 1))
    with pytest.raises(ValueError, match="SHA-256 hashes"):
        stored_path([b"\x00" * 32, b"\x00" * 31])
