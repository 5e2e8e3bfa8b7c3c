"""``timebank pki``: the city's certificate authority, run by the bureau.

``init`` creates the CA in a folder (``--dir``, default ``./pki``); ``issue-server``,
``issue-node``, ``issue-client`` (an observer) and ``issue-bureau`` (an operator of the
bureau's console) issue leaves (key and certificate, ``store``);
``renew`` issues a leaf again with a new validity; ``revoke`` adds a serial to the CRL
the clearinghouse re-reads; ``list`` shows what was issued. Every refusal is one line,
Chinese first.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from city.pki import certs
from city.pki.certs import SERVER, PkiError, Subject
from city.pki.store import Authority, Issued
from runtime.console import echo, guarded, print_json
from runtime.tls import BUREAU, NODE, OBSERVER
from timebank.citytime import CITY_TZ, CITY_TZ_NAME

app = typer.Typer(
    name="pki",
    help="The city's certificate authority (城市 CA): create it, issue, renew and revoke the "
         "certificates of the clearinghouse, the district nodes, observers and the bureau's "
         "operators.",
    no_args_is_help=True,
    add_completion=False,
)

Folder = Annotated[Path, typer.Option(
    "--dir", metavar="DIR", envvar="TIMEBANK_PKI_DIR",
    help="The CA's folder (env TIMEBANK_PKI_DIR). Keep it with the bureau, offline.")]
Days = Annotated[int, typer.Option(
    "--days", min=1, max=certs.MAX_LEAF_DAYS,
    help=f"Days the certificate is valid (at most {certs.MAX_LEAF_DAYS}).")]
Dns = Annotated[list[str] | None, typer.Option(
    "--dns", metavar="NAME", help="A DNS name the service is reached at (repeat).")]
Ips = Annotated[list[str] | None, typer.Option(
    "--ip", metavar="ADDRESS", help="An IP address the service is reached at (repeat).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
DEFAULT_DIR = Path("pki")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _said(issued: Issued, what: str, as_json: bool) -> None:
    if as_json:
        print_json({"name": issued.subject.file_stem, "kind": issued.subject.kind,
                    "cert": str(issued.cert), "key": str(issued.key),
                    "serial": f"{issued.serial:x}", "not_after": issued.not_after.isoformat()})
        return
    echo(f"{what}: {issued.subject.file_stem}")
    echo(f"  certificate  {issued.cert}")
    echo(f"  key          {issued.key} (mode 0600; hand it over privately)")
    echo(f"  serial       {issued.serial:x}")
    echo(f"  valid until  {issued.not_after.astimezone(CITY_TZ):%Y-%m-%d %H:%M} "
         f"({CITY_TZ_NAME})")


@app.command("init")
@guarded
def init_command(
    folder: Folder = DEFAULT_DIR,
    name: Annotated[str, typer.Option(
        "--name", metavar="NAME", help="The CA's name in its certificate.")
    ] = "timebank city CA",
    days: Annotated[int, typer.Option(
        "--days", min=1, max=certs.MAX_CA_DAYS, help="Days the CA is valid.")
    ] = certs.CA_DAYS,
    as_json: AsJson = False,
) -> None:
    """Create the city CA: an ECDSA P-256 key (mode 0600), its certificate, an empty CRL."""
    ca = Authority.init(folder, name, _now(), days)
    if as_json:
        print_json({"dir": str(folder), "ca_cert": str(ca.ca_cert),
                    "ca_key": str(ca.ca_key_file), "crl": str(ca.crl)})
        return
    echo(f"城市 CA 已创建 / city CA created in {folder}")
    echo(f"  certificate  {ca.ca_cert}  (give it to every node and the clearinghouse: \\[tls] ca)")
    echo(f"  key          {ca.ca_key_file}  (mode 0600: whoever holds it can issue any "
         f"district's certificate; keep it offline)")
    echo(f"  CRL          {ca.crl}  (the clearinghouse's \\[tls] crl)")


@app.command("issue-server")
@guarded
def issue_server(
    name: Annotated[str, typer.Option("--name", metavar="NAME",
                                      help="The server's name, e.g. clearinghouse.")],
    folder: Folder = DEFAULT_DIR, dns: Dns = None, ips: Ips = None,
    days: Days = certs.LEAF_DAYS, as_json: AsJson = False,
) -> None:
    """A server certificate (serverAuth) for the clearinghouse, with its DNS and IP names."""
    subject = Subject(SERVER, name, tuple(dns or ()), tuple(ips or ()))
    _said(Authority(folder).issue(subject, _now(), days), "服务器证书已签发 / server "
          "certificate issued", as_json)


@app.command("issue-node")
@guarded
def issue_node(
    node_id: Annotated[str, typer.Option("--node-id", metavar="CODE",
                                         help="The district's 6-digit code, e.g. 320115.")],
    folder: Folder = DEFAULT_DIR, dns: Dns = None, ips: Ips = None,
    days: Days = certs.LEAF_DAYS, as_json: AsJson = False,
) -> None:
    """A district node's certificate: it serves with it and presents it to the
    clearinghouse, which lets it act only for this district (SAN timebank:node:CODE)."""
    subject = Subject(NODE, node_id, tuple(dns or ()), tuple(ips or ()))
    _said(Authority(folder).issue(subject, _now(), days), "节点证书已签发 / node "
          "certificate issued", as_json)


@app.command("issue-client")
@guarded
def issue_client(
    name: Annotated[str, typer.Option("--name", metavar="NAME",
                                      help="Who observes, e.g. monitor or audit.")],
    folder: Folder = DEFAULT_DIR, days: Days = certs.LEAF_DAYS, as_json: AsJson = False,
) -> None:
    """An observer's client certificate (SAN timebank:observer:NAME): it may call the
    clearinghouse's reads, nothing that changes the city."""
    _said(Authority(folder).issue(Subject(OBSERVER, name), _now(), days),
          "观察者证书已签发 / observer certificate issued", as_json)


@app.command("issue-bureau")
@guarded
def issue_bureau(
    name: Annotated[str, typer.Option(
        "--name", metavar="NAME",
        help="The operator the certificate is for, e.g. zhang-wei (lowercase letters, digits, "
             "hyphens): every period it closes is logged under this name.")],
    folder: Folder = DEFAULT_DIR, days: Days = certs.LEAF_DAYS, as_json: AsJson = False,
) -> None:
    """A bureau operator's client certificate (SAN timebank:bureau:NAME), for the bureau's
    console: it may call the clearinghouse's reads and close a settlement period
    (CloseSettlement), and never acts for a district. One per person; revoke it when
    they leave."""
    _said(Authority(folder).issue(Subject(BUREAU, name), _now(), days),
          "民政局操作员证书已签发 / bureau operator certificate issued", as_json)


@app.command("renew")
@guarded
def renew(
    name: Annotated[str, typer.Option(
        "--name", metavar="NAME", help="The certificate's name (`timebank pki list`), e.g. "
                                       "node-320115.")],
    folder: Folder = DEFAULT_DIR, days: Days = certs.LEAF_DAYS, as_json: AsJson = False,
) -> None:
    """Issue a certificate again: same identity and key, new serial and validity. The file
    is replaced in one step; a server serving it uses it for new connections at once."""
    _said(Authority(folder).renew(name, _now(), days), "证书已续期 / certificate renewed",
          as_json)


@app.command("revoke")
@guarded
def revoke(
    serial: Annotated[str | None, typer.Option(
        "--serial", metavar="HEX", help="The serial to revoke (hex, as `list` shows).")] = None,
    name: Annotated[str | None, typer.Option(
        "--name", metavar="NAME", help="Or: revoke the certificate of this name.")] = None,
    folder: Folder = DEFAULT_DIR,
) -> None:
    """Add a certificate to the CA's CRL (signed again); the clearinghouse reads it at the
    next call and refuses that certificate from then on."""
    ca = Authority(folder)
    if (serial is None) == (name is None):
        raise PkiError("请给出 --serial 或 --name 之一 / give one of --serial or --name")
    if name is not None:
        number = ca.leaf(name).serial_number
    else:
        assert serial is not None
        try:
            number = int(serial.removeprefix("0x"), 16)
        except ValueError:
            raise PkiError(f"序列号须为十六进制 / a serial is hexadecimal, not "
                           f"{serial!r}") from None
        if not 0 < number < 2**160:
            raise PkiError("序列号超出范围 / the serial is out of range")
    if ca.revoke(number, _now()):
        echo(f"已吊销 / revoked serial {number:x}; CRL {ca.crl}")
    else:
        echo(f"该序列号早已吊销 / serial {number:x} was revoked already")


@app.command("list")
@guarded
def list_command(folder: Folder = DEFAULT_DIR, as_json: AsJson = False) -> None:
    """Every certificate in the CA's folder: name, kind, serial, validity, revoked."""
    ca = Authority(folder)
    ca.load()
    revoked = [r.serial for r in ca.revoked()]
    found = [certs.describe(cert, revoked) for cert in ca.leaves()]
    if as_json:
        print_json({"certificates": found})
        return
    for c in found:
        state = "REVOKED 已吊销" if c["revoked"] else ""
        until = dt.datetime.fromisoformat(str(c["not_after"])).astimezone(CITY_TZ)
        echo(f"{c['name']:<24} {c['kind']:<9} {c['serial']}  until {until:%Y-%m-%d %H:%M} "
             f"({CITY_TZ_NAME})  {state}")


__all__ = ["app"]
