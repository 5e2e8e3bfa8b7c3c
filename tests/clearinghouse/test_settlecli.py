"""`timebank clearinghouse settle ...` and the offline settlement acts, in-process with
CliRunner over a clearinghouse `init` made: close, show (plain words and JSON), decide
with the city key at hand, a default prepared, signed offline and imported."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clearinghouse.bootstrap import open_app, origin_key, signing_key
from clearinghouse.config import load_config
from clearinghouse.usecases import claims, directory, log
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
    send,
)
from tests.clearinghouse.test_cli import cli, one_line_error
from tests.clearinghouse.usecases.test_claims import cid, ring
from timebank import checkpoint as notes
from timebank import settlement as st
from timebank import transparency
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
    app = _app(path)
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


def _app(path: Path) -> ClearinghouseApp:
    """The clearinghouse's own database, heads signed with its own key (as `serve`)."""
    config = load_config(path)
    app = open_app(config)
    key = signing_key(config, app)
    origin = transparency.clearinghouse_origin(origin_key(app) or public_key(key))
    app.after_write = lambda tx: log.publish_head(
        tx, lambda text: notes.sign_note(text, origin, key), origin)
    return app


def ok(*args: str) -> str:
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return str(result.output)


def show(path: Path) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(ok("clearinghouse", "settle", "show", "--config",
                                          str(path), "--json"))
    return found


def test_close_show_decide_and_an_offline_default(config: Path, tmp_path: Path) -> None:
    app = _app(config)
    try:
        size = log_size(app)
    finally:
        app.db.dispose()
    out = ok("clearinghouse", "settle", "close", "--config", str(config), "--up-to",
             str(size), "--label", "first")
    assert "已结算" in out and "closed" in out
    assert "多边轧差后只需 2 笔转账" in out and "netting removes" in out
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
    app = _app(config)
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
    app = _app(config)
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
