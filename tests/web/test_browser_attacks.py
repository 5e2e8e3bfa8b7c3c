"""The attacks the issue names, in a real browser against `timebank console serve` as a
process: script in a name is shown, never run; the session cookie is out of a script's
reach (HttpOnly, Secure, SameSite=Strict); a form a page of another origin posts with
the staff member's cookie is refused and changes nothing; a member who changes an id in
the address reaches nobody else's page; the public page shows no enrolled person's name,
ID number or phone."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import enrol
from tests.web.conftest import OFFICE, Town, log_in_browser

SCRIPT_NAME = "<script>alert('名')</script>李<img src=x onerror=alert(2)>"


@pytest.fixture(scope="module")
def elsewhere(console: str, town: Town) -> Iterator[str]:
    """Another origin (another port of this machine) serving a page whose script posts
    a form to the console as soon as it loads: what a hostile site does."""
    person = town.elder
    page = f"""<!doctype html><html><body>
<form id="f" method="post" action="{console}/people/{person}/edit">
<input name="phone" value="13900000000"><input name="reason" value="attack">
</form><script>document.getElementById('f').submit()</script></body></html>""".encode()

    class Hostile(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: object) -> None:
            pass

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = http.server.HTTPServer(("127.0.0.1", port), Hostile)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.shutdown()
        server.server_close()


def _phone(town: Town, person_id: int) -> str:
    return str(town.app.query(lambda tx: tx.repo.people.get(person_id)).phone)


def test_script_in_a_name_is_shown_not_run(chromium: Any, console: str, town: Town) -> None:
    hostile = enrol(town.app, SCRIPT_NAME, 1950)
    dialogs: list[str] = []
    page = chromium.new_page(viewport=OFFICE, locale="zh-CN")
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    log_in_browser(page, console, town.staff_login)
    page.goto(f"{console}/people/{hostile.id}")
    assert SCRIPT_NAME in page.locator("h1").inner_text()
    page.goto(f"{console}/desk?q=李")
    assert SCRIPT_NAME in page.locator("#people").inner_text()
    assert page.locator("main img").count() == 0  # the <img> is text, not an element
    page.close()
    assert dialogs == []


def test_the_session_cookie_is_out_of_a_scripts_reach(chromium: Any, console: str,
                                                      town: Town) -> None:
    context = chromium.new_context(viewport=OFFICE, locale="zh-CN")
    page = context.new_page()
    log_in_browser(page, console, town.staff_login)
    [session] = [c for c in context.cookies() if c["name"] == "timebank_session"]
    assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Strict"
    assert "timebank_session" not in page.evaluate("document.cookie")
    context.close()


def test_a_form_from_another_origin_is_refused_and_changes_nothing(
        chromium: Any, console: str, town: Town, elsewhere: str) -> None:
    before = _phone(town, town.elder)
    context = chromium.new_context(viewport=OFFICE, locale="zh-CN")
    page = context.new_page()
    log_in_browser(page, console, town.staff_login)  # a staff member, logged in, is lured
    with page.expect_response(lambda r: r.url.endswith(f"/people/{town.elder}/edit")) as sent:
        page.goto(elsewhere)
    page.wait_for_load_state()
    assert sent.value.status == 403  # no form token, another origin: refused first
    assert "这个表单已经过期或不是从本网站提交的" in page.locator("main").inner_text()
    assert _phone(town, town.elder) == before  # nothing changed
    context.close()


def test_a_member_who_changes_an_id_reaches_nobody_elses_page(
        chromium: Any, console: str, town: Town) -> None:
    page = chromium.new_page(viewport=OFFICE, locale="zh-CN")
    log_in_browser(page, console, town.member_login)
    for path in (f"/people/{town.elder}", f"/orders/{town.on_display}",
                 f"/people/{town.elder}/passbook"):
        answer = page.goto(f"{console}{path}")
        assert answer is not None and answer.status == 403, path
        assert "张桂兰" not in page.locator("main").inner_text()
    page.close()


def test_the_public_page_shows_nobodys_details(chromium: Any, console: str,
                                               town: Town) -> None:
    page = chromium.new_page(viewport=OFFICE, locale="zh-CN")
    page.goto(f"{console}/public")
    shown = page.content()
    assert page.locator("#public-orders tr[data-order]").count() >= 1
    leaked = [s for s in town.secrets if s in shown]
    assert leaked == []
    page.close()
