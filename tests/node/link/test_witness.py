"""The witness against a real clearinghouse: it cosigns a head once, and never one it
cannot verify under the clearinghouse's key (it stores nothing either)."""

from __future__ import annotations

import grpc
import pytest

from node.link.verified_log import ReceiptError
from node.usecases import tree_heads
from tests.federation.conftest import City
from tests.federation.support import JN, enrol_at
from tests.helpers import id_card
from tests.node.link.support import CH_PUBLIC, STRANGER, replace_link
from timebank.keys import public_key
from timebank.v1 import clearing_pb2, clearing_pb2_grpc


def cosigners(city: City, size: int) -> list[str]:
    with grpc.insecure_channel(city.address) as channel:
        stub = clearing_pb2_grpc.ClearinghouseServiceStub(channel)
        return list(stub.GetTreeHead(clearing_pb2.GetTreeHeadRequest(size=size),
                                     timeout=5).head.cosigners)


def test_the_witness_cosigns_only_heads_it_verified(city: City) -> None:
    app = city[JN].app
    replace_link(city, JN, start=False)  # the test witnesses by hand
    enrol_at(city, JN, "王芳", id_card(1965))
    city[JN].link.send_pending()
    held = app.query(tree_heads.cosigned, CH_PUBLIC)
    wrong = replace_link(city, JN, start=False, clearinghouse_key=public_key(STRANGER))
    with pytest.raises(ReceiptError, match="not signed by the clearinghouse"):
        wrong.witness_once()
    assert app.query(tree_heads.cosigned, CH_PUBLIC) == held
    right = replace_link(city, JN, start=False)
    size = right.witness_once()
    assert size >= 1 and JN in cosigners(city, size)
    cosigned = app.query(tree_heads.cosigned, CH_PUBLIC)
    assert cosigned is not None and cosigned.size == size
    assert right.witness_once() == 0  # the same head is not cosigned twice
