"""`timebank clearinghouse ...`: init, admit, revoke and nodes, in-process with CliRunner.

The tests are the composition root, so they may use both sides: a real `timebank node
init` key is admitted by the bureau, exactly as a city would do it.
"""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from city.cli import app
from clearinghouse.bootstrap import init_city
from clearinghouse.config import load_config
from node.bootstrap import init_data_dir, signing_identity
from node.config import load_config as load_node_config
from runtime import keyfiles
from timebank import keys

runner = CliRunner()


def cli(*args: str) -> Any:
    """Run `timebank ARGS` in-process."""
    return runner.invoke(app, list(args))


def one_line_error(result: Any) -> str:
    """The command failed cleanly: exit 1, one error line, no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return str(lines[0])


@pytest.fixture
def city(tmp_path: Path) -> Path:
    """An initialised clearinghouse; its clearinghouse.toml."""
    result = cli("clearinghouse", "init", "--data-dir", str(tmp_path / "ch"))
    assert result.exit_code == 0, result.output
    return tmp_path / "ch" / "clearinghouse.toml"


def node_key(tmp_path: Path, node_id: str = "320115", district: str = "江宁区") -> tuple[str, str]:
    """(key id, public key hex) of a real node, as `timebank node init` prints them."""
    config_path = init_data_dir(tmp_path / f"node-{node_id}", node_id, district)
    return signing_identity(load_node_config(config_path))


def nodes(config: Path) -> list[dict[str, Any]]:
    result = cli("clearinghouse", "nodes", "--config", str(config), "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert isinstance(found, list)
    return found


def test_init_creates_keys_readable_only_by_owner_and_is_idempotent(tmp_path: Path) -> None:
    data_dir = tmp_path / "ch"
    first = cli("clearinghouse", "init", "--data-dir", str(data_dir))
    assert first.exit_code == 0, first.output
    assert "offline" in first.output
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    city_key, own_key = data_dir / "city-root.key", data_dir / "clearinghouse.key"
    for key_file in (city_key, own_key):
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert len(key_file.read_bytes()) == keys.SEED_LEN
    city_id = keys.key_id(keys.public_key(keyfiles.read_seed(city_key)))
    assert city_id in first.output
    seeds = (city_key.read_bytes(), own_key.read_bytes())

    again = cli("clearinghouse", "init", "--data-dir", str(data_dir))
    assert again.exit_code == 0, again.output
    assert "kept" in again.output and city_id in again.output
    assert (city_key.read_bytes(), own_key.read_bytes()) == seeds
    config = load_config(data_dir / "clearinghouse.toml")
    assert config.listen == "127.0.0.1:7400"
    assert config.city_key_file == city_key.resolve()
    assert nodes(data_dir / "clearinghouse.toml") == []


def test_init_refuses_a_database_serving_another_city(tmp_path: Path) -> None:
    config_path = init_city(tmp_path / "ch")
    city_key = tmp_path / "ch" / "city-root.key"
    city_key.unlink()  # the root key moved offline (ADR 0018): init runs on without it
    result = cli("clearinghouse", "init", "--data-dir", str(tmp_path / "ch"))
    assert result.exit_code == 0, result.output
    assert "offline" in result.output
    assert not city_key.exists()  # not replaced by a new key
    own_key = tmp_path / "ch" / "clearinghouse.key"
    own_key.rename(tmp_path / "elsewhere.key")
    result = cli("clearinghouse", "init", "--data-dir", str(tmp_path / "ch"))
    assert "clearinghouse key file" in one_line_error(result)
    assert not own_key.exists()
    (tmp_path / "elsewhere.key").rename(own_key)
    keyfiles.write_seed(city_key, keys.generate())
    result = cli("clearinghouse", "init", "--data-dir", str(tmp_path / "ch"))
    assert "another city root key" in one_line_error(result)
    assert config_path.exists()


def test_a_node_key_is_admitted_listed_and_readmitting_changes_nothing(
    tmp_path: Path, city: Path
) -> None:
    key_id, public_hex = node_key(tmp_path)
    admit = ("clearinghouse", "admit", "--config", str(city), "--node-id", "320115",
             "--district", "江宁区", "--public-key", public_hex)
    result = cli(*admit)
    assert result.exit_code == 0, result.output
    assert "320115 江宁区" in result.output and key_id in result.output
    [listed] = nodes(city)
    assert listed["node_id"] == "320115" and listed["district"] == "江宁区"
    assert listed["key_id"] == key_id and listed["serial"] == 1
    assert listed["revoked_at"] is None

    again = cli(*admit)
    assert again.exit_code == 0, again.output
    assert "unchanged" in again.output
    assert nodes(city) == [listed]

    table = cli("clearinghouse", "nodes", "--config", str(city))
    assert table.exit_code == 0, table.output
    assert "江宁区" in table.output and key_id in table.output


def test_a_new_key_for_a_node_retires_the_old_one(tmp_path: Path, city: Path) -> None:
    _, first = node_key(tmp_path)
    new_key = keys.public_key(keys.generate())
    for public_hex in (first, new_key.hex()):
        result = cli("clearinghouse", "admit", "--config", str(city), "--node-id", "320115",
                     "--district", "江宁区", "--public-key", public_hex)
        assert result.exit_code == 0, result.output
    assert "retired" in result.output
    [listed] = nodes(city)
    assert listed["serial"] == 2 and listed["key_id"] == keys.key_id(new_key)


@pytest.mark.parametrize(("public_key", "expected"), [
    ("not hex", "must be hex"),
    ("ab" * 31, "not 31 bytes"),
    ("ab" * 33, "not 33 bytes"),
])
def test_a_bad_public_key_is_one_clean_error(city: Path, public_key: str,
                                             expected: str) -> None:
    result = cli("clearinghouse", "admit", "--config", str(city), "--node-id", "320115",
                 "--district", "江宁区", "--public-key", public_key)
    line = one_line_error(result)
    assert "INVALID_ARGUMENT" in line and expected in line and "MALFORMED_PUBLIC_KEY" in line
    assert nodes(city) == []


def test_refusals_by_the_clearinghouse_are_one_clean_error(tmp_path: Path, city: Path) -> None:
    _, public_hex = node_key(tmp_path)
    bad_id = cli("clearinghouse", "admit", "--config", str(city), "--node-id", "32011",
                 "--district", "江宁区", "--public-key", public_hex)
    assert "MALFORMED_NODE_ID" in one_line_error(bad_id)
    assert cli("clearinghouse", "admit", "--config", str(city), "--node-id", "320115",
               "--district", "江宁区", "--public-key", public_hex).exit_code == 0
    same_key = cli("clearinghouse", "admit", "--config", str(city), "--node-id", "320106",
                   "--district", "鼓楼区", "--public-key", public_hex)
    assert "ALREADY_EXISTS" in one_line_error(same_key)
    no_config = cli("clearinghouse", "nodes", "--config", str(tmp_path / "missing.toml"))
    assert "timebank clearinghouse init" in one_line_error(no_config)
    assert len(nodes(city)) == 1


def test_revoke_marks_the_key_and_it_is_never_admitted_again(
    tmp_path: Path, city: Path
) -> None:
    key_id, public_hex = node_key(tmp_path)
    admit = ("clearinghouse", "admit", "--config", str(city), "--node-id", "320115",
             "--district", "江宁区", "--public-key", public_hex)
    assert cli(*admit).exit_code == 0
    result = cli("clearinghouse", "revoke", "--config", str(city), "--node-id", "320115",
                 "--key-id", key_id, "--reason", "the node's disk was stolen")
    assert result.exit_code == 0, result.output
    assert "revoked" in result.output
    [listed] = nodes(city)
    assert listed["revoked_at"] is not None
    table = runner.invoke(app, ["clearinghouse", "nodes", "--config", str(city)],
                          env={"COLUMNS": "200"})  # one row per line, whatever the terminal
    row = table.output.split(key_id, 1)[1].split("\n", 1)[0]
    assert len(re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d", row)) == 2  # revoked column set
    assert "Asia/Shanghai" in table.output and "UTC" not in table.output  # as people read
    assert "KEY_REVOKED" in one_line_error(cli(*admit))


def test_revoking_an_unknown_node_or_key_is_one_clean_error(tmp_path: Path, city: Path) -> None:
    key_id, public_hex = node_key(tmp_path)
    unknown_node = cli("clearinghouse", "revoke", "--config", str(city), "--node-id", "320199",
                       "--key-id", key_id, "--reason", "test")
    line = one_line_error(unknown_node)
    assert "NOT_FOUND" in line and "UNKNOWN_NODE" in line
    assert cli("clearinghouse", "admit", "--config", str(city), "--node-id", "320115",
               "--district", "江宁区", "--public-key", public_hex).exit_code == 0
    unknown_key = cli("clearinghouse", "revoke", "--config", str(city), "--node-id", "320115",
                      "--key-id", "0" * 16, "--reason", "test")
    assert "UNKNOWN_KEY" in one_line_error(unknown_key)
    assert nodes(city)[0]["revoked_at"] is None


def test_the_city_key_must_be_the_one_the_database_serves(tmp_path: Path, city: Path) -> None:
    _, public_hex = node_key(tmp_path)
    other = tmp_path / "other.key"
    keyfiles.write_seed(other, keys.generate())
    result = cli("clearinghouse", "admit", "--config", str(city), "--node-id", "320115",
                 "--district", "江宁区", "--public-key", public_hex)
    assert result.exit_code == 0
    env = {"TIMEBANK_CLEARINGHOUSE_CITY_KEY_FILE": str(other)}
    refused = runner.invoke(app, ["clearinghouse", "revoke", "--config", str(city),
                                  "--node-id", "320115", "--key-id", "0" * 16,
                                  "--reason", "x"], env=env)
    assert "not the city root key" in one_line_error(refused)


def admitted_city(tmp_path: Path, city: Path) -> Path:
    """The city with 江宁区 and 鼓楼区 admitted with net debit limits 0 (the default,
    60,000 min, is tests/city/test_first_hour.py's)."""
    for node_id, district in (("320115", "江宁区"), ("320106", "鼓楼区")):
        _, public_hex = node_key(tmp_path, node_id, district)
        result = cli("clearinghouse", "admit", "--config", str(city), "--node-id", node_id,
                     "--district", district, "--public-key", public_hex,
                     "--net-debit-limit", "0")
        assert result.exit_code == 0, result.output
    return city


def positions(config: Path) -> dict[str, Any]:
    result = cli("clearinghouse", "positions", "--config", str(config), "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert isinstance(found, dict)
    return found


def test_help_names_limit_and_positions() -> None:
    top = cli("clearinghouse", "--help")
    assert "limit" in top.output and "positions" in top.output
    helped = cli("clearinghouse", "limit", "--help")
    assert helped.exit_code == 0
    assert "--node-id" in helped.output and "--minutes" in helped.output
    helped = cli("clearinghouse", "positions", "--help")
    assert helped.exit_code == 0 and "--json" in helped.output


def test_positions_start_with_no_room_until_the_bureau_sets_a_limit(
    tmp_path: Path, city: Path
) -> None:
    admitted_city(tmp_path, city)
    found = positions(city)
    assert found["gross"] == []
    assert [(n["node_id"], n["district"], n["net_minutes"], n["net_debit_limit_minutes"],
             n["used_percent"], n["near_limit"]) for n in found["nodes"]] == [
        ("320106", "鼓楼区", 0, 0, 0, False), ("320115", "江宁区", 0, 0, 0, False)]
    table = cli("clearinghouse", "positions", "--config", str(city))
    assert table.exit_code == 0, table.output
    assert "鼓楼区" in table.output and "江宁区" in table.output
    assert "net debit limit 0" in table.output
    assert "No claim between districts has completed yet" in table.output

    result = cli("clearinghouse", "limit", "--config", str(city), "--node-id", "320115",
                 "--minutes", "60000")
    assert result.exit_code == 0, result.output
    assert "320115 江宁区" in result.output and "1000.00 h (60000 min)" in result.output
    assert "was 0.00 h (0 min)" in result.output
    by_node = {n["node_id"]: n for n in positions(city)["nodes"]}
    assert by_node["320115"]["net_debit_limit_minutes"] == 60_000
    assert by_node["320106"]["net_debit_limit_minutes"] == 0
    table = cli("clearinghouse", "positions", "--config", str(city))
    assert "1000.00 h" in table.output and "320106 鼓楼区" in table.output

    again = cli("clearinghouse", "limit", "--config", str(city), "--node-id", "320115",
                "--minutes", "30")
    assert again.exit_code == 0 and "was 1000.00 h (60000 min)" in again.output


def test_limit_refusals_are_one_clean_error(tmp_path: Path, city: Path) -> None:
    admitted_city(tmp_path, city)
    line = one_line_error(cli("clearinghouse", "limit", "--config", str(city), "--node-id",
                              "320113", "--minutes", "60"))
    assert line.startswith("error: NOT_FOUND:") and "UNKNOWN_NODE" in line
    line = one_line_error(cli("clearinghouse", "limit", "--config", str(city), "--node-id",
                              "12", "--minutes", "60"))
    assert line.startswith("error: INVALID_ARGUMENT:") and "MALFORMED_NODE_ID" in line
    too_much = cli("clearinghouse", "limit", "--config", str(city), "--node-id", "320115",
                   "--minutes", "-1")
    assert too_much.exit_code == 2 and "Traceback" not in too_much.output
    line = one_line_error(cli("clearinghouse", "positions", "--config",
                              str(tmp_path / "missing.toml")))
    assert "missing.toml" in line
