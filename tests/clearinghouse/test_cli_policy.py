"""`timebank clearinghouse policy issue|show`: the bureau signs the city policy; bad
TOML, a past effective time and a stale serial are refused with one clear line."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from clearinghouse.bootstrap import open_app
from clearinghouse.config import load_config
from clearinghouse.usecases import log, policies
from tests.clearinghouse.test_cli import cli, one_line_error
from timebank.citypolicy import read_city_policy
from timebank.envelope import Signed
from timebank.policy import DEFAULT_POLICY_TOML, policy_sha256
from timebank.v1 import clearing_pb2

SHORT = DEFAULT_POLICY_TOML.replace("publicity_days = 7", "publicity_days = 3")


@pytest.fixture
def city(tmp_path: Path) -> Path:
    result = cli("clearinghouse", "init", "--data-dir", str(tmp_path / "ch"))
    assert result.exit_code == 0, result.output
    return tmp_path / "ch" / "clearinghouse.toml"


def write(tmp_path: Path, text: str, name: str = "policy.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def show(config: Path) -> dict[str, Any]:
    result = cli("clearinghouse", "policy", "show", "--config", str(config), "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert isinstance(found, dict)
    return found


def test_issue_now_then_scheduled_and_show_both(city: Path, tmp_path: Path) -> None:
    assert "No city policy is issued yet" in cli(
        "clearinghouse", "policy", "show", "--config", str(city)).output
    first = cli("clearinghouse", "policy", "issue", "--config", str(city),
                "--file", write(tmp_path, DEFAULT_POLICY_TOML))
    assert first.exit_code == 0, first.output
    assert "city policy issued" in first.output and "in force" in first.output
    assert policy_sha256(DEFAULT_POLICY_TOML).hex() in first.output
    later = (datetime.now(UTC) + timedelta(days=30)).astimezone().strftime("%Y-%m-%dT%H:%M%z")
    second = cli("clearinghouse", "policy", "issue", "-c", str(city),
                 "--file", write(tmp_path, SHORT, "short.toml"), "--effective-at", later)
    assert second.exit_code == 0, second.output
    assert "scheduled" in second.output
    found = show(city)["policies"]
    assert [(p["serial"], p["status"], p["sha256"]) for p in found] == [
        (1, "in force", policy_sha256(DEFAULT_POLICY_TOML).hex()),
        (2, "scheduled", policy_sha256(SHORT).hex())]
    table = cli("clearinghouse", "policy", "show", "--config", str(city)).output
    assert "in force" in table and "scheduled" in table

    # what was signed is what the file said, under the city root key, and it is logged
    app = open_app(load_config(city))
    try:
        records = app.query(policies.city_policies)
        from clearinghouse.bootstrap import city_key
        from timebank.keys import public_key

        root = public_key(city_key(load_config(city), app))
        kinds = app.query(lambda tx: [clearing_pb2.LogEntry.FromString(leaf).kind
                                      for leaf in log.log_of(tx).leaves(0, log.log_of(tx)
                                                                        .size())])
    finally:
        app.db.dispose()
    envelope = clearing_pb2.Envelope.FromString(records[1].envelope)
    act = read_city_policy(Signed(envelope.kind, envelope.body, envelope.signer,
                                  envelope.key_id, envelope.signature), root)
    assert act.text == SHORT and act.policy.publicity_days == 3
    assert kinds.count("policy") == 2


def test_bad_toml_is_refused_naming_the_setting(city: Path, tmp_path: Path) -> None:
    bad = write(tmp_path, DEFAULT_POLICY_TOML.replace("publicity_days = 7",
                                                      "publicity_days = -1"))
    line = one_line_error(cli("clearinghouse", "policy", "issue", "-c", str(city),
                              "--file", bad))
    assert "publicity_days must be 0..90" in line
    line = one_line_error(cli("clearinghouse", "policy", "issue", "-c", str(city),
                              "--file", write(tmp_path, "cap_hours = [", "broken.toml")))
    assert "not valid TOML" in line
    assert show(city)["policies"] == []


def test_a_past_effective_time_is_refused(city: Path, tmp_path: Path) -> None:
    line = one_line_error(cli("clearinghouse", "policy", "issue", "-c", str(city),
                              "--file", write(tmp_path, DEFAULT_POLICY_TOML),
                              "--effective-at", "2020-01-01T00:00"))
    assert "in the past" in line and "2020-01-01 00:00:00 (Asia/Shanghai)" in line
    line = one_line_error(cli("clearinghouse", "policy", "issue", "-c", str(city),
                              "--file", write(tmp_path, DEFAULT_POLICY_TOML),
                              "--effective-at", "next tuesday"))
    assert "cannot read the time" in line
    assert show(city)["policies"] == []


def test_a_stale_serial_is_refused(city: Path, tmp_path: Path) -> None:
    policy = write(tmp_path, DEFAULT_POLICY_TOML)
    assert cli("clearinghouse", "policy", "issue", "-c", str(city), "--file", policy
               ).exit_code == 0
    line = one_line_error(cli("clearinghouse", "policy", "issue", "-c", str(city),
                              "--file", write(tmp_path, SHORT, "short.toml"),
                              "--serial", "1"))
    assert "STALE_SERIAL" in line and "serial 2" in line
    line = one_line_error(cli("clearinghouse", "policy", "issue", "-c", str(city),
                              "--file", write(tmp_path, SHORT, "short.toml"),
                              "--serial", "5"))
    assert "SERIAL_GAP" in line
    assert [p["serial"] for p in show(city)["policies"]] == [1]
