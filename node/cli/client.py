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
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

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


#: Which token a call sends: from its method ("/timebank.v1.NodeService/GetPerson") and
#: its request ("" sends none).
TokenFor = Callable[[str, Any], str]


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Sequence[tuple[str, str]] | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _Bearer(grpc.UnaryUnaryClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every unary call."""

    def __init__(self, token_for: TokenFor) -> None:
        self._token_for = token_for

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        token = self._token_for(details.method, request)
        if token:
            metadata = [*(details.metadata or ()), ("authorization", f"Bearer {token}")]
            details = _Details(details.method, details.timeout, metadata,
                               details.credentials, details.wait_for_ready,
                               details.compression)
        return continuation(details, request)


def authorized(channel: grpc.Channel, token: str | TokenFor) -> grpc.Channel:
    """``channel``, every call on it carrying a session or program token (ADR 0016)."""
    token_for = token if callable(token) else (lambda _method, _request: token)
    return grpc.intercept_channel(channel, _Bearer(token_for))


def node_channel(address: str, tls: ClientTls | None, token: str | TokenFor = "",
                 options: Sequence[tuple[str, Any]] | None = None) -> grpc.Channel:
    """THE client channel to a node's API: the one place its transport (TLS as ``tls``
    says; None: plaintext, a node serving --insecure) and its token are chosen."""
    made = channel(address, tls, options=options)
    return authorized(made, token) if token else made


#: ``--token`` / ``TIMEBANK_TOKEN`` of ``timebank node``: sent instead of a kept session.
TOKEN_ENV = "TIMEBANK_TOKEN"
_override: dict[str, str] = {}


def use_token(token: str) -> None:
    """Send ``token`` with every call of this command (``--token``)."""
    _override["token"] = token.strip()


def _sessions_dir() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "timebank" / "sessions"


def session_file(address: str) -> Path:
    """Where the session token for the node at ``address`` is kept."""
    safe = "".join(c if c.isalnum() or c in ".-" else "_" for c in address.strip())
    return _sessions_dir() / f"{safe[:200]}.token"


def keep_session(address: str, token: str) -> Path:
    """Keep a session token for ``address`` in a file only its owner can read."""
    path = session_file(address)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)
    return path


def forget_session(address: str) -> None:
    session_file(address).unlink(missing_ok=True)


def token_for(address: str) -> str:
    """The token a command sends to ``address``: ``--token``, ``TIMEBANK_TOKEN``, or the
    session ``timebank node login`` kept ("" none: the node will say to log in)."""
    given = _override.get("token") or os.environ.get(TOKEN_ENV, "").strip()
    if given:
        return given
    try:
        return session_file(address).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""


class NodeClient:
    """A gRPC connection to one node's NodeService: TLS as ``tls`` says (None:
    plaintext), sending ``token`` with every call (None: ``token_for(address)``; "":
    none)."""

    def __init__(self, address: str, tls: ClientTls | None,
                 timeout: float = CALL_TIMEOUT_SECONDS,
                 token: str | TokenFor | None = None) -> None:
        if not address.strip():
            fail("the node address is empty; use --node HOST:PORT")
        self.address = address
        self.tls = tls
        self.timeout = timeout
        self._channel = node_channel(address, tls,
                                     token_for(address) if token is None else token)
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
                                             timeout=self.timeout).person
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
def connect(address: str, config: TlsSettings | None = None,
            token: str | None = None) -> Iterator[NodeClient]:
    """A client of the node at ``address``, TLS as the command line (or ``config``) said
    (``cli_tls``), acting as ``token`` (None: the session kept or --token)."""
    client = NodeClient(address, cli_tls(config), token=token)
    try:
        yield client
    finally:
        client.close()
