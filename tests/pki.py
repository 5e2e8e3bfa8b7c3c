"""A real city CA for tests (``city.pki``): certificates on disk, made per test.

``city_ca`` is a fresh CA in the test's folder; ``issue`` gives a leaf valid now, or
between other times (expired, not yet valid) when asked; ``tls_pair`` a server
certificate for 127.0.0.1 and a client that trusts the CA.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from city.pki.certs import SERVER, Subject
from city.pki.store import Authority, Issued
from runtime.tls import NODE, OBSERVER, ClientTls, ServerTls

HOST_NAMES = (("localhost",), ("127.0.0.1",))


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def issue(ca: Authority, kind: str, name: str, *, at: dt.datetime | None = None,
          days: int = 30) -> Issued:
    """A leaf of ``kind`` for ``name`` (nodes and servers reachable at 127.0.0.1),
    valid from ``at`` (default now) for ``days``."""
    dns, ips = HOST_NAMES if kind in (SERVER, NODE) else ((), ())
    return ca.issue(Subject(kind, name, dns, ips), at or now(), days)


def server_tls(ca: Authority, leaf: Issued, *, mutual: bool = True) -> ServerTls:
    return ServerTls(leaf.cert, leaf.key, ca.ca_cert if mutual else None,
                     ca.crl if mutual else None)


def client_tls(ca: Authority, leaf: Issued | None = None) -> ClientTls:
    return ClientTls(ca.ca_cert, None if leaf is None else leaf.cert,
                     None if leaf is None else leaf.key)


@pytest.fixture
def city_ca(tmp_path: Path) -> Authority:
    return Authority.init(tmp_path / "pki", "test city CA", now())


@pytest.fixture
def tls_pair(city_ca: Authority) -> tuple[ServerTls, ClientTls]:
    """A server certificate for 127.0.0.1 (no client certificates asked) and a client
    that trusts the city CA."""
    return server_tls(city_ca, issue(city_ca, SERVER, "probe"), mutual=False), \
        client_tls(city_ca)


__all__ = ["NODE", "OBSERVER", "SERVER", "city_ca", "client_tls", "issue", "now", "server_tls",
           "tls_pair"]
