"""Error feedback: what the server sums tracks what the client produced."""

from __future__ import annotations

import numpy as np
import pytest
from compression_helpers import expected_of, lora_update

from pollen.compression import Codec, ErrorFeedback, decode_update
from pollen.errors import ConfigError


def rounds(n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """A persistent direction plus fresh noise each round, as in local training."""
    base = lora_update(seed=seed)
    rng = np.random.default_rng(seed + 1)
    return [{k: (v + 0.5 * v.std() * rng.standard_normal(v.shape)).astype(np.float32)
             for k, v in base.items()} for _ in range(n)]


def norm(d: dict[str, np.ndarray]) -> float:
    return float(np.sqrt(sum(float((v.astype(np.float64) ** 2).sum()) for v in d.values())))


@pytest.mark.parametrize("spec", ["topz:0.05 > kmeans:16 > zstd", "topz:0.05 > ternary:1 > zstd",
                                  "topz:0.02:global > uniform:2"])
def test_sum_of_decoded_tracks_sum_of_true(spec: str) -> None:
    ups = rounds(60)
    ef = ErrorFeedback(spec)
    exp = expected_of(ups[0])
    true = {k: np.zeros_like(v, np.float64) for k, v in ups[0].items()}
    got = {k: np.zeros_like(v, np.float64) for k, v in ups[0].items()}
    plain = {k: np.zeros_like(v, np.float64) for k, v in ups[0].items()}
    residual_norms = []
    for u in ups:
        for k, v in decode_update(ef.encode(u), expected=exp).items():
            got[k] += v
        for k, v in decode_update(Codec.parse(spec).encode(u), expected=exp).items():
            plain[k] += v
        for k, v in u.items():
            true[k] += v
        residual_norms.append(ef.residual_norm())
        gap = {k: true[k] - got[k] for k in true}  # telescopes to exactly the residual
        state = ef.state_dict()
        np.testing.assert_allclose(norm(gap), norm(state), rtol=1e-3)
    one = norm(ups[0])
    # Bounded: the residual saturates at a few update norms (~1/fraction of energy sent) instead
    # of growing with the number of rounds.
    assert max(residual_norms) < 15 * one
    assert residual_norms[-1] - residual_norms[-11] < 0.1 * residual_norms[-1]
    err_ef = norm({k: true[k] - got[k] for k in true}) / norm(true)
    err_plain = norm({k: true[k] - plain[k] for k in true}) / norm(true)
    assert err_ef < 0.5 * err_plain  # feedback recovers what one-shot compression loses


def test_encode_leaves_the_update_untouched() -> None:
    u = lora_update()
    before = {k: v.copy() for k, v in u.items()}
    ef = ErrorFeedback("topz:0.05 > ternary:1")
    for _ in range(2):
        ef.encode(u)
    for k, v in u.items():
        np.testing.assert_array_equal(v, before[k])


def test_lossless_codec_keeps_no_residual() -> None:
    ef = ErrorFeedback("zstd")
    ef.encode(lora_update())
    assert ef.state_dict() == {} and ef.residual_norm() == 0.0


def test_state_dict_roundtrip_resumes_identically() -> None:
    ups = rounds(4)
    a = ErrorFeedback("topz:0.1 > kmeans:4")
    for u in ups[:2]:
        a.encode(u)
    state = a.state_dict()
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in state.values())
    assert set(state) == set(ups[0]) and state[next(iter(state))].shape == ups[0][
        next(iter(state))].shape
    b = ErrorFeedback(Codec.parse("topz:0.1 > kmeans:4"))
    b.load_state_dict(state)
    assert a.encode(ups[2]) == b.encode(ups[2])
    state["layers.0.q.lora_A"][:] = 99.0  # a copy: the live residual is unaffected
    assert not np.any(a.state_dict()["layers.0.q.lora_A"] == 99.0)


def test_shape_change_and_bad_state_are_errors() -> None:
    ef = ErrorFeedback("topz:0.1")
    ef.encode({"w": np.ones((4, 4), np.float32)})
    with pytest.raises(ConfigError, match="changed shape"):
        ef.encode({"w": np.ones((2, 8), np.float32)})
    with pytest.raises(ConfigError, match="NaN"):
        ef.load_state_dict({"w": np.array([np.nan], np.float32)})
    ef.reset()
    assert ef.state_dict() == {}
