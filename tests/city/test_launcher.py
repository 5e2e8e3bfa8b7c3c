"""The city launcher with real processes: layout, start, kill -9, restart, stop."""

from __future__ import annotations

import os
import signal
import socket
import stat
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from city.launcher import (
    CLEARINGHOUSE,
    DEV_CLOCK_ENV,
    DISTRICTS,
    CityLayout,
    CityProcesses,
    LaunchError,
    layout,
)
from city.pki.store import Authority
from clearinghouse.bootstrap import open_app
from clearinghouse.config import load_config as load_clearinghouse_config
from clearinghouse.usecases import admission
from node.config import load_config as load_node_config
from runtime.tls import ClientTls
from runtime.tls import channel as tls_channel
from tests.jsonlog import json_lines
from timebank.v1 import clearing_pb2, clearing_pb2_grpc

pytestmark = pytest.mark.timeout(120)


def serving(city: CityLayout, name: str, service: str) -> bool:
    with city.channel(name) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=2)
        except grpc.RpcError:
            return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def positions(city: CityLayout) -> dict[str, str]:
    with city.channel(CLEARINGHOUSE) as channel:
        found = clearing_pb2_grpc.ClearinghouseServiceStub(channel).GetPositions(
            clearing_pb2.GetPositionsRequest(), timeout=5)
    return {n.node_id: n.district for n in found.nodes}


def gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_layout_twice_keeps_keys_ports_and_one_city_secret(tmp_path: Path) -> None:
    first = layout(tmp_path)
    again = layout(tmp_path)
    assert again == first
    assert [n.district for n in first.nodes] == list(DISTRICTS)
    secret = first.city_secret_file.read_bytes()
    assert len(secret) == 32
    assert stat.S_IMODE(first.city_secret_file.stat().st_mode) == 0o600
    ch = load_clearinghouse_config(first.clearinghouse_config)
    assert ch.listen == first.clearinghouse_address
    addresses = {first.clearinghouse_address, *(n.address for n in first.nodes)}
    assert len(addresses) == 4 and all(a.startswith("127.0.0.1:") for a in addresses)
    for n in first.nodes:
        config = load_node_config(n.config_file)
        assert config.city_secret_file.read_bytes() == secret
        assert config.district == n.district.name
        assert config.listen == n.address
        assert config.clearinghouse_address == first.clearinghouse_address
        assert config.clearinghouse_public_key == first.clearinghouse_public_key
    app = open_app(ch)
    try:
        admitted = app.query(admission.admissions)
    finally:
        app.db.dispose()
    assert {(a.node_id, a.district, a.public_key.hex(), a.serial) for a in admitted} == {
        (n.node_id, n.district.name, n.public_key, 1) for n in first.nodes}


def test_city_starts_survives_kill_9_and_stops_without_leftovers(tmp_path: Path) -> None:
    city = layout(tmp_path)
    with CityProcesses(city) as procs:
        procs.start_all(timeout=30)
        pids = [procs.pid(name) for name in city.names]
        for n in city.nodes:
            assert serving(city, n.node_id, "timebank.v1.NodeService")
        assert positions(city) == {
            "320115": "江宁区", "320106": "鼓楼区", "320113": "栖霞区"}

        victim = city.nodes[0].node_id
        old_pid = procs.pid(victim)
        assert procs.kill(victim) == -signal.SIGKILL
        assert not procs.is_running(victim) and gone(old_pid)
        assert not serving(city, victim, "timebank.v1.NodeService")
        procs.restart(victim, timeout=30)
        assert procs.pid(victim) != old_pid
        assert serving(city, victim, "timebank.v1.NodeService")
        pids.append(procs.pid(victim))

        procs.stop_all()
        assert not any(procs.is_running(name) for name in city.names)
    assert all(gone(pid) for pid in pids)
    log = (city.logs_dir / f"{victim}.log").read_text(encoding="utf-8")
    assert log.count(f"starting {victim}") == 2  # the restart appends to the same log


def test_a_process_that_cannot_serve_fails_with_its_log(tmp_path: Path) -> None:
    city = layout(tmp_path, DISTRICTS[:1])
    node = city.nodes[0]
    host, _, port = node.address.rpartition(":")
    with socket.socket() as taken, CityProcesses(city) as procs:
        taken.bind((host, int(port)))
        taken.listen()
        procs.start(node.node_id)
        with pytest.raises(LaunchError) as failed:
            procs.wait_ready(node.node_id, timeout=20)
    message = str(failed.value)
    assert "exited with code" in message and str(city.logs_dir / "320115.log") in message
    assert port in message  # the tail of the log says which address could not be bound


def test_dev_clock_is_passed_and_allowed(tmp_path: Path) -> None:
    city: CityLayout = layout(tmp_path, DISTRICTS[:1])
    procs = CityProcesses(city, dev_clock=True)
    for name in city.names:
        assert procs.command(name)[-2:] == ["--dev-clock", str(city.clock_file)]
    assert procs.env[DEV_CLOCK_ENV] == "1"
    assert "--dev-clock" not in CityProcesses(city).command(CLEARINGHOUSE)


def limits(city: CityLayout) -> dict[str, int]:
    from clearinghouse.usecases import claims as ch_claims

    app = open_app(load_clearinghouse_config(city.clearinghouse_config))
    try:
        return {n.node_id: app.query(ch_claims.net_debit_limit, n.node_id)
                for n in city.nodes}
    finally:
        app.db.dispose()


def test_admission_gives_each_node_a_net_debit_limit_once(tmp_path: Path) -> None:
    from clearinghouse.usecases import claims as ch_claims

    city = layout(tmp_path / "default")
    assert limits(city) == {"320115": 60_000, "320106": 60_000, "320113": 60_000}
    app = open_app(load_clearinghouse_config(city.clearinghouse_config))
    try:
        app.execute(ch_claims.set_net_debit_limit, "320106", 500)  # the bureau's choice
    finally:
        app.db.dispose()
    layout(tmp_path / "default", net_debit_limit=90_000)
    assert limits(city) == {"320115": 60_000, "320106": 500, "320113": 60_000}

    chosen = layout(tmp_path / "chosen", DISTRICTS[:2], net_debit_limit=1_200)
    assert limits(chosen) == {"320115": 1_200, "320106": 1_200}
    none = layout(tmp_path / "none", DISTRICTS[:1], net_debit_limit=0)
    assert limits(none) == {"320115": 0}
    with pytest.raises(LaunchError, match="net debit limit"):
        layout(tmp_path / "bad", DISTRICTS[:1], net_debit_limit=-1)


def test_a_policy_text_reaches_every_node(tmp_path: Path) -> None:
    from clearinghouse.usecases import policies
    from node.domain.policy import DEFAULT_POLICY_TOML, load_policy, policy_sha256

    text = DEFAULT_POLICY_TOML.replace("publicity_days = 7", "publicity_days = 0")
    assert text != DEFAULT_POLICY_TOML
    city = layout(tmp_path, DISTRICTS[:2], policy_text=text)
    for n in city.nodes:
        config = load_node_config(n.config_file)
        assert config.policy_file.read_text(encoding="utf-8") == text
        assert config.city_public_key == city.city_public_key
        assert load_policy(text).publicity_days == 0

    def issued() -> list[tuple[int, bytes]]:
        app = open_app(load_clearinghouse_config(city.clearinghouse_config))
        try:
            return [(p.serial, p.sha256) for p in app.query(policies.city_policies)]
        finally:
            app.db.dispose()

    # the bureau issued it as the city policy, once: laying out again issues nothing
    assert issued() == [(1, policy_sha256(text))]
    layout(tmp_path, DISTRICTS[:2], policy_text=text)
    assert issued() == [(1, policy_sha256(text))]
    plain = layout(tmp_path / "plain", DISTRICTS[:1])
    assert load_node_config(plain.nodes[0].config_file).policy_file.read_text(
        encoding="utf-8") == DEFAULT_POLICY_TOML


def test_a_city_serves_tls_unless_laid_out_insecure(tmp_path: Path) -> None:
    """The launcher's city serves TLS (the clearinghouse mutual TLS) with its own CA's
    certificates; ``insecure`` (the bench's --insecure) serves plaintext and says so at
    every start. Each refuses the other kind of client."""
    secure = layout(tmp_path / "tls", DISTRICTS[:1])
    plain = layout(tmp_path / "plain", DISTRICTS[:1], insecure=True)
    assert secure.pki_dir is not None and plain.pki_dir is None
    assert plain.client_env() == {"TIMEBANK_INSECURE": "1"}
    with pytest.raises(LaunchError, match="other TLS settings"):
        layout(tmp_path / "plain", DISTRICTS[:1])  # a city does not change its TLS quietly
    node_id = DISTRICTS[0].node_id
    for city, tls in ((secure, True), (plain, False)):
        with CityProcesses(city) as procs:
            procs.start_all(timeout=30)
            assert positions(city) == {node_id: DISTRICTS[0].name}
            assert serving(city, node_id, "timebank.v1.NodeService")
            wrong = None if tls else ClientTls(Authority(secure.pki_dir).ca_cert)
            with tls_channel(city.address(CLEARINGHOUSE), wrong) as ch, \
                    pytest.raises(grpc.RpcError) as refused:
                health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2)
            assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        for name in city.names:
            said = (city.logs_dir / f"{name}.log").read_text(encoding="utf-8")
            assert [e["tls"] for e in json_lines(said) if e["event"].endswith(" serving")] \
                == [tls], name
            assert ("WITHOUT TLS because of --insecure" in said) is not tls, name
