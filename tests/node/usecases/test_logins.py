"""The password hasher production uses (``node.usecases.logins.HASHER``).

The tests' own process hashes with a cheap hasher (``tests.conftest.TEST_HASHER``, set by
an autouse fixture); this checks that production's stays at least the OWASP minimum for
argon2id, so a cheap setting can never leak into it unnoticed.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from argon2 import Type, extract_parameters

from node.domain.access import LoginRules, Role
from node.domain.clock import ManualClock
from node.usecases import logins
from node.usecases.app import NodeApp
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


def test_the_auth_settings_set_session_and_code_lifetimes_and_the_lock(
        node_app: NodeApp, clock: ManualClock) -> None:
    """``[auth]`` (``LoginRules`` on the node's identity) rules every login: a session
    of 1 hour, a code of 2 minutes, a lock of 3 minutes after 2 failures."""
    rules = LoginRules(session_hours=1, code_minutes=2, max_failures=2, lock_minutes=3)
    node_app.node = replace(node_app.node, logins=rules)
    node_app.execute(logins.add_account, "op", Role.OPERATOR)
    node_app.execute(logins.set_password, "op", "a long password")
    session = node_app.execute(logins.login, "op", "a long password")
    assert session.expires_at == clock.now() + timedelta(hours=1)
    code = node_app.execute(logins.issue_code, "op")
    clock.advance(timedelta(minutes=2, seconds=1))
    assert node_app.execute(logins.login, "op", code, with_code=True).refusal
    for _ in range(2):
        assert node_app.execute(logins.login, "op", "a wrong password").refusal
    locked = node_app.execute(logins.login, "op", "a long password")
    assert "locked" in locked.refusal
    clock.advance(timedelta(minutes=3, seconds=1))
    assert node_app.execute(logins.login, "op", "a long password").token
