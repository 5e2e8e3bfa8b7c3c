"""`timebank pki`: the city CA, from the real command line, and the certificates it makes.

Each refusal is one line, Chinese first, and leaves the CA's folder as it was.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from city.pki.store import Authority
from runtime.tls import identity_of

ROOT = Path(__file__).resolve().parents[2]


def pki(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMEBANK_")}
    return subprocess.run([sys.executable, "-m", "city", "pki", *args], capture_output=True,
                          text=True, encoding="utf-8", timeout=60, cwd=ROOT,
                          env={**env, "COLUMNS": "200"})


def ok(*args: str) -> str:
    done = pki(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def refused(*args: str, starts: str) -> str:
    done = pki(*args)
    assert done.returncode in (1, 2), done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"error: {starts}"), lines[0]
    return lines[0]


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def usages(c: x509.Certificate) -> set[Any]:
    return set(c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    where = tmp_path / "pki"
    said = ok("init", "--dir", str(where))
    assert said.startswith("城市 CA 已创建 / city CA created") and "[tls] ca" in said
    return where


def test_init_makes_a_ca_whose_key_only_its_owner_reads(folder: Path) -> None:
    assert stat.S_IMODE((folder / "ca.key").stat().st_mode) == 0o600
    ca = cert(folder / "ca.pem")
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    days = (ca.not_valid_after_utc - ca.not_valid_before_utc).days
    assert 3649 <= days <= 3651
    assert list(x509.load_pem_x509_crl((folder / "crl.pem").read_bytes())) == []
    before = files(folder)
    refused("init", "--dir", str(folder), starts=f"{folder} 中已有城市 CA，不会覆盖")
    assert files(folder) == before


def test_issue_a_node_a_server_and_an_observer(folder: Path) -> None:
    issued = json.loads(ok("issue-node", "--dir", str(folder), "--node-id", "320115",
                           "--ip", "127.0.0.1", "--dns", "jiangning.timebank.example",
                           "--json"))
    node = cert(Path(issued["cert"]))
    assert issued["name"] == "node-320115" and f"{node.serial_number:x}" == issued["serial"]
    assert stat.S_IMODE(Path(issued["key"]).stat().st_mode) == 0o600
    assert identity_of(node) is not None and str(identity_of(node)) == "node 320115"
    assert usages(node) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert 396 <= (node.not_valid_after_utc - node.not_valid_before_utc).days <= 398
    node.verify_directly_issued_by(cert(folder / "ca.pem"))

    server = cert(Path(json.loads(ok("issue-server", "--dir", str(folder), "--name",
                                     "clearinghouse", "--dns", "localhost", "--json"))["cert"]))
    assert identity_of(server) is None and usages(server) == {ExtendedKeyUsageOID.SERVER_AUTH}
    observer = cert(Path(json.loads(ok("issue-client", "--dir", str(folder), "--name",
                                       "monitor", "--days", "30", "--json"))["cert"]))
    assert str(identity_of(observer)) == "observer monitor"
    assert usages(observer) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    listed = json.loads(ok("list", "--dir", str(folder), "--json"))["certificates"]
    assert [(c["name"], c["kind"], c["revoked"]) for c in listed] == [
        ("clearinghouse", "server", False), ("node-320115", "node", False),
        ("observer-monitor", "observer", False)]


def test_issue_a_bureau_operators_certificate(folder: Path) -> None:
    """The bureau's console presents it: a client's certificate naming the operator, which
    the clearinghouse reads as the bureau (closing a period is logged under its name)."""
    said = ok("issue-bureau", "--dir", str(folder), "--name", "zhang-wei")
    assert said.startswith("民政局操作员证书已签发 / bureau operator certificate issued: "
                           "bureau-zhang-wei")
    assert "mode 0600; hand it over privately" in said
    bureau = cert(folder / "bureau-zhang-wei.pem")
    who = identity_of(bureau)
    assert who is not None and (who.kind, who.name, str(who)) == (
        "bureau", "zhang-wei", "bureau zhang-wei")
    assert usages(bureau) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    san = bureau.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "timebank:bureau:zhang-wei"]
    assert not san.get_values_for_type(x509.DNSName) and not san.get_values_for_type(
        x509.IPAddress)
    assert stat.S_IMODE((folder / "bureau-zhang-wei.key").stat().st_mode) == 0o600
    bureau.verify_directly_issued_by(cert(folder / "ca.pem"))
    listed = json.loads(ok("list", "--dir", str(folder), "--json"))["certificates"]
    assert [(c["name"], c["kind"]) for c in listed] == [("bureau-zhang-wei", "bureau")]
    renewed = json.loads(ok("renew", "--dir", str(folder), "--name", "bureau-zhang-wei",
                            "--json"))
    assert renewed["kind"] == "bureau"
    assert str(identity_of(cert(folder / "bureau-zhang-wei.pem"))) == "bureau zhang-wei"
    assert "已吊销 / revoked" in ok("revoke", "--dir", str(folder), "--name",
                                    "bureau-zhang-wei")


def test_a_bureau_certificate_names_no_host(tmp_path: Path) -> None:
    import datetime as dt

    from city.pki.certs import PkiError, Subject

    with pytest.raises(PkiError, match="民政局操作员证书只用于客户端，不带 DNS/IP 名称 / a bureau "
                                       "certificate is a client's"):
        Subject("bureau", "zhang-wei", ("console.example",))
    ca = Authority.init(tmp_path / "ca", "test CA", dt.datetime.now(dt.UTC))
    assert ca.issue(Subject("bureau", "li-na"), dt.datetime.now(dt.UTC), 30).serial > 0


@pytest.mark.parametrize(("args", "starts"), [
    (("issue-node", "--node-id", "32011", "--ip", "127.0.0.1"), "节点编号须为 6 位行政区划代码"),
    (("issue-bureau", "--name", "Zhang Wei"), "名称只能含小写字母、数字和连字符"),
    (("issue-node", "--node-id", "320115"), "服务器与节点证书至少需要一个 DNS 名称或 IP 地址"),
    (("issue-node", "--node-id", "320115", "--ip", "300.1.1.1"), "不是有效的 IP 地址"),
    (("issue-node", "--node-id", "320115", "--dns", "bad_name!"), "不是有效的 DNS 名称"),
    (("issue-client", "--name", "Monitor Two"), "名称只能含小写字母、数字和连字符"),
    (("issue-node", "--node-id", "320115", "--ip", "127.0.0.1", "--days", "826"),
     "Invalid value for '--days'"),
    (("renew", "--name", "node-320199"), "没有名为 node-320199 的证书"),
    (("revoke", "--serial", "zz"), "序列号须为十六进制"),
    (("revoke",), "请给出 --serial 或 --name 之一"),
])
def test_what_cannot_be_issued_is_refused_and_changes_nothing(
        folder: Path, args: tuple[str, ...], starts: str) -> None:
    before = files(folder)
    refused(*args, "--dir", str(folder), starts=starts)
    assert files(folder) == before


def test_an_issued_certificate_is_never_overwritten(folder: Path) -> None:
    ok("issue-node", "--dir", str(folder), "--node-id", "320115", "--ip", "127.0.0.1")
    before = files(folder)
    line = refused("issue-node", "--dir", str(folder), "--node-id", "320115", "--ip",
                   "10.0.0.1", starts=f"{folder / 'node-320115.pem'} 已存在，不会覆盖")
    assert "timebank pki renew --name node-320115" in line
    assert files(folder) == before


def test_renew_keeps_identity_and_key_with_a_new_serial(folder: Path) -> None:
    ok("issue-node", "--dir", str(folder), "--node-id", "320115", "--ip", "127.0.0.1",
       "--days", "30")
    old, key = cert(folder / "node-320115.pem"), (folder / "node-320115.key").read_bytes()
    renewed = json.loads(ok("renew", "--dir", str(folder), "--name", "node-320115", "--json"))
    new = cert(folder / "node-320115.pem")
    assert new.serial_number != old.serial_number and renewed["serial"] == f"{new.serial_number:x}"
    assert new.not_valid_after_utc > old.not_valid_after_utc
    assert (folder / "node-320115.key").read_bytes() == key
    assert new.public_key() == old.public_key()
    assert str(identity_of(new)) == str(identity_of(old)) == "node 320115"
    assert new.extensions.get_extension_for_class(x509.SubjectAlternativeName) == \
        old.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert not list(folder.glob(".*.tmp"))  # replaced in one step, nothing left over


def test_revoke_by_name_or_serial_signs_the_crl_again(folder: Path) -> None:
    ok("issue-node", "--dir", str(folder), "--node-id", "320115", "--ip", "127.0.0.1")
    ok("issue-client", "--dir", str(folder), "--name", "audit")
    node = cert(folder / "node-320115.pem")
    assert "已吊销 / revoked" in ok("revoke", "--dir", str(folder), "--name", "node-320115")
    audit = cert(folder / "observer-audit.pem")
    ok("revoke", "--dir", str(folder), "--serial", f"{audit.serial_number:x}")
    assert "早已吊销" in ok("revoke", "--dir", str(folder), "--name", "node-320115")
    crl = x509.load_pem_x509_crl((folder / "crl.pem").read_bytes())
    ca = cert(folder / "ca.pem")
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert {e.serial_number for e in crl} == {node.serial_number, audit.serial_number}
    listed = json.loads(ok("list", "--dir", str(folder), "--json"))["certificates"]
    assert all(c["revoked"] for c in listed)


def test_a_ca_key_others_can_read_is_refused(folder: Path) -> None:
    os.chmod(folder / "ca.key", 0o644)
    before = files(folder)
    line = refused("issue-client", "--dir", str(folder), "--name", "monitor",
                   starts="TLS 私钥文件不可用")
    assert "readable by other users" in line and "chmod 600" in line
    assert files(folder) == before


def test_a_folder_without_a_ca_says_to_init(tmp_path: Path) -> None:
    refused("issue-client", "--dir", str(tmp_path), "--name", "monitor",
            starts=f"{tmp_path} 中没有城市 CA，请先运行 `timebank pki init`")
    assert not list(tmp_path.iterdir())


def test_the_store_refuses_a_leaf_outliving_its_ca(tmp_path: Path) -> None:
    import datetime as dt

    from city.pki.certs import PkiError, Subject

    now = dt.datetime.now(dt.UTC)
    ca = Authority.init(tmp_path / "short", "short-lived CA", now, days=30)
    with pytest.raises(PkiError, match="证书有效期不能超过 CA"):
        ca.issue(Subject("observer", "monitor"), now, 31)
    assert ca.issue(Subject("observer", "monitor"), now, 29).serial > 0
