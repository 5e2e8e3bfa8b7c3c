"""The city's certificates, made: a CA, the leaves it issues, its revocation list.

Pure functions of keys, names and times (no files; ``city.pki.store`` keeps them). Every
key is ECDSA P-256; every certificate is X.509 v3 signed with SHA-256, its serial a
random 159-bit number. The CA is valid ``CA_DAYS`` by default and may issue only leaves
(path length 0). A leaf is valid at most ``MAX_LEAF_DAYS`` (``LEAF_DAYS`` by default,
the bound browsers keep for server certificates) and never beyond its CA. What a leaf
may do is in its extended key usage and its SAN:

* ``server``: serverAuth; DNS and IP SANs (the clearinghouse);
* ``node``: serverAuth and clientAuth, one certificate a district's node serves with and
  presents to the clearinghouse; SAN URI ``timebank:node:<id>`` and its DNS and IP names;
* ``observer``: clientAuth only; SAN URI ``timebank:observer:<name>`` (monitor, audit);
* ``bureau``: clientAuth only; SAN URI ``timebank:bureau:<name>``: an operator of the
  bureau (its console), who may read and close a settlement period (ADR 0015).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from runtime.errors import ConfigError
from runtime.tls import BUREAU, NODE, OBSERVER, bureau_uri, identity_of, node_uri, observer_uri

CA_DAYS = 3650
MAX_CA_DAYS = 7300
LEAF_DAYS = 397
MAX_LEAF_DAYS = 825
#: A CRL says when the next one is due; the clearinghouse reads each one as it comes.
CRL_DAYS = 30
MAX_NAMES = 16
MAX_NAME_CHARS = 63
#: A leaf issued now is valid from a little before, for clocks that lag.
BACKDATE = dt.timedelta(minutes=5)
SERVER = "server"
KINDS = (SERVER, NODE, OBSERVER, BUREAU)
#: The kinds only a client presents: no DNS or IP name, clientAuth only.
CLIENT_KINDS = (OBSERVER, BUREAU)
_NODE_ID = re.compile(r"[0-9]{6}")
_OBSERVER_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_CLIENT_WORDS = {OBSERVER: ("观察者", "an observer"), BUREAU: ("民政局操作员", "a bureau")}
_DNS = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}"
                  r"[a-z0-9])?)*")


class PkiError(ConfigError):
    """What was asked cannot be issued; the message (Chinese, then English) says why."""


@dataclass(frozen=True, slots=True)
class Subject:
    """Who a leaf is for: its kind, its name (node id, observer's, bureau operator's or
    server name) and the DNS names and IP addresses it is reached at."""

    kind: str
    name: str
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise PkiError(f"证书类型只能是 {', '.join(KINDS)} / a kind is one of "
                           f"{', '.join(KINDS)}, not {self.kind!r}")
        if self.kind == NODE and not _NODE_ID.fullmatch(self.name):
            raise PkiError(f"节点编号须为 6 位行政区划代码 / a node id is 6 digits, not "
                           f"{self.name!r}")
        if self.kind != NODE and not _OBSERVER_NAME.fullmatch(self.name):
            raise PkiError(f"名称只能含小写字母、数字和连字符（至多 32 个）/ a name is up to "
                           f"32 lowercase letters, digits and hyphens, not {self.name!r}")
        if len(self.dns) + len(self.ips) > MAX_NAMES:
            raise PkiError(f"最多 {MAX_NAMES} 个 DNS/IP 名称 / at most {MAX_NAMES} DNS and IP "
                           f"names")
        for name in self.dns:
            if not _DNS.fullmatch(name):
                raise PkiError(f"不是有效的 DNS 名称 / not a DNS name: {name!r}")
        for ip in self.ips:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise PkiError(f"不是有效的 IP 地址 / not an IP address: {ip!r}") from None
        if self.kind in CLIENT_KINDS and (self.dns or self.ips):
            zh, en = _CLIENT_WORDS[self.kind]
            raise PkiError(f"{zh}证书只用于客户端，不带 DNS/IP 名称 / {en} certificate is a "
                           "client's: it names no DNS name or IP address")
        if self.kind not in CLIENT_KINDS and not (self.dns or self.ips):
            raise PkiError("服务器与节点证书至少需要一个 DNS 名称或 IP 地址 / a server's or node's "
                           "certificate names at least one DNS name or IP address it is reached "
                           "at (--dns, --ip)")

    @property
    def file_stem(self) -> str:
        """The files' name in the CA's folder: ``node-320115``, ``observer-monitor``,
        ``bureau-zhang``, or the server's name."""
        return self.name if self.kind == SERVER else f"{self.kind}-{self.name}"


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _days(days: int, most: int) -> dt.timedelta:
    if isinstance(days, bool) or not 1 <= days <= most:
        raise PkiError(f"有效期须为 1 到 {most} 天 / a lifetime is 1 to {most} days, not {days}")
    return dt.timedelta(days=days)


def _aware(now: dt.datetime) -> dt.datetime:
    if now.tzinfo is None:
        raise PkiError("a time must carry its zone")  # a bug, never an operator's input
    return now.astimezone(dt.UTC)


def make_ca(key: ec.EllipticCurvePrivateKey, common_name: str, now: dt.datetime,
            days: int = CA_DAYS) -> x509.Certificate:
    """The city CA's self-signed certificate: it may sign leaves and CRLs, nothing else."""
    if not 1 <= len(common_name) <= MAX_NAME_CHARS:
        raise PkiError(f"CA 名称为 1 到 {MAX_NAME_CHARS} 个字符 / the CA's name is 1 to "
                       f"{MAX_NAME_CHARS} characters")
    now = _aware(now)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "timebank city")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + _days(days, MAX_CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))


def _sans(subject: Subject) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    if subject.kind == NODE:
        names.append(x509.UniformResourceIdentifier(node_uri(subject.name)))
    elif subject.kind == OBSERVER:
        names.append(x509.UniformResourceIdentifier(observer_uri(subject.name)))
    elif subject.kind == BUREAU:
        names.append(x509.UniformResourceIdentifier(bureau_uri(subject.name)))
    names += [x509.DNSName(d) for d in subject.dns]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in subject.ips]
    return names


def issue(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, subject: Subject,
          public_key: ec.EllipticCurvePublicKey, now: dt.datetime, days: int = LEAF_DAYS,
          ) -> x509.Certificate:
    """A leaf for ``subject``'s key, signed by the CA, valid from now for ``days`` (and
    never beyond the CA: PkiError if it would be)."""
    now = _aware(now)
    until = now + _days(days, MAX_LEAF_DAYS)
    if until > ca.not_valid_after_utc:
        raise PkiError(f"证书有效期不能超过 CA（至 {ca.not_valid_after_utc:%Y-%m-%d}）/ a "
                       f"certificate cannot outlive its CA ({ca.not_valid_after_utc:%Y-%m-%d}); "
                       f"ask for fewer days")
    usages = {SERVER: [ExtendedKeyUsageOID.SERVER_AUTH],
              NODE: [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
              OBSERVER: [ExtendedKeyUsageOID.CLIENT_AUTH],
              BUREAU: [ExtendedKeyUsageOID.CLIENT_AUTH]}[subject.kind]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject.file_stem)]))
        .issuer_name(ca.subject).public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False,
            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(_sans(subject)), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca_key.public_key()), critical=False))
    return builder.sign(ca_key, hashes.SHA256())


def subject_of(cert: x509.Certificate) -> Subject:
    """The subject a leaf was issued for (what ``renew`` issues again)."""
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = tuple(san.get_values_for_type(x509.DNSName))
    ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    who = identity_of(cert)
    if who is not None:
        return Subject(who.kind, who.name, dns, ips)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return Subject(SERVER, str(cn[0].value) if cn else "", dns, ips)


@dataclass(frozen=True, slots=True)
class Revoked:
    serial: int
    at: dt.datetime


def make_crl(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate,
             revoked: Iterable[Revoked], now: dt.datetime,
             days: int = CRL_DAYS) -> x509.CertificateRevocationList:
    """The CA's revocation list, listing ``revoked``, issued now."""
    now = _aware(now)
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(ca.subject).last_update(now)
               .next_update(now + _days(days, MAX_LEAF_DAYS)))
    for entry in sorted(revoked, key=lambda r: r.serial):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(entry.serial)
            .revocation_date(_aware(entry.at)).build())
    return builder.sign(ca_key, hashes.SHA256())


def revoked_in(crl: x509.CertificateRevocationList) -> tuple[Revoked, ...]:
    return tuple(Revoked(e.serial_number, e.revocation_date_utc) for e in crl)


def describe(cert: x509.Certificate, revoked: Sequence[int] = ()) -> dict[str, object]:
    """One certificate, for ``pki list``."""
    subject = subject_of(cert)
    return {"name": subject.file_stem, "kind": subject.kind, "serial": f"{cert.serial_number:x}",
            "not_before": cert.not_valid_before_utc.isoformat(),
            "not_after": cert.not_valid_after_utc.isoformat(),
            "dns": list(subject.dns), "ips": list(subject.ips),
            "revoked": cert.serial_number in revoked}


__all__ = ["CA_DAYS", "CLIENT_KINDS", "CRL_DAYS", "KINDS", "LEAF_DAYS", "MAX_CA_DAYS",
           "MAX_LEAF_DAYS", "SERVER", "PkiError", "Revoked", "Subject", "cert_pem", "describe",
           "issue", "key_pem", "make_ca", "make_crl", "new_key", "revoked_in", "subject_of"]
