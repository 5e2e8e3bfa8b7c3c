"""Lists at 80 and 120 columns: a table when it fits, else one block per row; nothing cut.

The renderers are pure (messages in, rich renderables out), so they are read here on a
rich console of a given width; `test_cli_walkthrough` reads `order list` from the real
command at both widths.
"""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.table import Table

from node.cli.claims import claims_table
from node.cli.render import COLUMN_ZH, laid_out, orders_table
from runtime.layout import Layout, fit, needed_width
from timebank.v1 import node_pb2

CLAIM_ID = "8c0f6b4e-2f55-4a36-9d3e-2c1b0e7a9f10"
NAMES = {"320113": "栖霞区", "320106": "鼓楼区"}


def show(renderable: object, width: int) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None, highlight=False).print(renderable)
    return out.getvalue()


def claims() -> list[node_pb2.Claim]:
    return [node_pb2.Claim(claim_id=CLAIM_ID, kind="redemption", role=node_pb2.CLAIM_ROLE_DEBTOR,
                           counterparty_node_id="320113", minutes=90, posted_minutes=90,
                           state="completed", order_id=12, person_id=3),
            node_pb2.Claim(claim_id=CLAIM_ID.replace("8c", "9d"), kind="move",
                           role=node_pb2.CLAIM_ROLE_CREDITOR, counterparty_node_id="320106",
                           minutes=600, state="rejected", reason="LIMIT_REACHED",
                           person_id=4)]


def orders() -> list[node_pb2.Order]:
    return [node_pb2.Order(id=n, state=node_pb2.ORDER_STATE_CHECKED_OUT, category_name="助洁",
                           recipient_id=2, volunteer_id=1, planned_minutes=90,
                           measured_minutes=95, payer_id=7,
                           payment_source=node_pb2.PAYMENT_SOURCE_RELATIVE)
            for n in (1, 12345)]


def test_a_chinese_character_takes_two_cells() -> None:
    console = Console(file=io.StringIO(), width=200)
    latin, chinese = Table(box=None, padding=0), Table(box=None, padding=0)
    latin.add_column("n", no_wrap=True)
    chinese.add_column("n", no_wrap=True)
    latin.add_row("abcd")
    chinese.add_row("欧阳娜娜")
    assert needed_width(latin, console) == 4 and needed_width(chinese, console) == 8


@pytest.mark.parametrize("width", [80, 120])
def test_claims_never_lose_a_field_at_80_or_120_columns(width: int) -> None:
    shown = show(fit(claims_table(claims(), names=NAMES), Console(width=width), zh=COLUMN_ZH),
                 width)
    assert max(len(line) for line in shown.splitlines()) <= width
    assert "…" not in shown
    for text in (CLAIM_ID, "栖霞区 (320113)", "鼓楼区 (320106)", "LIMIT_REACHED", "order 12"):
        assert text in shown, shown
    # about 135 columns as a table: at 80 and 120, one block per claim
    assert "结算单号 claim id:" in shown and "对方区 other district:" in shown


def test_a_table_that_fits_stays_a_table() -> None:
    table = claims_table(claims(), names=NAMES)
    assert needed_width(table, Console(width=200)) > 120
    shown = show(fit(table, Console(width=200)), 200)
    assert "claim id" in shown and "结算单号" not in shown and CLAIM_ID in shown


def test_orders_at_80_columns_are_records_with_every_id() -> None:
    table = orders_table(orders())
    shown = show(fit(table, Console(width=80), zh=COLUMN_ZH), 80)
    flat = " ".join(shown.split())
    assert "编号 id: 1 " in flat and "编号 id: 12345 " in flat
    assert "支付方式 paid from: relative 7" in flat and "实际时长 measured: 1.58 h" in flat
    assert show(fit(orders_table(orders()), Console(width=120), zh=COLUMN_ZH), 120) \
        .lstrip().startswith("orders")


def test_forcing_a_layout() -> None:
    records = show(fit(orders_table(orders()), Console(width=200), Layout.RECORDS,
                       COLUMN_ZH), 200)
    assert "编号 id:" in records
    forced = show(fit(claims_table(claims(), names=NAMES), Console(width=80), Layout.TABLE),
                  80)
    assert "claim" in forced and "…" not in forced  # squeezed, it folds, never cuts
    assert "结算单号" not in forced
    assert "栖霞区" in forced and max(len(line) for line in forced.splitlines()) <= 80


def test_laid_out_uses_the_command_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    table = orders_table(orders())
    assert "编号 id:" in show(laid_out(table), 80)
