"""The CLI's gRPC client: a connection to one node, and the node's refusals as one line.

The connection is TLS, checked against the city CA's certificate (``timebank node --ca
FILE`` or TIMEBANK_CA); plaintext only with ``--insecure`` (TIMEBANK_INSECURE=1), for a
node an operator serves with ``--insecure``. A client certificate (``--cert``/``--key``:
the node's own, or an observer's) lets commands also ask the clearinghouse, which takes
no call without one (the districts' names, positions). ``use_tls`` records the choice once per
command line (the ``node`` group's options).

Every mutating call sends an idempotency key (a fresh UUID unless ``--idempotency-key``
is given), so a command retried with the same key never does the work twice.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import grpc

from node.cli.common import CliError, fail
from runtime.rpcerrors import error_reason
from runtime.tls import ClientTls, TlsSettings, channel
from timebank.v1 import node_pb2, node_pb2_grpc

Req = TypeVar("Req")
Resp = TypeVar("Resp")

DEFAULT_NODE_ADDRESS = "127.0.0.1:7443"
#: How long one call may take before the CLI gives up (the node answers in milliseconds).
CALL_TIMEOUT_SECONDS = 30.0


def new_key() -> str:
    return str(uuid.uuid4())


_RETRYABLE = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "UNKNOWN", "INTERNAL", "CANCELLED"}


def describe_rpc_error(e: grpc.RpcError, address: str, idempotency_key: str = "") -> str:
    """One line: the status code's name, the node's message, and what to do."""
    if not isinstance(e, grpc.Call):
        return f"the call to the node at {address} failed: {e}"
    code = e.code()
    name = code.name if code is not None else "UNKNOWN"
    details = " ".join((e.details() or "").split())
    if code is grpc.StatusCode.UNAVAILABLE and ("connect" in details.lower()
                                                 or "dns" in details.lower()):
        message = (f"UNAVAILABLE: cannot reach the node at {address} (is `timebank node serve` "
                   f"running there? set --node or TIMEBANK_NODE_ADDRESS; does it serve TLS "
                   f"with a certificate of the CA given by --ca?): {details}")
    elif code is grpc.StatusCode.DEADLINE_EXCEEDED:
        message = (f"DEADLINE_EXCEEDED: the node at {address} did not answer within "
                   f"{CALL_TIMEOUT_SECONDS:g} s")
    else:
        message = f"{name}: {details or 'no details'}"
        reason = error_reason(e)
        if reason and reason != name:
            message += f" [{reason}]"
    if idempotency_key and name in _RETRYABLE:
        message += (f" — it is safe to retry: repeat the command with "
                    f"--idempotency-key {idempotency_key}")
    return message


@dataclasses.dataclass(slots=True)
class _Choice:
    """What the ``node`` group's options said: the CA, or plaintext."""

    ca: Path | None = None
    insecure: bool = False
    cert: Path | None = None
    key: Path | None = None


_choice = _Choice()


def use_tls(ca: Path | None, insecure: bool, cert: Path | None = None,
            key: Path | None = None) -> None:
    """Record how this command line reaches nodes and the clearinghouse (``timebank node
    --ca/--cert/--key/--insecure``)."""
    _choice.ca, _choice.insecure, _choice.cert, _choice.key = ca, insecure, cert, key


def cli_tls(config: TlsSettings | None = None) -> ClientTls | None:
    """TLS trusting the CA the operator named (else ``config``'s, the node's own
    ``[tls]`` when a command was given one); None when they said --insecure."""
    if _choice.insecure or (_choice.ca is None and config is not None and config.insecure):
        return None
    if _choice.ca is None and config is not None and config.ca is not None:
        return ClientTls(config.ca)
    if _choice.ca is None:
        fail("节点通过 TLS 连接：请用 --ca 指定城市 CA 证书（或设 TIMEBANK_CA），明文节点用 "
             "--insecure / nodes are reached over TLS: name the city CA certificate with "
             "`timebank node --ca FILE …` (or TIMEBANK_CA), or --insecure for a node serving "
             "plaintext")
    return ClientTls(_choice.ca, _choice.cert, _choice.key)


class NodeClient:
    """A gRPC connection to one node's NodeService: TLS as ``tls`` says (None:
    plaintext)."""

    def __init__(self, address: str, tls: ClientTls | None,
                 timeout: float = CALL_TIMEOUT_SECONDS) -> None:
        if not address.strip():
            fail("the node address is empty; use --node HOST:PORT")
        self.address = address
        self.timeout = timeout
        self._channel = channel(address, tls)
        self.stub = node_pb2_grpc.NodeServiceStub(self._channel)
        self._names: dict[int, str] = {}

    def call(self, method: grpc.UnaryUnaryMultiCallable[Req, Resp], request: Req,
             idempotency_key: str = "") -> Resp:
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise CliError(describe_rpc_error(e, self.address, idempotency_key)) from None

    def name_of(self, person_id: int) -> str:
        """A person's name for display; empty if it cannot be read."""
        if not person_id:
            return ""
        if person_id not in self._names:
            try:
                person = self.stub.GetPerson(node_pb2.GetPersonRequest(person_id=person_id),
                                             timeout=self.timeout)
                self._names[person_id] = person.name
            except grpc.RpcError:
                return ""
        return self._names[person_id]

    def remember(self, person: node_pb2.Person) -> None:
        self._names[person.id] = person.name

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def connect(address: str, config: TlsSettings | None = None) -> Iterator[NodeClient]:
    """A client of the node at ``address``, TLS as the command line (or ``config``) said
    (``cli_tls``)."""
    client = NodeClient(address, cli_tls(config))
    try:
        yield client
    finally:
        client.close()
