"""ListPublicOrders: the public supervision page (社会监督) over the wire, with no
credential, on the shared ``world`` (one order in every state)."""

from __future__ import annotations

import grpc

from node.domain.orders import OrderState as S
from tests.node.api.conftest import World
from tests.node.api.support import TIMEOUT
from timebank.v1 import node_pb2 as pb

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _anonymous(world: World, request: pb.ListPublicOrdersRequest
               ) -> pb.ListPublicOrdersResponse:
    answer: pb.ListPublicOrdersResponse = world.api.stub_as("").ListPublicOrders(
        request, timeout=TIMEOUT)
    return answer


def test_anyone_sees_the_orders_in_publicity_and_no_one_in_them(world: World) -> None:
    with world.api.unchanged():
        answer = _anonymous(world, pb.ListPublicOrdersRequest())
    verified, disputed = world.orders[S.VERIFIED], world.orders[S.DISPUTED]
    # requested … checked out, recorded (its period is over) and cancelled are not public
    assert [o.id for o in answer.orders] == sorted([verified, disputed])
    shown = {o.id: o for o in answer.orders}
    v = shown[verified]
    assert (v.category, v.category_name, v.service_point, v.minutes, v.recipient,
            v.volunteer, v.disputed) == ("cleaning", "助洁", "东山街道为老服务站", 60, "张**",
                                         "赵*", False)
    assert shown[disputed].disputed
    order = world.api.order(verified)
    assert v.served_at == order.checked_out_at and v.public_until == order.public_until
    # nothing that identifies anyone enrolled on the node, anywhere in the bytes sent
    raw = answer.SerializeToString()
    everyone = [world.elder, world.volunteer, world.volunteer2, world.parent, world.stranger,
                world.proxy, world.young, world.group]
    people = world.api.app.query(lambda tx: tx.repo.people.by_ids(everyone))
    assert len(people) == len(everyone)
    for p in people.values():
        for secret in (p.name, p.id_number, p.phone):
            if secret:
                assert secret.encode() not in raw, (p.id, secret)
    assert world.elder_id_number.encode() not in raw


def test_public_orders_are_paged(world: World) -> None:
    first = _anonymous(world, pb.ListPublicOrdersRequest(limit=1)).orders
    assert [o.id for o in first] == [world.orders[S.VERIFIED]]
    rest = _anonymous(world, pb.ListPublicOrdersRequest(after_id=first[0].id)).orders
    assert [o.id for o in rest] == [world.orders[S.DISPUTED]]


def test_bad_pages_are_invalid(world: World) -> None:
    for request, reason, says in [
        (pb.ListPublicOrdersRequest(limit=201), "LIMIT_OUT_OF_RANGE", "200"),
        (pb.ListPublicOrdersRequest(limit=-1), "LIMIT_OUT_OF_RANGE", "200"),
        (pb.ListPublicOrdersRequest(after_id=2**31), "ID_OUT_OF_RANGE", "after_id"),
    ]:
        world.api.refused("ListPublicOrders", request, INVALID, reason=reason, says=(says,))
