"""`timebank node order rate`: the volunteer rates the person served (满意度互评), against
a real `timebank node serve` process: refused before check-out and to anyone but the
volunteer, once after it, the same again harmless; `order show` carries both ratings."""

from __future__ import annotations

import json
from typing import Any

from city.cli import app
from node.cli.accounts import local_token
from node.domain.access import Role
from tests.helpers import id_card
from tests.node.test_cli import (  # noqa: F401 - node: the module's served node (a fixture)
    CLIENT_ENV,
    SERVED,
    Served,
    assert_one_clean_line,
    cli,
    cli_json,
    later,
    node,
    now_minus,
    runner,
)


def as_member(person_id: int, *args: str) -> Any:
    """Run `timebank ARGS` with the session of person ``person_id``'s member account."""
    token = local_token(SERVED["config"], f"member-{person_id}", Role.MEMBER,
                        person_id=person_id)
    return runner.invoke(app, list(args), env={**CLIENT_ENV, "TIMEBANK_TOKEN": token})


def test_help_lists_rate_beside_the_other_order_commands() -> None:
    orders = cli("node", "order", "--help")
    assert orders.exit_code == 0 and "rate" in orders.stdout
    rate = cli("node", "order", "rate", "--help")
    assert rate.exit_code == 0
    assert "志愿者评价服务对象" in rate.stdout and "--rating" in rate.stdout


def test_the_volunteer_rates_the_person_served(node: Served) -> None:  # noqa: F811
    n = ["--node", node.address]
    point = cli_json("node", "service-point", "add", "--code", "JN-RATE-01",
                     "--name", "淳化街道服务点", *n)
    staff = cli_json("node", "staff", "add", "--name", "郑洁", "--service-point",
                     str(point["id"]), *n)
    volunteer = cli_json("node", "enrol", "--name", "钱芳", "--id-number", id_card(1975), *n)
    elder = cli_json("node", "enrol", "--name", "冯玉兰", "--id-number", id_card(1941),
                     "--priority", "--service-point", str(point["id"]), *n)
    sid, vid, eid = str(staff["id"]), volunteer["id"], elder["id"]
    oid = str(cli_json("node", "order", "request", "--recipient", str(eid), "--category",
                       "助洁", "--minutes", "60", "--paid-by", "city-grant", "--by-staff", sid,
                       *n)["id"])
    cli_json("node", "order", "accept", oid, "--volunteer", str(vid), *n)
    later(90)
    cli_json("node", "order", "check-in", oid, "--at", now_minus(60), *n)

    too_soon = as_member(vid, "node", "order", "rate", oid, "--rating", "4", *n)
    assert too_soon.exit_code == 1
    assert_one_clean_line(too_soon.stderr, "FAILED_PRECONDITION: 服务完成后才能评价")
    assert "ORDER_STATE" in too_soon.stderr

    cli_json("node", "order", "check-out", oid, *n)
    by_recipient = as_member(eid, "node", "order", "rate", oid, "--rating", "1", *n)
    assert by_recipient.exit_code == 1
    assert_one_clean_line(by_recipient.stderr, "PERMISSION_DENIED: 只有志愿者本人可以办理")
    assert "NOT_THE_VOLUNTEER" in by_recipient.stderr
    bad = as_member(vid, "node", "order", "rate", oid, "--rating", "6", *n)
    assert bad.exit_code == 1
    assert_one_clean_line(bad.stderr, "INVALID_ARGUMENT: 评分须为 1 到 5 星")

    rated = as_member(vid, "node", "order", "rate", oid, "--rating", "4", "--comment",
                      "老人很热情", *n)
    assert rated.exit_code == 0, rated.output
    assert f"order {oid}: rated by the volunteer" in rated.stdout
    assert "★★★★☆" in rated.stdout and "老人很热情" in rated.stdout
    again = as_member(vid, "node", "order", "rate", oid, "--rating", "4", "--comment",
                      "老人很热情", "--json", *n)
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["rating_by_volunteer"] == 4
    changed = as_member(vid, "node", "order", "rate", oid, "--rating", "5", *n)
    assert changed.exit_code == 1
    assert_one_clean_line(changed.stderr, "FAILED_PRECONDITION: 志愿者已评价过此订单")
    assert "ALREADY_RATED" in changed.stderr

    verified = cli("node", "order", "verify", oid, "--rating", "5", "--comment", "很干净",
                   "--by-person", str(eid), *n)
    assert verified.exit_code == 0, verified.output
    shown = cli_json("node", "order", "show", oid, *n)
    assert (shown["rating"], shown["comment"]) == (5, "很干净")
    assert (shown["rating_by_volunteer"], shown["comment_by_volunteer"]) == (4, "老人很热情")
    assert shown["rated_by_volunteer_at"] is not None
    text = cli("node", "order", "show", oid, *n).stdout
    assert "★★★★★" in text and "rated by volunteer" in text and "★★★★☆" in text
