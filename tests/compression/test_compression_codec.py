"""Codec configuration (names, lists, tables), composition rules and input handling."""

from __future__ import annotations

import numpy as np
import pytest
from compression_helpers import expected_of

from pollen.compression import STAGES, Codec, Kind, decode_update, encode_update
from pollen.errors import ConfigError, PayloadError, UnknownNameError


def test_registry_lists_builtin_stages() -> None:
    assert {"topz", "uniform", "kmeans", "ternary", "fp16", "zstd"} <= set(STAGES.names())
    assert STAGES.get("topz").kind == Kind.SPARSIFY


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("", "none"),
        ("none", "none"),
        ("  topz:0.05 >kmeans:16>  zstd ", "topz:0.05 > kmeans:16 > zstd"),
        ("topz:0.05:tensor > kmeans:16:bf16:5 > zstd:1", "topz:0.05 > kmeans:16 > zstd"),
        ("topz:fraction=0.2:scope=global", "topz:0.2:global"),
        ("uniform:4:stochastic:0", "uniform:4:stochastic"),
        ("ternary:1.0", "ternary:1"),
        ("ternary:1:global", "ternary:1"),
        ("kmeans:8:iters=3", "kmeans:8:bf16:3"),
        ("kmeans:8:bf16:5", "kmeans:8"),
    ],
)
def test_spec_is_canonical_and_reparses(text: str, canonical: str) -> None:
    codec = Codec.parse(text)
    assert codec.spec == canonical
    assert Codec.parse(codec.spec) == codec


def test_list_and_table_forms() -> None:
    want = Codec.parse("topz:0.1:global > ternary:2 > zstd")
    assert Codec.parse(["topz:0.1:global", "ternary:2", "zstd"]) == want
    table = {"stages": [{"name": "topz", "fraction": 0.1, "scope": "global"},
                        {"name": "ternary", "alpha": 2}, {"name": "zstd"}]}
    assert Codec.parse(table) == want


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("topz:0.1 > topz:0.2", "two sparsifiers"),
        ("kmeans:4 > uniform:8", "two quantizers"),
        ("zstd > zstd", "two lossless"),
        ("zstd > kmeans:16", "cannot follow"),
        ("kmeans:16 > topz:0.1", "cannot follow"),
        ("topz", "needs parameter 'fraction'"),
        ("topz:0", "must be > 0"),
        ("topz:1.5", "must be <= 1"),
        ("topz:abc", "not a valid float"),
        ("topz:0.1:everywhere", "not one of"),
        ("uniform:17", "must be <= 16"),
        ("kmeans:1", "must be >= 2"),
        ("kmeans:2.5", "not a valid int"),
        ("ternary:-1", "must be > 0"),
        ("zstd:1:2", "at most 1 arguments"),
        ("topz:0.1:bogus=1", "no parameter 'bogus'"),
        ("topz:scope=global:0.1", "positional arguments must come first"),
        ("topz:0.1 > > zstd", "empty stage"),
    ],
)
def test_invalid_specs_are_config_errors(spec: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        Codec.parse(spec)


def test_unknown_stage_lists_choices() -> None:
    with pytest.raises(UnknownNameError, match="choose one of: fp16, kmeans"):
        Codec.parse("topz:0.1 > huffman")


def test_none_codec_is_lossless_and_valid_wire(update: dict[str, np.ndarray]) -> None:
    blob = encode_update(update)
    out = decode_update(blob, expected=expected_of(update))
    for name, x in update.items():
        np.testing.assert_array_equal(out[name], x)
    assert len(blob) < 4 * sum(x.size for x in update.values()) + 400


def test_scalars_empty_tensors_and_empty_update() -> None:
    upd = {"scalar": np.float32(2.5), "empty": np.zeros((0, 4), np.float32),
           "one": np.array([-1.0], np.float32), "vec": np.arange(5, dtype=np.float32)}
    for spec in ("none", "zstd", "topz:0.3 > kmeans:4 > zstd", "topz:0.5:global > ternary:1",
                 "uniform:3", "fp16"):
        out = decode_update(Codec.parse(spec).encode(upd), expected=expected_of(upd))
        assert out["scalar"].shape == () and out["empty"].shape == (0, 4)
    assert decode_update(Codec.parse("topz:0.1 > kmeans:4 > zstd").encode({})) == {}


def test_other_dtypes_are_encoded_as_float32_and_labelled() -> None:
    torch = pytest.importorskip("torch")
    upd = {"h": np.array([1.5, -2.0], np.float16), "d": np.array([0.1], np.float64),
           "b": torch.tensor([1.0, 3.0], dtype=torch.bfloat16)}
    blob = encode_update(upd, "zstd")
    out = decode_update(blob, expected={"h": ((2,), "float16"), "d": ((1,), "float64"),
                                        "b": ((2,), "torch.bfloat16")})
    assert all(v.dtype == np.float32 for v in out.values())
    np.testing.assert_array_equal(out["b"], [1.0, 3.0])
    np.testing.assert_array_equal(out["d"], [np.float32(0.1)])


def test_rejects_non_float_and_non_finite_input() -> None:
    with pytest.raises(ConfigError, match="dtype int64"):
        encode_update({"i": np.arange(3)})
    with pytest.raises(PayloadError, match="NaN or Inf") as exc:
        encode_update({"a": np.ones(3, np.float32), "b": np.array([1.0, np.inf], np.float32)})
    assert exc.value.field == "b"
    with pytest.raises(ConfigError, match="dict"):
        Codec.parse("zstd").encode([np.ones(3)])  # type: ignore[arg-type]


def test_decoding_needs_no_codec_and_reports_sender_spec(update: dict[str, np.ndarray]) -> None:
    from pollen.compression._proto.pollen.v1 import update_pb2 as pb

    blob = Codec.parse("topz:0.1 > uniform:4 > zstd:9").encode(update)
    msg = pb.Update.FromString(blob)
    assert msg.codec == "topz:0.1 > uniform:4 > zstd:9"
    assert msg.compression.name == "zstd" and list(msg.compression.args) == ["9"]
    assert decode_update(blob).keys() == update.keys()


def test_encode_does_not_modify_input(update: dict[str, np.ndarray]) -> None:
    before = {k: v.copy() for k, v in update.items()}
    for spec in ("topz:0.1 > kmeans:4 > zstd", "uniform:4:stochastic", "ternary:1"):
        Codec.parse(spec).encode(update)
    for k, v in update.items():
        np.testing.assert_array_equal(v, before[k])
