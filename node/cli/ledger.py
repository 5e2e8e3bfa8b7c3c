"""Hours: donate, grant, reverse, balance, history, and the city policy."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from node.cli.client import DEFAULT_NODE_ADDRESS, connect, new_key
from node.cli.common import (
    INT64_MAX,
    ActingStaff,
    AsJson,
    IdempotencyKey,
    Layout,
    Minutes,
    NodeAddress,
    PersonId,
    TableLayout,
    echo,
    guarded,
    print_json,
)
from node.cli.render import (
    history_table,
    laid_out,
    render_balance,
    render_policy,
    render_transaction,
    to_json,
    who,
)
from timebank.minutes import format_hours
from timebank.v1 import node_pb2


@guarded
def donate(person_id: PersonId, minutes: Minutes,
           node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
           as_json: AsJson = False) -> None:
    """Give stored hours to the donation pool (it serves priority elders first)."""
    key = key or new_key()
    with connect(node) as client:
        tx = client.call(client.stub.Donate, node_pb2.DonateRequest(
            idempotency_key=key, person_id=person_id, minutes=minutes), key).transaction
    if as_json:
        print_json(to_json(tx))
    else:
        echo(render_transaction(tx, f"donated {format_hours(minutes)} · ledger entry {tx.seq}"))


@guarded
def grant(person_id: PersonId, minutes: Minutes,
          staff: ActingStaff = 0,
          memo: Annotated[str, typer.Option("--memo")] = "",
          node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
          as_json: AsJson = False) -> None:
    """Grant city-fund hours to a priority elder."""
    key = key or new_key()
    with connect(node) as client:
        tx = client.call(client.stub.Grant, node_pb2.GrantRequest(
            idempotency_key=key, person_id=person_id, minutes=minutes, staff_id=staff,
            memo=memo), key).transaction
    if as_json:
        print_json(to_json(tx))
    else:
        echo(render_transaction(tx, f"granted {format_hours(minutes)} · ledger entry {tx.seq}"))


@guarded
def reverse(seq: Annotated[int, typer.Argument(min=1, max=INT64_MAX, metavar="SEQ",
                                               help="The ledger entry to correct.")],
            reason: Annotated[str, typer.Option("--reason")],
            staff: ActingStaff = 0,
            node: NodeAddress = DEFAULT_NODE_ADDRESS, key: IdempotencyKey = "",
            as_json: AsJson = False) -> None:
    """Correct a mistake by appending the entry that undoes it (history is never edited)."""
    key = key or new_key()
    with connect(node) as client:
        tx = client.call(client.stub.ReverseTransaction, node_pb2.ReverseTransactionRequest(
            idempotency_key=key, seq=seq, staff_id=staff, reason=reason), key).transaction
    if as_json:
        print_json(to_json(tx))
    else:
        echo(render_transaction(tx, f"entry {seq} reversed by ledger entry {tx.seq}"))


@guarded
def balance(person_id: PersonId, node: NodeAddress = DEFAULT_NODE_ADDRESS,
            as_json: AsJson = False) -> None:
    """A person's stored hours: total, held, available, and by origin."""
    with connect(node) as client:
        result = client.call(client.stub.GetBalance,
                             node_pb2.GetBalanceRequest(person_id=person_id))
        if as_json:
            print_json(to_json(result))
        else:
            echo(render_balance(result, client.name_of(person_id)))


@guarded
def history(
    person_id: PersonId,
    limit: Annotated[int, typer.Option("--limit", min=0, max=2**31 - 1,
                                       help="At most this many entries (0: 100).")] = 0,
    after: Annotated[int, typer.Option("--after", metavar="SEQ", min=0, max=INT64_MAX,
                                       help="Page on from this ledger entry.")] = 0,
    newest_first: Annotated[bool, typer.Option(
        "--newest-first", help="The latest entries first (page back with --before).")] = False,
    before: Annotated[int, typer.Option("--before", metavar="SEQ", min=0, max=INT64_MAX,
                                        help="With --newest-first: page back from this "
                                             "ledger entry.")] = 0,
    node: NodeAddress = DEFAULT_NODE_ADDRESS, as_json: AsJson = False,
    layout: TableLayout = Layout.AUTO,
) -> None:
    """A person's ledger entries, oldest first (or newest first)."""
    with connect(node) as client:
        result = client.call(client.stub.GetHistory, node_pb2.GetHistoryRequest(
            person_id=person_id, limit=limit, after_seq=after, newest_first=newest_first,
            before_seq=before))
        if as_json:
            print_json(to_json(result))
        elif not result.entries:
            echo(f"{who(client, person_id)} has no ledger entries yet.")
        else:
            echo(laid_out(history_table(result, client.name_of(person_id)), layout))


@guarded
def policy_show(node: NodeAddress = DEFAULT_NODE_ADDRESS, as_json: AsJson = False,
                source: Annotated[bool, typer.Option(
                    "--source", help="Print the policy file exactly as published.")] = False,
                ) -> None:
    """The city policy this node applies now: signed by the city (its serial, since when)
    or, until the city's first is in force, the local policy file; and the next one."""
    with connect(node) as client:
        result = client.call(client.stub.GetPolicy, node_pb2.GetPolicyRequest())
    if source:
        sys.stdout.write(result.source_toml)
    elif as_json:
        print_json(to_json(result))
    else:
        echo(render_policy(result))
