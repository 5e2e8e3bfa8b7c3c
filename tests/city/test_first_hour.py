"""A bureau's and an operator's first hour: the city secret and the draft policy the
bureau issues, `--json` on every command that prints keys or ids, a default net debit
limit at admission, and inits that leave nothing behind when they fail.

Each test runs its first steps as real `timebank` processes (exit codes, stdout holding
one JSON document and nothing else) and the rest in-process, the same command line
(a process takes seconds to start on a loaded machine)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from city.cli import app
from runtime import keyfiles
from timebank.policy import DEFAULT_POLICY_TOML, load_policy

ROOT = Path(__file__).resolve().parents[2]
#: Nothing listens on port 1: a database that refuses the connection at once.
UNREACHABLE_PG = "postgresql+psycopg://nobody@127.0.0.1:1/nowhere"


@pytest.fixture(autouse=True)
def _here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the in-process runs see the same relative paths
    monkeypatch.setenv("COLUMNS", "200")


def timebank(*args: str | Path, cwd: Path, real: bool = False,
             ) -> subprocess.CompletedProcess[str]:
    """`timebank ARGS` in ``cwd``: a real process, or in-process (the same app)."""
    argv = [str(a) for a in args]
    if real:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIMEBANK_NODE_")}
        return subprocess.run([sys.executable, "-m", "city", *argv], capture_output=True,
                              text=True, encoding="utf-8", timeout=120, cwd=cwd,
                              env={**env, "COLUMNS": "200"})
    assert Path.cwd() == cwd
    result = CliRunner().invoke(app, argv)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(argv, result.exit_code, result.stdout, result.stderr)


def ok_json(*args: str | Path, cwd: Path, real: bool = False) -> Any:
    """Run with --json: exit 0 and stdout is exactly one JSON document."""
    done = timebank(*args, "--json", cwd=cwd, real=real)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def one_line_refusal(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    return lines[0]


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_the_bureau_issues_the_city_secret_and_a_draft_policy(tmp_path: Path) -> None:
    made = ok_json("clearinghouse", "city-secret", "--out", "city-secret", cwd=tmp_path,
                   real=True)
    secret = tmp_path / "city-secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    data = keyfiles.read_city_secret(secret)
    assert len(data) == made["bytes"] == 32
    assert made["fingerprint"] == keyfiles.secret_fingerprint(data)
    assert made["city_secret_file"] == "city-secret"
    again = timebank("clearinghouse", "city-secret", "--out", "city-secret", cwd=tmp_path,
                     real=True)
    assert "already exists" in one_line_refusal(again)
    assert secret.read_bytes() == data  # never overwritten

    drafted = ok_json("clearinghouse", "policy", "init", "--out", "policy.toml", cwd=tmp_path,
                      real=True)
    text = (tmp_path / "policy.toml").read_text(encoding="utf-8")
    assert drafted["policy_file"] == "policy.toml"
    assert "policy issue" in text and "[settlement]" in text  # says what to do next
    draft, published = load_policy(text), load_policy(DEFAULT_POLICY_TOML)
    assert draft.digest == drafted["sha256"]
    # the comments change no setting: the draft is the published policy
    for setting in ("rounding_unit_minutes", "cap_minutes", "publicity_days", "categories",
                    "settlement", "relative_kinds", "max_order_minutes"):
        assert getattr(draft, setting) == getattr(published, setting), setting
    refused = timebank("clearinghouse", "policy", "init", "--out", "policy.toml", cwd=tmp_path)
    assert "already exists" in one_line_refusal(refused)

    # the bureau's draft is what `policy issue` signs, and a node takes both files
    ch = ok_json("clearinghouse", "init", "--data-dir", "ch", cwd=tmp_path)
    issued = timebank("clearinghouse", "policy", "issue", "-c", ch["config"], "--file",
                      "policy.toml", cwd=tmp_path)
    assert issued.returncode == 0, issued.stderr
    assert drafted["sha256"] in " ".join(issued.stdout.split())
    node = ok_json("node", "init", "--data-dir", "jn", "--node-id", "320115", "--district",
                   "江宁区", "--policy", "policy.toml", "--city-secret", "city-secret",
                   cwd=tmp_path)
    assert node["city_secret_fingerprint"] == made["fingerprint"]
    assert node["policy_sha256"] == drafted["sha256"]


def test_init_and_admit_print_keys_as_json_and_admission_gives_a_limit(
        tmp_path: Path) -> None:
    ch = ok_json("clearinghouse", "init", "--data-dir", "ch", cwd=tmp_path, real=True)
    assert ch["config_created"] is True and ch["schema"]
    for key in ("city_key", "clearinghouse_key"):
        assert ch[key]["created"] is True and len(ch[key]["public_key"]) == 64
        assert stat.S_IMODE(Path(ch[key]["file"]).stat().st_mode) == 0o600
    kept = ok_json("clearinghouse", "init", "--data-dir", "ch", cwd=tmp_path)
    assert kept["clearinghouse_key"] == {**ch["clearinghouse_key"], "created": False}
    config = ch["config"]

    jn = ok_json("node", "init", "--data-dir", "jn", "--node-id", "320115", "--district",
                 "江宁区", "--clearinghouse", "127.0.0.1:7400", "--clearinghouse-key",
                 ch["clearinghouse_key"]["public_key"], "--city-key",
                 ch["city_key"]["public_key"], cwd=tmp_path, real=True)
    assert (jn["node_id"], jn["district"]) == ("320115", "江宁区")
    assert sorted(jn["created"]) == ["config", "key", "policy", "secret"]
    gl = ok_json("node", "init", "--data-dir", "gl", "--node-id", "320106", "--district",
                 "鼓楼区", cwd=tmp_path)

    admitted = ok_json("clearinghouse", "admit", "-c", config, "--node-id", "320115",
                       "--district", "江宁区", "--public-key", jn["public_key"], cwd=tmp_path,
                       real=True)
    assert (admitted["key_id"], admitted["changed"]) == (jn["key_id"], True)
    assert admitted["net_debit_limit_minutes"] == 60_000  # the documented default
    assert admitted["roster_epoch"] == 1
    shown = timebank("clearinghouse", "admit", "-c", config, "--node-id", "320106",
                     "--district", "鼓楼区", "--public-key", gl["public_key"],
                     "--net-debit-limit", "90", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    said = " ".join(shown.stdout.split())
    assert "net debit limit 1.50 h (90 min)" in said and "clearinghouse limit" in said
    assert "(Asia/Shanghai)" in said and "UTC" not in said

    # admitting again keeps the limit the bureau set, unless it says another
    same = ok_json("clearinghouse", "admit", "-c", config, "--node-id", "320106",
                   "--district", "鼓楼区", "--public-key", gl["public_key"], cwd=tmp_path)
    assert (same["changed"], same["net_debit_limit_minutes"]) == (False, 90)
    zero = ok_json("clearinghouse", "admit", "-c", config, "--node-id", "320106",
                   "--district", "鼓楼区", "--public-key", gl["public_key"],
                   "--net-debit-limit", "0", cwd=tmp_path)
    assert zero["net_debit_limit_minutes"] == 0
    positions = ok_json("clearinghouse", "positions", "-c", config, cwd=tmp_path)
    assert {n["node_id"]: n["net_debit_limit_minutes"] for n in positions["nodes"]} == {
        "320115": 60_000, "320106": 0}
    revoked = ok_json("clearinghouse", "revoke", "-c", config, "--node-id", "320106",
                      "--key-id", gl["key_id"], "--reason", "disk stolen", cwd=tmp_path)
    assert (revoked["key_id"], revoked["revoked"]) == (gl["key_id"], True)
    assert revoked["admission"]["revoked_at"] is not None
    assert revoked["roster_epoch"] == 3  # 江宁区, 鼓楼区, then 鼓楼区 without its key
    root = ok_json("city", "keygen", "--out", "next-root.key", cwd=tmp_path)
    assert len(root["public_key"]) == 64 and len(root["key_id"]) == 16
    helped = timebank("clearinghouse", "admit", "--help", cwd=tmp_path)
    assert "--net-debit-limit" in helped.stdout and "60000" in helped.stdout

    ca = ok_json("pki", "init", "--dir", "pki", cwd=tmp_path)
    assert Path(tmp_path / ca["ca_cert"]).is_file() and Path(tmp_path / ca["crl"]).is_file()
    leaf = ok_json("pki", "issue-node", "--dir", "pki", "--node-id", "320115", "--ip",
                   "127.0.0.1", cwd=tmp_path)
    assert leaf["name"] == "node-320115" and Path(tmp_path / leaf["key"]).is_file()
    listed = timebank("pki", "list", "--dir", "pki", cwd=tmp_path)
    assert "(Asia/Shanghai)" in listed.stdout


def test_a_failed_node_init_leaves_no_file(tmp_path: Path) -> None:
    ok_json("clearinghouse", "city-secret", "--out", "secret", cwd=tmp_path)
    ok_json("clearinghouse", "policy", "init", "--out", "policy.toml", cwd=tmp_path)
    etc = tmp_path / "etc"
    etc.mkdir()
    config = etc / "node.toml"
    var = tmp_path / "var" / "jn"
    config.write_text(f'''[node]
node_id = "320115"
district = "江宁区"
data_dir = "{var}"
database_url = ""
policy_file = "{var / "policy.toml"}"
city_secret_file = "{var / "city-secret"}"
signing_key_file = "{var / "node.key"}"
''', encoding="utf-8")

    # no policy, no secret: refused before anything is written
    refused = timebank("node", "init", "--config", config, cwd=tmp_path, real=True)
    line = one_line_refusal(refused)
    assert "policy" in line and "--policy FILE" in line
    assert not (tmp_path / "var").exists() and files_under(etc) == ["node.toml"]
    refused = timebank("node", "init", "--config", config, "--policy", "policy.toml",
                       cwd=tmp_path)
    assert "--city-secret FILE" in one_line_refusal(refused)
    assert not (tmp_path / "var").exists()

    done = ok_json("node", "init", "--config", config, "--policy", "policy.toml",
                   "--city-secret", "secret", cwd=tmp_path)
    assert sorted(done["created"]) == ["key", "policy", "secret"]
    assert Path(done["signing_key_file"]).is_file()
    again = ok_json("node", "init", "--config", config, cwd=tmp_path)
    assert again["created"] == [] and again["public_key"] == done["public_key"]

    # a database that refuses: the files this run wrote are removed again
    refused = timebank("node", "init", "--data-dir", "gl", "--node-id", "320106",
                       "--district", "鼓楼区", "--database-url", UNREACHABLE_PG, cwd=tmp_path,
                       real=True)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert not (tmp_path / "gl").exists()
    (tmp_path / "qx").mkdir()  # a directory the operator made is kept, empty
    refused = timebank("node", "init", "--data-dir", "qx", "--node-id", "320113",
                       "--district", "栖霞区", "--database-url", UNREACHABLE_PG, cwd=tmp_path)
    assert refused.returncode == 1 and files_under(tmp_path / "qx") == []


def test_a_failed_clearinghouse_init_leaves_no_file(tmp_path: Path) -> None:
    refused = timebank("clearinghouse", "init", "--data-dir", "ch", "--database-url",
                       UNREACHABLE_PG, cwd=tmp_path, real=True)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert not (tmp_path / "ch").exists()
    made = ok_json("clearinghouse", "init", "--data-dir", "ch", cwd=tmp_path)
    assert made["city_key"]["created"] and made["clearinghouse_key"]["created"]
