"""Enrolment asks the city directory first (one home per person), through each node's
real gRPC server and its clearing link: a district cannot make someone its own whom the
directory homes elsewhere, nor enrol a visitor naming the wrong home; a directory that
cannot be asked refuses a home enrolment (try again) and lets a visitor's through."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import pytest

from node.api.server import start_server
from node.link.clearing_link import ClearingLink
from tests.federation.conftest import CH_KEY, City
from tests.federation.support import GL, JN, QX
from tests.helpers import id_card, snapshot
from tests.node.api.support import assert_status, authenticated
from timebank.keys import public_key
from timebank.v1 import clearing_pb2, clearing_pb2_grpc, node_pb2, node_pb2_grpc


@contextmanager
def _node(city: City, node_id: str, link: ClearingLink | None = None,
          ) -> Iterator[node_pb2_grpc.NodeServiceStub]:
    running = start_server(city[node_id].app, link=link or city[node_id].link)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield authenticated(city[node_id].app, channel)
    finally:
        running.stop(1)


def _enrol(stub: node_pb2_grpc.NodeServiceStub, number: str, home: str = "",
           ) -> node_pb2.Person:
    person: node_pb2.Person = stub.EnrolPerson(node_pb2.EnrolPersonRequest(
        idempotency_key=str(uuid.uuid4()), kind=node_pb2.PERSON_KIND_INDIVIDUAL,
        name="李秀英", id_number=number, phone="13912340000", home_node_id=home), timeout=10).person
    return person


def _refused(city: City, stub: node_pb2_grpc.NodeServiceStub, node_id: str, number: str,
             home: str, code: grpc.StatusCode, reason: str,
             says: tuple[str, ...]) -> None:
    before = snapshot(city[node_id].app)
    with pytest.raises(grpc.RpcError) as caught:
        _enrol(stub, number, home)
    assert_status(caught.value, code, reason=reason, says=says)
    assert snapshot(city[node_id].app) == before  # no person, no registration queued


def _home(city: City, ref: str) -> str:
    with grpc.insecure_channel(city.address) as channel:
        return str(clearing_pb2_grpc.ClearinghouseServiceStub(channel).LookupPerson(
            clearing_pb2.LookupPersonRequest(person_ref=ref), timeout=5).home_node_id)


def test_a_person_the_directory_homes_elsewhere_is_not_made_a_second_home(
        city: City) -> None:
    number = id_card(1963)
    with _node(city, JN) as jn:
        home = _enrol(jn, number)  # nobody has registered her: 江宁区 becomes her home
        assert home.home_node_id == ""
    city.settle()
    assert _home(city, home.person_ref) == JN

    with _node(city, QX) as qx:
        _refused(city, qx, QX, number, "", grpc.StatusCode.FAILED_PRECONDITION,
                 "HOMED_ELSEWHERE",
                 (f"district {JN}", f"--home-node {JN}", f"--to {QX}", "move"))
        _refused(city, qx, QX, number, GL, grpc.StatusCode.FAILED_PRECONDITION,
                 "WRONG_HOME_DISTRICT", (f"district {JN}", f"not district {GL}"))
        visitor = _enrol(qx, number, JN)  # what the refusal says to do
    assert visitor.home_node_id == JN and visitor.person_ref == home.person_ref
    city.settle()
    assert _home(city, home.person_ref) == JN  # one home, unchanged


def test_without_the_directory_a_home_enrolment_waits_and_a_visitor_does_not(
        city: City) -> None:
    d = city[GL]
    away = ClearingLink(d.app, "127.0.0.1:1", public_key(CH_KEY), d.key)  # never started
    try:
        with _node(city, GL, away) as gl:
            _refused(city, gl, GL, id_card(1950, GL), "", grpc.StatusCode.UNAVAILABLE,
                     "DIRECTORY_UNAVAILABLE", ("city directory", "try again"))
            visitor = _enrol(gl, id_card(1951), JN)
    finally:
        away.stop(0)
    assert visitor.home_node_id == JN
