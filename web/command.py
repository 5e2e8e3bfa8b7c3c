"""``timebank console``: serve the web console for one district node."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from runtime.console import CliError, guarded
from runtime.server import stopped_by_signals
from runtime.tls import BUREAU, ClientTls

app = typer.Typer(
    name="console", no_args_is_help=True, rich_markup_mode=None,
    help="网页控制台 The web console: pages for staff, members, the bureau and the "
         "public, over a district node's API.")

#: Where the console listens unless told otherwise: this machine only.
DEFAULT_LISTEN = "127.0.0.1:8080"
MAX_PORT = 65535


def listen_address(text: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets) to listen on."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= MAX_PORT:
        raise CliError(f"监听地址应为 主机:端口 / --listen takes HOST:PORT, not {text!r}")
    return host, int(port)


def certificate_kind(cert: Path) -> str:
    """Whom a client certificate names: "observer", "bureau" (it may close a settlement
    period) or "" (neither: the clearinghouse will refuse it)."""
    from cryptography import x509

    from runtime.tls import identity_of, read_pem

    try:
        found = identity_of(x509.load_pem_x509_certificate(read_pem(cert, "证书 certificate")))
    except ValueError as e:  # ConfigError is one; so is a PEM that holds no certificate
        raise CliError(f"无法读取客户端证书 / cannot read the client certificate {cert}: "
                       f"{e}") from None
    return "" if found is None else found.kind


@app.command("serve")
@guarded
def serve(
    node: Annotated[str, typer.Option(
        "--node", metavar="HOST:PORT", envvar="TIMEBANK_NODE",
        help="The district node whose API the console calls (env TIMEBANK_NODE).")],
    listen: Annotated[str, typer.Option(
        "--listen", metavar="HOST:PORT",
        help=f"Where the console serves its pages (default {DEFAULT_LISTEN}: this "
             "machine only; put a TLS-terminating proxy in front to serve others).")
    ] = DEFAULT_LISTEN,
    ca: Annotated[Path | None, typer.Option(
        "--ca", envvar="TIMEBANK_CA", metavar="FILE",
        help="The city CA's certificate, to check the node's (env TIMEBANK_CA).")] = None,
    insecure: Annotated[bool, typer.Option(
        "--insecure", envvar="TIMEBANK_INSECURE",
        help="Reach a node that serves plaintext (env TIMEBANK_INSECURE=1).")] = False,
    clearinghouse: Annotated[str | None, typer.Option(
        "--clearinghouse", metavar="HOST:PORT",
        help="The bureau's console: also serve the city's overview (/bureau) from this "
             "clearinghouse, read with the observer certificate --cert and --key; with a "
             "bureau operator's certificate (`timebank pki issue-bureau`), the node's "
             "operators who log in may also close a settlement period.")
    ] = None,
    cert: Annotated[Path | None, typer.Option(
        "--cert", envvar="TIMEBANK_CERT", metavar="FILE",
        help="With --clearinghouse: the observer certificate (`timebank pki "
             "issue-client`; env TIMEBANK_CERT).")] = None,
    key: Annotated[Path | None, typer.Option(
        "--key", envvar="TIMEBANK_KEY", metavar="FILE",
        help="With --clearinghouse: its private key (env TIMEBANK_KEY).")] = None,
    monitor_status: Annotated[Path | None, typer.Option(
        "--monitor-status", envvar="TIMEBANK_MONITOR_STATUS", metavar="FILE",
        help="With --clearinghouse (ignored without): the status file of the city's "
             "outside monitor "
             "(`timebank monitor check --follow --data-dir DIR` writes DIR/status.json); "
             "the bureau's page says what it found, or that it has not reported lately "
             "(env TIMEBANK_MONITOR_STATUS).")] = None,
) -> None:
    """Serve the console's pages until Ctrl-C or SIGTERM."""
    import uvicorn

    from web.app import build
    from web.nodes import Node

    if ca is None and not insecure:
        raise CliError("节点通过 TLS 连接：请用 --ca 指定城市 CA 证书，明文节点用 --insecure / "
                       "nodes are reached over TLS: name the city CA certificate with --ca "
                       "FILE (or TIMEBANK_CA), or --insecure for a node serving plaintext")
    host, port = listen_address(listen)
    district = Node(node, None if insecure else ClientTls(ca) if ca else None)
    city = None
    if clearinghouse is not None:
        from web.bureau import Clearinghouse

        if not insecure and (ca is None or cert is None or key is None):
            raise CliError("结算中心要求双向 TLS：请给出 --ca、--cert 和 --key（观察者证书）/ "
                           "the clearinghouse requires mutual TLS: give --ca, --cert and "
                           "--key (an observer certificate: `timebank pki issue-client`)")
        city = Clearinghouse(clearinghouse, None if insecure or ca is None
                             else ClientTls(ca, cert, key),
                             closes_periods=cert is not None and certificate_kind(cert) == BUREAU,
                             monitor_status=monitor_status)
    config = uvicorn.Config(build(district, clearinghouse=city), host=host, port=port,
                            log_level="warning",
                            access_log=False, lifespan="off", server_header=False)
    server = uvicorn.Server(config)

    def stop() -> None:
        server.should_exit = True

    # Ctrl-C and SIGTERM end the serving as every service of the city's does: cleanly,
    # exit code 0 (uvicorn's own handlers raise the signal again once stopped, which a
    # service manager reads as a crash)
    server.capture_signals = lambda: stopped_by_signals(stop)  # type: ignore[method-assign]
    typer.echo(f"网页控制台 console: http://{listen} (节点 node {node})", err=True)
    try:
        server.run()
    finally:
        district.close()
        if city is not None:
            city.close()
