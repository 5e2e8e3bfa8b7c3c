"""How a city tool that watches from outside (``timebank audit --clearinghouse``,
``timebank monitor``) reaches the clearinghouse and the nodes: TLS checked against the
city CA, presenting an observer certificate (``timebank pki issue-client``), which the
clearinghouse lets call its reads and nothing else. Plaintext only with ``--insecure``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from runtime.console import CliError
from runtime.tls import ClientTls

Ca = Annotated[Path | None, typer.Option(
    "--ca", envvar="TIMEBANK_CA", metavar="FILE",
    help="The city CA's certificate (env TIMEBANK_CA).")]
Cert = Annotated[Path | None, typer.Option(
    "--cert", envvar="TIMEBANK_CERT", metavar="FILE",
    help="Your observer certificate (`timebank pki issue-client`; env TIMEBANK_CERT).")]
Key = Annotated[Path | None, typer.Option(
    "--key", envvar="TIMEBANK_KEY", metavar="FILE",
    help="Its private key, mode 0600 (env TIMEBANK_KEY).")]
Insecure = Annotated[bool, typer.Option(
    "--insecure", envvar="TIMEBANK_INSECURE",
    help="Reach a city that serves plaintext (--insecure); env TIMEBANK_INSECURE=1.")]


def observer_tls(ca: Path | None, cert: Path | None, key: Path | None,
                 insecure: bool) -> ClientTls | None:
    """The TLS an observer connects with; None with ``--insecure``."""
    if insecure:
        return None
    if ca is None or cert is None or key is None:
        raise CliError("结算中心要求双向 TLS：请给出 --ca、--cert 和 --key（观察者证书由 "
                       "`timebank pki issue-client` 签发），或对明文城市用 --insecure / the "
                       "clearinghouse "
                       "requires mutual TLS: give --ca, --cert and --key (an observer "
                       "certificate from `timebank pki issue-client`), or --insecure for a "
                       "city serving plaintext")
    return ClientTls(ca, cert, key)


__all__ = ["Ca", "Cert", "Insecure", "Key", "observer_tls"]
