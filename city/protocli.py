"""``timebank --version`` and ``timebank proto export``: what a client of another language
needs to talk to a node or the clearinghouse.

``proto export --out DIR`` writes the contract (``proto/timebank/v1``) and the
well-known protos it and the servers use, taken from the installed packages rather than
kept as copies in this repository:

- ``google/protobuf/*.proto`` (timestamp, any, duration) from grpcio-tools, when it is
  installed (every protoc carries them too);
- ``google/rpc/status.proto``, ``error_details.proto`` and ``code.proto`` from
  googleapis-common-protos (a refusal's details: ``google.rpc.ErrorInfo``);
- ``grpc/health/v1/health.proto``, written from the descriptor grpcio-health-checking
  compiled in (the package carries no .proto text);
- ``timebank.binpb``: a FileDescriptorSet of all of it, for ``protoc
  --descriptor_set_in`` or ``buf build``.

docs/protocol.md shows how to compile the tree.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Annotated

import typer
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor

from runtime.console import guarded
from timebank.protocol import PROTOCOL

DISTRIBUTION = "timebank-federation"
#: The contract's sources, beside the packages in a checkout or an editable install.
PROTO_SOURCES = Path(__file__).resolve().parent.parent / "proto"
HEALTH_PATH = "grpc/health/v1/health.proto"
WELL_KNOWN = ("google/protobuf/timestamp.proto", "google/protobuf/any.proto",
              "google/protobuf/duration.proto")
GOOGLE_RPC = ("google/rpc/status.proto", "google/rpc/error_details.proto",
              "google/rpc/code.proto")

app = typer.Typer(help="The wire contract for clients in other languages (协议文件).",
                  no_args_is_help=True, add_completion=False)


def version_text() -> str:
    """The package's version and the protocol's, as ``--version`` prints them."""
    try:
        package = importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        package = "unknown (not installed)"
    return f"timebank {package}（协议 protocol {PROTOCOL}）"


def print_version(value: bool) -> None:
    """``--version``: print and stop."""
    if value:
        typer.echo(version_text())
        raise typer.Exit()


def root(
    version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=print_version,
        help="Print the package version and the wire protocol version (MAJOR.MINOR), "
             "then exit.")] = False,
) -> None:
    pass


# ------------------------------------------------------------------ descriptors to text

_TYPES = {getattr(descriptor_pb2.FieldDescriptorProto, f"TYPE_{n.upper()}"): n for n in (
    "double", "float", "int64", "uint64", "int32", "fixed64", "fixed32", "bool", "string",
    "bytes", "uint32", "sfixed32", "sfixed64", "sint32", "sint64")}


def _type_name(field: descriptor_pb2.FieldDescriptorProto) -> str:
    return _TYPES.get(field.type) or "." + field.type_name.lstrip(".")


def _message(msg: descriptor_pb2.DescriptorProto, indent: str) -> list[str]:
    lines = [f"{indent}message {msg.name} {{"]
    inner = indent + "  "
    maps = {n.name: n for n in msg.nested_type if n.options.map_entry}
    for enum in msg.enum_type:
        lines += _enum(enum, inner)
    for nested in msg.nested_type:
        if not nested.options.map_entry:
            lines += _message(nested, inner)
    for field in msg.field:
        entry = maps.get(field.type_name.rsplit(".", 1)[-1])
        if entry is not None:
            key, value = entry.field
            kind = f"map<{_type_name(key)}, {_type_name(value)}>"
        else:
            label = ("repeated " if field.label == field.LABEL_REPEATED
                     else "optional " if field.proto3_optional else "")
            kind = label + _type_name(field)
        lines.append(f"{inner}{kind} {field.name} = {field.number};")
    return [*lines, f"{indent}}}"]


def _enum(enum: descriptor_pb2.EnumDescriptorProto, indent: str) -> list[str]:
    values = [f"{indent}  {v.name} = {v.number};" for v in enum.value]
    return [f"{indent}enum {enum.name} {{", *values, f"{indent}}}"]


def proto_text(file: descriptor_pb2.FileDescriptorProto) -> str:
    """A proto3 file's text from its descriptor: messages, enums, maps, services (no
    comments or options; what a compiler needs)."""
    if file.syntax != "proto3" or file.extension or any(m.oneof_decl and any(
            f.HasField("oneof_index") and not f.proto3_optional for f in m.field)
            for m in file.message_type):
        raise ValueError(f"{file.name}: only plain proto3 files are written as text")
    lines = ['syntax = "proto3";', "", f"package {file.package};", ""]
    lines += [f'import "{d}";' for d in file.dependency]
    for enum in file.enum_type:
        lines += ["", *_enum(enum, "")]
    for msg in file.message_type:
        lines += ["", *_message(msg, "")]
    for service in file.service:
        lines += ["", f"service {service.name} {{"]
        for m in service.method:
            stream_in = "stream " if m.client_streaming else ""
            stream_out = "stream " if m.server_streaming else ""
            lines.append(f"  rpc {m.name}({stream_in}.{m.input_type.lstrip('.')}) "
                         f"returns ({stream_out}.{m.output_type.lstrip('.')});")
        lines.append("}")
    return "\n".join(lines) + "\n"


def _file_proto(descriptor: FileDescriptor, name: str | None = None,
                ) -> descriptor_pb2.FileDescriptorProto:
    out = descriptor_pb2.FileDescriptorProto()
    descriptor.CopyToProto(out)
    if name is not None:
        out.name = name
    return out


# ------------------------------------------------------------------ export


def export(out: Path) -> list[Path]:
    """Write the contract and the well-known protos under ``out``; return the files."""
    from google.rpc import code_pb2, error_details_pb2, status_pb2
    from grpc_health.v1 import health_pb2

    from timebank.v1 import clearing_pb2, node_pb2

    sources = sorted((PROTO_SOURCES / "timebank" / "v1").glob("*.proto"))
    if not sources:
        raise FileNotFoundError(f"the contract's .proto sources are not beside this "
                                f"installation ({PROTO_SOURCES}); run it from a checkout")
    written: list[Path] = []

    def put(relative: str, data: bytes) -> None:
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written.append(path)

    for source in sources:
        put(source.relative_to(PROTO_SOURCES).as_posix(), source.read_bytes())
    rpc_dir = Path(status_pb2.__file__).parent
    for name in GOOGLE_RPC:
        put(name, (rpc_dir / Path(name).name).read_bytes())
    try:
        import grpc_tools  # type: ignore[import-untyped]
    except ImportError:  # protoc installations carry these themselves
        pass
    else:
        include = Path(grpc_tools.__file__).parent / "_proto"
        for name in WELL_KNOWN:
            put(name, (include / name).read_bytes())
    health = _file_proto(health_pb2.DESCRIPTOR, HEALTH_PATH)
    put(HEALTH_PATH, proto_text(health).encode())

    from google.protobuf import any_pb2, duration_pb2, timestamp_pb2

    files = descriptor_pb2.FileDescriptorSet()
    for module in (timestamp_pb2, any_pb2, duration_pb2, status_pb2, error_details_pb2,
                   code_pb2, node_pb2, clearing_pb2):
        files.file.append(_file_proto(module.DESCRIPTOR))
    files.file.append(health)
    put("timebank.binpb", files.SerializeToString())
    return written


@app.command("export")
@guarded
def export_command(
    out: Annotated[Path, typer.Option("--out", metavar="DIR",
                                      help="Write the .proto tree here (created; must be "
                                           "empty or new).")],
) -> None:
    """Write the contract and the well-known protos a client needs (导出协议文件)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise typer.BadParameter(f"{out} 已存在且非空 / exists and is not an empty "
                                 "directory", param_hint="--out")
    try:
        written = export(out)
    except FileNotFoundError as e:
        raise typer.BadParameter(str(e), param_hint="--out") from None
    typer.echo(f"已写出 {len(written)} 个文件 / wrote {len(written)} files to {out} "
               f"(timebank protocol {PROTOCOL})")
