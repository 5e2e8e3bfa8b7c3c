"""TLS on real connections (``runtime.tls``): real certificates from a real city CA
(``city.pki``), real gRPC servers on 127.0.0.1, real handshakes.

A handshake that fails shows at the client as UNAVAILABLE and reaches no handler: every
refused connection below is checked to have called nothing.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import structlog
from cryptography import x509

from city.pki.certs import SERVER
from city.pki.store import Authority, Issued
from runtime.errors import ConfigError
from runtime.metrics import RpcMetrics
from runtime.observe import CallObserver
from runtime.rpcerrors import error_reason
from runtime.rpcstatus import ErrorMapping
from runtime.server import RunningServer, start_server
from runtime.tls import (
    BUREAU,
    NODE,
    OBSERVER,
    ClientTls,
    Identity,
    ServerTls,
    TlsSettings,
    bureau_uri,
    channel,
    identity_of,
    node_uri,
    observer_uri,
    peer_identity,
    server_credentials,
)
from tests.pki import client_tls, issue, now, server_tls

SERVICE = "timebank.test.TlsProbe"
METRICS = RpcMetrics.register("tlsprobe")
TIMEOUT = 5.0


class Calls:
    """What the probe's one method saw: the identity of each caller it served."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def who(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        found = peer_identity(context)
        self.seen.append("" if found is None else str(found))
        return self.seen[-1].encode()


def serve(tls: ServerTls | None, calls: Calls) -> RunningServer:
    handlers = grpc.method_handlers_generic_handler(
        SERVICE, {"Who": grpc.unary_unary_rpc_method_handler(calls.who)})
    return start_server(SERVICE, lambda s: s.add_generic_rpc_handlers((handlers,)),
                        CallObserver(METRICS, ErrorMapping("probe")), "127.0.0.1:0",
                        max_message_bytes=4096, workers=2, thread_name_prefix="tls-probe",
                        tls=tls)


def who(port: int, tls: ClientTls | None, *, host: str = "127.0.0.1") -> str:
    with channel(f"{host}:{port}", tls) as ch:
        return bytes(ch.unary_unary(f"/{SERVICE}/Who")(b"", timeout=TIMEOUT)).decode()


def refused_handshake(port: int, tls: ClientTls | None, calls: Calls) -> None:
    """The connection fails as a handshake failure does (UNAVAILABLE), calling nothing."""
    before = list(calls.seen)
    with pytest.raises(grpc.RpcError) as failed:
        who(port, tls)
    assert failed.value.code() is grpc.StatusCode.UNAVAILABLE, failed.value
    assert calls.seen == before


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def mutual(city_ca: Authority, calls: Calls) -> Iterator[RunningServer]:
    """A server asking every client for a certificate of the city CA (and checking its
    CRL), as the clearinghouse does."""
    running = serve(server_tls(city_ca, issue(city_ca, SERVER, "probe")), calls)
    yield running
    running.stop(None)


def _leaf_serial(port: int, ca: Path, client: Issued | None = None) -> int:
    """The serial of the certificate the server presents to a new connection now."""
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


# ------------------------------------------------------------------ server certificates


def test_a_tls_server_answers_a_client_that_trusts_its_ca(
        city_ca: Authority, calls: Calls) -> None:
    running = serve(server_tls(city_ca, issue(city_ca, SERVER, "probe"), mutual=False), calls)
    try:
        assert who(running.port, client_tls(city_ca)) == ""  # no client certificate asked
        assert who(running.port, client_tls(city_ca), host="localhost") == ""
        assert calls.seen == ["", ""]
    finally:
        running.stop(None)


def test_plaintext_is_refused_by_a_tls_server(city_ca: Authority, calls: Calls) -> None:
    running = serve(server_tls(city_ca, issue(city_ca, SERVER, "probe"), mutual=False), calls)
    try:
        refused_handshake(running.port, None, calls)
    finally:
        running.stop(None)


@pytest.mark.parametrize("when", ["expired", "not yet valid", "wrong CA", "wrong name"])
def test_a_bad_server_certificate_is_refused_by_the_client(
        city_ca: Authority, calls: Calls, tmp_path: Path, when: str) -> None:
    if when == "expired":
        leaf = issue(city_ca, SERVER, "probe", at=now() - dt.timedelta(days=40), days=30)
    elif when == "not yet valid":
        leaf = issue(city_ca, SERVER, "probe", at=now() + dt.timedelta(days=2), days=30)
    elif when == "wrong CA":
        other = Authority.init(tmp_path / "other", "another city", now())
        leaf = issue(other, SERVER, "probe")
    else:  # a certificate for another host than the address dialled
        from city.pki.certs import Subject

        leaf = city_ca.issue(Subject(SERVER, "probe", ("elsewhere.example",)), now())
    running = serve(ServerTls(leaf.cert, leaf.key), calls)
    try:
        refused_handshake(running.port, client_tls(city_ca), calls)
        if when == "wrong name":  # the name the certificate carries is accepted
            named = ClientTls(city_ca.ca_cert, server_name="elsewhere.example")
            assert who(running.port, named) == ""
    finally:
        running.stop(None)


# ------------------------------------------------------------------ client certificates


def test_mutual_tls_names_the_caller(city_ca: Authority, calls: Calls,
                                     mutual: RunningServer) -> None:
    node = issue(city_ca, NODE, "320115")
    observer = issue(city_ca, OBSERVER, "monitor")
    bureau = issue(city_ca, BUREAU, "zhang-wei")
    assert who(mutual.port, client_tls(city_ca, node)) == "node 320115"
    assert who(mutual.port, client_tls(city_ca, observer)) == "observer monitor"
    assert who(mutual.port, client_tls(city_ca, bureau)) == "bureau zhang-wei"


def test_identity_of_reads_one_known_kind(city_ca: Authority) -> None:
    """``identity_of`` names a node, an observer or a bureau operator; a certificate
    naming another kind, or two identities, names nobody."""
    import datetime as dt

    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    from city.pki.certs import new_key

    def made(*uris: str) -> x509.Certificate:
        key = new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
        at = dt.datetime.now(dt.UTC)
        return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(7)
                .not_valid_before(at).not_valid_after(at + dt.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(u) for u in uris]), critical=False)
                .sign(key, hashes.SHA256()))

    assert identity_of(made(bureau_uri("zhang-wei"))) == Identity(BUREAU, "zhang-wei", 7)
    assert identity_of(made(node_uri("320115"))) == Identity(NODE, "320115", 7)
    assert identity_of(made(observer_uri("monitor"))) == Identity(OBSERVER, "monitor", 7)
    assert identity_of(made("timebank:mayor:li")) is None
    assert identity_of(made("timebank:bureau:")) is None
    assert identity_of(made(bureau_uri("a"), node_uri("320115"))) is None
    read = identity_of(x509.load_pem_x509_certificate(
        issue(city_ca, BUREAU, "li-na").cert.read_bytes()))
    assert read is not None and (read.kind, read.name) == (BUREAU, "li-na")


@pytest.mark.parametrize("when", ["none", "expired", "not yet valid", "wrong CA"])
def test_a_bad_client_certificate_fails_the_handshake(
        city_ca: Authority, calls: Calls, mutual: RunningServer, tmp_path: Path,
        when: str) -> None:
    leaf: Issued | None
    if when == "none":
        leaf = None
    elif when == "expired":
        leaf = issue(city_ca, NODE, "320115", at=now() - dt.timedelta(days=40), days=30)
    elif when == "not yet valid":
        leaf = issue(city_ca, NODE, "320115", at=now() + dt.timedelta(days=2), days=30)
    else:
        leaf = issue(Authority.init(tmp_path / "other", "another city", now()), NODE, "320115")
    refused_handshake(mutual.port, client_tls(city_ca, leaf), calls)


def test_a_revoked_client_certificate_is_unauthenticated_from_the_next_call(
        city_ca: Authority, calls: Calls, mutual: RunningServer) -> None:
    node = issue(city_ca, NODE, "320115")
    other = issue(city_ca, NODE, "320106")
    with channel(f"127.0.0.1:{mutual.port}", client_tls(city_ca, node)) as ch:
        call = ch.unary_unary(f"/{SERVICE}/Who")
        assert call(b"", timeout=TIMEOUT) == b"node 320115"
        assert city_ca.revoke(node.serial, now())
        with pytest.raises(grpc.RpcError) as refused:  # the same open connection
            call(b"", timeout=TIMEOUT)
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(refused.value) == "CERTIFICATE_REVOKED"
    message = refused.value.details()
    assert message.startswith("客户端证书已被吊销") and f"{node.serial:x}" in message
    assert calls.seen == ["node 320115"]  # the refused call reached no handler
    assert who(mutual.port, client_tls(city_ca, other)) == "node 320106"  # others still work
    assert not city_ca.revoke(node.serial, now())  # listed once


def test_a_crl_that_is_not_the_cas_keeps_the_last_good_one(
        city_ca: Authority, calls: Calls, mutual: RunningServer, tmp_path: Path) -> None:
    node = issue(city_ca, NODE, "320115")
    city_ca.revoke(node.serial, now())
    with pytest.raises(grpc.RpcError) as refused:  # the server has read the revocation
        who(mutual.port, client_tls(city_ca, node))
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    forged = Authority.init(tmp_path / "forger", "test city CA", now())  # the same name
    with structlog.testing.capture_logs() as logs:
        os.replace(forged.crl, city_ca.crl)  # a CRL by another key, listing nobody
        with pytest.raises(grpc.RpcError) as refused:
            who(mutual.port, client_tls(city_ca, node))
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert any("CRL" in e["event"] and e["log_level"] == "warning" for e in logs)


# ------------------------------------------------------------------ renewal


def test_a_renewed_certificate_is_served_to_new_connections_without_a_restart(
        city_ca: Authority, calls: Calls, mutual: RunningServer) -> None:
    client = issue(city_ca, OBSERVER, "monitor")
    first = _leaf_serial(mutual.port, city_ca.ca_cert, client)
    assert first == city_ca.leaf("probe").serial_number
    with structlog.testing.capture_logs() as logs:
        renewed = city_ca.renew("probe", now())
        second = _leaf_serial(mutual.port, city_ca.ca_cert, client)
    assert second == renewed.serial != first
    assert any("reloaded" in e["event"] for e in logs)
    assert who(mutual.port, client_tls(city_ca, client)) == "observer monitor"


def test_a_broken_renewal_keeps_the_certificate_in_service(
        city_ca: Authority, calls: Calls, mutual: RunningServer) -> None:
    client = issue(city_ca, OBSERVER, "monitor")
    first = _leaf_serial(mutual.port, city_ca.ca_cert, client)
    cert = city_ca.cert_file("probe")
    tmp = cert.with_suffix(".half")
    tmp.write_bytes(cert.read_bytes()[:100])  # half a file, put in place in one step
    with structlog.testing.capture_logs() as logs:
        os.replace(tmp, cert)
        assert _leaf_serial(mutual.port, city_ca.ca_cert, client) == first
    assert any(e["log_level"] == "warning" and "previous" in e["event"] for e in logs)


# ------------------------------------------------------------------ files


def test_a_key_file_others_can_read_is_refused(city_ca: Authority, calls: Calls) -> None:
    leaf = issue(city_ca, SERVER, "probe")
    os.chmod(leaf.key, 0o644)
    with pytest.raises(ConfigError, match=r"TLS 私钥文件不可用 .*readable by other users"):
        serve(ServerTls(leaf.cert, leaf.key), calls)
    with pytest.raises(ConfigError, match="readable by other users"):
        channel("127.0.0.1:1", ClientTls(city_ca.ca_cert, leaf.cert, leaf.key))
    os.chmod(leaf.key, 0o600)
    serve(ServerTls(leaf.cert, leaf.key), calls).stop(None)


def test_a_key_that_is_not_the_certificates_is_refused(city_ca: Authority) -> None:
    one, two = issue(city_ca, SERVER, "one"), issue(city_ca, SERVER, "two")
    with pytest.raises(ConfigError, match="私钥与证书不匹配"):
        server_credentials(ServerTls(one.cert, two.key))
    with pytest.raises(ConfigError, match="no 证书 certificate file"):
        server_credentials(ServerTls(one.cert.with_name("missing.pem"), one.key))


def test_settings_refuse_to_serve_without_tls_unless_insecure(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^node 320115 未配置 TLS.*--insecure"):
        TlsSettings().server("node 320115", mutual=False)
    with pytest.raises(ConfigError, match=r"\[tls\] ca must be set"):
        TlsSettings(cert=tmp_path / "c", key=tmp_path / "k").server("x", mutual=True)
    assert TlsSettings(insecure=True).server("x", mutual=True) is None
    assert TlsSettings(insecure=True).client("x") is None
    found = TlsSettings(tmp_path / "ca", tmp_path / "c", tmp_path / "k", tmp_path / "crl")
    assert found.server("x", mutual=True) == ServerTls(tmp_path / "c", tmp_path / "k",
                                                       tmp_path / "ca", tmp_path / "crl")
    assert found.server("x", mutual=False) == ServerTls(tmp_path / "c", tmp_path / "k")


def test_a_list_of_replicas_is_checked_against_its_first_host() -> None:
    from runtime.tls import first_host

    assert first_host("ipv4:127.0.0.1:7400,127.0.0.1:7401") == "127.0.0.1"
    assert first_host("ipv6:[::1]:7400,[::1]:7401") == "::1"
    assert first_host("127.0.0.1:7400") is None  # one server: its own name
    assert first_host("dns:///clearinghouse.city:7400") is None  # the DNS name
