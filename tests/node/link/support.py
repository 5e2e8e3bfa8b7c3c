"""Helpers for the link's tests: a link of one node replaced by one built for the test."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from nacl.signing import SigningKey

from node.link.clearing_link import ClearingLink
from tests.federation.conftest import CH_KEY, City
from timebank.keys import public_key

CH_PUBLIC = public_key(CH_KEY)
#: A key that is not the clearinghouse's.
STRANGER = SigningKey(b"not the city's clearinghouse".ljust(32, b"."))


def replace_link(city: City, node_id: str, *, start: bool = True,
                 clearinghouse_key: bytes = CH_PUBLIC, **options: Any) -> ClearingLink:
    """Stop the node's link and give it a new one, built with ``options``; the fixture
    stops it at the end."""
    d = city[node_id]
    d.link.stop()
    d.link = ClearingLink(d.app, city.address, clearinghouse_key, d.key, **options)
    if start:
        d.link.start()
    return d.link


def eventually(condition: Callable[[], bool], timeout: float) -> bool:
    """Whether ``condition`` holds within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
