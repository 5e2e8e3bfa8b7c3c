"""No input makes either server answer INTERNAL or UNKNOWN, and no refusal changes state.

A real clearinghouse and a real district node serve on 127.0.0.1. Every rpc each one
serves is found through its own server reflection (so a new rpc, or a new service, is
covered without touching this test): ours, health checking and reflection itself. Each
is sent, through generic stubs that pass bytes as they are,

- random bytes, empty requests, and requests with a string field holding bytes that are
  not UTF-8;
- its request message with each field alone at the edges of its type (0, ±1, 2**31 - 1,
  2**63 - 1, 2**63, 2**64 - 1, -2**63; huge, empty and odd strings; times before year 1,
  after 9999, nanos out of range; unknown enum values) and with every field at once;
- for a method that takes a signed envelope: envelopes of each kind it takes, properly
  signed by an admitted district, whose bodies are made the same way (so the values
  reach the checks behind the signature).

No answer may be INTERNAL or UNKNOWN. After every call that could write, both databases
are dumped: a refused call must have left them exactly as they were (a call that
succeeded sets the new baseline). Seeded, no hypothesis deadlines: a fixed set of about
three thousand calls, some 20 s on two cores; it runs in the normal suite.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_reflection.v1alpha import reflection_pb2
from nacl.signing import SigningKey

from clearinghouse.api.server import start_server as start_clearinghouse
from clearinghouse.bureau import issue_admission
from clearinghouse.storage import migrate as ch_migrate
from clearinghouse.storage.db import Database as ChDatabase
from clearinghouse.usecases import admission, directory
from clearinghouse.usecases import claims as ch_claims
from clearinghouse.usecases.app import ClearinghouseApp
from node.api.server import start_server as start_node
from node.cli.client import authorized
from node.domain.access import Role
from node.domain.clock import ManualClock
from node.usecases import logins
from node.usecases.app import NodeApp
from runtime.server import RunningServer
from tests.clearinghouse.conftest import snapshot as ch_snapshot
from tests.federation.conftest import CH_KEY, CITY_ROOT, DISTRICTS, _node_app
from tests.helpers import enrol, snapshot, staff
from timebank.envelope import MAX_BODY_BYTES, encode, sign
from timebank.keys import public_key
from timebank.v1 import clearing_pb2 as pb

JN, GL = "320115", "320106"
PERSON = "ab" * 32  # homed at GL in the clearinghouse's directory
CLAIM_ID = "019a0000-0000-7000-8000-0000000000f1"
NOW = 1_772_413_200  # the ManualClock's start: 2026-03-02 01:00 UTC
NODE_KEYS = {n: SigningKey(f"fuzz node {n}".encode().ljust(32, b".")) for n in (JN, GL)}
SEED = 14
RANDOM_BYTES = 6          # random requests per method
WHOLE_MESSAGES = 6        # requests with every field set at random, per message type
CALL_TIMEOUT = 5.0
STREAM_TIMEOUT = 0.3      # a stream that opens is read this long, then dropped
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"
REFLECT = f"/{REFLECTION}/ServerReflectionInfo"
#: Never an answer. DEADLINE_EXCEEDED counts as none (a server that stopped answering)
#: except on a server stream that opened and had nothing to send yet (``_send``).
NEVER = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
                   grpc.StatusCode.DEADLINE_EXCEEDED})
MAX_BAD = 25

#: The envelope kinds each method that takes a signed envelope is built for, with the
#: body message of each (from the proto's comments).
ENVELOPES: dict[str, list[tuple[str, type[Message]]]] = {
    "Submit": [("directory.register", pb.DirectoryRegistration),
               ("claim.propose", pb.ClaimProposal), ("claim.decide", pb.ClaimDecision),
               ("claim.finish", pb.ClaimFinish), ("node.checkpoint", pb.NodeCheckpoint)],
    "Subscribe": [("subscribe", pb.SubscribeBody)],
    "Ack": [("ack", pb.AckBody)],
    "AddCosignature": [("cosign", pb.CosignBody)],
}

# ------------------------------------------------------------------ values at the edges

_INTS: dict[int, list[int]] = {
    FieldDescriptor.TYPE_INT32: [0, -1, 1, 2**31 - 1, -(2**31)],
    FieldDescriptor.TYPE_SINT32: [0, -1, 2**31 - 1, -(2**31)],
    FieldDescriptor.TYPE_SFIXED32: [0, -1, 2**31 - 1, -(2**31)],
    FieldDescriptor.TYPE_UINT32: [0, 1, 2**32 - 1],
    FieldDescriptor.TYPE_FIXED32: [0, 1, 2**32 - 1],
    FieldDescriptor.TYPE_INT64: [0, -1, 1, 2**63 - 1, -(2**63)],
    FieldDescriptor.TYPE_SINT64: [0, -1, 2**63 - 1, -(2**63)],
    FieldDescriptor.TYPE_SFIXED64: [0, -1, 2**63 - 1, -(2**63)],
    FieldDescriptor.TYPE_UINT64: [0, 1, 2**63 - 1, 2**63, 2**64 - 1],
    FieldDescriptor.TYPE_FIXED64: [0, 1, 2**63 - 1, 2**63, 2**64 - 1],
}
_STRINGS = ["", "1", "x" * 5000, "江宁区" * 1500, "\x00", "\u202e320115", " 320115 ",
            "😀" * 50, "320115", "0" * 64, "a" * 64, "019a0000-0000-7000-8000-000000000001",
            "claim.propose", "-1", "\ufffd\ufeff"]
_BYTES = [b"", b"\xff\xfe\xfd", bytes(32), bytes(range(256)) * 40, b"\x00" * 64]
#: (seconds, nanos) of Timestamps: before year 1, after 9999, the ends of int64, nanos
#: out of range both ways, and a plain valid one.
_TIMES = [(-62_135_596_801, 0), (253_402_300_800, 0), (2**63 - 1, 0), (-(2**63), 0),
          (0, -1), (0, 10**9), (1_772_413_200, 2**31 - 1), (1_772_413_200, 0), (0, 0)]


def _edges(f: FieldDescriptor) -> list[Any]:
    """The values at the edges of a scalar field's type (a message field: see _timestamp)."""
    if f.type in _INTS:
        return _INTS[f.type]
    if f.type == FieldDescriptor.TYPE_BOOL:
        return [False, True]
    if f.type == FieldDescriptor.TYPE_STRING:
        return _STRINGS
    if f.type == FieldDescriptor.TYPE_BYTES:
        return _BYTES
    if f.type == FieldDescriptor.TYPE_ENUM:
        return [0, 1, 99, -1, 2**31 - 1]
    if f.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return [0.0, -1.0, float("inf"), float("nan"), 1e308]
    return []


def _is_timestamp(d: Descriptor) -> bool:
    return d.full_name == "google.protobuf.Timestamp"


def _set(msg: Message, f: FieldDescriptor, value: Any) -> None:
    if f.is_repeated:
        getattr(msg, f.name).append(value)
    else:
        setattr(msg, f.name, value)


def _fill(msg: Message, f: FieldDescriptor, rng: random.Random, depth: int) -> None:
    """Give ``f`` of ``msg`` a random edge value (a message field: a random message)."""
    if f.type != FieldDescriptor.TYPE_MESSAGE:
        for _ in range(rng.randrange(1, 4) if f.is_repeated else 1):
            _set(msg, f, rng.choice(_edges(f)))
        return
    if f.message_type.GetOptions().map_entry:
        return
    for _ in range(rng.randrange(1, 3) if f.is_repeated else 1):
        inner = getattr(msg, f.name).add() if f.is_repeated else getattr(msg, f.name)
        if _is_timestamp(f.message_type):
            inner.seconds, inner.nanos = rng.choice(_TIMES)
        elif depth < 3:
            _whole(inner, rng, depth + 1)
        else:
            inner.SetInParent()


def _whole(msg: Message, rng: random.Random, depth: int = 0) -> Message:
    """Every field (one of each oneof) at a random edge."""
    chosen = {o.name: rng.choice(o.fields) for o in msg.DESCRIPTOR.oneofs}
    for f in msg.DESCRIPTOR.fields:
        if f.containing_oneof is not None and chosen[f.containing_oneof.name] is not f:
            continue
        _fill(msg, f, rng, depth)
    return msg


#: Plausible values by field name, so that one field at an edge reaches the checks
#: behind the others (a proposal's deadline behind its claim id, parties and person).
_PLAUSIBLE: dict[str, Any] = {
    "claim_id": CLAIM_ID, "node_id": JN, "creditor_node_id": JN, "debtor_node_id": GL,
    "home_node_id": GL, "recipient_node_id": JN, "payer_ref": PERSON, "recipient_ref": PERSON,
    "person_ref": PERSON, "category": "cleaning", "name": "王芳", "kind": 1,
    "id_number": "320115196306120243", "phone": "13800000000", "code": "JN-DS-09",
    "street": "东山街道", "minutes": 60, "planned_minutes": 60, "limit": 10,
}


def _plausible_value(f: FieldDescriptor) -> Any:
    named = _PLAUSIBLE.get(f.name)
    if isinstance(named, str) == (f.type == FieldDescriptor.TYPE_STRING) and named is not None:
        return named
    if f.name == "idempotency_key":
        return uuid.uuid4().hex
    if f.type in _INTS:
        return 1
    if f.type == FieldDescriptor.TYPE_ENUM:
        return 1
    if f.type == FieldDescriptor.TYPE_STRING:
        return "x"
    if f.type == FieldDescriptor.TYPE_BYTES:
        return bytes(32)
    if f.type == FieldDescriptor.TYPE_BOOL:
        return False
    return 0.0


def plausible(cls: type[Message], depth: int = 0) -> Message:
    """``cls`` with every field (the first of each oneof) at a plausible value: times
    now, or a day on for a deadline."""
    msg = cls()
    for f in msg.DESCRIPTOR.fields:
        if f.containing_oneof is not None and f.containing_oneof.fields[0] is not f:
            continue
        if f.type != FieldDescriptor.TYPE_MESSAGE:
            _set(msg, f, _plausible_value(f))
            continue
        if f.message_type.GetOptions().map_entry or depth > 2:
            continue
        inner = getattr(msg, f.name).add() if f.is_repeated else getattr(msg, f.name)
        if _is_timestamp(f.message_type):
            inner.seconds = NOW + (86_400 if "expire" in f.name else 0)
        else:
            inner.CopyFrom(plausible(GetMessageClass(f.message_type), depth + 1))
    return msg


def variants(cls: type[Message], rng: random.Random) -> Iterator[Message]:
    """``cls`` empty and plausible; plausible with each field alone at each of its edges
    (a message field: each time edge, or random contents); then whole random ones."""
    yield cls()
    yield plausible(cls)
    for f in cls.DESCRIPTOR.fields:
        edits: list[Callable[[Message], None]] = []
        if f.type != FieldDescriptor.TYPE_MESSAGE:
            edits = [lambda m, f=f, v=v: _replace(m, f, v) for v in _edges(f)]
        elif _is_timestamp(f.message_type):
            edits = [lambda m, f=f, t=t: _time(m, f, t) for t in _TIMES]
        elif not f.message_type.GetOptions().map_entry:
            edits = [lambda m, f=f: _fill(_cleared(m, f), f, rng, 1)] * 3
        for edit in edits:
            msg = plausible(cls)
            edit(msg)
            yield msg
    for _ in range(WHOLE_MESSAGES):
        yield _whole(cls(), rng)


def _cleared(msg: Message, f: FieldDescriptor) -> Message:
    msg.ClearField(f.name)
    return msg


def _replace(msg: Message, f: FieldDescriptor, value: Any) -> None:
    _set(_cleared(msg, f), f, value)


def _time(msg: Message, f: FieldDescriptor, at: tuple[int, int]) -> None:
    _cleared(msg, f)
    inner = getattr(msg, f.name).add() if f.is_repeated else getattr(msg, f.name)
    inner.seconds, inner.nanos = at


def not_utf8(d: Descriptor) -> Iterator[bytes]:
    """For each string field: a request holding bytes that are not UTF-8 in it."""
    for f in d.fields:
        if f.type == FieldDescriptor.TYPE_STRING and f.number < 16:
            yield bytes([f.number << 3 | 2, 3]) + b"\xff\xc0\x80"


# ------------------------------------------------------------------ the servers


@dataclass
class Servers:
    ch: ClearinghouseApp
    node: NodeApp
    ch_server: RunningServer
    node_server: RunningServer
    token: str  # the node's operator: node calls are authenticated, so they reach the rpcs

    def state(self) -> tuple[object, object]:
        return ch_snapshot(self.ch), snapshot(self.node)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    clock = ManualClock()
    ch_db = ChDatabase(f"sqlite:///{tmp_path / 'ch.sqlite3'}")
    ch_migrate.upgrade(ch_db.writer)
    ch = ClearinghouseApp(ch_db, clock)
    for node_id in (JN, GL):
        cert = issue_admission(CITY_ROOT, node_id, DISTRICTS[node_id],
                               public_key(NODE_KEYS[node_id]), 1, clock.now())
        ch.execute(admission.admit, cert, public_key(CITY_ROOT))
        ch.execute(ch_claims.set_net_debit_limit, node_id, 100_000)
    registration = pb.DirectoryRegistration(person_ref=PERSON, home_node_id=GL)
    envelope = sign(directory.REGISTER, registration.SerializeToString(), GL, NODE_KEYS[GL])
    ch.execute(lambda tx: directory.register(tx, envelope, admission.key_ring(tx)))
    node = _node_app(tmp_path, JN, clock)
    staff(node)  # staff 1 at service point 1, and person 1: ids that exist
    enrol(node, "李秀英", 1950, priority=True)
    ch_server = start_clearinghouse(ch, CH_KEY, "127.0.0.1:0")
    node_server = start_node(node, "127.0.0.1:0")
    try:
        token = node.execute(logins.local_session, "operator", Role.OPERATOR, 366)
        yield Servers(ch, node, ch_server, node_server, token)
    finally:
        node_server.stop(None)
        ch_server.stop(None)
        node.db.dispose()
        ch_db.dispose()


def _services(channel: grpc.Channel) -> list[str]:
    """The services a server names through its reflection."""
    ask = channel.stream_stream(REFLECT,
                                request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
    (answer,) = ask(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                    timeout=CALL_TIMEOUT)
    return sorted(s.name for s in answer.list_services_response.service)


def _send(channel: grpc.Channel, path: str, method: MethodDescriptor, data: bytes,
          ) -> tuple[grpc.StatusCode, str]:
    """One call with ``data`` as the request's bytes; its status code and message."""
    details: list[str] = []

    def unary() -> object:
        return channel.unary_unary(path)(data, timeout=CALL_TIMEOUT)

    def streamed() -> object:
        responses = channel.unary_stream(path)(data, timeout=STREAM_TIMEOUT)
        return next(iter(responses), None)

    def both() -> object:
        return list(channel.stream_stream(path)(iter([data, data]), timeout=CALL_TIMEOUT))

    call = (both if method.client_streaming else streamed if method.server_streaming
            else unary)
    try:
        call()
    except grpc.RpcError as e:
        details.append(e.details() or "")
        code: grpc.StatusCode = e.code()
        if code is grpc.StatusCode.DEADLINE_EXCEEDED and method.server_streaming:
            code = grpc.StatusCode.OK  # a stream that opened and had nothing yet
        return code, details[0]
    return grpc.StatusCode.OK, ""


def signed(kind: str, body: Message, signer: str) -> bytes:
    """``body`` signed by ``signer`` (an admitted district), cut to the largest body an
    envelope may carry."""
    data = body.SerializeToString()[:MAX_BODY_BYTES]
    return encode(sign(kind, data, signer, NODE_KEYS[signer]))


def _requests(method: MethodDescriptor, rng: random.Random) -> Iterator[bytes]:
    """Every request this test sends to ``method`` (see the module's doc)."""
    request = GetMessageClass(method.input_type)
    for _ in range(RANDOM_BYTES):
        yield rng.randbytes(rng.randrange(0, 200))
    yield b""
    yield from not_utf8(method.input_type)
    for msg in variants(request, rng):
        yield msg.SerializeToString()
    for kind, body in ENVELOPES.get(method.name, []):
        for signer in (JN, GL):
            for msg in variants(body, rng):
                yield signed(kind, msg, signer)
    if method.name == "SubmitBatch":
        for kind, body in ENVELOPES["Submit"]:
            bodies = list(variants(body, rng))
            for start in range(0, len(bodies), 16):
                batch = [signed(kind, b, JN) for b in bodies[start:start + 16]]
                batch.append(rng.randbytes(40))
                yield pb.SubmitBatchRequest(envelopes=batch, known_tree_size=2**63 - 1
                                            if start % 32 else 0).SerializeToString()


def _reads_only(method: MethodDescriptor) -> bool:
    """A method that never writes (its calls need no dump; the last dump covers them)."""
    return (method.name.startswith(("Get", "List", "Lookup"))
            or method.name in ("Check", "CheckLedger", "Watch", "ServerReflectionInfo",
                               "Subscribe"))


def _calls(servers: Servers) -> Iterator[tuple[grpc.Channel, str, MethodDescriptor, bytes]]:
    """(channel, path, method, request bytes) of every call, server by server."""
    rng = random.Random(SEED)
    pool = descriptor_pool.Default()
    for server in (servers.ch_server, servers.node_server):
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as raw:
            channel = (authorized(raw, servers.token) if server is servers.node_server
                       else raw)
            names = _services(channel)
            assert REFLECTION in names and "grpc.health.v1.Health" in names
            for service in names:
                for method in pool.FindServiceByName(service).methods:
                    for data in _requests(method, rng):
                        yield channel, f"/{service}/{method.name}", method, data


@pytest.mark.slow
@pytest.mark.timeout(180)  # about 20 s here: a bound for a server that stops answering
def test_no_input_answers_internal_or_unknown_and_no_refusal_changes_state(
        servers: Servers) -> None:
    bad: list[str] = []
    counted: dict[str, int] = {}
    baseline = servers.state()
    for channel, path, method, data in _calls(servers):
        code, details = _send(channel, path, method, data)
        counted[code.name] = counted.get(code.name, 0) + 1
        if code in NEVER:
            bad.append(f"{path} {code.name}: {details[:200]} <- {data[:80].hex()}")
        if not _reads_only(method):
            after = servers.state()
            if code is not grpc.StatusCode.OK and after != baseline:
                bad.append(f"{path} refused {code.name} but changed state "
                           f"<- {data[:80].hex()}")
            baseline = after
        if len(bad) >= MAX_BAD:  # a server that stopped answering: stop, say so
            break
    assert not bad, f"{len(bad)} bad answers:\n" + "\n".join(bad)
    assert servers.state() == baseline, "a read changed state"
    total = sum(counted.values())
    assert total > 2000 and counted.get("INVALID_ARGUMENT", 0) > total // 3, counted
