"""``timebank proto export`` gives a client of another language everything it needs, and
``timebank --version`` names the package and the protocol.

The exported tree is compiled by protoc (grpc_tools) with nothing but the tree on the
include path, into the descriptor set every language's generator reads, and by buf (a
toolchain that is not Python's); and again from the exported descriptor set alone.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from timebank.protocol import PROTOCOL

CONTRACT = ["timebank/v1/node.proto", "timebank/v1/clearing.proto",
            "grpc/health/v1/health.proto", "google/rpc/status.proto",
            "google/rpc/error_details.proto", "google/rpc/code.proto"]


def _timebank(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "city", *args], capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "protos"
    done = _timebank("proto", "export", "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out


def test_the_tree_compiles_for_another_language_on_its_own(exported: Path,
                                                          tmp_path: Path) -> None:
    for name in CONTRACT:
        assert (exported / name).is_file(), name
    out = tmp_path / "compiled.binpb"
    code = protoc.main(["protoc", f"-I{exported}", "--include_imports",
                        f"--descriptor_set_out={out}", *CONTRACT])
    assert code == 0
    assert _services(out) >= {"timebank.v1.NodeService", "timebank.v1.ClearinghouseService",
                              "grpc.health.v1.Health"}
    buf = shutil.which("buf", path=str(Path(sys.executable).parent)) or shutil.which("buf")
    assert buf, "buf is missing: pip install -e '.[test]'"
    built = subprocess.run([buf, "build", str(exported), "-o", str(tmp_path / "buf.binpb")],
                           capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stderr


def _services(path: Path) -> set[str]:
    files = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    return {f"{f.package}.{s.name}" for f in files.file for s in f.service}


def test_the_descriptor_set_alone_compiles_too(exported: Path, tmp_path: Path) -> None:
    out = tmp_path / "compiled.binpb"
    code = protoc.main(["protoc", f"--descriptor_set_in={exported / 'timebank.binpb'}",
                        "--include_imports", f"--descriptor_set_out={out}", *CONTRACT])
    assert code == 0
    assert "grpc.health.v1.Health" in _services(out)


def test_an_export_into_a_non_empty_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine", encoding="utf-8")
    done = _timebank("proto", "export", "--out", str(tmp_path))
    assert done.returncode == 2 and "not an empty directory" in done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_version_names_the_package_and_the_protocol() -> None:
    done = _timebank("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("timebank 0.") and f"protocol {PROTOCOL}" in done.stdout
