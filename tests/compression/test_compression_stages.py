"""Each stage's defining property, checked through the full encode -> bytes -> decode path."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from compression_helpers import expected_of, lora_update

from pollen.compression import Codec, decode_update
from pollen.compression.stages.kmeans import segmented_kmeans
from pollen.compression.stages.topz import keep_count, keep_counts


def roundtrip(spec: str, upd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return decode_update(Codec.parse(spec).encode(upd), expected=expected_of(upd))


# ---- topz ---------------------------------------------------------------------------------------
def test_keep_count_is_exact_ceil() -> None:
    assert keep_count(0.05, 4600) == 230  # 0.05 * 4600 is 230.00000000000003 in floats
    assert keep_count(0.05, 4601) == 231
    assert keep_count(0.001, 10) == 1  # never zero for a non-empty tensor
    assert keep_count(1.0, 7) == 7 and keep_count(0.5, 0) == 0
    sizes = np.array([0, 1, 4600, 1 << 40])
    np.testing.assert_array_equal(keep_counts(0.123456789012345, sizes),
                                  [keep_count(0.123456789012345, int(d)) for d in sizes])


@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.2, 0.5])
def test_topz_keeps_exact_count_of_largest(update: dict[str, np.ndarray], fraction: float) -> None:
    out = roundtrip(f"topz:{fraction}", update)
    for name, x in update.items():
        k = math.ceil(round(fraction * x.size, 9))
        kept = np.flatnonzero(out[name])
        assert len(kept) == k
        np.testing.assert_array_equal(out[name].ravel()[kept], x.ravel()[kept])  # values exact
        dropped = np.setdiff1d(np.arange(x.size), kept)
        assert np.abs(x.ravel()[kept]).min() >= np.abs(x.ravel()[dropped]).max()


def test_topz_ties_keep_exact_count_lowest_positions_first() -> None:
    x = np.array([1.0, -3.0, 3.0, 2.0, 3.0, -3.0, 0.5], np.float32)
    out = roundtrip("topz:0.4", {"t": x})["t"]  # k = ceil(2.8) = 3 of four tied |3|
    np.testing.assert_array_equal(out, [0, -3, 3, 0, 3, 0, 0])


def test_topz_global_picks_largest_over_all_tensors() -> None:
    upd = {"small": np.full(100, 1e-3, np.float32), "big": np.linspace(1, 2, 100, dtype=np.float32)}
    out = roundtrip("topz:0.25:global", upd)
    assert not out["small"].any()  # all 50 kept entries come from the larger tensor
    assert np.count_nonzero(out["big"]) == 50
    assert (out["big"][50:] == upd["big"][50:]).all()


def test_topz_one_is_lossless(update: dict[str, np.ndarray]) -> None:
    out = roundtrip("topz:1.0 > zstd", update)
    for name, x in update.items():
        np.testing.assert_array_equal(out[name], x)


# ---- ternary ------------------------------------------------------------------------------------
def test_ternary_values_are_plus_minus_alpha_sigma(update: dict[str, np.ndarray]) -> None:
    alpha = 1.5
    out = roundtrip(f"topz:0.2 > ternary:{alpha}:tensor", update)
    for name, x in update.items():
        s = np.float32(alpha * np.std(x.astype(np.float64), ddof=1))  # unbiased, dense tensor
        nz = out[name][out[name] != 0]
        assert len(nz) == keep_count(0.2, x.size)
        assert set(np.unique(nz)) <= {s, -s}
        kept = out[name] != 0
        np.testing.assert_array_equal(np.sign(out[name][kept]), np.sign(x[kept]))


def test_ternary_global_sigma_matches_compeft(update: dict[str, np.ndarray]) -> None:
    out = roundtrip("topz:0.2:global > ternary:1", update)  # ComPEFT: global top-k and σ
    flat = np.concatenate([x.ravel() for x in update.values()]).astype(np.float64)
    s = np.float32(np.std(flat, ddof=1))
    vals = np.concatenate([v[v != 0] for v in out.values()])
    assert len(vals) >= int(0.2 * flat.size)
    assert set(np.abs(vals)) == {s}


def test_ternary_of_zero_tensor_sends_nothing() -> None:
    out = roundtrip("ternary:1 > zstd", {"z": np.zeros((4, 4), np.float32)})
    assert not out["z"].any()


# ---- kmeans -------------------------------------------------------------------------------------
def test_kmeans_preserves_zeros_and_uses_at_most_k_values() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal(2000).astype(np.float32)
    x[rng.random(2000) < 0.3] = 0.0
    out = roundtrip("kmeans:8", {"x": x})["x"]
    np.testing.assert_array_equal(out == 0, x == 0)  # zeros stay zero, non-zeros stay non-zero
    assert len(np.unique(out)) <= 8  # the pinned zero counts towards K


def test_kmeans_after_topz_keeps_sparsity(update: dict[str, np.ndarray]) -> None:
    out = roundtrip("topz:0.1 > kmeans:4", update)
    for name, x in update.items():
        assert np.count_nonzero(out[name]) == keep_count(0.1, x.size)
        assert len(np.unique(out[name])) <= 5  # 4 centroids + the implicit zeros


def test_kmeans_error_falls_with_k(update: dict[str, np.ndarray]) -> None:
    def err(k: int) -> float:
        out = roundtrip(f"kmeans:{k}", update)
        return sum(float(((out[n] - x) ** 2).sum()) for n, x in update.items())

    errors = [err(k) for k in (2, 4, 16, 64)]
    assert all(a > b for a, b in itertools.pairwise(errors))


def test_segmented_kmeans_matches_per_tensor_lloyd() -> None:
    rng = np.random.default_rng(2)
    v = rng.standard_t(3, 600)
    seg = np.repeat([0, 1, 2], [100, 200, 300])
    v[seg == 1] *= 1e-3  # very different scales per tensor must not interfere
    cent, cluster = segmented_kmeans(v, seg, 3, np.array([4, 4, 3]), iters=200)
    for t in range(3):
        vals, c = v[seg == t], cluster[seg == t]
        assert c.max() < (3 if t == 2 else 4)
        centres = cent[t][c]
        np.testing.assert_allclose(  # a Lloyd fixed point: every centroid is its cluster's mean
            [vals[c == j].mean() for j in np.unique(c)], cent[t][np.unique(c)], rtol=1e-9)
        assert np.all(np.abs(vals - centres) <= np.abs(vals[:, None] - cent[t][:4 if t < 2 else 3]
                                                     ).min(axis=1) + 1e-12)


# ---- uniform ------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [1, 3, 4, 8, 12])
def test_uniform_error_within_half_step(bits: int) -> None:
    x = np.random.default_rng(bits).standard_normal((50, 20)).astype(np.float32)
    out = roundtrip(f"uniform:{bits}", {"x": x})["x"]
    step = (x.max() - x.min()) / (2**bits - 1)
    assert np.abs(out - x).max() <= step / 2 * (1 + 1e-4) + 1e-6
    assert len(np.unique(out)) <= 2**bits


def test_uniform_stochastic_is_unbiased_and_within_one_step() -> None:
    x = np.linspace(-1, 1, 64, dtype=np.float32)
    x[5] = 0.123456
    codec = Codec.parse("uniform:2:stochastic:7")
    runs = np.stack([decode_update(codec.encode({"x": x}))["x"] for _ in range(400)])
    step = 2 / 3
    assert np.abs(runs - x).max() <= step * (1 + 1e-5)
    # mean of 400 draws: std of one draw <= step/2, so 5 sigma is 5 * step/2 / 20
    assert np.abs(runs.mean(axis=0) - x).max() <= 5 * (step / 2) / 20
    nearest = roundtrip("uniform:2", {"x": x})["x"]
    assert np.abs(nearest - x).mean() > np.abs(runs.mean(axis=0) - x).mean()  # rounding bias


def test_uniform_stochastic_seed_reproducible() -> None:
    x = np.random.default_rng(0).standard_normal(100).astype(np.float32)
    a = Codec.parse("uniform:3:stochastic:5").encode({"x": x})
    b = Codec.parse("uniform:3:stochastic:5").encode({"x": x})
    c = Codec.parse("uniform:3:stochastic:6").encode({"x": x})
    assert a == b and a != c


def test_uniform_constant_tensor_exact() -> None:
    x = np.full((3, 3), 0.25, np.float32)
    np.testing.assert_array_equal(roundtrip("uniform:4 > zstd", {"x": x})["x"], x)


# ---- fp16 ---------------------------------------------------------------------------------------
def test_fp16_rounds_and_saturates() -> None:
    x = np.array([1e-3, -2.5, 1e6, -1e6, 0.0], np.float32)
    out = roundtrip("fp16", {"x": x})["x"]
    np.testing.assert_array_equal(out, [np.float16(1e-3), -2.5, 65504, -65504, 0])


# ---- compositions -------------------------------------------------------------------------------
SPECS = [
    "none", "zstd", "zstd:19", "fp16", "fp16 > zstd", "uniform:8", "uniform:5 > zstd",
    "kmeans:16", "kmeans:3 > zstd", "ternary:1", "ternary:0.5:tensor > zstd", "topz:0.1",
    "topz:0.1 > zstd", "topz:0.1 > fp16", "topz:0.05 > uniform:4 > zstd",
    "topz:0.05 > kmeans:16 > zstd", "topz:0.2:global > ternary:1:global > zstd",
    "topz:0.3 > uniform:6:stochastic:1 > zstd",
]


@pytest.mark.parametrize("spec", SPECS)
def test_every_composition_roundtrips(update: dict[str, np.ndarray], spec: str) -> None:
    codec = Codec.parse(spec)
    blob, sent = codec.encode_with_reconstruction(update)
    out = decode_update(blob, expected=expected_of(update))
    assert list(out) == list(update)
    for name, x in update.items():
        assert out[name].shape == x.shape and out[name].dtype == np.float32
        np.testing.assert_array_equal(out[name], sent[name])  # what EF assumes is what arrives
    if codec.lossy:
        num = sum(float(((out[n] - x) ** 2).sum()) for n, x in update.items())
        den = sum(float((x.astype(np.float64) ** 2).sum()) for x in update.values())
        assert math.sqrt(num / den) < 1.0  # better than sending nothing
    else:
        for name, x in update.items():
            np.testing.assert_array_equal(out[name], x)


def test_sparse_codecs_compress_lora_updates() -> None:
    upd = lora_update(layers=3, width=576)  # smollm2-135m LoRA shapes
    raw = 4 * sum(x.size for x in upd.values())
    assert raw / len(Codec.parse("topz:0.05 > kmeans:16 > zstd").encode(upd)) > 45
    assert raw / len(Codec.parse("topz:0.05 > ternary:1 > zstd").encode(upd)) > 70
    assert raw / len(Codec.parse("uniform:8").encode(upd)) > 3.9


def test_bf16_codebook_is_half_the_f32_one() -> None:
    upd = lora_update(layers=3, width=576)
    bf16 = Codec.parse("topz:0.05 > kmeans:16 > zstd").encode(upd)
    f32 = Codec.parse("topz:0.05 > kmeans:16:f32 > zstd").encode(upd)
    assert len(f32) - len(bf16) > 0.8 * 2 * 16 * len(upd)  # ~2 bytes saved per centroid
    a, b = decode_update(bf16), decode_update(f32)
    for name in upd:
        kept = a[name] != 0
        np.testing.assert_array_equal(kept, b[name] != 0)
        np.testing.assert_allclose(a[name][kept], b[name][kept], rtol=4e-3)
