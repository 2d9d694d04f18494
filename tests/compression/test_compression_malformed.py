"""Untrusted payloads: every defect is a PayloadError naming the client and the field."""

from __future__ import annotations

import numpy as np
import pytest
import zstandard
from compression_helpers import expected_of, tamper

from pollen.compression import Codec, decode_update
from pollen.compression._proto.pollen.v1 import update_pb2 as pb
from pollen.compression.lossless import BITMAP, RAW_U32, encode_indices
from pollen.errors import PayloadError

UPD = {"a": np.linspace(-1, 1, 40, dtype=np.float32).reshape(5, 8),
       "b": np.linspace(2, 3, 12, dtype=np.float32)}
EXP = expected_of(UPD)


def blob_of(spec: str) -> bytes:
    return Codec.parse(spec).encode(UPD)


def rejects(blob: bytes, field: str, match: str | None = None, **kw: object) -> None:
    kw.setdefault("expected", EXP)
    with pytest.raises(PayloadError, match=match) as exc:
        decode_update(blob, client="node-7", **kw)  # type: ignore[arg-type]
    assert exc.value.client == "node-7"
    assert exc.value.field == field, str(exc.value)
    assert "node-7" in str(exc.value)


def raw_indices(tl: pb.TensorList, positions: list[int]) -> None:
    tl.index_coding, tl.indices = RAW_U32, np.array(positions, "<u4").tobytes()


# ---- envelope ---------------------------------------------------------------------------------
def test_not_protobuf() -> None:
    rejects(b"\xff\xff\xff garbage", "payload", "not a pollen.v1 Update")


def test_not_bytes() -> None:
    rejects("text", "payload", "must be bytes")  # type: ignore[arg-type]


def test_payload_over_limit() -> None:
    blob = blob_of("none")
    rejects(blob, "payload", "exceeds the limit", max_bytes=len(blob) - 1)
    decode_update(blob, expected=EXP, max_bytes=len(blob))


def test_wrong_version() -> None:
    rejects(tamper(blob_of("zstd"), envelope=lambda m: setattr(m, "format_version", 2)),
            "format_version", "unsupported")
    rejects(tamper(blob_of("zstd"), envelope=lambda m: m.ClearField("format_version")),
            "format_version")


def test_unknown_compression_stage() -> None:
    rejects(tamper(blob_of("zstd"), envelope=lambda m: setattr(m.compression, "name", "lzma")),
            "compression", "unknown codec stage 'lzma'")


def test_non_lossless_compression_stage() -> None:
    def edit(m: pb.Update) -> None:
        m.compression.name = "fp16"
        del m.compression.args[:]

    rejects(tamper(blob_of("zstd"), envelope=edit), "compression", "not a lossless")


def test_decompression_bomb_declared() -> None:
    bomb = zstandard.ZstdCompressor().compress(bytes(50_000_000))
    msg = pb.Update(format_version=1, body_size=50_000_000, body=bomb)
    msg.compression.name = "zstd"
    rejects(msg.SerializeToString(), "body_size", "bomb")


def test_decompression_bomb_understated() -> None:
    """A frame that expands past the declared size is cut off, not decompressed in full."""
    inner = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(5_000_000))
    msg = pb.Update(format_version=1, body_size=100, body=inner)
    msg.compression.name = "zstd"
    rejects(msg.SerializeToString(), "body", "more than 100")
    framed = zstandard.ZstdCompressor().compress(bytes(5_000_000))
    msg.body = framed
    rejects(msg.SerializeToString(), "body", "declares 5000000")


def test_corrupt_zstd() -> None:
    def edit(m: pb.Update) -> None:
        m.body = m.body[:8] + bytes(len(m.body) - 8)

    rejects(tamper(blob_of("zstd"), envelope=edit), "body")


def test_body_not_a_tensor_list() -> None:
    rejects(pb.Update(format_version=1, body=b"\xff\xff", body_size=2).SerializeToString(),
            "body", "not a pollen.v1 TensorList")


def test_body_size_mismatch_uncompressed() -> None:
    rejects(tamper(blob_of("none"), envelope=lambda m: setattr(m, "body_size", m.body_size - 1)),
            "body_size")


# ---- tensor names, shapes, dtypes -------------------------------------------------------------
def test_unexpected_tensor() -> None:
    def edit(tl: pb.TensorList) -> None:
        tl.tensors[1].name = "intruder"

    rejects(tamper(blob_of("none"), edit), "tensors[intruder]", "unexpected")


def test_missing_tensor() -> None:
    blob = Codec.parse("none").encode({"a": UPD["a"]})
    rejects(blob, "tensors", "missing tensors: b")


def test_duplicate_tensor_name() -> None:
    def edit(tl: pb.TensorList) -> None:
        tl.tensors[1].name = "a"

    rejects(tamper(blob_of("none"), edit), "tensors[a]", "twice", expected=None)


def test_shape_mismatch() -> None:
    blob = Codec.parse("none").encode({"a": UPD["a"].reshape(8, 5), "b": UPD["b"]})
    rejects(blob, "tensors[a].shape", r"\(8, 5\) does not match")


def test_dtype_mismatch() -> None:
    blob = Codec.parse("none").encode({"a": UPD["a"].astype(np.float16), "b": UPD["b"]})
    rejects(blob, "tensors[a].dtype", "float16 does not match")


def test_unknown_dtype() -> None:
    def edit(tl: pb.TensorList) -> None:
        tl.tensors[0].dtype = 42

    rejects(tamper(blob_of("none"), edit), "tensors[a].dtype", "unknown dtype")


def test_too_many_tensors_without_expected() -> None:
    msg = pb.TensorList()
    for i in range((1 << 16) + 1):
        msg.tensors.add(name=f"t{i}", dtype=1)
    body = msg.SerializeToString()
    blob = pb.Update(format_version=1, body=body, body_size=len(body)).SerializeToString()
    rejects(blob, "tensors", "limit 65536", expected=None)


def test_too_large_without_expected() -> None:
    rejects(blob_of("none"), "tensors", "limit", expected=None, max_decoded_bytes=100)


def test_sparse_declared_huge_tensor_without_expected() -> None:
    """A tiny message cannot make the server allocate a giant zero tensor."""
    def edit(tl: pb.TensorList) -> None:
        del tl.tensors[0].shape[:]
        tl.tensors[0].shape.extend([1 << 20, 1 << 20])

    rejects(tamper(blob_of("topz:0.1"), edit), "tensors", "limit", expected=None)

    def edit_overflow(tl: pb.TensorList) -> None:
        del tl.tensors[0].shape[:]
        tl.tensors[0].shape.extend([(1 << 64) - 1, (1 << 64) - 1])

    rejects(tamper(blob_of("topz:0.1"), edit_overflow), "tensors", "limit", expected=None,
            max_decoded_bytes=1 << 62)


# ---- stages -----------------------------------------------------------------------------------
def test_unknown_stage() -> None:
    def edit(tl: pb.TensorList) -> None:
        tl.stages[0].name = "magic"

    rejects(tamper(blob_of("topz:0.1 > kmeans:4"), edit), "stages[0]", "unknown codec stage")


def test_bad_stage_argument() -> None:
    def edit(tl: pb.TensorList) -> None:
        tl.stages[1].args[0] = "nine"

    rejects(tamper(blob_of("topz:0.1 > kmeans:4"), edit), "stages[1]", "not a valid int")


def test_invalid_stage_order() -> None:
    def edit(tl: pb.TensorList) -> None:
        tl.stages.add(name="topz", args=["0.5"])

    rejects(tamper(blob_of("topz:0.1 > kmeans:4"), edit), "stages", "cannot follow")


def test_lossless_stage_inside_body() -> None:
    def edit(tl: pb.TensorList) -> None:
        tl.stages.add(name="zstd")

    rejects(tamper(blob_of("topz:0.1"), edit), "stages", "Update.compression")


def test_codes_without_quantizer() -> None:
    def edit(tl: pb.TensorList) -> None:
        del tl.stages[1]

    rejects(tamper(blob_of("topz:0.5 > kmeans:4"), edit), "values", "without a quantizer")


def test_quantizer_given_floats() -> None:
    def edit(tl: pb.TensorList) -> None:
        tl.stages.add(name="uniform", args=["8"])

    rejects(tamper(blob_of("topz:0.5"), edit), "values", "needs codes")


# ---- positions --------------------------------------------------------------------------------
def test_index_out_of_range() -> None:
    def edit(tl: pb.TensorList) -> None:
        raw_indices(tl, [0, 1, 2, 3, 52])  # 52 entries in all: position 52 does not exist
        tl.tensors[0].nnz, tl.tensors[1].nnz = 4, 1

    rejects(tamper(blob_of("topz:0.1"), edit), "indices", "out of range")


def test_rice_gap_out_of_range() -> None:
    def edit(tl: pb.TensorList) -> None:
        coding, data, k = encode_indices(np.array([0, 1, 2, 3, 9000]), 10_000)
        tl.index_coding, tl.indices, tl.rice_k = coding, data, k
        tl.tensors[0].nnz, tl.tensors[1].nnz = 4, 1

    rejects(tamper(blob_of("topz:0.1"), edit), "indices", "out of range")


def test_indices_unsorted() -> None:
    def edit(tl: pb.TensorList) -> None:
        raw_indices(tl, [0, 2, 1, 3, 50])
        tl.tensors[0].nnz, tl.tensors[1].nnz = 4, 1

    rejects(tamper(blob_of("topz:0.1"), edit), "indices", "not sorted")


def test_indices_duplicate() -> None:
    def edit(tl: pb.TensorList) -> None:
        raw_indices(tl, [0, 2, 2, 3, 50])
        tl.tensors[0].nnz, tl.tensors[1].nnz = 4, 1

    rejects(tamper(blob_of("topz:0.1"), edit), "indices", "duplicate index 2")


def test_nnz_disagrees_with_positions() -> None:
    def edit(tl: pb.TensorList) -> None:
        raw_indices(tl, [0, 1, 2, 3, 4])  # all five in tensor a
        tl.tensors[0].nnz, tl.tensors[1].nnz = 4, 1

    rejects(tamper(blob_of("topz:0.1"), edit), "tensors[a].nnz", "nnz 4 but 5")


def test_nnz_sum_overflow() -> None:
    def edit(tl: pb.TensorList) -> None:
        tl.tensors[0].nnz = (1 << 64) - 1

    rejects(tamper(blob_of("topz:0.1"), edit), "nnz", "more than")


def test_bitmap_wrong_length() -> None:
    def edit(tl: pb.TensorList) -> None:
        tl.index_coding, tl.indices = BITMAP, b"\xff"

    rejects(tamper(blob_of("topz:0.1"), edit), "indices", "bitmap has 1 bytes")


def test_rice_trailing_garbage() -> None:
    def edit(tl: pb.TensorList) -> None:
        tl.indices = b"\xff" + tl.indices

    rejects(tamper(blob_of("topz:0.1 > ternary:1"), edit), "indices")


def test_dense_update_with_indices() -> None:
    def edit(tl: pb.TensorList) -> None:
        tl.indices = b"\x01"

    rejects(tamper(blob_of("none"), edit), "indices", "dense update")


def test_topz_count_exceeds_its_fraction() -> None:
    def edit(tl: pb.TensorList) -> None:
        tl.stages[0].args[0] = "0.01"

    rejects(tamper(blob_of("topz:0.5"), edit), "tensors[a].nnz", "keeps at most 1")


# ---- values -----------------------------------------------------------------------------------
def test_values_length_mismatch() -> None:
    def edit(tl: pb.TensorList) -> None:
        tl.values = tl.values[:-4]

    rejects(tamper(blob_of("none"), edit), "values", "expected 208")


def test_codes_length_mismatch() -> None:
    def edit(tl: pb.TensorList) -> None:
        tl.values = tl.values + b"\x00"

    rejects(tamper(blob_of("topz:0.5 > kmeans:4"), edit), "values", "codes of 2 bits")


def test_code_bits_too_wide() -> None:
    def edit(tl: pb.TensorList) -> None:
        tl.code_bits = 40

    rejects(tamper(blob_of("kmeans:4"), edit), "values", "exceeds 16")


def test_nan_in_values() -> None:
    def edit(tl: pb.TensorList) -> None:
        vals = np.frombuffer(tl.values, "<f4").copy()
        vals[45] = np.nan
        tl.values = vals.tobytes()

    rejects(tamper(blob_of("none"), edit), "tensors[b].values", "NaN or Inf")


def test_inf_in_fp16_codes() -> None:
    def edit(tl: pb.TensorList) -> None:
        tl.values = b"\x7c\x00" + tl.values[2:]  # big-endian half +inf in entry 0

    rejects(tamper(blob_of("fp16"), edit), "tensors[a].values", "NaN or Inf")


def test_nan_in_codebook() -> None:
    def edit(tl: pb.TensorList) -> None:
        t = tl.tensors[1]
        book = np.frombuffer(t.codebook_bf16, "<u2").astype(np.uint32) << 16
        t.ClearField("codebook_bf16")
        t.codebook.extend(book.view(np.float32).tolist())
        t.codebook[0] = float("nan")

    rejects(tamper(blob_of("kmeans:4"), edit), "tensors[b].codebook", "NaN or Inf")


def test_codebook_larger_than_k() -> None:
    def edit(tl: pb.TensorList) -> None:
        tl.tensors[0].codebook_bf16 += b"\x80\x3f" * 3

    rejects(tamper(blob_of("kmeans:4"), edit), "tensors[a].codebook", "7 entries for kmeans:4")


def test_code_outside_codebook() -> None:
    def edit(tl: pb.TensorList) -> None:
        tl.tensors[0].codebook_bf16 = tl.tensors[0].codebook_bf16[:2]

    rejects(tamper(blob_of("kmeans:4"), edit), "tensors[a].codebook", "outside the 1-entry")


def test_inf_scale_ternary() -> None:
    def edit(tl: pb.TensorList) -> None:
        tl.tensors[1].scale = float("inf")

    rejects(tamper(blob_of("topz:0.5 > ternary:1"), edit), "tensors[b].scale", "finite")


def test_nan_offset_uniform() -> None:
    def edit(tl: pb.TensorList) -> None:
        tl.tensors[0].offset = float("nan")

    rejects(tamper(blob_of("uniform:4"), edit), "tensors[a].offset", "finite")


def test_overflowing_dequantisation() -> None:
    def edit(tl: pb.TensorList) -> None:
        tl.tensors[0].offset, tl.tensors[0].scale = 3e38, 3e38

    rejects(tamper(blob_of("uniform:4"), edit), "tensors[a].values", "NaN or Inf")


def test_never_a_raw_exception_on_random_bytes() -> None:
    """Fuzz: truncations and byte flips of valid payloads only ever raise PayloadError."""
    rng = np.random.default_rng(0)
    for spec in ("none", "zstd", "topz:0.3 > kmeans:4 > zstd", "topz:0.3 > ternary:1",
                 "uniform:5"):
        blob = bytearray(blob_of(spec))
        for _ in range(60):
            bad = bytearray(blob)
            if rng.random() < 0.3:
                bad = bad[: rng.integers(0, len(bad))]
            else:
                for i in rng.integers(0, len(bad), rng.integers(1, 4)):
                    bad[i] = rng.integers(0, 256)
            try:
                decode_update(bytes(bad), expected=EXP, client=1)
            except PayloadError:
                pass
