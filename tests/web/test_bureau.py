"""The bureau's overview over a real city: a clearinghouse and two district nodes as
processes, one elder of 江宁区 served in 鼓楼区 with her hours kept at home, and the
console reading the clearinghouse as the city's observer (mutual TLS)."""

from __future__ import annotations

import html
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from city.launcher import CityProcesses, District, layout
from runtime import devclock
from runtime.tls import ClientTls
from tests.city.workload import (
    CityClient,
    enrol_elder,
    record_due,
    redeem,
    setup_desk,
    wait_claim,
)
from web.app import build
from web.bureau import (
    CHART_UNITS,
    MAX_CHART_BARS,
    Clearinghouse,
    Flow,
    ago,
    flow_bars,
    used_percent,
    witnesses,
)
from web.nodes import Node

JN, GL = "320115", "320106"
TWO = (District(JN, "江宁区"), District(GL, "鼓楼区"))
CONFIRM_SECONDS = 60


@pytest.fixture(scope="module")
def overview(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The bureau's page (Chinese and English) once 鼓楼区 served 江宁区's elder and the
    districts confirmed the log."""
    city = layout(tmp_path_factory.mktemp("city") / "city", TWO)
    with CityProcesses(city, dev_clock=True) as processes:
        processes.start_all()
        client = CityClient(city)
        try:
            desks = {n: setup_desk(client, n, 1) for n in (JN, GL)}
            elder = enrol_elder(client, desks, JN, [GL], grant=600)
            served = redeem(client, desks[GL], elder, desks[GL].volunteers[0])
            assert served.verified and served.claim_id
            devclock.advance(city.clock_file, timedelta(days=8))  # past the publicity period
            assert record_due(client, GL) == 1  # recorded: the claim completes
            assert wait_claim(client, GL, served.claim_id, {"completed"}, 60) == "completed"
            tls = city.client_tls()
            assert tls is not None
            house = Clearinghouse(city.clearinghouse_address, tls)
            node = Node(city.node(GL).address, ClientTls(tls.ca))
            try:
                deadline = time.monotonic() + CONFIRM_SECONDS
                while house.overview()[2].confirmed_at is None:
                    assert time.monotonic() < deadline, "the districts never cosigned"
                    time.sleep(0.5)
                with TestClient(build(node, clearinghouse=house)) as browser:
                    yield (html.unescape(browser.get("/bureau").text),
                           html.unescape(browser.get("/bureau?lang=en").text))
            finally:
                node.close()
                house.close()
        finally:
            client.close()


def test_each_district_is_shown_with_its_position_against_its_limit(
        overview: tuple[str, str]) -> None:
    zh, en = overview
    assert "全市通存通兑概况" in zh
    table = zh.split('id="districts"')[1]
    jn = table.split(f'data-node="{JN}"')[1].split("</tr>")[0]
    gl = table.split(f'data-node="{GL}"')[1].split("</tr>")[0]
    assert "江宁区" in jn and "应付 1小时" in jn  # her hours are kept in 江宁区: it pays
    assert "鼓楼区" in gl and "应收 1小时" in gl
    assert "owes 1 h" in en and "owed 1 h" in en


def test_the_flow_between_districts_is_shown(overview: tuple[str, str]) -> None:
    zh, _ = overview
    flows = zh.split('id="flows"')[1]
    assert flows.index("鼓楼区") < flows.index("江宁区") and "1小时" in flows


def test_the_flows_are_drawn_as_a_chart(overview: tuple[str, str]) -> None:
    zh, en = overview
    chart = zh.split('id="flows-chart"')[1].split("</svg>")[0]
    assert chart.count('class="bar"') == 1 and "鼓楼区（江宁区支付）" in chart
    assert "鼓楼区 (paid by 江宁区)" in en


def test_each_district_says_when_it_last_confirmed_the_log(
        overview: tuple[str, str]) -> None:
    zh, en = overview
    table = zh.split('id="witnesses"')[1].split("</table>")[0]
    for node in (JN, GL):
        row = table.split(f'data-node="{node}"')[1].split("</tr>")[0]
        assert "确认了前" in row and "条记录" in row, row
    assert "found no fork" in en and "没有发现分叉" in zh


def test_the_log_is_said_in_words(overview: tuple[str, str]) -> None:
    zh, en = overview
    assert "各区的账本都封存在全市公开日志中" in zh and "2 个区中有" in zh
    assert "Every district's books are sealed in the city's public log" in en
    assert "of 2 districts confirmed it" in en


def test_a_districts_console_has_no_city_overview(tmp_path: Path) -> None:
    node = Node("127.0.0.1:1", None)
    try:
        with TestClient(build(node), raise_server_exceptions=False) as browser:
            page = browser.get("/bureau")
            assert page.status_code == 404 and 'href="/bureau"' not in page.text
    finally:
        node.close()


def test_the_chart_draws_the_largest_flows_to_scale() -> None:
    flows = [Flow(f"区{i}", "江宁区", minutes) for i, minutes in
             enumerate([600, 60, 1, *[30] * (MAX_CHART_BARS + 5)])]
    bars = flow_bars(flows)
    assert len(bars) == MAX_CHART_BARS and [b.row for b in bars] == list(range(len(bars)))
    assert bars[0].flow.minutes == 600 and bars[0].length == CHART_UNITS
    assert bars[1].length == CHART_UNITS // 10
    assert all(b.flow.minutes != 1 for b in bars)  # the smallest did not make the 30
    assert flow_bars([Flow("a", "b", 1), Flow("c", "d", 6000)])[1].length == 2  # visible
    assert flow_bars([]) == []


def test_a_district_missing_from_both_heads_is_named() -> None:
    from timebank.v1 import clearing_pb2

    latest = clearing_pb2.TreeHead(size=9, cosigners=[GL])
    latest.at.FromSeconds(1_800_000_000)
    final = clearing_pb2.TreeHead(size=7, cosigners=[JN, GL])
    final.at.FromSeconds(1_799_999_000)
    seen = witnesses({JN: "江宁区", GL: "鼓楼区", "320113": "栖霞区"}, latest, final)
    by = {w.node_id: w for w in seen}
    assert by[GL].size == 9 and by[JN].size == 7 and by["320113"].at is None
    assert by[JN].at is not None and by[GL].at is not None and by[JN].at < by[GL].at


@pytest.mark.parametrize(("net", "limit", "used"), [
    (0, 600, 0), (300, 600, 0), (-300, 600, 50), (-600, 600, 100), (-900, 600, 150),
    (-5, 0, 100)])
def test_the_limit_used(net: int, limit: int, used: int) -> None:
    assert used_percent(net, limit) == used


def test_how_long_ago_in_words() -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 12, 7, 12, tzinfo=UTC)
    assert ago(now - timedelta(seconds=30), now) == ("ago_seconds", 0)
    assert ago(now - timedelta(minutes=2), now) == ("ago_minutes", 2)
    assert ago(now - timedelta(hours=5), now) == ("ago_hours", 5)
    assert ago(now - timedelta(days=3), now) == ("ago_days", 3)
    assert ago(now + timedelta(seconds=5), now) == ("ago_seconds", 0)  # clocks differ
