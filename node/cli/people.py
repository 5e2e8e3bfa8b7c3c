"""People: service points, staff, enrolment, one person, family and proxy links."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from node.cli.client import DEFAULT_NODE_ADDRESS, NodeClient, connect, new_key
from node.cli.common import (
    INT64_MAX,
    ActingStaff,
    AsJson,
    IdempotencyKey,
    NodeAddress,
    PersonId,
    echo,
    guarded,
    print_json,
)
from node.cli.render import fmt_time, link_name, render_person, to_json, who
from timebank.v1 import node_pb2


class Kind(StrEnum):
    individual = "individual"
    group = "group"


class Relation(StrEnum):
    spouse = "spouse"
    parent = "parent"
    child = "child"
    sibling = "sibling"
    grandparent = "grandparent"
    grandchild = "grandchild"
    proxy = "proxy"


PERSON_KINDS = {Kind.individual: node_pb2.PERSON_KIND_INDIVIDUAL,
                Kind.group: node_pb2.PERSON_KIND_GROUP}
LINK_KINDS = {Relation.spouse: node_pb2.LINK_KIND_SPOUSE,
              Relation.parent: node_pb2.LINK_KIND_PARENT,
              Relation.child: node_pb2.LINK_KIND_CHILD,
              Relation.sibling: node_pb2.LINK_KIND_SIBLING,
              Relation.grandparent: node_pb2.LINK_KIND_GRANDPARENT,
              Relation.grandchild: node_pb2.LINK_KIND_GRANDCHILD,
              Relation.proxy: node_pb2.LINK_KIND_PROXY}

service_point_app = typer.Typer(help="Service points (社区服务点).", no_args_is_help=True)
staff_app = typer.Typer(help="Service-point staff (服务点工作人员).", no_args_is_help=True)


@service_point_app.command("add")
@guarded
def service_point_add(
    code: Annotated[str, typer.Option("--code", help="A short ASCII code, e.g. JN-DS-01.")],
    name: Annotated[str, typer.Option("--name", help="e.g. 东山街道佛城西路社区服务点")],
    street: Annotated[str, typer.Option("--street", help="The street (街道).")] = "",
    node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
    as_json: AsJson = False,
) -> None:
    """Register a service point."""
    key = key or new_key()
    with connect(node) as client:
        point = client.call(client.stub.RegisterServicePoint, node_pb2.RegisterServicePointRequest(
            idempotency_key=key, code=code, name=name, street=street), key).service_point
    if as_json:
        print_json(to_json(point))
        return
    street_text = f" ({escape(point.street)})" if point.street else ""
    echo(f"Registered service point [bold]{point.id}[/]: {escape(point.code)} "
         f"{escape(point.name)}{street_text}")


@staff_app.command("add")
@guarded
def staff_add(
    name: Annotated[str, typer.Option("--name")],
    service_point: Annotated[int, typer.Option("--service-point", metavar="ID", min=1,
                                               max=INT64_MAX)],
    node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
    as_json: AsJson = False,
) -> None:
    """Register a staff member of a service point."""
    key = key or new_key()
    with connect(node) as client:
        staff = client.call(client.stub.RegisterStaff, node_pb2.RegisterStaffRequest(
            idempotency_key=key, name=name, service_point_id=service_point), key).staff
    if as_json:
        print_json(to_json(staff))
        return
    echo(f"Registered staff member [bold]{staff.id}[/]: {escape(staff.name)} at service point "
         f"{staff.service_point_id}")


@guarded
def enrol(
    name: Annotated[str, typer.Option("--name", help="The person's or group's name.")],
    id_number: Annotated[str, typer.Option(
        "--id-number", metavar="NUMBER",
        help="Individuals: the 18-character ID card number. Groups: the unified social "
             "credit code. Stays on this node.")],
    kind: Annotated[Kind, typer.Option("--kind", help="individual (个人) or group (团体).")
                    ] = Kind.individual,
    priority: Annotated[bool, typer.Option(
        "--priority", help="A priority elder (重点空巢独居老人).")] = False,
    phone: Annotated[str, typer.Option("--phone")] = "",
    service_point: Annotated[int, typer.Option("--service-point", metavar="ID", min=0,
                                               max=INT64_MAX)] = 0,
    home_node: Annotated[str, typer.Option(
        "--home-node", metavar="CODE",
        help="Enrol a visitor: the 6-digit code of the district that keeps this person's "
             "hours (e.g. 320115). Default: this district keeps them.")] = "",
    node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
    as_json: AsJson = False,
) -> None:
    """Enrol a volunteer, an elder or a group (one account per person).

    With --home-node, a visitor whose hours another district keeps: services they receive
    here are paid by their home district through the city clearinghouse.
    """
    key = key or new_key()
    with connect(node) as client:
        person = client.call(client.stub.EnrolPerson, node_pb2.EnrolPersonRequest(
            idempotency_key=key, kind=PERSON_KINDS[kind],
            name=name, id_number=id_number, phone=phone, priority=priority,
            service_point_id=service_point, home_node_id=home_node.strip()), key).person
    if as_json:
        print_json(to_json(person))
        return
    echo(render_person(person, f"enrolled person {person.id}"))


class _ShowUnlessNamed(TyperGroup):
    """``node person 1`` shows person 1, as it always has; ``node person update 1 …``
    runs the subcommand named."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in self.commands:
            args = ["show", *args]
        return super().resolve_command(ctx, args)


person_app = typer.Typer(cls=_ShowUnlessNamed, no_args_is_help=True,
                         help="One person: `person PERSON_ID` shows them, `person update "
                              "PERSON_ID …` corrects their details.")


def standing_text(link: node_pb2.PersonLink) -> str:
    """How the other person of ``link`` stands to the person whose record it is."""
    if link.kind != node_pb2.LINK_KIND_PROXY:
        return link_name(link.kind)
    if link.acts_for_other:
        return "represented (委托人): this person acts for them as their proxy"
    return "proxy (委托代理人): acts for this person"


def render_person_and_links(person: node_pb2.Person, client: NodeClient,
                            title: str = "") -> Any:
    """A person as ``render_person`` shows them, with their links below: each other
    person (named when the caller may read their record) and how they stand to this one."""
    panel = render_person(person, title)
    if not person.links:
        return panel
    links = Table(box=None, padding=(0, 2), title_justify="left",
                  title="links: how each stands to this person (times in Asia/Shanghai)")
    for col in ("person", "relation", "linked"):
        links.add_column(col, overflow="fold")
    for link in person.links:
        links.add_row(who(client, link.other_id), standing_text(link), fmt_time(link.linked_at))
    return Group(panel, links)


@person_app.command("show")
@guarded
def person_show(person_id: PersonId, node: NodeAddress = DEFAULT_NODE_ADDRESS,
                as_json: AsJson = False) -> None:
    """Show one person, with the latest changes of their record and their links."""
    with connect(node) as client:
        person = client.call(client.stub.GetPerson,
                             node_pb2.GetPersonRequest(person_id=person_id)).person
        if as_json:
            print_json(to_json(person))
        else:
            echo(render_person_and_links(person, client))


@person_app.command("update")
@guarded
def person_update(
    person_id: PersonId,
    staff: ActingStaff = 0,
    priority: Annotated[bool | None, typer.Option(
        "--priority/--no-priority",
        help="Make the person a priority elder (重点空巢独居老人), or no longer one.")] = None,
    phone: Annotated[str | None, typer.Option(
        "--phone", help="The new phone number ('' clears it).")] = None,
    name: Annotated[str | None, typer.Option(
        "--name", help="The corrected name (a typo at enrolment); needs --reason.")] = None,
    service_point: Annotated[int | None, typer.Option(
        "--service-point", metavar="ID", min=0, max=INT64_MAX,
        help="Move the person to this service point (0: none). Staff move people only "
             "into their own point; the operator anywhere.")] = None,
    reason: Annotated[str, typer.Option(
        "--reason", help="Why, for the record (e.g. 民政局复核).")] = "",
    node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
    as_json: AsJson = False,
) -> None:
    """Correct a person's details: name, priority status, phone, service point (recorded
    with who and when, old and new).

    Only the options given change. An ID number is never changed: a wrong one is a new
    enrolment.
    """
    key = key or new_key()
    request = node_pb2.UpdatePersonRequest(idempotency_key=key, person_id=person_id,
                                           staff_id=staff, reason=reason)
    if priority is not None:
        request.priority = priority
    if phone is not None:
        request.phone = phone
    if name is not None:
        request.name = name
    if service_point is not None:
        request.service_point_id = service_point
    with connect(node) as client:
        person = client.call(client.stub.UpdatePerson, request, key).person
        if as_json:
            print_json(to_json(person))
            return
        echo(render_person_and_links(person, client, f"updated person {person.id}"))


@guarded
def link(
    person_id: PersonId,
    other_id: Annotated[int, typer.Argument(min=1, max=INT64_MAX, metavar="OTHER_ID")],
    relation: Annotated[Relation, typer.Option(
        "--as", help="What OTHER is to PERSON: `link 1 2 --as parent` records that person 2 "
                     "is person 1's parent (and 1 is 2's child).")],
    staff: Annotated[int, typer.Option("--staff", metavar="ID", min=0, max=INT64_MAX,
                                       help="The staff member recording the link.")] = 0,
    node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
    as_json: AsJson = False,
) -> None:
    """Link two people as family or proxy (委托人)."""
    key = key or new_key()
    with connect(node) as client:
        result = client.call(client.stub.LinkPeople, node_pb2.LinkPeopleRequest(
            idempotency_key=key, person_id=person_id, other_id=other_id,
            kind=LINK_KINDS[relation], staff_id=staff), key).link
        if as_json:
            print_json(to_json(result))
            return
        echo(f"Linked: {who(client, result.other_id)} is {who(client, result.person_id)}'s "
             f"[bold]{link_name(result.kind)}[/]")
