"""A district node, served for real on 127.0.0.1, holding orders in every stage of
publicity, for the console's tests; and the system's Chromium and the console as a real
process, for the browser tests.

Chromium comes from the system's packages (Debian: ``apt-get install chromium
fonts-noto-cjk``); nothing is downloaded. Where it is missing the browser tests are
skipped with how to run them, except under ``TIMEBANK_REQUIRE_BROWSER=1`` (CI), where
they fail. Screenshots of the pages in both languages, on an office screen and a phone,
are kept in ``TIMEBANK_ARTIFACTS`` (default: ``test-artifacts/`` at the repository's
root).

The node is a SQLite one (the console never reaches a database: what it shows comes
through the node's API, whichever engine the node runs on). ``town`` is built once per
module: the console's tests only read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from city.launcher import console_serving
from node.domain.access import Role
from node.domain.clock import ManualClock
from node.usecases import logins, orders, people
from node.usecases.app import NodeApp
from node.usecases.views import Actor
from tests.conftest import make_node_app
from tests.helpers import enrol, request, serve, walk
from tests.node.api.support import serving
from tests.sqlite import migrated_sqlite
from web.nodes import Node

#: A service point whose name would run script if a page did not escape it.
HOSTILE_POINT = "<script>alert('点')</script>东山<b>站</b>"


#: The address the in-process console is reached at (https: its cookies are Secure).
BASE = "https://console.test"

#: Every account's password in these tests.
PASSWORD = "correct horse 1940"


@dataclass(frozen=True)
class Town:
    app: NodeApp
    clock: ManualClock
    address: str
    on_display: int  # verified: in its publicity period
    disputed: int  # disputed during publicity
    before: int  # checked out, not yet verified
    recorded: int  # publicity over, recorded
    #: every enrolled person's full name, ID number and phone: none may be on a public page
    secrets: tuple[str, ...]
    elder: int  # 张桂兰, at the service point
    volunteer: int  # 李秀英
    staff_login: str  # a staff account at the service point
    member_login: str  # 李秀英's own account
    other_point_login: str  # staff of another service point


@pytest.fixture(scope="module")
def town(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Town]:
    clock = ManualClock()
    url = migrated_sqlite(tmp_path_factory.mktemp("web") / "node.db")
    for app in make_node_app(url, clock):
        with serving(app, clock) as api:
            yield _build(app, clock, f"127.0.0.1:{api.port}")


def _account(app: NodeApp, login: str, role: Role, *, staff_id: int = 0,
             person_id: int = 0) -> str:
    app.execute(logins.add_account, login, role, staff_id=staff_id, person_id=person_id)
    app.execute(logins.set_password, login, PASSWORD)
    return login


def _build(app: NodeApp, clock: ManualClock, address: str) -> Town:
    point = app.execute(people.register_service_point, "SP-WEB", HOSTILE_POINT, "东山街道")
    other = app.execute(people.register_service_point, "SP-FAR", "麒麟街道站", "麒麟街道")
    desk = app.execute(people.register_staff, "王主任", point.id)
    far = app.execute(people.register_staff, "赵站长", other.id)
    elder = enrol(app, "张桂兰", 1940, priority=True, point=point.id)
    elder2 = enrol(app, "欧阳娜娜", 1938, priority=True, point=point.id)
    volunteer = enrol(app, "李秀英", 1962)
    volunteer2 = enrol(app, "Alice Smith", 1985)
    recorded = serve(app, clock, elder.id, volunteer.id, 60).record.id
    before = request(app, elder2.id, 30).record.id
    walk(app, clock, before, volunteer2.id, 30, to="checked_out")
    on_display = serve(app, clock, elder.id, volunteer2.id, 90, record=False).record.id
    disputed = serve(app, clock, elder2.id, volunteer.id, 60, record=False).record.id
    app.execute(orders.dispute_order, disputed, Actor(person_id=elder2.id),
                "时长不对 the time is wrong")
    records = [app.query(lambda tx, i=p.id: tx.repo.people.get(i))
               for p in (elder, elder2, volunteer, volunteer2)]
    secrets = tuple(s for r in records for s in (r.name, r.id_number, r.phone) if s)
    return Town(app, clock, address, on_display, disputed, before, recorded, secrets,
                elder.id, volunteer.id,
                _account(app, "wang.desk", Role.STAFF, staff_id=desk.id),
                _account(app, "li.xiuying", Role.MEMBER, person_id=volunteer.id),
                _account(app, "zhao.far", Role.STAFF, staff_id=far.id))


@pytest.fixture
def node(town: Town) -> Iterator[Node]:
    made = Node(town.address, None)
    yield made
    made.close()


# ---------------------------------------------------------------- the browser

CHROMIUM = Path(os.environ.get("TIMEBANK_CHROMIUM", "/usr/bin/chromium"))
REQUIRE_BROWSER = os.environ.get("TIMEBANK_REQUIRE_BROWSER") == "1"
ARTIFACTS = Path(os.environ.get("TIMEBANK_ARTIFACTS")
                 or Path(__file__).resolve().parents[2] / "test-artifacts")
#: Flags for a headless Chromium on a closed network, as root in CI.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
OFFICE = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        message = (f"no Chromium at {CHROMIUM}: install the system's (Debian: apt-get install "
                   "chromium fonts-noto-cjk) or name one with TIMEBANK_CHROMIUM")
        if REQUIRE_BROWSER:
            pytest.fail(f"the browser tests are required (TIMEBANK_REQUIRE_BROWSER=1): "
                        f"{message}")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def console(town: Town, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`timebank console serve` over the town's node; its address. It must stop cleanly
    (exit code 0) and never log a traceback."""
    log = tmp_path_factory.mktemp("console") / "console.log"
    with console_serving(town.address, ["--insecure"], log) as (url, process):
        yield url
    assert process.returncode == 0, log.read_text()
    assert "Traceback" not in log.read_text()


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.fixture
def client(node: Node) -> Iterator[Any]:
    """The console over the town's node, in process (Starlette's TestClient); redirects
    are not followed, so a test sees each answer."""
    from starlette.testclient import TestClient

    from web.app import build

    with TestClient(build(node), base_url=BASE, raise_server_exceptions=False,
                    follow_redirects=False) as made:
        yield made


def log_in_browser(page: Any, console: str, login: str, password: str = PASSWORD) -> None:
    """Log in through the console's form in a real browser (Chinese labels) and wait for
    the page it leads to."""
    page.goto(f"{console}/login")
    page.get_by_label("账号").fill(login)
    page.get_by_label("密码").fill(password)
    page.get_by_role("button", name="登录", exact=True).click()
    page.wait_for_load_state()
