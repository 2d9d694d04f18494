"""Seed replay: stream definitions, fast path == naive path, determinism, Philox reference, CUDA kernel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pollen.errors import ConfigError
from pollen.strategies.fedkseed import seeds as S

# Shapes around the chunk logic: tiny (scalar randn path), tail < 16 merged, tail >= 16, several chunks.
SHAPES = [(3,), (17,), (5, 7), (S.CHUNK + 5,), (S.CHUNK + 40,), (2 * S.CHUNK + 15,), (33, 10)]


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _params(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g) for s in SHAPES]


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


def test_candidate_seeds_deterministic_distinct_in_range():
    a, b = S.candidate_seeds(4096, 42), S.candidate_seeds(4096, 42)
    assert a.dtype == np.int64 and a.shape == (4096,)
    assert np.array_equal(a, b)
    assert np.unique(a).size == 4096 and a.min() >= 1
    assert not np.array_equal(a, S.candidate_seeds(4096, 43))
    assert np.array_equal(S.candidate_seeds(10, 42), a[:10])  # prefix-stable in K
    with pytest.raises(ConfigError):
        S.candidate_seeds(0, 1)


def test_philox_known_answers():
    """Random123's published Philox4x32-10 vectors."""
    kat = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
           ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
           ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for ctr, key, want in kat:
        assert tuple(int(x) for x in S.philox4x32(*ctr, *key)) == want


def test_philox_normals_deterministic_gaussian_and_sliceable():
    z = S.philox_normals(12345, 2, 0, 1 << 18)
    assert z.dtype == np.float32 and np.array_equal(z, S.philox_normals(12345, 2, 0, 1 << 18))
    assert abs(z.mean()) < 0.01 and abs(z.var() - 1) < 0.02
    assert abs(np.mean(z**4) - 3) < 0.1 and abs(np.mean(np.abs(z) < 1) - 0.6827) < 0.005
    assert np.array_equal(S.philox_normals(12345, 2, 13, 1001), z[13:1001])
    other = S.philox_normals(12345, 3, 0, 1 << 18)  # other parameter index: independent numbers
    assert abs(np.corrcoef(z, other)[0, 1]) < 0.01


def test_torch_family_matches_definition():
    """z(s) is one randn(numel) per parameter from one CPU generator, in list order."""
    params = _params()
    zs = S.perturbation(77, params)
    g = torch.Generator().manual_seed(77)
    for p, z in zip(params, zs, strict=True):
        assert torch.equal(z, torch.randn(p.numel(), generator=g).view(p.shape))


@pytest.mark.parametrize("rng", S.RNG_FAMILIES)
def test_fast_equals_naive(rng):
    seeds = S.candidate_seeds(24, 5)
    coeffs = np.random.default_rng(1).normal(size=24)
    for n in (1, 8):  # up to SEED_GROUPS seeds the fast path performs the very same float ops
        a, b = _params(), _params()
        S.apply_seeds_naive(a, seeds[:n], coeffs[:n], rng=rng)
        S.apply_seeds(b, seeds[:n], coeffs[:n], rng=rng, threads=1)
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True)), n
    a, b = _params(), _params()
    S.apply_seeds_naive(a, seeds, coeffs, rng=rng)
    S.apply_seeds(b, seeds, coeffs, rng=rng, threads=1)
    # More seeds are pre-summed per group: same math, other rounding (documented bound 1e-6 here).
    assert _max_diff(a, b) <= 1e-6 * np.abs(coeffs).sum()
    assert _max_diff(a, _params()) > 1.0  # and the update itself is large


@pytest.mark.parametrize("rng", S.RNG_FAMILIES)
def test_threads_do_not_change_result(rng):
    seeds, coeffs = S.candidate_seeds(20, 9), np.linspace(-2, 2, 20)
    a, b = _params(), _params()
    S.apply_seeds(a, seeds, coeffs, rng=rng, threads=1)
    S.apply_seeds(b, seeds, coeffs, rng=rng, threads=2)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_zero_coefficients_skipped_and_order_independent():
    seeds, coeffs = S.candidate_seeds(12, 3), np.random.default_rng(2).normal(size=12)
    with_zeros = coeffs.copy()
    with_zeros[[1, 4, 7]] = 0.0
    keep = with_zeros != 0
    a, b = _params(), _params()
    S.apply_seeds(a, seeds, with_zeros)
    S.apply_seeds(b, seeds[keep], with_zeros[keep])
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    perm = np.random.default_rng(3).permutation(12)
    c, d = _params(), _params()
    S.apply_seeds(c, seeds, coeffs)
    S.apply_seeds(d, seeds[perm], coeffs[perm])
    assert _max_diff(c, d) < 1e-5
    e = _params()
    S.apply_seeds(e, seeds, np.zeros(12))
    assert all(torch.equal(x, y) for x, y in zip(e, _params(), strict=True))


def test_src_writes_into_other_dtype():
    src = _params()
    dst = [p.to(torch.bfloat16) for p in _params(1)]
    S.apply_seeds(dst, [11], [0.5], src=src)
    want = _params()
    S.apply_seeds(want, [11], [0.5])
    assert all(torch.equal(x, y.to(torch.bfloat16)) for x, y in zip(dst, want, strict=True))
    with pytest.raises(ConfigError):
        S.apply_seeds(dst, [1], [1.0], rng="mt")
    with pytest.raises(ValueError):
        S.apply_seeds(dst, [1], [float("nan")])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_kernel_matches_cpu_reference(dtype):
    if not torch.cuda.is_available() or S.triton is None:
        pytest.skip("needs CUDA and Triton")
    seeds, coeffs = S.candidate_seeds(64, 4), np.random.default_rng(5).normal(size=64) * 0.01
    cpu = [p.to(dtype) for p in _params()]
    gpu = [p.cuda() for p in cpu]
    S.apply_seeds(cpu, seeds, coeffs, rng="philox")
    S.apply_seeds(gpu, seeds, coeffs, rng="philox")
    # Documented tolerance: transcendental functions differ by a few ulp between numpy and CUDA.
    # bf16 results may additionally round to neighbouring bf16 values (one ulp = 2^-7 relative).
    tol = 1e-5 * np.abs(coeffs).sum()
    rtol = 0.0 if dtype == torch.float32 else 2.0**-7
    for c, g in zip(cpu, gpu, strict=True):
        torch.testing.assert_close(g.cpu().float(), c.float(), rtol=rtol, atol=tol)
