"""The ``consent`` sub-app (ADR 0017): a payer's consent that their hours pay for someone
else's services, granted, revoked and listed on the payer's home node."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Annotated

import typer
from google.protobuf.timestamp_pb2 import Timestamp
from rich.markup import escape

from node.cli.client import DEFAULT_NODE_ADDRESS, connect, new_key
from node.cli.common import (
    INT64_MAX,
    AsJson,
    ByPerson,
    ByStaff,
    IdempotencyKey,
    NodeAddress,
    echo,
    fail,
    guarded,
    print_json,
)
from node.cli.orders import make_actor, parse_time
from node.cli.render import enum_short, fmt_time, to_json
from timebank.citytime import CITY_TZ
from timebank.minutes import format_hours
from timebank.v1 import node_pb2

consent_app = typer.Typer(
    help="Consent (付款同意): a payer lets their hours pay for a relative's services — "
         "standing (bounded, revocable) or once. Kept by the payer's home district.",
    no_args_is_help=True)

ConsentId = Annotated[int, typer.Argument(metavar="CONSENT_ID", min=1, max=INT64_MAX)]
_STATE_ZH = {"active": "有效", "used": "已用", "revoked": "已撤销"}
_KIND_ZH = {"standing": "长期同意", "once": "一次性确认"}


def parse_until(text: str) -> Timestamp:
    """A date (the consent ends as that day ends, Asia/Shanghai) or a time."""
    try:
        day = datetime.strptime(text.strip(), "%Y-%m-%d").date()
    except ValueError:
        return parse_time(text)
    ts = Timestamp()
    ts.FromDatetime(datetime.combine(day + timedelta(days=1), time(), CITY_TZ))
    return ts


def render(c: node_pb2.Consent, title: str) -> str:
    kind = enum_short(node_pb2.ConsentKind.DESCRIPTOR, c.kind)
    state = enum_short(node_pb2.ConsentState.DESCRIPTOR, c.state)
    to = f"person {c.grantee_id}" if c.grantee_id else f"PersonRef {c.grantee_ref[:16]}…"
    bounds = [f"每单至多 {format_hours(c.max_minutes)}" if c.max_minutes else "每单不限",
              f"总额 {format_hours(c.total_minutes)}，已用 {format_hours(c.used_minutes)}"
              if c.total_minutes else f"已用 {format_hours(c.used_minutes)}"]
    lines = [f"[bold]{escape(title)}[/]",
             f"  {_KIND_ZH.get(kind, kind)} ({kind}) {c.id}: person {c.payer_id} → {to}"
             + (f", 订单 {c.order_id} (order)" if c.order_id else ""),
             f"  {'；'.join(bounds)}",
             f"  {_STATE_ZH.get(state, state)} ({state}"
             + (", in force" if c.in_force else ", not in force") + f"), 至 "
             f"{fmt_time(c.expires_at)} (until)",
             f"  授予 (granted) {fmt_time(c.granted_at)} by {escape(c.granted_by)}"]
    if c.revoked_by:
        lines.append(f"  撤销 (revoked) {fmt_time(c.revoked_at)} by {escape(c.revoked_by)}")
    return "\n".join(lines)


@consent_app.command("grant")
@guarded
def consent_grant(
    payer: Annotated[int, typer.Option("--payer", metavar="ID", min=1, max=INT64_MAX,
                                       help="Whose hours pay (a person kept here).")],
    to: Annotated[int, typer.Option("--to", metavar="ID", min=0, max=INT64_MAX,
                                    help="Whose services they pay for, enrolled here.")] = 0,
    to_ref: Annotated[str, typer.Option(
        "--to-ref", metavar="REF", help="Or that person's PersonRef (served in another "
                                        "district; `timebank node person ID` there shows it).")
    ] = "",
    to_id_number: Annotated[str, typer.Option(
        "--to-id-number", metavar="NUMBER", help="Or that person's 18-character ID card "
                                                 "number: this node derives their PersonRef "
                                                 "(a relative enrolled in another district).")
    ] = "",
    max_minutes: Annotated[int, typer.Option(
        "--max-minutes", min=0, max=INT64_MAX,
        help="At most this much per order (with --once: the minutes confirmed).")] = 0,
    total_minutes: Annotated[int, typer.Option("--total-minutes", min=0, max=INT64_MAX,
                                               help="At most this much in all.")] = 0,
    until: Annotated[str, typer.Option(
        "--until", metavar="DATE", help="Last day, e.g. 2027-06-30 (default and longest: a "
                                        "year; once: 30 days).")] = "",
    once: Annotated[bool, typer.Option("--once", help="A one-time confirmation.")] = False,
    order: Annotated[int, typer.Option("--order", metavar="ID", min=0, max=INT64_MAX,
                                       help="With --once: for this order here only.")] = 0,
    by_person: ByPerson = 0, by_staff: ByStaff = 0,
    node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
    as_json: AsJson = False,
) -> None:
    """The payer consents that their hours pay for a person's services (付款同意)."""
    actor = make_actor(by_person, by_staff, "records the consent (the payer, or staff)")
    if sum(map(bool, (to, to_ref, to_id_number))) != 1:
        fail("say whose services it pays for: give exactly one of --to ID, --to-ref REF or "
             "--to-id-number NUMBER")
    request = node_pb2.GrantConsentRequest(
        payer_id=payer, grantee_id=to, grantee_ref=to_ref, grantee_id_number=to_id_number,
        kind=node_pb2.CONSENT_KIND_ONCE if once else node_pb2.CONSENT_KIND_STANDING,
        max_minutes=max_minutes, total_minutes=total_minutes, order_id=order,
        granted_by=actor)
    if until:
        request.expires_at.CopyFrom(parse_until(until))
    request.idempotency_key = key = key or new_key()
    with connect(node) as client:
        granted = client.call(client.stub.GrantConsent, request, key).consent
    if as_json:
        print_json(to_json(granted))
    else:
        echo(render(granted, f"已登记同意 {granted.id} (consent {granted.id} granted)"))


@consent_app.command("revoke")
@guarded
def consent_revoke(
    consent_id: ConsentId, by_person: ByPerson = 0, by_staff: ByStaff = 0,
    node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
    as_json: AsJson = False,
) -> None:
    """Revoke a consent: no new service is paid under it (hours already held stay held)."""
    actor = make_actor(by_person, by_staff, "revokes the consent (the payer, or staff)")
    key = key or new_key()
    with connect(node) as client:
        revoked = client.call(client.stub.RevokeConsent, node_pb2.RevokeConsentRequest(
            idempotency_key=key, consent_id=consent_id, revoked_by=actor), key).consent
    if as_json:
        print_json(to_json(revoked))
    else:
        echo(render(revoked, f"已撤销同意 {revoked.id} (consent {revoked.id} revoked)"))


@consent_app.command("list")
@guarded
def consent_list(
    payer: Annotated[int, typer.Option("--payer", metavar="ID", min=1, max=INT64_MAX)],
    node: NodeAddress = DEFAULT_NODE_ADDRESS, as_json: AsJson = False,
) -> None:
    """A payer's consents, oldest first."""
    with connect(node) as client:
        found = client.call(client.stub.ListConsents,
                            node_pb2.ListConsentsRequest(payer_id=payer))
    if as_json:
        print_json([to_json(c) for c in found.consents])
        return
    if not found.consents:
        echo(f"person {payer} 没有同意记录 (has no consents)")
    for c in found.consents:
        echo(render(c, f"同意 {c.id} (consent {c.id})"))
