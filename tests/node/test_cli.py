"""`timebank node ...`: init, a real `node serve` process, and the operator commands.

The node serves TLS with a certificate a real city CA issued (``tests.pki``); the
commands reach it checking that CA (TIMEBANK_CA, as an operator sets it).

Commands that only need the client or the files run in-process with typer's CliRunner
(fast); what depends on the real console script (UTF-8 on any locale, one-line errors
printed by ``main()``, SIGTERM) runs as subprocesses.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from typer.testing import CliRunner

from city.cli import app
from city.pki.store import Authority, Issued
from node.cli.accounts import local_token
from node.config import load_config
from node.domain.access import Role
from node.domain.policy import DEFAULT_POLICY_TOML
from runtime import devclock
from runtime.console import CliError
from runtime.errors import Refusal
from runtime.tls import NODE, ClientTls, channel
from tests.helpers import id_card
from tests.jsonlog import json_lines
from tests.pki import issue, now
from timebank.citytime import CITY_TZ

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
#: How the commands reach a node: the CA every ``init_node`` trusts (TIMEBANK_CA).
CLIENT_ENV: dict[str, str] = {}
_CA: list[tuple[Authority, Issued]] = []


def city_pki() -> tuple[Authority, Issued]:
    """One city CA for this module's nodes (in a folder removed at exit), and the
    certificate every node 320115 here serves with."""
    if not _CA:
        folder = Path(tempfile.mkdtemp(prefix="timebank-cli-pki-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        ca = Authority.init(folder / "pki", "test city CA", now())
        _CA.append((ca, issue(ca, NODE, "320115")))
        CLIENT_ENV["TIMEBANK_CA"] = str(ca.ca_cert)
    return _CA[0]


#: The node the module's commands talk to (its configuration), once it serves.
SERVED: dict[str, Path] = {}
#: Options that name who acts: such a command is sent with that person's session.
_STAFF_OPTIONS = ("--staff", "--by-staff")
_PERSON_OPTIONS = ("--by-person", "--volunteer")


def token_for(args: tuple[str, ...]) -> str:
    """The session a command is sent with (ADR 0016): the staff member or person its
    options name as acting, else the node's operator; each minted on the node's own
    database, as `timebank node account` does."""
    config = SERVED.get("config")
    if config is None:
        return ""
    for i, arg in enumerate(args[:-1]):
        value = args[i + 1]
        if arg in _STAFF_OPTIONS + _PERSON_OPTIONS and value.isdigit() and int(value) > 0:
            role = Role.STAFF if arg in _STAFF_OPTIONS else Role.MEMBER
            try:
                return local_token(config, f"{role.value}-{value}", role,
                                   staff_id=int(value) if role is Role.STAFF else 0,
                                   person_id=int(value) if role is Role.MEMBER else 0)
            except (SystemExit, CliError, Refusal):
                break  # no such staff member or person: the operator sends it
    return local_token(config)


def cli(*args: str) -> Any:
    """Run `timebank ARGS` in-process."""
    return runner.invoke(app, list(args), env={**CLIENT_ENV, "TIMEBANK_TOKEN": token_for(args)})


def cli_json(*args: str) -> Any:
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def timebank(*args: str, env: dict[str, str] | None = None, timeout: float = 60,
             input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real console script's entry point as a subprocess."""
    return subprocess.run([sys.executable, "-m", "city", *args], capture_output=True,
                          input=input_text,
                          text=True, encoding="utf-8", timeout=timeout, cwd=ROOT,
                          env={**os.environ, **CLIENT_ENV, "TIMEBANK_TOKEN": token_for(args),
                               **(env or {})})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def assert_one_clean_line(stderr: str, starts: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"error: {starts}"), stderr
    assert "Traceback" not in stderr


def init_node(data_dir: Path) -> Path:
    """A node serving with a certificate of the module's city CA, which the commands trust."""
    ca, leaf = city_pki()
    result = cli("node", "init", "--data-dir", str(data_dir), "--node-id", "320115",
                 "--district", "江宁区", "--tls-ca", str(ca.ca_cert), "--tls-cert",
                 str(leaf.cert), "--tls-key", str(leaf.key))
    assert result.exit_code == 0, result.output
    return data_dir / "node.toml"


def client_tls(config: Path) -> ClientTls:
    ca = load_config(config).tls.ca
    assert ca is not None
    return ClientTls(ca)


@dataclass
class Served:
    address: str
    config: Path
    process: subprocess.Popen[bytes]
    log: Path


def wait_serving(address: str, process: subprocess.Popen[bytes], log: Path,
                 tls: ClientTls | None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    with channel(address, tls) as ready:
        health = health_pb2_grpc.HealthStub(ready)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"`timebank node serve` exited with {process.returncode}:\n"
                            f"{log.read_text(encoding='utf-8')}")
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    pytest.fail(f"the node did not report SERVING within {timeout} s")


def start_serving(config: Path, log: Path, clock: Path | None = None) -> Served:
    """`timebank node serve --config` as a real process on a free loopback port; with
    ``clock``, on the simulated time of that dev clock file (``runtime.devclock``)."""
    address = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "TIMEBANK_SERVER_LISTEN": address, "TIMEBANK_SERVER_METRICS_LISTEN": ""}
    argv = [sys.executable, "-m", "city", "node", "serve", "--config", str(config)]
    if clock is not None:
        argv += ["--dev-clock", str(clock)]
        env[devclock.ALLOW_ENV] = "1"
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                   env=env)
    served = Served(address, config, process, log)
    try:
        wait_serving(address, process, log, client_tls(config))
    except BaseException:
        process.kill()
        process.wait()
        raise
    return served


def stop(served: Served) -> int:
    if served.process.poll() is None:
        served.process.send_signal(signal.SIGTERM)
    try:
        return served.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        served.process.kill()
        served.process.wait()
        raise


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One initialised node served by a real `timebank node serve` process."""
    root = tmp_path_factory.mktemp("cli-node")
    config = init_node(root / "data")
    served = start_serving(config, root / "serve.log", root / "clock")
    SERVED["config"], SERVED["clock"] = config, root / "clock"
    yield served
    SERVED.clear()
    stop(served)


def node_now() -> datetime:
    """What the module's node's clock says now (real time plus its dev clock's offset)."""
    return datetime.now(UTC) + devclock.read_offset(SERVED["clock"])


def later(minutes: int) -> None:
    """Let ``minutes`` pass on the module's node (it serves on a dev clock)."""
    devclock.advance(SERVED["clock"], timedelta(minutes=minutes))


def now_minus(minutes: int) -> str:
    """``minutes`` before the node's now, as `--at` takes it."""
    return (node_now() - timedelta(minutes=minutes)).isoformat(timespec="seconds")


# ---------------------------------------------------------------- files and database


def test_init_creates_the_data_directory_and_says_what_it_made(tmp_path: Path) -> None:
    data = tmp_path / "node"
    result = cli("node", "init", "--data-dir", str(data), "--node-id", "320115",
                 "--district", "江宁区", "--listen", "127.0.0.1:17443")
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert str(data / "node.toml") in "".join(out.split()) and "江宁区" in out  # may wrap
    assert "policy sha256" in out and "civil-affairs bureau" in out
    assert "same secret" in out  # every node must hold the bureau's secret
    for name in ("node.toml", "policy.toml", "city-secret", "node.sqlite3"):
        assert (data / name).exists(), name
    assert stat.S_IMODE((data / "city-secret").stat().st_mode) == 0o600
    assert 'listen = "127.0.0.1:17443"' in (data / "node.toml").read_text(encoding="utf-8")

    again = cli("node", "init", "--data-dir", str(data), "--node-id", "320115",
                "--district", "江宁区")
    assert again.exit_code == 0, again.output
    assert "kept" in again.stdout and "civil-affairs bureau" not in again.stdout


def test_init_with_a_policy_file(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("rounding_unit_minutes = 30\npublicity_days = 3\n", encoding="utf-8")
    init = cli("node", "init", "--data-dir", str(tmp_path / "node"), "--node-id", "320115",
               "--district", "江宁区", "--policy", str(policy))
    assert init.exit_code == 0, init.output
    assert (tmp_path / "node" / "policy.toml").read_text(encoding="utf-8") == \
        policy.read_text(encoding="utf-8")


@pytest.mark.parametrize(("args", "message"), [
    (["--node-id", "32O115", "--district", "江宁区"], "6-digit"),
    (["--node-id", "320115"], "--district"),
    (["--node-id", "320115", "--district", "江宁区", "--policy", "/nonexistent/policy.toml"],
     "no such file"),
])
def test_init_refuses_bad_input_in_one_line(tmp_path: Path, args: list[str],
                                            message: str) -> None:
    result = cli("node", "init", "--data-dir", str(tmp_path / "node"), *args)
    assert result.exit_code == 1
    assert_one_clean_line(result.stderr, "")
    assert message in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_init_refuses_a_bad_policy(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("rounding_unit_minutes = 0\n", encoding="utf-8")
    result = cli("node", "init", "--data-dir", str(tmp_path / "node"), "--node-id", "320115",
                 "--district", "江宁区", "--policy", str(policy))
    assert result.exit_code == 1
    assert_one_clean_line(result.stderr, "")
    assert "rounding_unit_minutes" in result.stderr
    assert not (tmp_path / "node").exists()


def test_init_from_an_installed_configuration_then_migrate_and_check(tmp_path: Path) -> None:
    """The deploy/README flow: /etc/timebank/node.toml names the data dir, policy, secret."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "policy.toml").write_text(DEFAULT_POLICY_TOML, encoding="utf-8")
    fd = os.open(etc / "city-secret", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, os.urandom(32))
    os.close(fd)
    (etc / "node.toml").write_text(
        '[node]\nnode_id = "320115"\ndistrict = "江宁区"\n'
        f'data_dir = "{tmp_path / "var"}"\npolicy_file = "policy.toml"\n'
        'city_secret_file = "city-secret"\n', encoding="utf-8")
    init = cli("node", "init", "--config", str(etc / "node.toml"))
    assert init.exit_code == 0, init.output
    assert (tmp_path / "var" / "node.sqlite3").exists()
    assert stat.S_IMODE((tmp_path / "var").stat().st_mode) == 0o700

    migrate = cli("node", "migrate", "--config", str(etc / "node.toml"))
    assert migrate.exit_code == 0, migrate.output
    assert "already current" in migrate.stdout

    report = cli_json("node", "check", "--config", str(etc / "node.toml"))
    assert report["ok"] is True and report["transactions"] == 0
    assert report["node_id"] == "320115" and report["district"] == "江宁区"


def test_migrate_reports_the_schema_revision_before_and_after(tmp_path: Path) -> None:
    config = init_node(tmp_path / "node")
    (tmp_path / "node" / "node.sqlite3").unlink()
    result = cli("node", "migrate", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert "empty →" in result.stdout and "migrated" in result.stdout


def test_config_mistakes_are_one_line(tmp_path: Path) -> None:
    result = cli("node", "check", "--config", str(tmp_path / "missing.toml"))
    assert result.exit_code == 1
    assert_one_clean_line(result.stderr, "找不到配置文件 (no configuration file")
    bad = tmp_path / "bad.toml"
    bad.write_text("[node]\nnode_id = 320115\n", encoding="utf-8")
    result = cli("node", "serve", "--config", str(bad))
    assert result.exit_code == 1
    assert_one_clean_line(result.stderr, "配置项 [node] node_id 无效 ([node] node_id must be 6 "
                                         "digits")


def test_an_unreachable_node_is_one_line_with_the_status_name(city_ca: Authority) -> None:
    result = cli("node", "--ca", str(city_ca.ca_cert), "balance", "1", "--node",
                 f"127.0.0.1:{free_port()}")
    assert result.exit_code == 1
    assert_one_clean_line(result.stderr, "UNAVAILABLE: cannot reach the node at 127.0.0.1:")


def test_without_a_ca_or_insecure_the_cli_says_how_to_reach_a_node(node: Served) -> None:
    result = runner.invoke(app, ["node", "balance", "1", "--node", node.address],
                           env={"TIMEBANK_CA": None})
    assert result.exit_code == 1
    assert_one_clean_line(result.stderr, "节点通过 TLS 连接")
    assert "--ca FILE" in result.stderr and "--insecure" in result.stderr
    # Plaintext towards a node serving TLS does not get through.
    result = runner.invoke(app, ["node", "--insecure", "balance", "1", "--node",
                                 node.address], env={"TIMEBANK_CA": None})
    assert result.exit_code == 1
    assert_one_clean_line(result.stderr, "UNAVAILABLE")


def test_a_usage_mistake_is_one_line_from_the_real_command() -> None:
    result = timebank("node", "enrol", "--name", "李秀英")
    assert result.returncode == 2
    assert_one_clean_line(result.stderr, "Missing option '--id-number'")
    assert "timebank node enrol --help" in result.stderr
    result = timebank("node", "order", "request", "--recipient", "1", "--category", "助洁",
                      "--minutes", str(2**63), "--paid-by", "own", "--by-staff", "1")
    assert result.returncode == 2
    assert_one_clean_line(result.stderr, "Invalid value for '--minutes'")


def test_help_lists_every_operator_command() -> None:
    result = cli("node", "--help")
    assert result.exit_code == 0
    for command in ("init", "migrate", "serve", "check", "service-point", "staff", "enrol",
                    "link", "order", "donate", "grant", "reverse", "balance", "history",
                    "policy"):
        assert command in result.stdout
    orders = cli("node", "order", "--help")
    for command in ("request", "accept", "check-in", "check-out", "verify", "dispute",
                    "resolve", "cancel", "record", "record-due", "show", "list"):
        assert command in orders.stdout


# ---------------------------------------------------------------- against `timebank node serve`


def test_enrol_a_chinese_name_on_any_locale(node: Served) -> None:
    """The real console script prints 李秀英 even when Python would pick ASCII for stdout."""
    result = timebank("node", "enrol", "--name", "李秀英", "--id-number", id_card(1963),
                      "--phone", "13900000001", "--node", node.address,
                      env={"PYTHONIOENCODING": "ascii", "LC_ALL": "C"})
    assert result.returncode == 0, result.stderr
    assert "李秀英" in result.stdout and "enrolled person" in result.stdout
    people = [line for line in result.stdout.splitlines() if "enrolled person" in line]
    person_id = people[0].split("enrolled person")[1].split()[0]
    shown = timebank("node", "person", person_id, "--json",
                     env={"TIMEBANK_NODE_ADDRESS": node.address})
    assert shown.returncode == 0, shown.stderr
    person = json.loads(shown.stdout)
    assert person["name"] == "李秀英" and person["age"] == datetime.now(CITY_TZ).year - 1963
    assert person["kind"] == "individual" and len(person["person_ref"]) == 64


def test_refusals_are_one_clean_line_with_the_status_name(node: Served) -> None:
    result = timebank("node", "balance", "999999", "--node", node.address)
    assert result.returncode == 1
    assert result.stdout == ""
    assert_one_clean_line(result.stderr, "NOT_FOUND: ")
    assert "999999" in result.stderr

    bad_id = cli("node", "enrol", "--name", "张三", "--id-number", "320115194001010000",
                 "--node", node.address)
    assert bad_id.exit_code == 1
    assert_one_clean_line(bad_id.stderr, "INVALID_ARGUMENT: ")
    assert "MALFORMED_ID_NUMBER" in bad_id.stderr


def test_an_order_through_to_verified(node: Served) -> None:
    n = ["--node", node.address]
    point = cli_json("node", "service-point", "add", "--code", "JN-DS-01",
                     "--name", "东山街道服务点", "--street", "东山街道", *n)
    staff = cli_json("node", "staff", "add", "--name", "陈静", "--service-point",
                     str(point["id"]), *n)
    volunteer = cli_json("node", "enrol", "--name", "赵敏", "--id-number", id_card(1980), *n)
    elder = cli_json("node", "enrol", "--name", "王建国", "--id-number", id_card(1948),
                     "--priority", "--service-point", str(point["id"]), *n)
    assert elder["priority"] is True and elder["name"] == "王建国"
    sid, vid, eid = str(staff["id"]), str(volunteer["id"]), str(elder["id"])

    granted = cli_json("node", "grant", eid, "--minutes", "600", "--staff", sid,
                       "--memo", "重点老人补贴", *n)
    assert granted["kind"] == "grant" and sum(p["minutes"] for p in granted["postings"]) == 0

    requested = cli("node", "order", "request", "--recipient", eid, "--category", "助洁",
                    "--minutes", "90", "--paid-by", "own", "--by-staff", sid, *n)
    assert requested.exit_code == 0, requested.output
    assert "requested" in requested.stdout and "王建国" in requested.stdout
    order = cli_json("node", "order", "list", "--person", eid, *n)["orders"][-1]
    oid = str(order["id"])
    assert order["state"] == "requested" and order["category_name"] == "助洁"

    accepted = cli_json("node", "order", "accept", oid, "--volunteer", vid, *n)
    assert accepted["state"] == "accepted" and accepted["held_minutes"] == 90
    too_soon = cli("node", "order", "check-in", oid, "--at", now_minus(80), *n)
    assert too_soon.exit_code == 1  # 80 minutes before now is before the request
    assert_one_clean_line(too_soon.stderr, "INVALID_ARGUMENT: 签到时间早于下单时间")
    assert "CHECK_IN_BEFORE_REQUEST" in too_soon.stderr
    later(120)  # the service is entered two hours after the request, when it is over
    cli_json("node", "order", "check-in", oid, "--at", now_minus(80), *n)
    checked_out = cli_json("node", "order", "check-out", oid, *n)
    assert 80 <= checked_out["measured_minutes"] <= 81
    verified = cli("node", "order", "verify", oid, "--rating", "5", "--comment", "很干净",
                   "--by-person", eid, *n)
    assert verified.exit_code == 0, verified.output
    assert "verified" in verified.stdout and "★★★★★" in verified.stdout
    shown = cli_json("node", "order", "show", oid, *n)
    assert shown["state"] == "verified" and shown["rating"] == 5
    assert shown["public_until"] is not None

    too_early = cli("node", "order", "record", oid, *n)
    assert too_early.exit_code == 1
    assert_one_clean_line(too_early.stderr, "FAILED_PRECONDITION: ")
    assert "publicity" in too_early.stderr

    balance = cli("node", "balance", eid, *n)
    assert balance.exit_code == 0, balance.output
    assert "王建国" in balance.stdout and "10.00 h" in balance.stdout
    assert "8.50 h" in balance.stdout and "510" in balance.stdout  # 1.50 h held
    as_json = cli_json("node", "balance", eid, *n)
    assert (as_json["total_minutes"], as_json["held_minutes"],
            as_json["available_minutes"]) == (600, 90, 510)
    assert {"origin": "granted", "total_minutes": 600, "held_minutes": 90} in \
        as_json["by_origin"]

    history = cli("node", "history", eid, *n)
    assert history.exit_code == 0, history.output
    assert "重点老人补贴" in history.stdout and "+10.00 h" in history.stdout
    entries = cli_json("node", "history", eid, *n)["entries"]
    assert [e["delta_minutes"] for e in entries] == [600]
    assert cli_json("node", "history", eid, "--newest-first", "--limit", "30",
                    *n)["entries"] == entries
    mixed = cli("node", "history", eid, "--before", "5", *n)
    assert mixed.exit_code == 1 and "BEFORE_SEQ_NEEDS_NEWEST_FIRST" in mixed.stderr

    listed = cli("node", "order", "list", "--state", "verified", *n)
    assert listed.exit_code == 0 and "王建国" in listed.stdout

    report = cli_json("node", "check", *n)
    assert report["ok"] is True and report["granted_minutes"] >= 600


def test_cancel_releases_the_hold_and_link_records_family(node: Served) -> None:
    n = ["--node", node.address]
    daughter = cli_json("node", "enrol", "--name", "孙丽", "--id-number", id_card(1965), *n)
    mother = cli_json("node", "enrol", "--name", "周桂芳", "--id-number", id_card(1938),
                      "--priority", *n)
    helper = cli_json("node", "enrol", "--name", "吴涛", "--id-number", id_card(1990), *n)
    linked = cli("node", "link", str(daughter["id"]), str(mother["id"]), "--as", "parent", *n)
    assert linked.exit_code == 0, linked.output
    assert "周桂芳" in linked.stdout and "parent" in linked.stdout
    # each record lists the link from its own side: the mother's daughter is her child
    shown = cli("node", "person", str(mother["id"]), *n)
    assert shown.exit_code == 0, shown.output
    row = next(line for line in shown.stdout.splitlines() if "孙丽" in line)
    assert f"(person {daughter['id']})" in row and "child" in row
    links = cli_json("node", "person", str(daughter["id"]), *n)["links"]
    assert [(k["other_id"], k["kind"], k["acts_for_other"]) for k in links] == [
        (mother["id"], "parent", False)]

    no_hours = cli("node", "order", "request", "--recipient", str(mother["id"]),
                   "--category", "meals", "--minutes", "60", "--paid-by", "relative",
                   "--payer", str(daughter["id"]), "--by-person", str(daughter["id"]), *n)
    assert no_hours.exit_code == 1
    assert_one_clean_line(no_hours.stderr, "FAILED_PRECONDITION: ")

    order = cli_json("node", "order", "request", "--recipient", str(mother["id"]),
                     "--category", "助餐", "--minutes", "60", "--paid-by", "city-grant",
                     "--by-person", str(daughter["id"]), *n)
    cli_json("node", "order", "accept", str(order["id"]), "--volunteer", str(helper["id"]), *n)
    cancelled = cli_json("node", "order", "cancel", str(order["id"]), "--reason", "住院了",
                         "--by-person", str(daughter["id"]), *n)
    assert cancelled["state"] == "cancelled"
    assert cancelled["held_minutes"] == 0  # released: nothing is held any more
    assert cancelled["cancel_reason"] == f"已取消 (cancelled by person:{daughter['id']}: 住院了)"
    assert cancelled["cancelled_at"] is not None
    shown = cli("node", "order", "show", str(order["id"]), *n)
    assert "why cancelled" in shown.stdout and "住院了" in shown.stdout
    assert "held" not in shown.stdout.replace("household", "")
    again = cli("node", "order", "cancel", str(order["id"]), "--by-person",
                str(daughter["id"]), *n)
    assert again.exit_code == 1
    assert_one_clean_line(again.stderr, "FAILED_PRECONDITION: ")


def test_person_update_and_show(node: Served) -> None:
    n = ["--node", node.address]
    point = cli_json("node", "service-point", "add", "--code", "JN-PU-01", "--name", "服务点",
                     *n)
    desk = cli_json("node", "staff", "add", "--name", "陈静", "--service-point",
                    str(point["id"]), *n)
    elder = cli_json("node", "enrol", "--name", "钱老太", "--id-number", id_card(1937),
                     "--phone", "13800001111", *n)
    updated = cli("node", "person", "update", str(elder["id"]), "--staff", str(desk["id"]),
                  "--priority", "--phone", "13900002222", "--reason", "民政局复核", *n)
    assert updated.exit_code == 0, updated.output
    text = " ".join(updated.stdout.split())
    assert f"updated person {elder['id']}" in text and "yes (重点老人)" in text
    assert "13900002222" in text and f"staff:{desk['id']}" in text
    assert "priority elder (重点老人): no → yes; phone: …1111 → …2222 (民政局复核)" in text
    shown = cli_json("node", "person", str(elder["id"]), *n)  # `person ID` still shows
    assert shown["priority"] is True and shown["phone"] == "13900002222"
    # enrolled by the operator, updated by the staff member: each as logged in
    assert [c["actor"] for c in shown["changes"]][-1] == f"staff:{desk['id']}"
    assert shown["changes"][0]["kind"] == "enrol"
    assert cli_json("node", "person", "show", str(elder["id"]), *n) == shown

    nothing = timebank("node", "person", "update", str(elder["id"]), "--staff",
                       str(desk["id"]), *n)
    assert nothing.returncode == 1
    assert_one_clean_line(nothing.stderr, "INVALID_ARGUMENT: ")
    assert "[NOTHING_TO_UPDATE]" in nothing.stderr
    bad_phone = cli("node", "person", "update", str(elder["id"]), "--staff", str(desk["id"]),
                    "--phone", "电话", *n)
    assert bad_phone.exit_code == 1
    assert_one_clean_line(bad_phone.stderr, "INVALID_ARGUMENT: ")
    assert "MALFORMED_PHONE" in bad_phone.stderr
    # a misspelt name corrected and the person taken into the staff member's point
    fixed = cli_json("node", "person", "update", str(elder["id"]), "--staff", str(desk["id"]),
                     "--name", "钱老太太", "--service-point", str(point["id"]), "--reason",
                     "登记时录错", *n)
    assert (fixed["name"], fixed["service_point_id"]) == ("钱老太太", point["id"])
    assert fixed["changes"][-1]["detail"] == (f"name: 钱老太 → 钱老太太; service point: "
                                              f"(none) → service point {point['id']} (登记时录错)")
    no_reason = cli("node", "person", "update", str(elder["id"]), "--staff", str(desk["id"]),
                    "--name", "钱某", *n)
    assert no_reason.exit_code == 1 and "NAME_NEEDS_REASON" in no_reason.stderr
    away = cli("node", "person", "update", str(elder["id"]), "--staff", str(desk["id"]),
               "--service-point", "0", *n)
    assert away.exit_code == 1 and "MOVE_NOT_ALLOWED" in away.stderr
    assert "update" in cli("node", "person", "--help").stdout


def test_idempotency_keys(node: Served) -> None:
    n = ["--node", node.address]
    number = id_card(1970)
    first = cli_json("node", "enrol", "--name", "钱伟", "--id-number", number,
                     "--idempotency-key", "enrol-qian-wei", *n)
    retry = cli_json("node", "enrol", "--name", "钱伟", "--id-number", number,
                     "--idempotency-key", "enrol-qian-wei", *n)
    assert retry == first
    other = cli("node", "enrol", "--name", "钱伟伟", "--id-number", number,
                "--idempotency-key", "enrol-qian-wei", *n)
    assert other.exit_code == 1
    assert_one_clean_line(other.stderr, "ALREADY_EXISTS: ")
    twice = cli("node", "enrol", "--name", "钱伟", "--id-number", number, *n)
    assert twice.exit_code == 1
    assert_one_clean_line(twice.stderr, "ALREADY_EXISTS: ")


def test_hours_outside_the_service_loop_refuse_bad_amounts(node: Served) -> None:
    n = ["--node", node.address]
    person = cli_json("node", "enrol", "--name", "郑强", "--id-number", id_card(1975), *n)
    # a staff member of its own: the test does not lean on what other tests made
    point = cli_json("node", "service-point", "add", "--code", "JN-TEST-09", "--name",
                     "麒麟服务点", *n)
    sid = str(cli_json("node", "staff", "add", "--name", "吴刚", "--service-point",
                       str(point["id"]), *n)["id"])
    for minutes in ("0", "-5"):
        result = cli("node", "donate", str(person["id"]), "--minutes", minutes, *n)
        assert result.exit_code == 1
        assert_one_clean_line(result.stderr, "INVALID_ARGUMENT: ")
    not_priority = cli("node", "grant", str(person["id"]), "--minutes", "60", "--staff", sid,
                       *n)
    assert not_priority.exit_code == 1
    assert_one_clean_line(not_priority.stderr, "")
    missing = cli("node", "reverse", "99999", "--staff", sid, "--reason", "typo", *n)
    assert missing.exit_code == 1
    assert_one_clean_line(missing.stderr, "NOT_FOUND: ")


def test_policy(node: Served) -> None:
    policy = cli_json("node", "policy", "--node", node.address)
    assert policy["rounding_unit_minutes"] == 15 and policy["publicity_days"] == 7
    assert {"code": "cleaning", "name": "助洁"} in policy["categories"]
    shown = cli("node", "policy", "--node", node.address)
    assert shown.exit_code == 0 and "助餐" in shown.stdout and "7 days" in shown.stdout
    assert not policy.get("city_serial") and "local policy file" in shown.stdout


def test_check_on_the_database_while_the_node_runs(node: Served) -> None:
    result = cli("node", "check", "--config", str(node.config))
    assert result.exit_code == 0, result.output
    assert "every invariant holds" in result.stdout


def test_serve_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    config = init_node(tmp_path / "node")
    served = start_serving(config, tmp_path / "serve.log")
    # The operator's first account is made at the node's machine; she logs in, and the
    # session kept for that node (readable only by her) is sent by later commands.
    env = {"TIMEBANK_TOKEN": "", "XDG_STATE_HOME": str(tmp_path / "state"),
           "TIMEBANK_PASSWORD": "a long enough password"}
    made = timebank("node", "account", "add", "--config", str(config), "--role", "operator",
                    "--login", "wang", "--password", env=env)
    assert made.returncode == 0, made.stderr
    refused = timebank("node", "enrol", "--name", "冯芳", "--id-number", id_card(1950),
                       "--node", served.address, env=env)
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr
    logged_in = timebank("node", "login", "--login", "wang", "--node", served.address, env=env)
    assert logged_in.returncode == 0, logged_in.stderr
    kept = next((tmp_path / "state" / "timebank" / "sessions").iterdir())
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    whoami = timebank("node", "whoami", "--node", served.address, env=env)
    assert whoami.returncode == 0 and "operator:1 (operator" in whoami.stdout, whoami.stderr
    enrolled = timebank("node", "enrol", "--name", "冯芳", "--id-number", id_card(1950),
                        "--node", served.address, env=env)
    assert enrolled.returncode == 0, enrolled.stderr
    assert timebank("node", "logout", "--node", served.address, env=env).returncode == 0
    assert not kept.exists()
    assert stop(served) == 0
    log = served.log.read_text(encoding="utf-8")
    assert "Traceback" not in log


def test_dispute_resolve_and_reverse(node: Served) -> None:
    n = ["--node", node.address]
    point = cli_json("node", "service-point", "add", "--code", "JN-TEST-02", "--name", "秣陵服务点",
                     *n)
    sid = str(cli_json("node", "staff", "add", "--name", "黄磊", "--service-point",
                       str(point["id"]), *n)["id"])
    volunteer = str(cli_json("node", "enrol", "--name", "何静", "--id-number", id_card(1972),
                             *n)["id"])
    elder = str(cli_json("node", "enrol", "--name", "林秀珍", "--id-number", id_card(1939),
                         "--priority", *n)["id"])
    grant = cli_json("node", "grant", elder, "--minutes", "120", "--staff", sid, *n)
    oid = str(cli_json("node", "order", "request", "--recipient", elder, "--category", "助聊",
                       "--minutes", "30", "--paid-by", "own", "--by-person", elder, *n)["id"])
    cli_json("node", "order", "accept", oid, "--volunteer", volunteer, *n)
    later(40)
    cli_json("node", "order", "check-in", oid, "--at", now_minus(30), *n)
    cli_json("node", "order", "check-out", oid, *n)
    cli_json("node", "order", "verify", oid, "--rating", "2", "--by-staff", sid, *n)
    disputed = cli_json("node", "order", "dispute", oid, "--reason", "只待了十分钟",
                        "--by-person", elder, *n)
    assert disputed["state"] == "disputed" and disputed["dispute_reason"] == "只待了十分钟"
    resolved = cli("node", "order", "resolve", oid, "--staff", sid, "--outcome", "void",
                   "--resolution", "回访核实，服务无效", *n)
    assert resolved.exit_code == 0, resolved.output
    assert "cancelled" in resolved.stdout and "回访核实" in resolved.stdout
    assert cli_json("node", "balance", elder, *n)["held_minutes"] == 0

    reversed_ = cli("node", "reverse", str(grant["seq"]), "--staff", sid, "--reason",
                    "录入错误", *n)
    assert reversed_.exit_code == 0, reversed_.output
    assert f"entry {grant['seq']} reversed" in reversed_.stdout
    assert cli_json("node", "balance", elder, *n)["total_minutes"] == 0
    twice = cli("node", "reverse", str(grant["seq"]), "--staff", sid, "--reason", "again", *n)
    assert twice.exit_code == 1
    assert_one_clean_line(twice.stderr, "ALREADY_EXISTS: ")


def test_consent_grant_list_revoke(node: Served) -> None:
    """`node consent`: staff record a daughter's consent for her mother; the refusal
    without it is one clean line; revoke and list say what happened, Chinese first."""
    n = ["--node", node.address]
    point = cli_json("node", "service-point", "add", "--code", "JN-CS-01", "--name", "服务点",
                     *n)
    desk = cli_json("node", "staff", "add", "--name", "陈静", "--service-point",
                    str(point["id"]), *n)
    daughter = cli_json("node", "enrol", "--name", "孙丽", "--id-number", id_card(1965), *n)
    mother = cli_json("node", "enrol", "--name", "周桂芳", "--id-number", id_card(1938), *n)
    cli_json("node", "link", str(daughter["id"]), str(mother["id"]), "--as", "parent", *n)
    request = ("node", "order", "request", "--recipient", str(mother["id"]), "--category",
               "meals", "--minutes", "60", "--paid-by", "relative", "--payer",
               str(daughter["id"]), "--by-staff", str(desk["id"]), *n)
    refused = cli(*request)
    assert refused.exit_code == 1
    assert_one_clean_line(refused.stderr, "FAILED_PRECONDITION: 付款人未同意")
    assert "NO_CONSENT" in refused.stderr and "孙丽" not in refused.stderr

    granted = cli("node", "consent", "grant", "--payer", str(daughter["id"]), "--to",
                  str(mother["id"]), "--max-minutes", "120", "--until", "2099-01-01",
                  "--by-staff", str(desk["id"]), *n)
    assert granted.exit_code == 1  # more than a year ahead
    assert_one_clean_line(granted.stderr, "INVALID_ARGUMENT: 同意最长")
    granted = cli("node", "consent", "grant", "--payer", str(daughter["id"]), "--to",
                  str(mother["id"]), "--max-minutes", "120", "--by-staff", str(desk["id"]), *n)
    assert granted.exit_code == 0, granted.output
    assert granted.stdout.startswith("已登记同意 1") and "长期同意" in granted.stdout
    assert f"staff:{desk['id']} for person:{daughter['id']}" in granted.stdout
    listed = cli_json("node", "consent", "list", "--payer", str(daughter["id"]), *n)
    assert [(c["id"], c["state"], c["max_minutes"]) for c in listed] == [(1, "active", 120)]
    revoked = cli("node", "consent", "revoke", "1", "--by-person", str(daughter["id"]), *n)
    assert revoked.exit_code == 0 and revoked.stdout.startswith("已撤销同意 1")
    again = cli("node", "consent", "revoke", "1", "--by-person", str(daughter["id"]), *n)
    assert again.exit_code == 1
    assert_one_clean_line(again.stderr, "FAILED_PRECONDITION: 同意 1 已撤销")
    neither = cli("node", "consent", "grant", "--payer", str(daughter["id"]), "--by-staff",
                  str(desk["id"]), *n)
    assert neither.exit_code != 0 and "--to" in neither.stderr
    # a relative enrolled in another district, named by the ID card number she knows
    father = id_card(1936, "320106")
    both = cli("node", "consent", "grant", "--payer", str(daughter["id"]), "--to",
               str(mother["id"]), "--to-id-number", father, "--by-staff", str(desk["id"]), *n)
    assert both.exit_code != 0 and "--to-id-number" in both.stderr
    by_number = cli_json("node", "consent", "grant", "--payer", str(daughter["id"]),
                         "--to-id-number", father, "--by-staff", str(desk["id"]), *n)
    assert by_number["grantee_id"] == 0 and len(by_number["grantee_ref"]) == 64


def test_serve_refuses_plaintext_unless_insecure_which_warns(tmp_path: Path) -> None:
    init = cli("node", "init", "--data-dir", str(tmp_path / "node"), "--node-id", "320115",
               "--district", "江宁区")
    assert init.exit_code == 0, init.output
    config = tmp_path / "node" / "node.toml"
    address = f"127.0.0.1:{free_port()}"
    env = {"TIMEBANK_SERVER_LISTEN": address, "TIMEBANK_SERVER_METRICS_LISTEN": ""}
    refused = timebank("node", "serve", "--config", str(config), env=env)
    assert refused.returncode == 1
    assert_one_clean_line(refused.stderr, "node 320115 未配置 TLS：请在 [tls] 中设置 cert, key")
    assert "--insecure" in refused.stderr
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "city", "node", "serve", "--config", str(config),
             "--insecure"], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, **env})
    served = Served(address, config, process, log)
    try:
        wait_serving(address, process, log, None)
    finally:
        assert stop(served) == 0
    said = log.read_text(encoding="utf-8")
    serving = [e for e in json_lines(said) if e["event"] == "node serving"]
    assert "WITHOUT TLS because of --insecure" in said and serving[0]["tls"] is False
    assert said.index("WITHOUT TLS") < said.index("node serving")


def test_accounts_and_program_tokens_from_the_node_machine(tmp_path: Path) -> None:
    """`node token issue` prints a program's token once; the node takes it as that
    program until `node token revoke`; `node account add` prints a one-time code.

    On a node of its own, on real time: a one-time code lasts 15 minutes, and the
    module's node runs ahead on its dev clock."""
    node = start_serving(init_node(tmp_path / "data"), tmp_path / "serve.log")
    try:
        config = str(node.config)
        issued = cli("node", "token", "issue", "--config", config, "--program", "kiosk",
                     "--scope", "orders", "--scope", "read", "--expires-days", "30")
        assert issued.exit_code == 0, issued.output
        token = issued.stdout.strip().splitlines()[-1]
        who = timebank("node", "whoami", "--node", node.address, env={"TIMEBANK_TOKEN": token})
        assert who.returncode == 0 and "program:kiosk (program" in who.stdout, who.stderr
        listed = cli_json("node", "account", "list", "--config", config)
        assert {"login": "kiosk", "role": "program", "scopes": ["orders", "read"]}.items() <= \
            next(a for a in listed if a["login"] == "kiosk").items()
        assert cli("node", "token", "revoke", "--config", config, "--program", "kiosk"
                   ).exit_code == 0
        refused = timebank("node", "whoami", "--node", node.address,
                           env={"TIMEBANK_TOKEN": token})
        assert refused.returncode == 1
        assert_one_clean_line(refused.stderr, "UNAUTHENTICATED: ")
        added = cli("node", "account", "add", "--config", config, "--role", "auditor",
                    "--login", "audit-li")
        assert added.exit_code == 0, added.output
        code = added.stdout.split("one-time code")[1].split()[0]
        assert len(code) == 6 and code.isdigit()
        logged = timebank("node", "login", "--login", "audit-li", "--code", "--node",
                          node.address, input_text=code,
                          env={"TIMEBANK_TOKEN": "", "XDG_STATE_HOME": str(tmp_path)})
        assert logged.returncode == 0 and "auditor" in logged.stdout, logged.stderr
        # --json: one object on stdout, nothing else, and what it gives works
        as_json = cli_json("node", "token", "issue", "--config", config, "--program", "board",
                           "--scope", "read")
        assert (as_json["program"], as_json["scopes"], as_json["expires_days"]) == (
            "board", ["read"], 90)
        who = timebank("node", "whoami", "--node", node.address,
                       env={"TIMEBANK_TOKEN": as_json["token"]})
        assert who.returncode == 0 and "program:board" in who.stdout, who.stderr
        made = cli_json("node", "account", "add", "--config", config, "--role", "auditor",
                        "--login", "audit-wu")
        assert (made["login"], made["role"], made["code_valid_minutes"]) == (
            "audit-wu", "auditor", 15)
        again = cli_json("node", "account", "code", "--config", config, "--login",
                         "audit-wu")
        assert again["login"] == "audit-wu" and len(again["one_time_code"]) == 6
        logged = timebank("node", "login", "--login", "audit-wu", "--code", "--node",
                          node.address, input_text=again["one_time_code"],
                          env={"TIMEBANK_TOKEN": "", "XDG_STATE_HOME": str(tmp_path)})
        assert logged.returncode == 0 and "auditor" in logged.stdout, logged.stderr
    finally:
        stop(node)
