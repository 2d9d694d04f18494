"""The protobuf pre-scan: honest messages pass, every budget and malformation is refused."""

from __future__ import annotations

import pytest
import zstandard
from compression_helpers import lora_update

from pollen.compression import Codec
from pollen.compression._proto.pollen.v1 import update_pb2 as pb
from pollen.compression.wire import _TENSOR, _UPDATE, _tensor_list_schema
from pollen.compression.wirescan import I32, LEN, VARINT, Field, ScanError, scan

SCHEMA = {1: Field("n", (VARINT,)), 2: Field("s", (LEN,), max_count=2, max_len=4),
          3: Field("f", (I32,)), 4: Field("m", (LEN,), message={1: Field("x", (VARINT,))})}


@pytest.mark.parametrize("spec", ["none", "topz:0.1 > kmeans:16 > zstd", "ternary:1 > zstd"])
def test_honest_payloads_pass(spec: str) -> None:
    upd = lora_update()
    blob = Codec.parse(spec).encode(upd)
    scan(blob, _UPDATE)
    msg = pb.Update.FromString(blob)
    body = zstandard.ZstdDecompressor().decompress(msg.body) if msg.HasField("compression") \
        else msg.body
    scan(body, _tensor_list_schema(len(upd)))
    with pytest.raises(ScanError, match="limit"):  # one tensor fewer allowed than sent
        scan(body, _tensor_list_schema(len(upd) - 1))


@pytest.mark.parametrize("data,path,match", [
    (b"\x08", "n", "truncated varint"),
    (b"\x08" + b"\xff" * 10 + b"\x01", "n", "longer than 10"),
    (b"\x28\x01", "", "unknown field number 5"),
    (b"\x0a\x00", "n", "wire type 2"),
    (b"\x12\x01a\x12\x01b\x12\x01c", "s", "limit 2"),
    (b"\x12\x05abcde", "s", "over its limit 4"),
    (b"\x12\x03ab", "s", "truncated"),
    (b"\x1d\x00\x00", "f", "truncated"),
    (b"\x22\x02\x10\x01", "m", "unknown field number 2"),
    (b"\x0b", "n", "wire type 3"),
])
def test_malformations_are_refused_with_a_path(data: bytes, path: str, match: str) -> None:
    with pytest.raises(ScanError, match=match) as exc:
        scan(data, SCHEMA)
    assert exc.value.path == path


def test_work_is_bounded_by_the_budget_not_the_input() -> None:
    """Millions of repeated entries stop at the first one over budget."""
    with pytest.raises(ScanError, match="limit 3"):
        scan(b"\x0a\x00" * 5_000_000, _tensor_list_schema(3))
    with pytest.raises(ScanError, match="over its limit"):
        scan(b"\x1a\x80\x80\x04" + b"\x01" * 65536, _TENSOR)
