"""The city CA's folder: its key and certificate, the leaves it issued, its CRL.

``ca.key`` (mode 0600) and ``ca.pem``; ``crl.pem``, the revocation list, written at
``init`` and again at every ``revoke``; for each leaf ``<name>.key`` (0600) and
``<name>.pem`` (``Subject.file_stem``). Every file appears whole or not at all
(``runtime.keyfiles.write_file``); a new file never replaces one that exists (``issue``
refuses: use ``renew``), and ``renew`` and ``revoke`` replace theirs in one rename, so a
server re-reading them sees the old file or the new, never half of one. The CA's key is
the city's: whoever holds it can issue a certificate for any district. In a real city the
folder lives with the bureau, offline, and only the leaves travel.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from city.pki import certs
from city.pki.certs import PkiError, Subject
from runtime import keyfiles
from runtime.tls import read_key, read_pem

CA_KEY = "ca.key"
CA_CERT = "ca.pem"
CRL = "crl.pem"
#: The most leaves ``list`` reads from one folder.
MAX_LEAVES = 10_000


@dataclass(frozen=True, slots=True)
class Issued:
    """A leaf on disk."""

    subject: Subject
    cert: Path
    key: Path
    serial: int
    not_after: dt.datetime


def _write(path: Path, data: bytes, *, private: bool, replace: bool = False) -> None:
    try:
        keyfiles.write_file(path, data, mode=0o600 if private else 0o644, replace=replace)
    except keyfiles.KeyFileError as e:
        raise PkiError(f"文件无法写入 / cannot write {path}: {e}") from None


class Authority:
    """The CA whose files are in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @property
    def ca_cert(self) -> Path:
        return self.folder / CA_CERT

    @property
    def ca_key_file(self) -> Path:
        return self.folder / CA_KEY

    @property
    def crl(self) -> Path:
        return self.folder / CRL

    def cert_file(self, stem: str) -> Path:
        return self.folder / f"{stem}.pem"

    def key_file(self, stem: str) -> Path:
        return self.folder / f"{stem}.key"

    # -------------------------------------------------------------- the CA

    @classmethod
    def init(cls, folder: Path, common_name: str, now: dt.datetime,
             days: int = certs.CA_DAYS) -> Authority:
        """Create the CA in ``folder`` (made if new); refuses a folder that has one."""
        ca = cls(folder)
        if ca.ca_key_file.exists() or ca.ca_cert.exists():
            raise PkiError(f"{folder} 中已有城市 CA，不会覆盖 / {folder} already holds a city CA; "
                           f"refusing to replace it")
        folder.mkdir(parents=True, exist_ok=True)
        key = certs.new_key()
        cert = certs.make_ca(key, common_name, now, days)
        _write(ca.ca_key_file, certs.key_pem(key), private=True)
        _write(ca.ca_cert, certs.cert_pem(cert), private=False)
        _write(ca.crl, certs.make_crl(key, cert, (), now).public_bytes(
            serialization.Encoding.PEM), private=False)
        return ca

    def load(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        if not self.ca_cert.exists():
            raise PkiError(f"{self.folder} 中没有城市 CA，请先运行 `timebank pki init` / no city "
                           f"CA in {self.folder}; run `timebank pki init` first")
        cert = x509.load_pem_x509_certificate(read_pem(self.ca_cert, "CA 证书 CA certificate"))
        key = serialization.load_pem_private_key(read_key(self.ca_key_file), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PkiError(f"{self.ca_key_file} 不是 ECDSA 私钥 / is not an ECDSA key")
        return key, cert

    # -------------------------------------------------------------- leaves

    def issue(self, subject: Subject, now: dt.datetime, days: int = certs.LEAF_DAYS) -> Issued:
        """A new key and certificate for ``subject``; refuses if it has files already."""
        ca_key, ca = self.load()
        stem = subject.file_stem
        for path in (self.cert_file(stem), self.key_file(stem)):
            if path.exists():
                raise PkiError(f"{path} 已存在，不会覆盖；续期请用 `timebank pki renew --name "
                               f"{stem}` / {path} exists; refusing to overwrite it (renew it "
                               f"with `timebank pki renew --name {stem}`)")
        key = certs.new_key()
        cert = certs.issue(ca_key, ca, subject, key.public_key(), now, days)
        _write(self.key_file(stem), certs.key_pem(key), private=True)
        _write(self.cert_file(stem), certs.cert_pem(cert), private=False)
        return Issued(subject, self.cert_file(stem), self.key_file(stem), cert.serial_number,
                      cert.not_valid_after_utc)

    def leaf(self, stem: str) -> x509.Certificate:
        path = self.cert_file(stem)
        if not path.exists():
            raise PkiError(f"没有名为 {stem} 的证书 / no certificate named {stem} in {self.folder} "
                           f"(see `timebank pki list`)")
        return x509.load_pem_x509_certificate(read_pem(path, "证书 certificate"))

    def renew(self, stem: str, now: dt.datetime, days: int = certs.LEAF_DAYS) -> Issued:
        """The same subject and key, a new serial and validity; the certificate file is
        replaced in one rename."""
        ca_key, ca = self.load()
        old = self.leaf(stem)
        subject = certs.subject_of(old)
        if subject.file_stem != stem:
            raise PkiError(f"{self.cert_file(stem)} 是 {subject.file_stem} 的证书 / holds the "
                           f"certificate of {subject.file_stem}, not {stem}")
        key = serialization.load_pem_private_key(read_key(self.key_file(stem)), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != old.public_key():
            raise PkiError(f"{self.key_file(stem)} 不是该证书的私钥 / is not the key of "
                           f"{self.cert_file(stem)}")
        cert = certs.issue(ca_key, ca, subject, key.public_key(), now, days)
        _write(self.cert_file(stem), certs.cert_pem(cert), private=False, replace=True)
        return Issued(subject, self.cert_file(stem), self.key_file(stem), cert.serial_number,
                      cert.not_valid_after_utc)

    # -------------------------------------------------------------- revocation

    def revoked(self) -> tuple[certs.Revoked, ...]:
        if not self.crl.exists():
            return ()
        return certs.revoked_in(x509.load_pem_x509_crl(read_pem(self.crl, "吊销列表 CRL")))

    def revoke(self, serial: int, now: dt.datetime) -> bool:
        """Add ``serial`` to the CRL and sign it again (False: it was listed already)."""
        ca_key, ca = self.load()
        before = self.revoked()
        if any(r.serial == serial for r in before):
            return False
        crl = certs.make_crl(ca_key, ca, (*before, certs.Revoked(serial, now)), now)
        _write(self.crl, crl.public_bytes(serialization.Encoding.PEM), private=False,
               replace=True)
        return True

    def leaves(self) -> list[x509.Certificate]:
        """Every leaf in the folder, by name."""
        found = []
        for path in sorted(self.folder.glob("*.pem"))[:MAX_LEAVES]:
            if path.name in (CA_CERT, CRL):
                continue
            found.append(x509.load_pem_x509_certificate(read_pem(path, "证书 certificate")))
        return found


__all__ = ["CA_CERT", "CA_KEY", "CRL", "Authority", "Issued"]
