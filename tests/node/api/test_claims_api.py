"""The claims rpcs of a node that runs alone: clear refusals, and an empty clearing view.

A federated node's claims are exercised end to end in tests/federation and tests/city."""

from __future__ import annotations

import grpc

from tests.node.api.support import Api, key
from timebank.v1 import node_pb2 as pb

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def test_a_node_alone_refuses_to_move_anyone(api: Api) -> None:
    api.refused("MovePerson", pb.MovePersonRequest(idempotency_key=key(), person_id=1,
                                                   to_node_id="320113"),
                grpc.StatusCode.FAILED_PRECONDITION, reason="NOT_FEDERATED")


def test_a_visitor_cannot_be_enrolled_on_a_node_alone(api: Api) -> None:
    api.refused("EnrolPerson", pb.EnrolPersonRequest(
        idempotency_key=key(), kind=pb.PERSON_KIND_INDIVIDUAL, name="王芳",
        id_number="11010519491231002X", home_node_id="320106"),
        grpc.StatusCode.FAILED_PRECONDITION, reason="NOT_FEDERATED")
    api.refused("EnrolPerson", pb.EnrolPersonRequest(
        idempotency_key=key(), kind=pb.PERSON_KIND_INDIVIDUAL, name="王芳",
        id_number="11010519491231002X", home_node_id="32010"),
        INVALID, reason="MALFORMED_NODE_ID")


def test_claim_reads_refuse_bad_input(api: Api) -> None:
    api.refused("GetClaim", pb.GetClaimRequest(claim_id="nope"), INVALID,
                reason="MALFORMED_CLAIM_ID")
    api.refused("GetClaim", pb.GetClaimRequest(claim_id="0190f1c2-7a3b-7c4d-8e5f-000000000000"),
                grpc.StatusCode.NOT_FOUND, reason="UNKNOWN_CLAIM")
    api.refused("ListClaims", pb.ListClaimsRequest(state="done"), INVALID, reason="BAD_ENUM")
    api.refused("ListClaims", pb.ListClaimsRequest(limit=5000), INVALID)
    assert list(api.stub.ListClaims(pb.ListClaimsRequest()).claims) == []


def test_the_clearing_view_of_a_node_alone(api: Api) -> None:
    view = api.stub.GetClearing(pb.GetClearingRequest())
    assert not view.federated and view.net_minutes == 0 and view.open_claims == 0
