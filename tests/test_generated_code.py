"""The committed protobuf/gRPC code must be what the committed .proto files generate."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _gen_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_current(tmp_path: Path) -> None:
    gen = _gen_module()
    fresh = {p.name: p.read_bytes() for p in gen.generate(tmp_path)}
    committed_dir = ROOT / "timebank" / "v1"
    committed = {p.name: p.read_bytes() for p in committed_dir.iterdir()
                 if p.name.endswith(gen.GENERATED_SUFFIXES)}
    assert sorted(fresh) == sorted(committed), "generated files differ in name"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated code: {stale}; run `python scripts/gen_proto.py`"
