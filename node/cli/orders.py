"""The ``order`` sub-app: the service loop, request → accept → check-in → check-out →
verify → (publicity period) → record; dispute, resolve, cancel; the volunteer's rating."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

import typer
from google.protobuf.timestamp_pb2 import Timestamp
from rich.markup import escape

from node.cli.client import DEFAULT_NODE_ADDRESS, NodeClient, connect, new_key
from node.cli.common import (
    INT64_MAX,
    ActingStaff,
    AsJson,
    ByPerson,
    ByStaff,
    IdempotencyKey,
    Layout,
    NodeAddress,
    OrderId,
    TableLayout,
    echo,
    fail,
    guarded,
    print_json,
)
from node.cli.render import laid_out, orders_table, render_order, to_json
from timebank.citytime import CITY_TZ
from timebank.v1 import node_pb2


class PaidBy(StrEnum):
    own = "own"
    relative = "relative"
    donation_pool = "donation-pool"
    city_grant = "city-grant"


class Outcome(StrEnum):
    uphold = "uphold"
    void = "void"


class State(StrEnum):
    requested = "requested"
    accepted = "accepted"
    checked_in = "checked-in"
    checked_out = "checked-out"
    verified = "verified"
    disputed = "disputed"
    recorded = "recorded"
    cancelled = "cancelled"


PAYMENT_SOURCES = {PaidBy.own: node_pb2.PAYMENT_SOURCE_OWN,
                   PaidBy.relative: node_pb2.PAYMENT_SOURCE_RELATIVE,
                   PaidBy.donation_pool: node_pb2.PAYMENT_SOURCE_DONATION_POOL,
                   PaidBy.city_grant: node_pb2.PAYMENT_SOURCE_CITY_GRANT}
ORDER_STATES = {State.requested: node_pb2.ORDER_STATE_REQUESTED,
                State.accepted: node_pb2.ORDER_STATE_ACCEPTED,
                State.checked_in: node_pb2.ORDER_STATE_CHECKED_IN,
                State.checked_out: node_pb2.ORDER_STATE_CHECKED_OUT,
                State.verified: node_pb2.ORDER_STATE_VERIFIED,
                State.disputed: node_pb2.ORDER_STATE_DISPUTED,
                State.recorded: node_pb2.ORDER_STATE_RECORDED,
                State.cancelled: node_pb2.ORDER_STATE_CANCELLED}


def parse_time(text: str) -> Timestamp:
    """ISO 8601; without a UTC offset the time is taken as Asia/Shanghai."""
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        fail(f"cannot read the time {text!r}: write it like 2026-03-02T09:30 "
             "(Asia/Shanghai) or 2026-03-02T09:30+08:00")
    if at.tzinfo is None:
        at = at.replace(tzinfo=CITY_TZ)
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


def make_actor(person_id: int, staff_id: int, doing: str) -> node_pb2.Actor | None:
    """The actor named (None: none; the node takes the caller)."""
    if person_id and staff_id:
        fail(f"say who {doing}: give at most one of --by-person ID or --by-staff ID")
    if person_id:
        return node_pb2.Actor(person_id=person_id)
    return node_pb2.Actor(staff_id=staff_id) if staff_id else None


order_app = typer.Typer(
    help="The service loop: request → accept → check-in → check-out → verify → "
         "(publicity period) → record; dispute, resolve, cancel; rate (the volunteer "
         "rates the person served).",
    no_args_is_help=True)


def _show_order(client: NodeClient, order: node_pb2.Order, as_json: bool, title: str) -> None:
    if as_json:
        print_json(to_json(order))
    else:
        echo(render_order(order, client, title))


@order_app.command("request")
@guarded
def order_request(
    recipient: Annotated[int, typer.Option("--recipient", metavar="ID", min=1, max=INT64_MAX,
                                           help="Who receives the service.")],
    category: Annotated[str, typer.Option(
        "--category", help="A policy category, by code or name: cleaning or 助洁 "
                           "(see `timebank node policy`).")],
    minutes: Annotated[int, typer.Option("--minutes", "-m", min=-INT64_MAX - 1, max=INT64_MAX,
                                         help="Planned service time in minutes.")],
    paid_by: Annotated[PaidBy, typer.Option(
        "--paid-by", help="Whose hours pay: the recipient's own, a linked relative's "
                          "(with --payer), the donation pool, or the city grant.")],
    payer: Annotated[int, typer.Option("--payer", metavar="ID", min=0, max=INT64_MAX,
                                       help="The relative paying (with --paid-by relative).")
                     ] = 0,
    by_person: ByPerson = 0, by_staff: ByStaff = 0,
    note: Annotated[str, typer.Option("--note")] = "",
    node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
    as_json: AsJson = False,
) -> None:
    """Request a service for an elder (需求提交)."""
    actor = make_actor(by_person, by_staff, "requests the service")
    key = key or new_key()
    with connect(node) as client:
        order = client.call(client.stub.RequestOrder, node_pb2.RequestOrderRequest(
            idempotency_key=key, recipient_id=recipient, category=category,
            planned_minutes=minutes,
            payment_source=PAYMENT_SOURCES[paid_by],
            payer_id=payer, requested_by=actor, note=note), key).order
        _show_order(client, order, as_json, f"order {order.id} requested")


@order_app.command("accept")
@guarded
def order_accept(
    order_id: OrderId,
    volunteer: Annotated[int, typer.Option("--volunteer", metavar="ID", min=1, max=INT64_MAX)],
    node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
    as_json: AsJson = False,
) -> None:
    """A volunteer takes the order (志愿接单); the payment is held."""
    key = key or new_key()
    with connect(node) as client:
        order = client.call(client.stub.AcceptOrder, node_pb2.AcceptOrderRequest(
            idempotency_key=key, order_id=order_id, volunteer_id=volunteer), key).order
        _show_order(client, order, as_json, f"order {order.id} accepted")


AtTime = Annotated[str, typer.Option(
    "--at", metavar="TIME",
    help="When it happened, e.g. 2026-03-02T09:30 (Asia/Shanghai). Default: now.")]


@order_app.command("check-in")
@guarded
def order_check_in(order_id: OrderId, at: AtTime = "",
                   node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
                   as_json: AsJson = False) -> None:
    """The volunteer arrives at the elder's home."""
    key = key or new_key()
    request = node_pb2.CheckInRequest(idempotency_key=key, order_id=order_id)
    if at:
        request.at.CopyFrom(parse_time(at))
    with connect(node) as client:
        order = client.call(client.stub.CheckIn, request, key).order
        _show_order(client, order, as_json, f"order {order.id} checked in")


@order_app.command("check-out")
@guarded
def order_check_out(order_id: OrderId, at: AtTime = "",
                    node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
                    as_json: AsJson = False) -> None:
    """The volunteer leaves; the service time is measured."""
    key = key or new_key()
    request = node_pb2.CheckOutRequest(idempotency_key=key, order_id=order_id)
    if at:
        request.at.CopyFrom(parse_time(at))
    with connect(node) as client:
        order = client.call(client.stub.CheckOut, request, key).order
        _show_order(client, order, as_json, f"order {order.id} checked out")


@order_app.command("verify")
@guarded
def order_verify(
    order_id: OrderId,
    rating: Annotated[int, typer.Option("--rating", min=-2**31, max=2**31 - 1,
                                        help="1 to 5 stars.")],
    comment: Annotated[str, typer.Option("--comment")] = "",
    by_person: ByPerson = 0, by_staff: ByStaff = 0,
    node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
    as_json: AsJson = False,
) -> None:
    """The recipient, their proxy or family, or staff confirm and rate the service."""
    actor = make_actor(by_person, by_staff, "verifies the service")
    key = key or new_key()
    with connect(node) as client:
        order = client.call(client.stub.VerifyOrder, node_pb2.VerifyOrderRequest(
            idempotency_key=key, order_id=order_id, verifier=actor, rating=rating,
            comment=comment), key).order
        _show_order(client, order, as_json, f"order {order.id} verified")


@order_app.command("rate")
@guarded
def order_rate(
    order_id: OrderId,
    rating: Annotated[int, typer.Option("--rating", min=-2**31, max=2**31 - 1,
                                        help="1 到 5 星 / 1 to 5 stars.")],
    comment: Annotated[str, typer.Option("--comment", help="评语 / A comment "
                                         "(at most 500 characters).")] = "",
    node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
    as_json: AsJson = False,
) -> None:
    """志愿者评价服务对象 / The volunteer rates the person served (满意度互评).

    Once the service is done (checked out, verified, disputed or recorded), by the
    order's volunteer (you, logged in), or staff for them. One rating per order: the
    same rating again changes nothing; a different one is refused (ALREADY_RATED)."""
    key = key or new_key()
    with connect(node) as client:
        order = client.call(client.stub.RateOrder, node_pb2.RateOrderRequest(
            idempotency_key=key, order_id=order_id, rating=rating, comment=comment),
            key).order
        _show_order(client, order, as_json, f"order {order.id}: rated by the volunteer")


@order_app.command("dispute")
@guarded
def order_dispute(
    order_id: OrderId,
    reason: Annotated[str, typer.Option("--reason")],
    by_person: ByPerson = 0, by_staff: ByStaff = 0,
    node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
    as_json: AsJson = False,
) -> None:
    """Dispute a verified order during its publicity period (社会监督)."""
    actor = make_actor(by_person, by_staff, "raises the dispute")
    key = key or new_key()
    with connect(node) as client:
        order = client.call(client.stub.DisputeOrder, node_pb2.DisputeOrderRequest(
            idempotency_key=key, order_id=order_id, raised_by=actor, reason=reason), key).order
        _show_order(client, order, as_json, f"order {order.id} disputed")


@order_app.command("resolve")
@guarded
def order_resolve(
    order_id: OrderId,
    outcome: Annotated[Outcome, typer.Option(
        "--outcome", help="uphold: the service stands; void: it is cancelled.")],
    resolution: Annotated[str, typer.Option("--resolution", help="How it was resolved.")],
    staff: ActingStaff = 0,
    corrected_minutes: Annotated[int, typer.Option(
        "--corrected-minutes", min=-INT64_MAX - 1, max=INT64_MAX,
        help="With uphold: the corrected service time (0 keeps the measured time).")] = 0,
    node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
    as_json: AsJson = False,
) -> None:
    """Staff settle a dispute."""
    key = key or new_key()
    with connect(node) as client:
        order = client.call(client.stub.ResolveDispute, node_pb2.ResolveDisputeRequest(
            idempotency_key=key, order_id=order_id, staff_id=staff,
            outcome=(node_pb2.DISPUTE_OUTCOME_UPHOLD_SERVICE if outcome is Outcome.uphold
                     else node_pb2.DISPUTE_OUTCOME_VOID_SERVICE),
            corrected_minutes=corrected_minutes, resolution=resolution), key).order
        _show_order(client, order, as_json, f"order {order.id}: dispute resolved")


@order_app.command("cancel")
@guarded
def order_cancel(
    order_id: OrderId,
    reason: Annotated[str, typer.Option("--reason")] = "",
    by_person: ByPerson = 0, by_staff: ByStaff = 0,
    node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
    as_json: AsJson = False,
) -> None:
    """Cancel an order before check-out; any held payment is released."""
    actor = make_actor(by_person, by_staff, "cancels the order")
    key = key or new_key()
    with connect(node) as client:
        order = client.call(client.stub.CancelOrder, node_pb2.CancelOrderRequest(
            idempotency_key=key, order_id=order_id, cancelled_by=actor, reason=reason), key).order
        _show_order(client, order, as_json, f"order {order.id} cancelled")


@order_app.command("record")
@guarded
def order_record(order_id: OrderId, node: NodeAddress = DEFAULT_NODE_ADDRESS,
                 key: IdempotencyKey = "", as_json: AsJson = False) -> None:
    """Record a verified order after its publicity period (公示期): the hours are stored.

    The node records due orders by itself; an order recorded already is shown as such,
    with exit code 0."""
    from node.usecases.orders import ALREADY_RECORDED

    key = key or new_key()
    with connect(node) as client:
        order = client.call(client.stub.RecordOrder, node_pb2.RecordOrderRequest(
            idempotency_key=key, order_id=order_id), key).order
        before = any(f"[{ALREADY_RECORDED}]" in notice for notice in order.notices)
        _show_order(client, order, as_json, f"order {order.id} "
                    + ("was already recorded" if before else "recorded"))


@order_app.command("record-due")
@guarded
def order_record_due(
    limit: Annotated[int, typer.Option("--limit", min=0, max=2**31 - 1,
                                       help="At most this many (0: the node's default).")] = 0,
    node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
    as_json: AsJson = False, layout: TableLayout = Layout.AUTO,
) -> None:
    """Record every verified order whose publicity period is over."""
    key = key or new_key()
    with connect(node) as client:
        response = client.call(client.stub.RecordDueOrders, node_pb2.RecordDueOrdersRequest(
            idempotency_key=key, limit=limit), key)
        if as_json:
            print_json(to_json(response))
            return
        if not response.recorded:
            echo("No order is due: none has finished its publicity period.")
            return
        echo(laid_out(orders_table(response.recorded, client), layout))
        for o in response.recorded:
            for notice in o.notices:
                echo(f"[yellow]order {o.id}:[/] {escape(notice)}")


@order_app.command("show")
@guarded
def order_show(order_id: OrderId, node: NodeAddress = DEFAULT_NODE_ADDRESS,
               as_json: AsJson = False) -> None:
    """Show one order."""
    with connect(node) as client:
        order = client.call(client.stub.GetOrder, node_pb2.GetOrderRequest(order_id=order_id)).order
        _show_order(client, order, as_json, "")


@order_app.command("list")
@guarded
def order_list(
    person: Annotated[int, typer.Option("--person", metavar="ID", min=0, max=INT64_MAX,
                                        help="Only orders this person receives or serves.")
                      ] = 0,
    state: Annotated[State | None, typer.Option("--state")] = None,
    limit: Annotated[int, typer.Option("--limit", min=0, max=2**31 - 1)] = 0,
    after: Annotated[int, typer.Option("--after", metavar="ORDER_ID", min=0, max=INT64_MAX,
                                       help="Page on from this order id.")] = 0,
    node: NodeAddress = DEFAULT_NODE_ADDRESS, as_json: AsJson = False,
    layout: TableLayout = Layout.AUTO,
) -> None:
    """List orders (newest last)."""
    request = node_pb2.ListOrdersRequest(person_id=person, limit=limit, after_id=after)
    if state is not None:
        request.state = ORDER_STATES[state]
    with connect(node) as client:
        response = client.call(client.stub.ListOrders, request)
        if as_json:
            print_json(to_json(response))
        elif not response.orders:
            echo("No orders.")
        else:
            echo(laid_out(orders_table(response.orders, client), layout))
