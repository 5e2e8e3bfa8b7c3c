"""The sender against a real clearinghouse: a receipt or a tree head that does not check
out is not acted on (the message stays due, no head is kept); an unreachable
clearinghouse leaves every message waiting and backs the sender off."""

from __future__ import annotations

import socket

import pytest

from node.link.clearing_link import ClearingLink
from node.link.supervise import ClearinghouseAway
from node.link.verified_log import ReceiptError
from node.usecases import tree_heads
from tests.federation.conftest import City
from tests.federation.support import JN, enrol_at, pending_messages
from tests.helpers import id_card
from tests.node.link.support import CH_PUBLIC, STRANGER, replace_link
from timebank.keys import public_key


def test_a_receipt_not_proven_by_the_clearinghouse_is_not_acted_on(city: City) -> None:
    jn = city[JN].app
    link = replace_link(city, JN, start=False, clearinghouse_key=public_key(STRANGER))
    enrol_at(city, JN, "王芳", id_card(1965))  # queues her registration with the directory
    held = jn.query(tree_heads.verified, CH_PUBLIC)
    assert [kind for kind, _, _ in pending_messages(jn)] == ["directory.register"]
    with pytest.raises(ReceiptError, match="not signed by the clearinghouse"):
        link.send_pending()
    # nothing applied, nothing postponed, no head kept: the message is sent again as it is
    assert pending_messages(jn) == [("directory.register", 0, "")]
    assert jn.query(tree_heads.verified, CH_PUBLIC) == held
    # the same message, with the right key: the clearinghouse's receipt is taken
    link = replace_link(city, JN, start=False)
    assert link.send_pending() == 1
    assert pending_messages(jn) == []
    head = jn.query(tree_heads.verified, CH_PUBLIC)
    assert head is not None and head.size > (0 if held is None else held.size)


def test_an_unreachable_clearinghouse_leaves_every_message_waiting(city: City) -> None:
    jn = city[JN]
    replace_link(city, JN, start=False)
    for year in (1950, 1951, 1952):
        enrol_at(city, JN, f"李{year}", id_card(year))
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        nowhere = f"127.0.0.1:{s.getsockname()[1]}"
    link = ClearingLink(jn.app, nowhere, CH_PUBLIC, jn.key)
    try:
        with pytest.raises(ClearinghouseAway, match="UNAVAILABLE"):
            link.send_pending()
    finally:
        link.stop()
    waiting = pending_messages(jn.app)
    assert len(waiting) == 3
    assert all(attempts == 1 and detail.startswith("UNAVAILABLE") for _, attempts, detail
               in waiting)
