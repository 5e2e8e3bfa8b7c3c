"""GetPassbook over a real node's gRPC API, in a whole city: the serving node asks the
clearinghouse over its link and signs with the key it holds, and the statement it sends
verifies offline with only the city's two keys. Whoever may read the person's balance
and history gets it; anyone else is refused before the city is asked; before any
checkpoint is anchored the answer is FAILED_PRECONDITION. Every passbook sent is kept:
asked with its code (the digest on paper), the node sends that very file again, however
much later, and only to whoever may read its person, asking for that person."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import grpc
import pytest

from node.api.server import start_server
from node.cli.client import authorized
from node.domain.access import Role
from node.domain.orders import PersonKind
from node.domain.policy import Relation
from node.usecases import logins, people
from tests.federation.conftest import CH_KEY, CITY_ROOT, City
from tests.federation.support import JN, QX, enrol_at
from tests.federation.test_statement import anchor_and_cosign
from tests.helpers import earn, enrol, id_card
from tests.node.api.support import TIMEOUT, assert_status, authenticated
from timebank.keys import public_key
from timebank.passbook import digest, load, paper_code, verify_statement
from timebank.v1 import node_pb2 as pb
from timebank.v1 import node_pb2_grpc

ROOT_PUB, CH_PUB = public_key(CITY_ROOT), public_key(CH_KEY)
DENIED = grpc.StatusCode.PERMISSION_DENIED
FAILED = grpc.StatusCode.FAILED_PRECONDITION


@dataclass
class District:
    """江宁区's node served on 127.0.0.1 with its link, and its people."""

    city: City
    channel: grpc.Channel
    volunteer: int  # 刘洋, at service point 1, has earned 135 minutes
    daughter: int  # 刘洋's daughter (linked)
    stranger: int  # linked to nobody
    staff1: int  # at 刘洋's service point
    staff2: int  # at another service point
    elder: int  # whom 刘洋 serves

    def stub(self, role: Role, bound: int = 0) -> node_pb2_grpc.NodeServiceStub:
        return authenticated(self.city[JN].app, self.channel, role, bound)

    def passbook(self, role: Role, bound: int = 0,
                 person: int | None = None) -> pb.GetPassbookResponse:
        who = self.volunteer if person is None else person
        answer: pb.GetPassbookResponse = self.stub(role, bound).GetPassbook(
            pb.GetPassbookRequest(person_id=who), timeout=TIMEOUT + 5)
        return answer

    def program(self, scope: str) -> node_pb2_grpc.NodeServiceStub:
        _, token = self.city[JN].app.execute(logins.issue_token, f"app-{scope}", (scope,), 30)
        return node_pb2_grpc.NodeServiceStub(authorized(self.channel, token))


@pytest.fixture
def district(city: City) -> Iterator[District]:
    d = city[JN]
    app = d.app
    p1 = app.execute(people.register_service_point, "P1", "东山服务点", "东山街道")
    p2 = app.execute(people.register_service_point, "P2", "秣陵服务点", "秣陵街道")
    staff1 = app.execute(people.register_staff, "陈静", p1.id).id
    staff2 = app.execute(people.register_staff, "周敏", p2.id).id
    volunteer = app.execute(people.enrol_person, PersonKind.INDIVIDUAL, "刘洋", id_card(1958),
                            "13800000000", False, p1.id).id
    daughter = enrol_at(city, JN, "刘丽", id_card(1985))
    stranger = enrol_at(city, JN, "孙强", id_card(1970))
    app.execute(people.link_people, volunteer, daughter, Relation.CHILD, staff1)
    elder = enrol(app, "孙奶奶", 1936, priority=True).id
    earn(app, city.clock, volunteer, 90, elder)
    earn(app, city.clock, volunteer, 45, elder)
    city.settle()
    running = start_server(app, "127.0.0.1:0", link=d.link)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield District(city, channel, volunteer, daughter, stranger, staff1, staff2, elder)
    finally:
        channel.close()
        running.stop(None)


def test_whoever_may_read_the_hours_gets_a_passbook_that_verifies_offline(
        district: District) -> None:
    anchor_and_cosign(district.city, JN)
    callers = [(Role.MEMBER, district.volunteer), (Role.MEMBER, district.daughter),
               (Role.STAFF, district.staff1), (Role.OPERATOR, 0), (Role.AUDITOR, 0)]
    for role, bound in callers:
        answer = district.passbook(role, bound)
        doc = load(answer.statement_json)
        found = verify_statement(doc, ROOT_PUB, CH_PUB)
        assert (found.name, found.district, found.total) == ("刘洋", "江宁区", 135), role
        assert found.final and answer.cosigned and answer.warning == ""
        assert found.statement_digest == answer.statement_digest == digest(doc["statement"])
        assert (answer.person_name, answer.balance_total_minutes, answer.entry_count) == (
            "刘洋", 135, 2)
        assert answer.anchor_entry_count == found.entry_count
        assert answer.log_index == found.log_index
        assert len(paper_code(answer.statement_digest).split()) == 16
        assert "刘洋".encode() in answer.statement_json  # UTF-8, not escaped
    assert district.program("read").GetPassbook(pb.GetPassbookRequest(person_id=district.volunteer),
                              timeout=TIMEOUT).balance_total_minutes == 135


def test_anyone_else_is_refused(district: District) -> None:
    anchor_and_cosign(district.city, JN)
    for stub, reason in ((district.stub(Role.MEMBER, district.stranger), "NOT_AUTHORISED"),
                         (district.stub(Role.STAFF, district.staff2),
                          "NOT_YOUR_SERVICE_POINT")):
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetPassbook(pb.GetPassbookRequest(person_id=district.volunteer),
                             timeout=TIMEOUT)
        assert_status(caught.value, DENIED, reason=reason)
    with pytest.raises(grpc.RpcError) as caught:
        district.program("enrol").GetPassbook(pb.GetPassbookRequest(person_id=district.volunteer),
                             timeout=TIMEOUT)
    assert_status(caught.value, DENIED, reason="ROLE_NOT_ALLOWED")


def test_before_any_checkpoint_is_anchored_it_is_a_failed_precondition(
        district: District) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        district.passbook(Role.MEMBER, district.volunteer)
    assert_status(caught.value, FAILED, reason="NOT_ANCHORED",
                  says=("尚未在全市公开日志中封存", "anchored in the city's log"))
    # a stranger learns nothing, not even that: the access rule comes first
    with pytest.raises(grpc.RpcError) as caught:
        district.passbook(Role.MEMBER, district.stranger)
    assert_status(caught.value, DENIED, reason="NOT_AUTHORISED")


def test_a_visitor_and_nobody_are_refused_with_their_reasons(district: District) -> None:
    anchor_and_cosign(district.city, JN)
    visitor = enrol_at(district.city, JN, "王芳", id_card(1965, "320113"), home=QX)
    with pytest.raises(grpc.RpcError) as caught:
        district.passbook(Role.OPERATOR, person=visitor)
    assert_status(caught.value, FAILED, reason="NOT_HOME_DISTRICT", says=(QX,))
    with pytest.raises(grpc.RpcError) as caught:
        district.passbook(Role.OPERATOR, person=987_654)
    assert_status(caught.value, grpc.StatusCode.NOT_FOUND)
    with pytest.raises(grpc.RpcError) as caught:
        district.passbook(Role.OPERATOR, person=0)
    assert_status(caught.value, grpc.StatusCode.INVALID_ARGUMENT, says=("person_id",))


def _by_code(stub: node_pb2_grpc.NodeServiceStub, person_id: int,
             code: bytes) -> pb.GetPassbookResponse:
    answer: pb.GetPassbookResponse = stub.GetPassbook(
        pb.GetPassbookRequest(person_id=person_id, code=code), timeout=TIMEOUT + 5)
    return answer


def test_a_passbook_issued_is_given_again_by_its_code_weeks_later(
        district: District) -> None:
    anchor_and_cosign(district.city, JN)
    first = district.passbook(Role.STAFF, district.staff1)  # printed at the service point
    district.city.clock.advance(timedelta(days=1))
    unchanged = district.passbook(Role.MEMBER, district.volunteer)
    assert unchanged == first  # nothing it cites changed: the same file, kept once
    district.city.clock.advance(timedelta(days=20))  # she serves on; the ledger is anchored
    earn(district.city[JN].app, district.city.clock, district.volunteer, 30, district.elder)
    district.city.settle()
    anchor_and_cosign(district.city, JN)
    second = district.passbook(Role.STAFF, district.staff1)
    assert second.statement_digest != first.statement_digest  # a new one cites a new anchor
    for role, bound in ((Role.STAFF, district.staff1), (Role.MEMBER, district.volunteer),
                        (Role.MEMBER, district.daughter), (Role.AUDITOR, 0)):
        again = _by_code(district.stub(role, bound), district.volunteer,
                         first.statement_digest)
        assert again.statement_json == first.statement_json, role  # byte for byte
        assert again == first, role  # and every field the page shows
    found = verify_statement(load(again.statement_json), ROOT_PUB, CH_PUB)
    assert found.statement_digest == first.statement_digest and found.total == 135
    assert _by_code(district.stub(Role.OPERATOR), district.volunteer,
                    second.statement_digest) == second
    kept = district.city[JN].app.query(
        lambda tx: tx.repo.passbooks.get(first.statement_digest))
    assert kept is not None and kept.person_id == district.volunteer


def test_a_code_is_only_its_persons_and_only_for_who_may_read_them(
        district: District) -> None:
    anchor_and_cosign(district.city, JN)
    code = district.passbook(Role.MEMBER, district.volunteer).statement_digest
    operator = district.stub(Role.OPERATOR)
    with pytest.raises(grpc.RpcError) as caught:  # a code no passbook was issued with
        _by_code(operator, district.volunteer, bytes(32))
    assert_status(caught.value, grpc.StatusCode.NOT_FOUND, reason="UNKNOWN_PASSBOOK")
    # a real code asked as someone else's: not found, nothing of 刘洋's is said
    for stub, person in ((district.stub(Role.MEMBER, district.stranger), district.stranger),
                         (district.stub(Role.MEMBER, district.daughter), district.daughter),
                         (operator, district.stranger)):
        with pytest.raises(grpc.RpcError) as caught:
            _by_code(stub, person, code)
        assert_status(caught.value, grpc.StatusCode.NOT_FOUND, reason="UNKNOWN_PASSBOOK")
        assert "刘洋" not in (caught.value.details() or "")
    # whoever may not read 刘洋 is refused as before, code or not
    for stub, reason in ((district.stub(Role.MEMBER, district.stranger), "NOT_AUTHORISED"),
                         (district.stub(Role.STAFF, district.staff2),
                          "NOT_YOUR_SERVICE_POINT")):
        with pytest.raises(grpc.RpcError) as caught:
            _by_code(stub, district.volunteer, code)
        assert_status(caught.value, DENIED, reason=reason)
    for bad in (code[:31], code + b"\x00"):
        with pytest.raises(grpc.RpcError) as caught:
            _by_code(operator, district.volunteer, bad)
        assert_status(caught.value, grpc.StatusCode.INVALID_ARGUMENT,
                      reason="MALFORMED_CODE", says=("code",))
