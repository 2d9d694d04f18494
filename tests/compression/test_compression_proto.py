"""The checked-in generated code matches the .proto (one documented command reproduces it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "pollen/compression/_proto/pollen/v1"


@pytest.mark.parametrize("proto", ["update", "frl", "fedkseed"])
def test_generated_code_is_up_to_date(tmp_path: Path, proto: str) -> None:
    pytest.importorskip("grpc_tools")
    cmd = [sys.executable, "-m", "grpc_tools.protoc", "-Iprotos", f"--python_out={tmp_path}",
           f"--pyi_out={tmp_path}", f"protos/pollen/v1/{proto}.proto"]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    for name in (f"{proto}_pb2.py", f"{proto}_pb2.pyi"):
        fresh = (tmp_path / "pollen/v1" / name).read_text()
        assert fresh == (GENERATED / name).read_text(), f"regenerate {name}: see protos/README.md"


def test_descriptor_is_registered_under_its_proto_path() -> None:
    from google.protobuf import descriptor_pool

    from pollen.compression._proto.pollen.v1 import update_pb2

    assert update_pb2.DESCRIPTOR.name == "pollen/v1/update.proto"
    assert update_pb2.DESCRIPTOR.package == "pollen.v1"
    found = descriptor_pool.Default().FindMessageTypeByName("pollen.v1.Update")
    assert [f.name for f in found.fields] == ["format_version", "codec", "compression",
                                              "body_size", "body"]


def test_frl_descriptor_is_registered_under_its_proto_path() -> None:
    from google.protobuf import descriptor_pool

    from pollen.compression._proto.pollen.v1 import frl_pb2

    assert frl_pb2.DESCRIPTOR.name == "pollen/v1/frl.proto"
    pool = descriptor_pool.Default()
    layer = pool.FindMessageTypeByName("pollen.v1.LayerRanking")
    assert [f.name for f in layer.fields] == ["name", "size", "id_bits", "ids"]
    up, down = (pool.FindMessageTypeByName(f"pollen.v1.{m}") for m in ("ClientRanking", "GlobalRanking"))
    # `layers` sits at different numbers, so a message sent the wrong way does not decode as the other
    assert up.fields_by_name["layers"].number != down.fields_by_name["layers"].number
