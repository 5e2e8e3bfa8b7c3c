"""The password hasher production uses (``node.usecases.logins.HASHER``).

The tests' own process hashes with a cheap hasher (``tests.conftest.TEST_HASHER``, set by
an autouse fixture); this checks that production's stays at least the OWASP minimum for
argon2id, so a cheap setting can never leak into it unnoticed.
"""

from __future__ import annotations

from argon2 import Type, extract_parameters

from node.usecases import logins
from tests.conftest import PRODUCTION_HASHER, TEST_HASHER


def test_production_hashes_passwords_with_argon2id_at_least_at_the_owasp_minimum() -> None:
    made = PRODUCTION_HASHER.hash("correct horse battery")
    params = extract_parameters(made)
    assert params.type is Type.ID and made.startswith("$argon2id$v=19$")
    assert params.memory_cost >= 19456 and params.time_cost >= 2
    assert params.parallelism == 1
    assert PRODUCTION_HASHER.verify(made, "correct horse battery")


def test_the_cheap_hasher_is_the_tests_own_and_still_verifies_production_hashes() -> None:
    assert logins.HASHER is TEST_HASHER and TEST_HASHER is not PRODUCTION_HASHER
    stored = PRODUCTION_HASHER.hash("a stored password")  # a hash a real node wrote
    assert logins.HASHER.verify(stored, "a stored password")  # its own parameters decide
    assert extract_parameters(logins.HASHER.hash("x")).type is Type.ID
