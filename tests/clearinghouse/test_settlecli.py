"""`timebank clearinghouse settle ...` and the offline settlement acts, in-process with
CliRunner over a clearinghouse `init` made: close, show (plain words and JSON), decide
with the city key at hand, a default prepared, signed offline and imported."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from city.audit import audit_clearinghouse_database
from clearinghouse.bootstrap import signing_key
from clearinghouse.config import load_config, sqlite_url
from clearinghouse.usecases import claims, directory
from clearinghouse.usecases.app import ClearinghouseApp
from tests.clearinghouse.conftest import registration
from tests.clearinghouse.settling import (
    GL,
    HOMES,
    JN,
    KEYS,
    NAMES,
    QX,
    complete,
    cosign_latest,
    countersign_env,
    dispute_env,
    log_size,
    own_app,
    send,
)
from tests.clearinghouse.test_cli import cli, one_line_error
from tests.clearinghouse.usecases.test_claims import cid, ring
from timebank import settlement as st
from timebank.envelope import decode
from timebank.keys import public_key


@pytest.fixture
def config(tmp_path: Path) -> Iterator[Path]:
    """A clearinghouse with three admitted districts and a roster; 江宁区's people had
    two hours of 鼓楼区's service, 鼓楼区's one of 栖霞区's; a quorum cosigned the log."""
    path = tmp_path / "ch" / "clearinghouse.toml"
    assert cli("clearinghouse", "init", "--data-dir", str(tmp_path / "ch")).exit_code == 0
    for node, district in NAMES.items():
        done = cli("clearinghouse", "admit", "--config", str(path), "--node-id", node,
                   "--district", district, "--public-key", public_key(KEYS[node]).hex())
        assert done.exit_code == 0, done.output
        assert cli("clearinghouse", "limit", "--config", str(path), "--node-id", node,
                   "--minutes", "100000").exit_code == 0
    app = own_app(path)
    try:
        for node, person in HOMES.items():
            app.execute(directory.register, registration(person, node, node, KEYS[node]),
                        ring(app))
        complete(app, 1, GL, JN)
        complete(app, 2, QX, GL, minutes=60)
        complete(app, 3, GL, JN)
        cosign_latest(app)
    finally:
        app.db.dispose()
    yield path


def ok(*args: str) -> str:
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return str(result.output)


def show(path: Path) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(ok("clearinghouse", "settle", "show", "--config",
                                          str(path), "--json"))
    return found


def test_close_show_decide_and_an_offline_default(config: Path, tmp_path: Path) -> None:
    app = own_app(config)
    try:
        size = log_size(app)
    finally:
        app.db.dispose()
    out = ok("clearinghouse", "settle", "close", "--config", str(config), "--up-to",
             str(size), "--label", "first")
    assert "已结算" in out and "closed" in out
    assert "经多边轧差为 2 笔转账" in out and "netted multilaterally into 2 transfers" in out
    assert "等待会签" in out and "江宁区" in out
    # a period closed already: one clean error, its reason
    again = one_line_error(cli("clearinghouse", "settle", "close", "--config", str(config),
                               "--up-to", str(size), "--label", "first"))
    assert "ALREADY_CLOSED" in again and "已结算" in again
    doc = show(config)
    assert not doc["final"] and doc["revisions"][0]["claims"] == 3
    lines = {x["node_id"]: x for x in doc["revisions"][0]["lines"]}
    assert lines[JN]["closing_minutes"] == -240 and lines[GL]["net_minutes"] == 180
    # the districts' side, as their nodes send it
    app = own_app(config)
    try:
        found = decode(bytes.fromhex(_statement_hex(app)))
        statement = st.parse_statement(found.body)
        send(app, dispute_env(JN, statement, found, [cid(1)]))
        send(app, countersign_env(GL, statement, found))
        send(app, countersign_env(QX, statement, found))
    finally:
        app.db.dispose()
    shown = ok("clearinghouse", "settle", "show", "--config", str(config))
    assert "争议 dispute" in shown and cid(1) in shown and "未定稿" in shown
    decided = ok("clearinghouse", "settle", "decide", "--config", str(config), "--serial",
                 "1", "--overrule", JN, "--reason", "江宁区账目有误 / the ledger was wrong")
    assert "裁决已记录" in decided and "已定稿 final" in decided
    assert show(config)["final"]
    # the default: prepared here, signed offline with the root key, imported
    act, signed = tmp_path / "default.act", tmp_path / "default.signed"
    prepared = ok("clearinghouse", "prepare", "settle-default", "--config", str(config),
                  "--serial", "1", "--node-id", JN, "--reason", "未按期结清 / unpaid",
                  "--out", str(act))
    assert "结算违约" in prepared and "240" in prepared
    ok("city", "sign", str(act), "--key", str(config.parent / "city-root.key"), "--out",
       str(signed))
    imported = ok("clearinghouse", "import", "--config", str(config), str(signed))
    assert "结算违约已导入" in imported
    assert show(config)["defaults"][0]["treatment"] == "carry"
    twice = one_line_error(cli("clearinghouse", "import", "--config", str(config),
                               str(signed)))
    assert "ALREADY_DEFAULTED" in twice


def _statement_hex(app: ClearinghouseApp) -> str:
    from clearinghouse.usecases import settlement

    return bytes(app.query(settlement.get, 1).statements[-1]).hex()


def test_positions_count_from_the_new_period(config: Path) -> None:
    app = own_app(config)
    try:
        size = log_size(app)
        before = dict(app.query(claims.positions).net)
    finally:
        app.db.dispose()
    assert before[JN] == -240
    ok("clearinghouse", "settle", "close", "--config", str(config), "--up-to", str(size))
    doc = json.loads(ok("clearinghouse", "positions", "--config", str(config), "--json"))
    assert {n["node_id"]: n["net_minutes"] for n in doc["nodes"]} == {JN: 0, GL: 0, QX: 0}
    bad = one_line_error(cli("clearinghouse", "settle", "close", "--config", str(config)))
    assert "BAD_PERIOD" in bad
    # the auditor, from the log alone, takes each closed period's nets out too
    app = own_app(config)
    try:
        app.execute(lambda tx: None)  # a head for the statement's leaf, as serve signs
        key = public_key(signing_key(load_config(config), app))
    finally:
        app.db.dispose()
    report = audit_clearinghouse_database(sqlite_url(config.parent), key)
    checked = {c.name: c for c in report.checks}
    positions_check = next(c for name, c in checked.items() if "position" in name)
    assert positions_check.ok, positions_check.first_bad
    assert "sum to 0" in positions_check.detail


def test_an_offline_revision_is_signed_by_the_clearinghouse_on_import(
        config: Path, tmp_path: Path) -> None:
    app = own_app(config)
    try:
        size = log_size(app)
    finally:
        app.db.dispose()
    ok("clearinghouse", "settle", "close", "--config", str(config), "--up-to", str(size))
    refused = one_line_error(cli("clearinghouse", "prepare", "settle-decision", "--config",
                                 str(config), "--serial", "1", "--exclude", cid(1),
                                 "--overrule", JN, "--reason", "x", "--out",
                                 str(tmp_path / "both.act")))
    assert "BAD_DECISION" in refused and not (tmp_path / "both.act").exists()
    app = own_app(config)
    try:
        found = decode(bytes.fromhex(_statement_hex(app)))
        send(app, dispute_env(JN, st.parse_statement(found.body), found, [cid(1)]))
    finally:
        app.db.dispose()
    act, signed = tmp_path / "decision.act", tmp_path / "decision.signed"
    prepared = ok("clearinghouse", "prepare", "settle-decision", "--config", str(config),
                  "--serial", "1", "--exclude", cid(1), "--reason",
                  "该笔服务未完成 / the service was not done", "--out", str(act))
    assert "结算裁决" in prepared and cid(1) in prepared
    ok("city", "sign", str(act), "--key", str(config.parent / "city-root.key"), "--out",
       str(signed))
    imported = ok("clearinghouse", "import", "--config", str(config), str(signed))
    assert "结算裁决已导入" in imported and "新版 revision 2" in imported
    doc = show(config)
    assert [r["revision"] for r in doc["revisions"]] == [1, 2]
    assert doc["revisions"][1]["excluded"] == [cid(1)] and doc["revisions"][1]["claims"] == 2
