"""``python -m runtime.healthcheck``: ask a serving process's gRPC health, over its TLS.

Orchestrators probe a process to know when to send it work and when to restart it. Both
services serve gRPC health (``grpc.health.v1.Health``) on their one port, and that port
speaks TLS only (the clearinghouse mutual TLS); Kubernetes' built-in ``grpc:`` probe and
most probe binaries speak plaintext, so they cannot reach it. This is the probe the
image, the compose file and the Kubernetes manifests run instead: one ``Check`` call on a
channel made the one way every client makes it (``runtime.tls.channel``), exit 0 when the
answer is SERVING, 1 otherwise, with one line saying why. The TLS files come from the
options or, as for every `timebank` client, TIMEBANK_CA, TIMEBANK_CERT and TIMEBANK_KEY.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from runtime.errors import ConfigError
from runtime.tls import ClientTls, channel

#: The most seconds one probe waits; orchestrators set their own timeout above it.
DEFAULT_TIMEOUT_SECONDS = 3.0
MAX_TIMEOUT_SECONDS = 60.0
SERVING = health_pb2.HealthCheckResponse.SERVING


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="python -m runtime.healthcheck",
        description="gRPC health of a timebank process over TLS: exit 0 when SERVING.")
    p.add_argument("address", help="HOST:PORT of the process, e.g. 127.0.0.1:7400")
    p.add_argument("--service", default="",
                   help='the health service to ask ("" = the process; a node also reports '
                        '"timebank.v1.ClearinghouseLink")')
    p.add_argument("--ca", default=env("TIMEBANK_CA"), help="the city CA (env TIMEBANK_CA)")
    p.add_argument("--cert", default=env("TIMEBANK_CERT"),
                   help="a client certificate, for the clearinghouse (env TIMEBANK_CERT)")
    p.add_argument("--key", default=env("TIMEBANK_KEY"), help="its key (env TIMEBANK_KEY)")
    p.add_argument("--server-name", default=None,
                   help="the name the server's certificate carries, when the address does "
                        "not (e.g. clearinghouse)")
    p.add_argument("--insecure", action="store_true", help="the process serves plaintext")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS,
                   help="seconds to wait for the answer")
    return p


def check(address: str, tls: ClientTls | None, service: str = "",
          timeout: float = DEFAULT_TIMEOUT_SECONDS) -> str | None:
    """None when ``service`` at ``address`` says SERVING; otherwise why not, in a line."""
    if not 0 < timeout <= MAX_TIMEOUT_SECONDS:
        raise ConfigError(f"a probe waits 0..{MAX_TIMEOUT_SECONDS:g} s, not {timeout:g}")
    with channel(address, tls) as ch:
        try:
            answer = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as e:
            code = e.code() if isinstance(e, grpc.Call) else None
            detail = e.details() if isinstance(e, grpc.Call) else str(e)
            return f"{address}: {getattr(code, 'name', 'ERROR')}: {detail}"
    if answer.status != SERVING:
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
        return f"{address} service {service!r}: {name}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.insecure:
            tls = None
        elif not args.ca:
            raise ConfigError("give the city CA (--ca or TIMEBANK_CA), or --insecure")
        else:
            tls = ClientTls(Path(args.ca), Path(args.cert) if args.cert else None,
                            Path(args.key) if args.key else None, args.server_name)
        why = check(args.address, tls, args.service, args.timeout)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if why is not None:
        print(f"不健康 / not serving: {why}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
