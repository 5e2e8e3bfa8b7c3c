"""The node runs the city-signed policy in force at each operation's time: its local file
until the first, then each from its effective time, without a restart. Stored acts are
checked again when the node opens. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from clearinghouse.bureau import issue_policy
from node.bootstrap import init_data_dir, open_app
from node.config import load_config
from node.domain.clock import ManualClock
from node.domain.orders import PaymentSource
from node.usecases import checkpoints, orders, policies
from node.usecases.app import NodeApp
from node.usecases.policies import PolicyBook
from runtime.errors import ConfigError
from tests.helpers import enrol, serve, staff
from timebank.citypolicy import CityPolicy, read_city_policy
from timebank.keys import public_key
from timebank.policy import DEFAULT_POLICY_TOML, load_policy, policy_sha256
from timebank.v1 import clearing_pb2

CITY_KEY = SigningKey(b"node-test-city-root".ljust(32, b"."))
CITY_PUBLIC = public_key(CITY_KEY)
THREE = DEFAULT_POLICY_TOML.replace("publicity_days = 7", "publicity_days = 3")
ZERO = DEFAULT_POLICY_TOML.replace("publicity_days = 7", "publicity_days = 0")


def city_policy(serial: int, text: str, effective: datetime,
                issued: datetime | None = None) -> CityPolicy:
    act = issue_policy(CITY_KEY, serial, text, effective, issued or effective)
    return read_city_policy(act, CITY_PUBLIC)


def test_the_book_runs_the_local_file_until_the_first_city_policy() -> None:
    t0 = datetime(2027, 1, 1, tzinfo=UTC)
    local = load_policy(ZERO)
    book = PolicyBook(local).with_city([city_policy(2, THREE, t0 + timedelta(days=2), t0),
                                        city_policy(1, DEFAULT_POLICY_TOML, t0)])
    assert book.at(t0 - timedelta(seconds=1)) is local
    assert book.in_force(t0 - timedelta(seconds=1)) is None
    assert book.next_change(t0 - timedelta(seconds=1)).serial == 1  # type: ignore[union-attr]
    assert book.at(t0).publicity_days == 7 and book.in_force(t0).serial == 1  # type: ignore[union-attr]
    assert book.next_change(t0).serial == 2  # type: ignore[union-attr]
    switch = t0 + timedelta(days=2)
    assert book.at(switch - timedelta(microseconds=1)).publicity_days == 7
    assert book.at(switch).publicity_days == 3 and book.next_change(switch) is None
    assert book.last_serial == 2


def test_every_operation_runs_the_policy_in_force_at_its_time(
        node_app: NodeApp, clock: ManualClock) -> None:
    """Orders verified either side of the switch get either publicity period; the app
    never restarts, and checkpoints name the policy they were made under."""
    t0 = clock.now()
    switch = t0 + timedelta(days=1)
    node_app.set_city_policies(node_app.policies.with_city([
        city_policy(1, DEFAULT_POLICY_TOML, t0), city_policy(2, THREE, switch, t0)]))
    staff(node_app)
    elder = enrol(node_app, "王建国", 1940, priority=True)
    volunteer = enrol(node_app, "李秀英", 1963)
    node_app.execute(lambda tx: None)  # a transaction between: nothing changes
    before = serve(node_app, clock, elder.id, volunteer.id, 60,
                   source=PaymentSource.CITY_GRANT, record=False)
    assert before.record.public_until == clock.now() + timedelta(days=7)
    first = node_app.execute(checkpoints.request, "0123456789abcdef")
    clock.advance(switch - clock.now())
    after = serve(node_app, clock, elder.id, volunteer.id, 60,
                  source=PaymentSource.CITY_GRANT, record=False)
    assert after.record.public_until == clock.now() + timedelta(days=3)
    assert node_app.policy.digest == policy_sha256(THREE).hex()
    clock.advance(timedelta(days=3))
    node_app.execute(orders.record_order, after.record.id)  # ledger entries: a new checkpoint
    second = node_app.execute(checkpoints.request, "0123456789abcdef")
    bodies = node_app.query(lambda tx: [clearing_pb2.NodeCheckpoint.FromString(m.envelope)
                                        for m in tx.repo.outbox.due(tx.now, 100)
                                        if m.kind == checkpoints.CHECKPOINT])
    assert first.queued and second.queued
    assert [b.policy_sha256 for b in bodies] == [policy_sha256(DEFAULT_POLICY_TOML),
                                                policy_sha256(THREE)]


def test_store_keeps_the_first_act_of_a_serial(node_app: NodeApp, clock: ManualClock) -> None:
    t0 = clock.now()
    one = city_policy(1, DEFAULT_POLICY_TOML, t0)
    done = node_app.execute(policies.store, [one])
    assert done.added == (one,) and done.conflicts == ()
    other = city_policy(1, ZERO, t0)
    again = node_app.execute(policies.store, [one, other, city_policy(2, THREE, t0)])
    assert [a.serial for a in again.added] == [2] and again.conflicts == (1,)
    stored = node_app.query(policies.stored)
    assert [(s.serial, bytes(s.policy_sha256)) for s in stored] == [
        (1, policy_sha256(DEFAULT_POLICY_TOML)), (2, policy_sha256(THREE))]
    assert [p.text for p in policies.verified(stored, CITY_PUBLIC)] == [DEFAULT_POLICY_TOML,
                                                                        THREE]


def test_a_node_opens_with_its_stored_city_policies_verified_again(tmp_path: Path) -> None:
    city_hex = CITY_PUBLIC.hex()
    config_path = init_data_dir(tmp_path / "n", "320115", "江宁区",
                                clearinghouse_address="127.0.0.1:1",
                                clearinghouse_public_key="ab" * 32,
                                city_public_key=city_hex, policy_text=ZERO)
    config = load_config(config_path)
    assert config.city_public_key == city_hex
    clock = ManualClock()
    app = open_app(config, clock)
    try:
        assert app.policy.publicity_days == 0  # the local file, until a city policy
        app.execute(policies.store, [city_policy(1, THREE, clock.now())])
    finally:
        app.db.dispose()
    app = open_app(config, clock)
    try:
        assert app.policy.publicity_days == 3
        assert app.policies.in_force(clock.now()).serial == 1  # type: ignore[union-attr]
    finally:
        app.db.dispose()
    # the same database under another city key: refused, not run
    text = config_path.read_text(encoding="utf-8").replace(city_hex, "cd" * 32)
    config_path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="stored city policy 1"):
        open_app(load_config(config_path), clock)


def test_the_city_key_setting_is_checked(tmp_path: Path) -> None:
    config_path = init_data_dir(tmp_path / "n", "320115", "江宁区")
    head, city, tail = config_path.read_text(encoding="utf-8").partition("\n[city]\n")
    assert city and 'public_key = ""' in tail  # init writes the [city] table, empty
    config_path.write_text(head + city + tail.replace('public_key = ""', 'public_key = "xyz"', 1),
                           encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[city\] public_key"):
        load_config(config_path)
