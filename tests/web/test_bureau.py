"""The bureau's overview over a real city: a clearinghouse and two district nodes as
processes, one elder of 江宁区 served in 鼓楼区 with her hours kept at home, and the
console reading the clearinghouse as the city's observer (mutual TLS). With the city's
monitor's status file (``--monitor-status``), the page says what the monitor found, or
that it is not reporting."""

from __future__ import annotations

import html
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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
from timebank import monitorstatus
from web.app import build
from web.bureau import (
    CHART_UNITS,
    MAX_CHART_BARS,
    MONITOR_STALE_SECONDS,
    Clearinghouse,
    Flow,
    ago,
    flow_bars,
    read_monitor,
    used_percent,
    witnesses,
)
from web.catalogue import packaged
from web.nodes import Node

JN, GL = "320115", "320106"
TWO = (District(JN, "江宁区"), District(GL, "鼓楼区"))
CONFIRM_SECONDS = 60


@dataclass(frozen=True)
class Bureau:
    """The bureau's console over the running city: its node and how it reads the
    clearinghouse."""

    node: Node
    clearinghouse: str
    tls: ClientTls

    def pages(self, monitor_status: Path | None = None) -> tuple[str, str]:
        """The bureau's page in Chinese and English (with the monitor's status file)."""
        house = Clearinghouse(self.clearinghouse, self.tls, monitor_status=monitor_status)
        try:
            with TestClient(build(self.node, clearinghouse=house)) as browser:
                zh, en = browser.get("/bureau"), browser.get("/bureau?lang=en")
                assert zh.status_code == en.status_code == 200, zh.text
                return html.unescape(zh.text), html.unescape(en.text)
        finally:
            house.close()


@pytest.fixture(scope="module")
def overview(bureau: Bureau) -> tuple[str, str]:
    """The bureau's page (Chinese and English) once 鼓楼区 served 江宁区's elder and the
    districts confirmed the log."""
    return bureau.pages()


@pytest.fixture(scope="module")
def bureau(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bureau]:
    """The city once 鼓楼区 served 江宁区's elder and the districts confirmed the log."""
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
                yield Bureau(node, city.clearinghouse_address, tls)
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


# ---------------------------------------------------------------- the city's monitor

def _write_status(file: Path, age: timedelta,
                  findings: tuple[monitorstatus.Finding, ...] = ()) -> Path:
    """A status file as the monitor writes it, of a round ``age`` ago."""
    checked = (datetime.now(UTC) - age).replace(microsecond=0)
    file.write_bytes(monitorstatus.to_json(monitorstatus.MonitorStatus(
        checked, 120, 118, 2, 6, findings)))
    return file


REWRITTEN = (f"district {GL} anchored 4 ledger entries at log leaf 80, after 9 before: its "
             "anchors go backwards")
FOUND = (monitorstatus.Finding(monitorstatus.ANCHORS, True, REWRITTEN),
         monitorstatus.Finding(monitorstatus.FORK, True, "the clearinghouse's log does not "
                               "extend the head this monitor verified before",
                               "fork-0123456789abcdef0123.json"),
         monitorstatus.Finding(monitorstatus.FINALITY, True, "the head of 12 leaves is not "
                               "covered by a head cosigned by a quorum"),
         monitorstatus.Finding("rollback", True, "district 320106 holds a verified head of "
                               "3 leaves, after one of 9 before"),
         monitorstatus.Finding("unreachable", False, "the district node at 10.0.0.9:7443 did "
                               "not answer (UNAVAILABLE)"))


def test_without_a_monitor_the_page_has_no_monitor_section(overview: tuple[str, str]) -> None:
    zh, en = overview
    assert 'id="monitor"' not in zh and 'id="monitor"' not in en


def test_the_monitors_alarms_are_said_in_words(bureau: Bureau, tmp_path: Path) -> None:
    zh, en = bureau.pages(_write_status(tmp_path / "status.json", timedelta(seconds=150),
                                        FOUND))
    section = zh.split('id="monitor"')[1].split("</section>")[0]
    assert "城市监督程序" in section and "监督程序最近一次检查：2 分钟前" in section
    alarms = section.split('id="monitor-alarms"')[1]
    assert "某区的账本被改写：其新封存的记录比以前少" in alarms and REWRITTEN in alarms
    assert "结算中心向不同的区出示了互相矛盾的日志（分叉）" in alarms
    assert "证据文件：fork-0123456789abcdef0123.json" in alarms
    assert "日志的新版本迟迟没有被多数区确认" in alarms
    assert "警报：district 320106 holds a verified head of 3 leaves" in alarms
    assert "提醒：the district node at 10.0.0.9:7443 did not answer" in section
    assert "没有发现问题" not in section and 'id="monitor-problem"' not in section
    english = en.split('id="monitor"')[1].split("</section>")[0]
    assert "The monitor last checked 2 minutes ago" in english
    assert "a district's books were rewritten" in english and REWRITTEN in english
    assert "(a fork)" in english and "Alarm: district 320106 holds" in english
    assert "Note: the district node at 10.0.0.9:7443" in english
    # the console's own node's alarms are said as before, apart from the monitor's
    assert "没有发现分叉" in zh.split('id="log-alarms"')[1].split("</p>")[0]


def test_a_monitor_that_found_nothing_says_so(bureau: Bureau, tmp_path: Path) -> None:
    zh, en = bureau.pages(_write_status(tmp_path / "status.json", timedelta(seconds=5)))
    assert "没有发现问题" in zh and "监督程序最近一次检查：刚才" in zh
    assert "全市日志共 120 条记录，2 个区的节点回答了它" in zh
    assert "It found nothing wrong" in en and "警报" not in zh.split('id="monitor"')[1]


def test_a_monitor_not_reporting_is_said(bureau: Bureau, tmp_path: Path) -> None:
    zh, en = bureau.pages(tmp_path / "nowhere.json")  # no file: never reported
    assert "监督程序还没有报告" in zh and "The monitor has not reported" in en
    stale = timedelta(seconds=MONITOR_STALE_SECONDS + 15 * 60 + 30)
    zh, en = bureau.pages(_write_status(tmp_path / "old.json", stale, FOUND[:1]))
    problem = zh.split('id="monitor-problem"')[1].split("</p>")[0]
    assert "监督程序已 25 分钟没有报告，请检查它是否在运行" in problem
    assert "The monitor has not reported for 25 minutes: check that it runs" in en
    assert "某区的账本被改写" in zh  # what it last said still shows
    (tmp_path / "bad.json").write_text('{"format": "something else"}', encoding="utf-8")
    zh, en = bureau.pages(tmp_path / "bad.json")
    assert "监督程序的状态文件格式不对" in zh and "not in the expected form" in en


def test_reading_the_monitors_file_never_fails(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    assert read_monitor(tmp_path / "missing.json", now).problem == "missing"
    assert read_monitor(tmp_path, now).problem == "unreadable"  # a folder
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (monitorstatus.MAX_BYTES + 10))
    assert read_monitor(big, now).problem == "malformed"
    fresh = _write_status(tmp_path / "s.json", timedelta(0))
    assert read_monitor(fresh, now).problem == "" and read_monitor(fresh, now).status
    later = read_monitor(fresh, now + timedelta(seconds=MONITOR_STALE_SECONDS + 60))
    assert (later.problem, later.minutes) == ("stale", MONITOR_STALE_SECONDS // 60 + 1)
    early = read_monitor(fresh, now - timedelta(hours=1))
    assert (early.problem, early.minutes) == ("ahead", 60)
    view = read_monitor(fresh, now)
    keys = {view.said(f) for f in FOUND} | {view.said(monitorstatus.Finding("x", True, "y"))}
    assert keys == {"monitor_alarm_anchors", "monitor_alarm_fork", "monitor_alarm_finality",
                    "monitor_alarm_other", "monitor_warning"}
    assert keys <= set(packaged().messages)
