"""Property-based round trips over shapes (0-d and empty included), dtypes, sparsity, stages."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pollen.compression import Codec, decode_update
from pollen.compression.stages.topz import keep_count

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DTYPES = [np.float16, np.float32, np.float64]


@st.composite
def tensors(draw: st.DrawFn) -> np.ndarray:
    shape = tuple(draw(st.lists(st.integers(0, 9), min_size=0, max_size=3)))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([1e-6, 1e-3, 1.0, 100.0]))
    x = np.asarray(scale * rng.standard_t(3, shape))
    x[np.asarray(rng.random(shape)) < draw(st.sampled_from([0.0, 0.5, 0.95, 1.0]))] = 0.0
    if draw(st.booleans()):  # ties
        x = np.round(x / scale, 0) * scale
    return x.astype(dtype)


updates = st.dictionaries(st.text("abcxyz._", min_size=1, max_size=6), tensors(), max_size=4)

sparsifiers = st.one_of(st.just(""), st.builds(
    lambda f, g: f"topz:{f}{':global' if g else ''} > ",
    st.sampled_from([0.001, 0.05, 0.3, 0.999, 1.0]), st.booleans()))
quantizers = st.one_of(
    st.just(""), st.just("fp16 > "),
    st.builds(lambda b, s: f"uniform:{b}{':stochastic' if s else ''} > ",
              st.integers(1, 16), st.booleans()),
    st.builds(lambda k, p: f"kmeans:{k}:{p} > ", st.integers(2, 40), st.sampled_from(
        ["bf16", "f32"])),
    st.builds(lambda a, g: f"ternary:{a}{':tensor' if g else ''} > ",
              st.sampled_from([0.5, 1.0, 2.0]), st.booleans()),
)
codecs = st.builds(lambda s, q, z: (s + q + z).strip().rstrip(">").strip(),
                   sparsifiers, quantizers, st.sampled_from(["", "zstd", "zstd:1"]))


def expected(upd: dict[str, np.ndarray]) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (v.shape, v.dtype.name) for k, v in upd.items()}


@SETTINGS
@given(updates, codecs)
def test_any_codec_roundtrips_any_update(upd: dict[str, np.ndarray], spec: str) -> None:
    codec = Codec.parse(spec)
    assert Codec.parse(codec.spec) == codec
    blob, sent = codec.encode_with_reconstruction(upd)
    out = decode_update(blob, expected=expected(upd), client="prop")
    assert list(out) == list(upd)
    for name, x in upd.items():
        y = out[name]
        assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
        np.testing.assert_array_equal(y, sent[name])
        x32 = x.astype(np.float32)
        quantized = any(q in spec for q in ("fp16", "uniform", "kmeans", "ternary"))
        if not quantized and ("topz" not in spec or "topz:1.0" in spec):
            np.testing.assert_array_equal(y, x32)  # lossless pipelines are exact
        if "topz" in spec and ":global" not in spec.split(">")[0]:
            frac = float(spec.split(">")[0].split(":")[1])
            assert np.count_nonzero(y) <= keep_count(frac, x.size)
        if spec.startswith("kmeans") or "> kmeans" in spec:
            assert not np.any(y[x32 == 0])  # zeros stay zero
        if "ternary" in spec and np.any(y):
            assert len(np.unique(np.abs(y[y != 0]))) == 1
        if spec.startswith("uniform") and "stochastic" not in spec and x.size:
            bits = int(spec.split(":")[1].split()[0])
            step = (float(x32.max()) - float(x32.min())) / (2**bits - 1)
            assert np.abs(y - x32).max() <= step / 2 * (1 + 1e-3) + 1e-30 + 1e-6 * abs(
                float(x32.max()))


@SETTINGS
@given(updates, st.sampled_from([0.01, 0.1, 0.5]))
def test_topz_keeps_the_largest(upd: dict[str, np.ndarray], frac: float) -> None:
    out = decode_update(Codec.parse(f"topz:{frac} > zstd").encode(upd))
    for name, x in upd.items():
        x32 = np.abs(x.astype(np.float32).ravel())
        kept = out[name].ravel() != 0
        if kept.any() and (~kept).any():
            assert x32[kept].min() >= x32[~kept].max()
        np.testing.assert_array_equal(out[name].ravel()[kept], x.astype(np.float32).ravel()[kept])
