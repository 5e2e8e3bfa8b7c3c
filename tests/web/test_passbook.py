"""The passbook (存折) pages over a real node whose ledger is anchored in a real city's
log: a member prints her own, staff print the passbook of a person they serve, the file
a page offers verifies offline, and the code printed on the page is the code
`timebank verify-statement` says for that file, however much later the file is fetched
through the page's link; staff open a passbook issued before by the code on its paper.
Nobody reaches another's passbook by changing an address; a node with nothing anchored
yet gives a page that says so."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tests.web.conftest import BASE, Town
from tests.web.passbook_support import (
    CH_PUB,
    ROOT_PUB,
    Anchored,
    anchored_district,
    printed_code,
    serve_and_anchor_again,
    verify_cli,
)
from tests.web.test_desk import log_in
from timebank.passbook import load, paper_code, verify_statement
from timebank.v1 import node_pb2 as pb
from web import passbook
from web.app import build
from web.catalogue import packaged
from web.nodes import Node


@pytest.fixture(scope="module")
def district(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Anchored]:
    with anchored_district(tmp_path_factory.mktemp("passbook")) as made:
        yield made


@contextmanager
def _client(address: str) -> Iterator[TestClient]:
    node = Node(address, None)
    try:
        with TestClient(build(node), base_url=BASE, raise_server_exceptions=False,
                        follow_redirects=False) as made:
            yield made
    finally:
        node.close()


@pytest.fixture
def client(district: Anchored) -> Iterator[TestClient]:
    with _client(district.address) as made:
        yield made


def _shown_code(page: str) -> str:
    found = re.search(r'id="passbook-code" data-code="([0-9a-f ]+)"', page)
    assert found is not None, page
    return found.group(1)


def _download(page: str, path: str) -> str:
    """The page's link to the file: ``path`` with the code of the statement shown."""
    found = re.search(rf'href="({re.escape(path)}\?code=[0-9a-f]{{64}})"', page)
    assert found is not None, page
    return found.group(1)


def test_a_member_prints_her_own_passbook(client: TestClient, district: Anchored) -> None:
    log_in(client, district.member_login)
    assert 'href="/me/passbook"' in client.get("/me").text
    page = client.get("/me/passbook")
    assert page.status_code == 200, page.text
    text = html.unescape(page.text)
    assert "时间银行存折 · 刘洋" in text and "江宁区" in text
    assert 'id="passbook-balance" data-minutes="135"' in page.text
    assert "2小时15分钟" in text and "本人服务所得: 2小时15分钟" in text
    assert text.count('data-seq="') == 2 and "+1小时30分钟" in text and "+45分钟" in text
    assert "各区已共同确认" in text  # cosigned by a quorum
    assert "timebank verify-statement" in text and "核对码" in text
    code = _shown_code(page.text)
    assert len(code.split(" ")) == 16
    for line in (" ".join(code.split(" ")[i:i + 4]) for i in range(0, 16, 4)):
        assert f"<span>{line}</span>" in page.text  # four lines of four groups on paper
    svg = page.text.split('<svg class="qr"')[1].split("</svg>")[0]
    assert 'fill="#000" d="M' in svg and "style" not in svg and "href" not in svg
    assert _download(page.text, "/me/passbook.json") == (
        f"/me/passbook.json?code={code.replace(' ', '')}")
    assert 'id="passbook-by-code"' not in page.text  # a member has no code to type
    english = client.get("/me/passbook?lang=en").text
    assert "Time bank passbook" in english and "genuine" in english
    assert _shown_code(english) == code  # the node's signed statement, asked again


def test_the_file_verifies_offline_and_its_code_is_the_pages(
        client: TestClient, district: Anchored, tmp_path: Path) -> None:
    log_in(client, district.member_login)
    answer = client.get("/me/passbook.json")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json; charset=utf-8"
    disposition = answer.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="passbook-')
    assert "刘洋".encode() in answer.content  # UTF-8, not \\u escapes
    found = verify_statement(load(answer.content), ROOT_PUB, CH_PUB)
    assert (found.name, found.total, found.final) == ("刘洋", 135, True)
    file = tmp_path / "passbook.json"
    file.write_bytes(answer.content)
    checked = verify_cli(file)
    assert checked.returncode == 0, checked.stderr
    assert "genuine" in checked.stdout
    said = printed_code(checked.stdout)
    assert said == paper_code(found.statement_digest)
    page = client.get("/me/passbook")
    assert _shown_code(page.text) == said


def test_staff_print_the_passbook_of_a_person_they_serve(
        client: TestClient, district: Anchored) -> None:
    log_in(client, district.staff_login)
    person = client.get(f"/people/{district.volunteer}")
    assert f'href="/people/{district.volunteer}/passbook"' in person.text
    page = client.get(f"/people/{district.volunteer}/passbook")
    assert page.status_code == 200 and "时间银行存折 · 刘洋" in html.unescape(page.text)
    file = client.get(_download(page.text, f"/people/{district.volunteer}/passbook.json"))
    assert file.status_code == 200
    assert verify_statement(load(file.content), ROOT_PUB, CH_PUB).total == 135
    assert _shown_code(page.text) == paper_code(
        verify_statement(load(file.content), ROOT_PUB, CH_PUB).statement_digest)


def test_nobody_reaches_another_persons_passbook(client: TestClient,
                                                 district: Anchored) -> None:
    for path in ("/me/passbook", "/me/passbook.json",
                 f"/people/{district.volunteer}/passbook",
                 f"/people/{district.volunteer}/passbook.json"):
        assert client.get(path).status_code == 401  # nobody logged in: the login page
    log_in(client, district.stranger_login)
    own = client.get("/me/passbook")  # the stranger's own: no hours, still a passbook
    assert own.status_code == 200 and "时间银行存折 · 孙强" in html.unescape(own.text)
    for path in (f"/people/{district.volunteer}/passbook",
                 f"/people/{district.volunteer}/passbook.json"):
        refused = client.get(path)  # a member changing the address: not a desk page
        assert refused.status_code == 403 and "刘洋" not in refused.text
        assert "statement" not in refused.text
    client.cookies.clear()
    log_in(client, district.other_point_login)
    for path in (f"/people/{district.volunteer}/passbook",
                 f"/people/{district.volunteer}/passbook.json"):
        refused = client.get(path)  # staff of another service point: the node refuses
        assert refused.status_code == 403 and "刘洋" not in refused.text


def test_before_anything_is_anchored_the_page_says_so(town: Town) -> None:
    """The console's ordinary town: a node alone, nothing anchored."""
    with _client(town.address) as made:
        log_in(made, town.member_login)
        page = made.get("/me/passbook")
        assert page.status_code == 409
        text = html.unescape(page.text)
        assert "现在还不能出具这本存折" in text and "尚未在全市公开日志中封存" in text
        assert "Traceback" not in text and 'id="passbook-code"' not in text
        assert made.get("/me/passbook.json").status_code == 409


def test_a_qr_code_is_drawn_from_the_digest_and_node_alone() -> None:
    digest = bytes(range(32))
    qr = passbook.qr_of(f"timebank-statement/v1 node=320115 sha256={digest.hex()}")
    assert qr.size == 49 and qr.path.startswith("M4 4h7v1h-7z")
    assert set(qr.path) <= set("Mhvz-0123456789 ")


def test_every_key_the_passbook_chooses_is_in_the_catalogue() -> None:
    missing = passbook.KEYS_CHOSEN - set(packaged().messages)
    assert not missing, sorted(missing)


def test_a_statement_the_console_cannot_read_is_refused() -> None:
    bad = pb.GetPassbookResponse(statement_json=json.dumps({"x": 1}).encode(),
                                 statement_digest=bytes(32))
    with pytest.raises(KeyError):
        passbook.read(bad)


@pytest.fixture
def changing(tmp_path: Path) -> Iterator[Anchored]:
    """A district of its own, whose ledger these tests move on (the module's stays)."""
    with anchored_district(tmp_path) as made:
        yield made


def test_the_file_a_page_links_is_the_statement_printed_however_much_later(
        changing: Anchored) -> None:
    district = changing
    with _client(district.address) as client:
        _the_file_a_page_links(client, district)


def _the_file_a_page_links(client: TestClient, district: Anchored) -> None:
    log_in(client, district.member_login)
    page = client.get("/me/passbook")
    printed = _shown_code(page.text)
    link = _download(page.text, "/me/passbook.json")
    assert _shown_code(client.get("/me/passbook").text) == printed  # nothing new: the same
    serve_and_anchor_again(district)  # the file is fetched later, the ledger moved on
    client.cookies.clear()  # her session ended meanwhile: she logs in again
    log_in(client, district.member_login)
    assert _shown_code(client.get("/me/passbook").text) != printed  # a new page: a new one
    file = client.get(link)
    assert file.status_code == 200, file.text
    found = verify_statement(load(file.content), ROOT_PUB, CH_PUB)
    assert paper_code(found.statement_digest) == printed
    assert client.get("/me/passbook.json").status_code == 200  # no code: a new one, as before
    assert client.get("/me/passbook.json", params={"code": "12ab"}).status_code == 400


def test_staff_open_a_passbook_by_the_code_on_its_paper(changing: Anchored) -> None:
    with _client(changing.address) as client:
        _staff_open_by_code(client, changing)


def _staff_open_by_code(client: TestClient, district: Anchored) -> None:
    base = f"/people/{district.volunteer}/passbook"
    log_in(client, district.member_login)
    printed = _shown_code(client.get("/me/passbook").text)  # her paper, printed at home
    client.cookies.clear()
    serve_and_anchor_again(district)  # weeks go by; she serves on
    log_in(client, district.staff_login)
    today = client.get(base)
    assert 'id="passbook-by-code"' in today.text and _shown_code(today.text) != printed
    page = client.get(base, params={"code": printed.upper()})  # typed from paper
    assert page.status_code == 200, page.text
    assert _shown_code(page.text) == printed
    file = client.get(_download(page.text, f"{base}.json"))
    assert paper_code(verify_statement(load(file.content), ROOT_PUB, CH_PUB)
                      .statement_digest) == printed
    for path in (base, f"{base}.json"):
        for bad in ("12ab", "zz" * 32, "0" * 200):
            assert client.get(path, params={"code": bad}).status_code == 400, (path, bad)
    missing = client.get(base, params={"code": "00" * 32})  # no passbook has that code
    assert missing.status_code == 404 and 'id="passbook-code"' not in missing.text
    client.cookies.clear()
    log_in(client, district.other_point_login)  # another service point: refused, code or not
    refused = client.get(base, params={"code": printed})
    assert refused.status_code == 403 and "刘洋" not in refused.text
