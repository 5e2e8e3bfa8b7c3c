"""TLS for every gRPC server and client of the city (ADR 0015).

The city runs its own certificate authority (``timebank pki``, ``city.pki``). Servers
present a certificate it issued; the clearinghouse also requires one from each client
(mutual TLS) and reads the caller's identity from it: a SAN URI ``timebank:node:<id>``
names a district's node, ``timebank:observer:<name>`` a read-only observer (monitor,
audit), ``timebank:bureau:<name>`` an operator of the bureau (its console).
``identity_of`` is the one reader of that naming, ``node_uri``, ``observer_uri`` and
``bureau_uri`` its writers.

``server_credentials`` hands gRPC a fetcher that looks at the certificate, key and
client CA files on every new connection and reads them again when one changed (by
inode, size or time), so a renewed certificate is served to new connections without a
restart; a file that does not load keeps the previous ones in service and is logged.
``channel`` is the one place a client channel is made (``tls=None``: plaintext, only
where an operator said ``--insecure``). ``Revocations`` is the CRL a server re-reads the
same way; ``revocation_check`` refuses a revoked client certificate UNAUTHENTICATED on
every call (gRPC's handshake checks the chain and the validity period, not a CRL).

Private key files are read with ``runtime.keyfiles.read_private_file``: refused when other
users can read them.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from runtime import keyfiles
from runtime.config import Setting, Table, resolve_path
from runtime.errors import ConfigError, Unauthenticated
from runtime.protocol import versioned
from timebank.protocol import PROTOCOL, Version

log = structlog.get_logger("runtime.tls")

#: A PEM file (certificate chain, CA bundle, CRL) is refused beyond this size.
MAX_PEM_BYTES = 1024 * 1024
MAX_KEY_BYTES = 16 * 1024
URI_PREFIX = "timebank:"
NODE = "node"
OBSERVER = "observer"
BUREAU = "bureau"
#: The kinds of caller a client certificate may name.
CALLER_KINDS = (NODE, OBSERVER, BUREAU)
#: The reasons a server refuses a call for the certificate it came with, not for what
#: it asked: a client waits and tries again once an operator fixed the certificate.
CERTIFICATE_REVOKED = "CERTIFICATE_REVOKED"
NO_CLIENT_CERTIFICATE = "NO_CLIENT_CERTIFICATE"
CERTIFICATE_NOT_A_CALLER = "CERTIFICATE_NOT_A_CALLER"
CERTIFICATE_NOT_FOR_DISTRICT = "CERTIFICATE_NOT_FOR_DISTRICT"
READ_ONLY_CERTIFICATE = "READ_ONLY_CERTIFICATE"
#: A bureau certificate on an rpc that carries a district's signed envelopes.
NOT_A_NODE_CERTIFICATE = "NOT_A_NODE_CERTIFICATE"
#: A node's or observer's certificate (or none: plaintext) on an rpc only the bureau calls.
NOT_A_BUREAU_CERTIFICATE = "NOT_A_BUREAU_CERTIFICATE"
CERTIFICATE_REFUSALS = frozenset({CERTIFICATE_REVOKED, NO_CLIENT_CERTIFICATE,
                                  CERTIFICATE_NOT_A_CALLER, CERTIFICATE_NOT_FOR_DISTRICT,
                                  READ_ONLY_CERTIFICATE, NOT_A_NODE_CERTIFICATE,
                                  NOT_A_BUREAU_CERTIFICATE})
#: How many parsed client certificates ``peer_certificate`` keeps (one per caller).
_PARSED_CERTIFICATES = 256


@dataclass(frozen=True, slots=True)
class ServerTls:
    """What a server serves TLS with. ``client_ca`` set: every client must present a
    certificate that CA issued (mutual TLS). ``crl``: the CA's revocation list, read
    again when it changes; a revoked client certificate is refused UNAUTHENTICATED."""

    cert: Path
    key: Path
    client_ca: Path | None = None
    crl: Path | None = None

    def __post_init__(self) -> None:
        if self.crl is not None and self.client_ca is None:
            raise ConfigError("a CRL is checked against client certificates: set the client "
                              "CA too (CRL 需配合客户端 CA 使用)")


@dataclass(frozen=True, slots=True)
class ClientTls:
    """What a client trusts (``ca``) and, for mutual TLS, the certificate it presents.
    ``server_name``: the name the server's certificate must carry, when the address
    does not (a proxy, an IP not in the certificate)."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ConfigError("a client certificate needs its key, and a key its certificate "
                              "(客户端证书与私钥须同时给出)")


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a certificate names: ``kind`` is "node" (``name`` the node id), "observer" or
    "bureau" (``name`` the observer's or the bureau operator's name)."""

    kind: str
    name: str
    serial: int

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


def node_uri(node_id: str) -> str:
    return f"{URI_PREFIX}{NODE}:{node_id}"


def observer_uri(name: str) -> str:
    return f"{URI_PREFIX}{OBSERVER}:{name}"


def bureau_uri(name: str) -> str:
    return f"{URI_PREFIX}{BUREAU}:{name}"


def identity_of(cert: x509.Certificate) -> Identity | None:
    """The one ``timebank:`` identity a certificate's SAN names; None if it names none
    (a server certificate) or more than one (never issued by ``timebank pki``)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    found = [uri[len(URI_PREFIX):] for uri in san.get_values_for_type(
        x509.UniformResourceIdentifier) if uri.startswith(URI_PREFIX)]
    if len(found) != 1:
        return None
    kind, _, name = found[0].partition(":")
    if kind not in CALLER_KINDS or not name:
        return None
    return Identity(kind, name, cert.serial_number)


# ------------------------------------------------------------------ configuration

#: The ``[tls]`` table of node.toml and clearinghouse.toml.
TLS_TABLE = "tls"
TLS = Table(TLS_TABLE, "TLS（ADR 0015）：城市 CA 证书，本服务的证书与私钥（`timebank pki` 签发）。",
            "TLS (ADR 0015): the city CA's certificate, this service's certificate and key "
            "(issued by `timebank pki`). Relative paths are taken from this file's folder.")


def tls_settings(*, crl: bool) -> tuple[Setting, ...]:
    """The ``[tls]`` settings (``crl``: the clearinghouse's, which checks client
    certificates)."""
    def pem(key: str, zh: str, en: str, example: str) -> Setting:
        return Setting(TLS_TABLE, key, "", zh, en, path=True, rule_text="a file's path",
                       example=example)

    return (
        pem("ca", "城市 CA 的证书（由民政局提供）：对端证书据此校验。",
            "The city CA's certificate (from the bureau): the other side's certificate is "
            "checked against it.", "/etc/timebank/tls/ca.pem"),
        pem("cert", "本服务的证书：以之提供 TLS，并向其他服务出示。",
            "This service's certificate: it serves TLS with it and presents it to the "
            "services it calls.", "/etc/timebank/tls/service.pem"),
        pem("key", "该证书的私钥（仅服务用户可读，mode 0600）。",
            "That certificate's private key (readable by the service user only, mode "
            "0600).", "/etc/timebank/tls/service.key"),
        *((pem("crl", "城市 CA 的证书吊销列表，变更后自动重新读取。",
               "The city CA's revocation list (`timebank pki revoke`), read again when it "
               "changes; a revoked client certificate is refused.",
               "/etc/timebank/tls/ca.crl"),) if crl else ()),
        Setting(TLS_TABLE, "insecure", False, "true：不用 TLS，明文服务与调用（每次启动都会警告）。"
                "切勿用于生产。",
                "true serves and calls plaintext, with a warning at every start. Never in "
                "production."),
    )


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """A service's ``[tls]``: the city CA, its own certificate and key, the CRL it reads
    (clearinghouse), or ``insecure`` (plaintext, an operator's explicit choice)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    crl: Path | None = None
    insecure: bool = False

    @classmethod
    def of(cls, values: Mapping[str, object], base: Path) -> TlsSettings:
        """From the ``[tls]`` values read (relative paths taken from ``base``)."""
        def path(key: str) -> Path | None:
            raw = values.get(key)
            return resolve_path(base, raw) if isinstance(raw, str) and raw else None

        return cls(path("ca"), path("cert"), path("key"), path("crl"),
                   values.get("insecure") is True)

    def values(self, *, crl: bool) -> dict[tuple[str, str], str | bool]:
        """The ``[tls]`` settings ``init`` writes for these (``crl``: the table has one)."""
        def text(path: Path | None) -> str:
            return "" if path is None else str(path)

        out: dict[tuple[str, str], str | bool] = {
            (TLS_TABLE, "ca"): text(self.ca), (TLS_TABLE, "cert"): text(self.cert),
            (TLS_TABLE, "key"): text(self.key), (TLS_TABLE, "insecure"): self.insecure}
        if crl:
            out[(TLS_TABLE, "crl")] = text(self.crl)
        return out

    def _need(self, service: str, *keys: str) -> None:
        missing = [k for k in keys if getattr(self, k) is None]
        if missing:
            raise ConfigError(
                f"{service} 未配置 TLS：请在 [tls] 中设置 {', '.join(missing)}"
                f"（由 `timebank pki` 签发），或明确以 --insecure 明文运行 / [tls] "
                f"{', '.join(missing)} must be set (issued by `timebank pki`), or run "
                f"plaintext with --insecure (insecure = true)")

    def server(self, service: str, *, mutual: bool) -> ServerTls | None:
        """What the service serves; None when insecure. ``mutual``: clients must present
        a certificate the CA issued (and the CRL, if set, is checked)."""
        if self.insecure:
            return None
        self._need(service, "cert", "key", *(("ca",) if mutual else ()))
        assert self.cert is not None and self.key is not None
        return ServerTls(self.cert, self.key, self.ca if mutual else None,
                         self.crl if mutual else None)

    def client(self, service: str) -> ClientTls | None:
        """How the service calls others with its own certificate; None when insecure."""
        if self.insecure:
            return None
        self._need(service, "ca", "cert", "key")
        assert self.ca is not None
        return ClientTls(self.ca, self.cert, self.key)


NO_TLS = TlsSettings()


# ------------------------------------------------------------------ files


def read_pem(path: Path, what: str) -> bytes:
    """A public PEM file's bytes (certificate, CA, CRL); ConfigError says what is wrong."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_PEM_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"找不到{what}文件 / no {what} file at {path}") from None
    except OSError as e:
        raise ConfigError(f"无法读取{what}文件 / cannot read the {what} at {path}: "
                          f"{e.strerror}") from None
    if len(data) > MAX_PEM_BYTES:
        raise ConfigError(f"{what}文件过大 / the {what} at {path} is over {MAX_PEM_BYTES} bytes")
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{what}文件不是 PEM 格式 / the {what} at {path} is not PEM")
    return data


def read_key(path: Path) -> bytes:
    """A TLS private key file, refused when other users can read or change it."""
    try:
        data = keyfiles.read_private_file(path, MAX_KEY_BYTES + 1)
    except keyfiles.KeyFileError as e:
        raise ConfigError(f"TLS 私钥文件不可用 / TLS key file refused: {e}") from None
    if len(data) > MAX_KEY_BYTES or b"PRIVATE KEY-----" not in data:
        raise ConfigError(f"TLS 私钥文件不是 PEM 私钥 / {path} is not a PEM private key")
    return data


def _pair(cert: Path, key: Path) -> tuple[bytes, bytes]:
    """A certificate chain and its key, checked to belong together (gRPC would only say
    the handshake failed)."""
    chain, private = read_pem(cert, "证书 certificate"), read_key(key)
    try:
        leaf = x509.load_pem_x509_certificate(chain)
        loaded = serialization.load_pem_private_key(private, password=None)
    except ValueError as e:
        raise ConfigError(f"证书或私钥无法解析 / {cert} or {key} cannot be parsed: {e}") from None
    if leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo,
    ) != loaded.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise ConfigError(f"私钥与证书不匹配 / the key {key} is not the key of {cert}")
    return chain, private


def _stamp(paths: Sequence[Path | None]) -> tuple[tuple[int, int, int], ...]:
    """What changes when a file is replaced or rewritten."""
    out = []
    for path in paths:
        if path is None:
            continue
        try:
            st = os.stat(path)
        except OSError:
            out.append((0, 0, 0))
        else:
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


# ------------------------------------------------------------------ servers


class _Reloading:
    """The server's certificate configuration, read again when its files change."""

    def __init__(self, tls: ServerTls) -> None:
        self._tls = tls
        self._files = (tls.cert, tls.key, tls.client_ca)
        self._lock = threading.Lock()
        self._seen = _stamp(self._files)
        self.initial = self._load()

    def _load(self) -> Any:
        chain, key = _pair(self._tls.cert, self._tls.key)
        ca = (None if self._tls.client_ca is None
              else read_pem(self._tls.client_ca, "客户端 CA client CA"))
        return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=ca)

    def fetch(self) -> Any:
        """Called by gRPC before every handshake: a new configuration, or None to keep
        the one in use."""
        with self._lock:
            now = _stamp(self._files)
            if now == self._seen:
                return None
            try:
                config = self._load()
            except ConfigError as e:  # half-written or wrong: keep serving the old one
                log.warning("TLS 证书文件已更改但无法加载，继续使用原证书 / TLS files changed "
                            "but cannot be loaded; serving the previous ones", error=str(e))
                return None
            self._seen = now
            log.info("TLS 证书已重新加载 / TLS certificate reloaded", cert=str(self._tls.cert))
            return config


def server_credentials(tls: ServerTls) -> grpc.ServerCredentials:
    """Credentials serving ``tls``, picking up renewed files for new connections.
    Raises ConfigError when the files cannot be used now."""
    files = _Reloading(tls)
    return grpc.dynamic_ssl_server_credentials(
        files.initial, files.fetch,
        require_client_authentication=tls.client_ca is not None)


# ------------------------------------------------------------------ clients


def client_credentials(tls: ClientTls) -> grpc.ChannelCredentials:
    chain, key = (None, None) if tls.cert is None or tls.key is None else _pair(tls.cert,
                                                                                 tls.key)
    return grpc.ssl_channel_credentials(root_certificates=read_pem(tls.ca, "CA 证书 CA"),
                                        private_key=key, certificate_chain=chain)


#: A channel to a target that may name several servers spreads its calls over all of
#: them (gRPC's round_robin policy) and leaves out one that is down.
_ROUND_ROBIN = ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]}))


def first_host(address: str) -> str | None:
    """The host of the first server a target lists when it lists several
    (``ipv4:10.0.0.5:7400,10.0.0.6:7400`` gives ``10.0.0.5``), else None.

    gRPC checks a TLS server's certificate against the target's name; a list of
    addresses has none it can use, so every replica's certificate must carry the first
    one's host (the launcher's carry ``localhost`` and ``127.0.0.1``), or the client
    names the shared name itself (``ClientTls.server_name``)."""
    scheme, sep, rest = address.partition(":")
    if not sep or scheme not in ("ipv4", "ipv6") or "," not in rest:
        return None
    first = rest.split(",", 1)[0]
    host = first.rpartition(":")[0] if first.count(":") == 1 or first.startswith("[") else first
    return host.strip("[]") or None


def channel(address: str, tls: ClientTls | None,
            options: Sequence[tuple[str, Any]] | None = None, *,
            protocol: Version = PROTOCOL) -> grpc.Channel:
    """THE way a client channel is made: TLS checked against ``tls.ca`` (presenting
    ``tls.cert`` when set), or plaintext when ``tls`` is None (``--insecure`` only).

    ``address`` is HOST:PORT or any gRPC target: a DNS name that resolves to several
    servers (``dns:///clearinghouse.city:7400``) or a list
    (``ipv4:10.0.0.5:7400,10.0.0.6:7400``) reaches every replica, calls spread round
    robin over those that answer (a plain HOST:PORT keeps gRPC's default, the first
    address that answers). Every call on it carries ``protocol``
    (``runtime.protocol``: another release's servers refuse a different major). Raises
    ConfigError when the files cannot be used."""
    opts = list(options or [])
    if first_host(address) is not None or address.startswith("dns:"):
        opts.insert(0, _ROUND_ROBIN)  # a plain HOST:PORT keeps gRPC's default policy
    if tls is None:
        return versioned(grpc.insecure_channel(address, options=opts), protocol)
    name = tls.server_name or first_host(address)
    if name:
        opts.append(("grpc.ssl_target_name_override", name))
    return versioned(grpc.secure_channel(address, client_credentials(tls), options=opts),
                     protocol)


# ------------------------------------------------------------------ peers


@functools.lru_cache(maxsize=_PARSED_CERTIFICATES)
def _parse(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def peer_certificate(context: grpc.ServicerContext) -> x509.Certificate | None:
    """The client certificate gRPC verified for this call (None: plaintext, or TLS
    without a client certificate)."""
    found = context.auth_context().get("x509_pem_cert")
    if not found:
        return None
    return _parse(bytes(found[0]))


@functools.lru_cache(maxsize=_PARSED_CERTIFICATES)
def _identity(pem: bytes) -> Identity | None:
    return identity_of(_parse(pem))


def peer_identity(context: grpc.ServicerContext) -> Identity | None:
    """Who the verified client certificate names (``identity_of``), read once per
    certificate."""
    found = context.auth_context().get("x509_pem_cert")
    return _identity(bytes(found[0])) if found else None


class Revocations:
    """The serials a CRL lists, read again when its file changes. The CRL must be signed
    by ``ca``; one that is not, or does not parse, is refused at start (ConfigError) and
    ignored later, the last good one staying in force."""

    def __init__(self, crl: Path, ca: Path) -> None:
        self._crl = crl
        self._ca = x509.load_pem_x509_certificate(read_pem(ca, "CA 证书 CA"))
        self._lock = threading.Lock()
        self._seen = _stamp((crl,))
        self._serials = self._load()

    def _load(self) -> frozenset[int]:
        try:
            crl = x509.load_pem_x509_crl(read_pem(self._crl, "吊销列表 CRL"))
        except ValueError as e:
            raise ConfigError(f"吊销列表无法解析 / the CRL at {self._crl} cannot be parsed: "
                              f"{e}") from None
        if crl.issuer != self._ca.subject or not crl.is_signature_valid(
                self._ca.public_key()):  # type: ignore[arg-type]
            raise ConfigError(f"吊销列表不是本市 CA 签发的 / the CRL at {self._crl} is not "
                              f"signed by the city CA")
        return frozenset(entry.serial_number for entry in crl)

    def revoked(self, serial: int) -> bool:
        with self._lock:
            now = _stamp((self._crl,))
            if now != self._seen:
                try:
                    self._serials = self._load()
                    log.info("吊销列表已重新加载 / CRL reloaded", revoked=len(self._serials))
                except ConfigError as e:
                    log.warning("吊销列表已更改但无法加载，沿用上一份 / the CRL changed but "
                                "cannot be loaded; the previous one stays", error=str(e))
                self._seen = now
            return serial in self._serials


#: A check run before a call's handler: raises a Refusal to refuse it.
Check = Callable[[str, Any, grpc.ServicerContext], None]


def revocation_check(revocations: Revocations) -> Check:
    """Refuse a client certificate the CRL lists, UNAUTHENTICATED."""
    def check(method: str, request: Any, context: grpc.ServicerContext) -> None:
        cert = peer_certificate(context)
        if cert is not None and revocations.revoked(cert.serial_number):
            raise Unauthenticated(
                f"客户端证书已被吊销（序列号 {cert.serial_number:x}）/ the client certificate "
                f"(serial {cert.serial_number:x}) is revoked; ask the bureau for a new one",
                CERTIFICATE_REVOKED)
    return check


class CallChecks(grpc.ServerInterceptor):
    """Runs ``checks`` before each unary and server-streaming call's handler, inside the
    call observer (so a refusal is answered and logged as any other). Health and
    reflection are not checked."""

    def __init__(self, checks: Sequence[Check]) -> None:
        self._checks = tuple(checks)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        full = handler_call_details.method
        if handler is None or full.startswith(("/grpc.health.", "/grpc.reflection.")):
            return handler
        method = full.rsplit("/", 1)[-1]
        checks = self._checks
        unary, stream = handler.unary_unary, handler.unary_stream
        if unary is not None:
            def one(request: Any, context: grpc.ServicerContext) -> Any:
                for check in checks:
                    check(method, request, context)
                return unary(request, context)

            return grpc.unary_unary_rpc_method_handler(
                one, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if stream is not None:
            def many(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                for check in checks:
                    check(method, request, context)
                return stream(request, context)

            return grpc.unary_stream_rpc_method_handler(
                many, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return handler


__all__ = [
    "BUREAU",
    "CALLER_KINDS",
    "CERTIFICATE_NOT_A_CALLER",
    "CERTIFICATE_NOT_FOR_DISTRICT",
    "CERTIFICATE_REFUSALS",
    "CERTIFICATE_REVOKED",
    "NODE",
    "NOT_A_BUREAU_CERTIFICATE",
    "NOT_A_NODE_CERTIFICATE",
    "NO_CLIENT_CERTIFICATE",
    "NO_TLS",
    "OBSERVER",
    "READ_ONLY_CERTIFICATE",
    "TLS",
    "TLS_TABLE",
    "CallChecks",
    "Check",
    "ClientTls",
    "Identity",
    "Revocations",
    "ServerTls",
    "TlsSettings",
    "bureau_uri",
    "channel",
    "client_credentials",
    "first_host",
    "identity_of",
    "node_uri",
    "observer_uri",
    "peer_certificate",
    "peer_identity",
    "read_key",
    "read_pem",
    "revocation_check",
    "server_credentials",
    "tls_settings",
]
