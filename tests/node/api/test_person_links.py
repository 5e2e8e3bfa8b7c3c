"""A person's links through a real server (LinkPeople, then GetPerson), on SQLite and
PostgreSQL: each of the two people's records lists the link from their own side, with
when it was made, however many changes their record has had since."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest

from node.domain.access import Role
from node.domain.links import MAX_LINKS_SHOWN
from tests.node.api.support import TIMEOUT, Api, assert_status, key
from timebank.v1 import node_pb2 as pb


def _desk(api: Api, code: str = "GL-LK-01") -> tuple[int, int]:
    """A service point and a staff member of it: (point, staff)."""
    point = api.stub.RegisterServicePoint(pb.RegisterServicePointRequest(
        idempotency_key=key(), code=code, name="鼓楼区为老服务中心"),
        timeout=TIMEOUT).service_point
    staff = api.stub.RegisterStaff(pb.RegisterStaffRequest(
        idempotency_key=key(), name="周敏", service_point_id=point.id), timeout=TIMEOUT).staff
    return int(point.id), int(staff.id)


def _links(api: Api, person_id: int) -> list[tuple[int, str, bool, datetime]]:
    person = api.stub.GetPerson(pb.GetPersonRequest(person_id=person_id),
                                timeout=TIMEOUT).person
    return [(link.other_id, pb.LinkKind.Name(link.kind), link.acts_for_other,
             link.linked_at.ToDatetime(tzinfo=UTC)) for link in person.links]


def test_after_a_link_each_record_lists_it_from_its_own_side(api: Api) -> None:
    point, staff = _desk(api)
    mother = api.enrol("吴淑贞", 1938, point=point).id
    daughter = api.enrol("吴晓梅", 1968, point=point).id
    husband = api.enrol("吴建国", 1936, point=point).id
    neighbour = api.enrol("陈阿姨", 1958, point=point).id
    grandson = api.enrol("吴小宇", 1995, point=point).id
    assert _links(api, mother) == []

    first = api.clock.now()
    assert api.link(mother, daughter, pb.LINK_KIND_CHILD, staff) == pb.Link(
        person_id=mother, other_id=daughter, kind=pb.LINK_KIND_CHILD)
    assert _links(api, mother) == [(daughter, "LINK_KIND_CHILD", False, first)]
    assert _links(api, daughter) == [(mother, "LINK_KIND_PARENT", False, first)]

    api.clock.advance(timedelta(days=1))
    second = api.clock.now()
    api.link(husband, mother, pb.LINK_KIND_SPOUSE, staff)
    api.link(mother, neighbour, pb.LINK_KIND_PROXY, staff)  # the neighbour acts for her
    api.link(grandson, mother, pb.LINK_KIND_GRANDPARENT, staff)
    assert _links(api, mother) == [
        (daughter, "LINK_KIND_CHILD", False, first),
        (husband, "LINK_KIND_SPOUSE", False, second),
        (neighbour, "LINK_KIND_PROXY", False, second),
        (grandson, "LINK_KIND_GRANDCHILD", False, second)]
    assert _links(api, husband) == [(mother, "LINK_KIND_SPOUSE", False, second)]
    # the proxy's record: the mother is the one she acts for
    assert _links(api, neighbour) == [(mother, "LINK_KIND_PROXY", True, second)]
    assert _links(api, grandson) == [(mother, "LINK_KIND_GRANDPARENT", False, second)]


def test_a_link_stays_listed_after_many_later_changes(api: Api) -> None:
    point, staff = _desk(api)
    elder = api.enrol("孙玉珍", 1939, point=point).id
    son = api.enrol("孙志刚", 1963, point=point).id
    api.link(elder, son, pb.LINK_KIND_CHILD, staff)
    made = api.clock.now()
    for i in range(25):  # more changes than a record returns
        api.clock.advance(timedelta(minutes=1))
        updated = api.stub.UpdatePerson(pb.UpdatePersonRequest(
            idempotency_key=key(), person_id=elder, staff_id=staff,
            phone=f"1380000{i:04d}"), timeout=TIMEOUT).person
    assert "link" not in [c.kind for c in updated.changes]
    # UpdatePerson answers the record as GetPerson does, links and all
    assert [(link.other_id, link.kind) for link in updated.links] == [(son, pb.LINK_KIND_CHILD)]
    assert _links(api, elder) == [(son, "LINK_KIND_CHILD", False, made)]
    assert _links(api, son) == [(elder, "LINK_KIND_PARENT", False, made)]
    found = api.stub.FindPeople(pb.FindPeopleRequest(query="孙玉珍"), timeout=TIMEOUT).people
    assert [p.id for p in found] == [elder] and not found[0].links  # as without changes


def test_a_record_lists_at_most_the_first_links_made(api: Api) -> None:
    point, staff = _desk(api)
    elder = api.enrol("钱桂芳", 1941, point=point).id
    others = [api.enrol(f"钱家{i}", 1970, point=point).id for i in range(MAX_LINKS_SHOWN + 2)]
    for other in others:
        api.link(elder, other, pb.LINK_KIND_SIBLING, staff)
    listed = _links(api, elder)
    assert [other for other, *_ in listed] == others[:MAX_LINKS_SHOWN]
    assert _links(api, others[-1]) == [(elder, "LINK_KIND_SIBLING", False, api.clock.now())]


@pytest.mark.parametrize("role", [Role.STAFF, Role.MEMBER])
def test_whoever_may_read_the_record_reads_its_links_and_no_one_else(
        api: Api, role: Role) -> None:
    point, staff = _desk(api)
    _, far_staff = _desk(api, "GL-LK-02")
    mother = api.enrol("郑阿婆", 1935, point=point).id
    daughter = api.enrol("郑晓燕", 1965, point=point).id
    api.link(mother, daughter, pb.LINK_KIND_CHILD, staff)
    caller = api.stub_as(api.login(role, staff if role is Role.STAFF else daughter))
    seen = caller.GetPerson(pb.GetPersonRequest(person_id=daughter), timeout=TIMEOUT).person
    assert [(link.other_id, link.kind) for link in seen.links] == [
        (mother, pb.LINK_KIND_PARENT)]
    far = api.stub_as(api.login(Role.STAFF, far_staff))
    with pytest.raises(grpc.RpcError) as caught:
        far.GetPerson(pb.GetPersonRequest(person_id=daughter), timeout=TIMEOUT)
    assert_status(caught.value, grpc.StatusCode.PERMISSION_DENIED)
