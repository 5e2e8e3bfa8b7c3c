"""`timebank node settlement show --config`: a statement as the district holds it, read
from the node's own database (initialised by `timebank node init`), in Chinese first and
as JSON; a node that has seen none says so on one line, with a non-zero exit."""

from __future__ import annotations

import json
import os
from pathlib import Path

from typer.testing import CliRunner

from city.cli import app
from node.bootstrap import open_app
from node.config import load_config
from node.domain.policy import DEFAULT_POLICY_TOML
from node.usecases import settlement
from tests.node import settlement_support as kit
from tests.node.settlement_support import GL, QX

runner = CliRunner()


def _node(tmp_path: Path) -> Path:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "policy.toml").write_text(DEFAULT_POLICY_TOML, encoding="utf-8")
    fd = os.open(etc / "city-secret", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, os.urandom(32))
    os.close(fd)
    config = etc / "node.toml"
    config.write_text('[node]\nnode_id = "320115"\ndistrict = "江宁区"\n'
                      f'data_dir = "{tmp_path / "var"}"\npolicy_file = "policy.toml"\n'
                      'city_secret_file = "city-secret"\n', encoding="utf-8")
    done = runner.invoke(app, ["node", "init", "--config", str(config)])
    assert done.exit_code == 0, done.output
    return config


def test_show_prints_the_line_the_netting_and_the_posting(tmp_path: Path) -> None:
    config = _node(tmp_path)
    none = runner.invoke(app, ["node", "settlement", "show", "--config", str(config)])
    assert none.exit_code == 1 and "NOT_FOUND" in none.stderr and "尚未收到" in none.stderr
    assert len(none.stderr.strip().splitlines()) == 1

    node_app = open_app(load_config(config))
    try:
        claims = [kit.completed(node_app, GL, 90, creditor=True),
                  kit.completed(node_app, QX, 30, creditor=False), kit.between(GL, QX, 20)]
        envelope = kit.statement(claims)
        node_app.execute(settlement.record_seen,
                         settlement.verify_statement(envelope, kit.LOG_KEYS, kit.rosters))
        node_app.execute(settlement.decide, 1, 1, kit.mine(claims))
        evidence = kit.answer(envelope, [kit.countersign(n, envelope) for n in kit.DISTRICTS])
        node_app.execute(settlement.mark_final, 1, 1, evidence.SerializeToString())
        node_app.execute(settlement.post, 1, 1, kit.mine(claims))
    finally:
        node_app.db.dispose()

    shown = runner.invoke(app, ["node", "settlement", "show", "--config", str(config)])
    assert shown.exit_code == 0, shown.output
    out = shown.stdout
    for words in ("第 1 期", "已入账 / posted", "本期净额 / net", "1.00 h (60 min)",
                  "应付本区 / owed to this district", "经多边轧差为 2 笔转账",
                  "会签 / countersigned", "不发生任何资金划转"):
        assert words in out, (words, out)

    found = json.loads(runner.invoke(app, ["node", "settlement", "show", "--config",
                                           str(config), "--serial", "1", "--json"]).stdout)
    assert found["state"] == "posted" and found["line"]["net_minutes"] == 60
    assert found["netting"] == {"districts": 3, "gross": 3, "bilateral": 3, "transfers": 2,
                                "possible": 6, "claims": 3}
    assert found["countersigned_by"] == sorted(kit.DISTRICTS)
    assert found["carried_forward_minutes"] == 0 and found["ledger_seq"] == 3
